"""``ledger.post_pending_at_once`` answers exactly as ``post_pending`` and posts in one statement."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from recharge.ledger import transfers as ledger
from recharge.ledger.transfers import Result
from tests.test_ledger import _funded_pair, _tid, _transfer

pytestmark = pytest.mark.usefixtures("audited")


async def _pending(conn: asyncpg.Connection, amount: int, timeout_at: dt.datetime | None = None) -> tuple[str, int, int]:
    fund, card = await _funded_pair(conn, 10_000)
    pid = _tid()
    outcome = await _transfer(
        conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=amount, pending=True, timeout_at=timeout_at
    )
    assert outcome.result is Result.CREATED
    return pid, fund, card


async def test_post_at_once_moves_the_reservation_in_one_statement(conn: asyncpg.Connection) -> None:
    pid, fund, card = await _pending(conn, 1_500)
    seen: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        seen.append(record.query)

    conn.add_query_logger(log)
    try:
        async with conn.transaction():
            await asyncio.sleep(0)
            seen.clear()
            posted = await ledger.post_pending_at_once(conn, id=pid + ":post", pending_id=pid)
            await asyncio.sleep(0)
            statements = len(seen)
    finally:
        conn.remove_query_logger(log)
    assert posted.result is Result.CREATED and statements == 1, seen
    assert posted.transfer is not None and posted.transfer.kind == "post" and posted.transfer.pending_id == pid
    pending = await ledger.get_transfer(conn, pid)
    assert pending is not None and pending.status == "posted"
    card_balance, fund_balance = await ledger.get_balance(conn, card), await ledger.get_balance(conn, fund)
    assert card_balance.posted == 1_500 and card_balance.credits_pending == 0
    assert fund_balance.debits_pending == 0 and fund_balance.available == 10_000 - 1_500


async def test_post_at_once_repeats_and_refusals_match_post_pending(conn: asyncpg.Connection) -> None:
    pid, _, card = await _pending(conn, 700)
    async with conn.transaction():
        first = await ledger.post_pending_at_once(conn, id=pid + ":post", pending_id=pid)
        again = await ledger.post_pending_at_once(conn, id=pid + ":post", pending_id=pid)
        other = await ledger.post_pending_at_once(conn, id=pid + ":post2", pending_id=pid)
    assert first.result is Result.CREATED
    assert again.result is Result.EXISTS and again.transfer == first.transfer
    assert other.result is Result.PENDING_ALREADY_POSTED
    assert (await ledger.get_balance(conn, card)).posted == 700

    voided_pid, _, _ = await _pending(conn, 300)
    async with conn.transaction():
        await ledger.void_pending(conn, id=voided_pid + ":void", pending_id=voided_pid)
        after_void = await ledger.post_pending_at_once(conn, id=voided_pid + ":post", pending_id=voided_pid)
        unknown = await ledger.post_pending_at_once(conn, id=_tid(), pending_id="no-such-transfer")
    assert after_void.result is Result.PENDING_ALREADY_VOIDED
    assert unknown.result is Result.PENDING_NOT_FOUND


async def test_post_at_once_refuses_an_expired_reservation_and_a_used_id(conn: asyncpg.Connection) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with conn.transaction():  # one transaction: a running platform's sweeper cannot void it first
        expired_pid, _, card = await _pending(conn, 400, timeout_at=past)
        late = await ledger.post_pending_at_once(conn, id=expired_pid + ":post", pending_id=expired_pid)
    assert late.result is Result.PENDING_EXPIRED
    assert (await ledger.get_balance(conn, card)).posted == 0

    pid, _, card = await _pending(conn, 400)
    used = _tid()
    fund2, card2 = await _funded_pair(conn, 1_000)
    await _transfer(conn, id=used, debit_account_id=fund2, credit_account_id=card2, amount=10)
    async with conn.transaction():
        clash = await ledger.post_pending_at_once(conn, id=used, pending_id=pid)
    assert clash.result is Result.EXISTS_WITH_DIFFERENT_FIELDS
    pending = await ledger.get_transfer(conn, pid)
    assert pending is not None and pending.status == "pending"
    assert (await ledger.get_balance(conn, card)).posted == 0


async def test_post_many_posts_each_and_moves_a_shared_fund_once(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 10_000)
    pids = [_tid() for _ in range(3)]
    for i, pid in enumerate(pids):
        await _transfer(conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=100 * (i + 1), pending=True)
    voided = _tid()
    await _transfer(conn, id=voided, debit_account_id=fund, credit_account_id=card, amount=50, pending=True)
    async with conn.transaction():
        await ledger.void_pending(conn, id=voided + ":void", pending_id=voided)
        created = await ledger.post_pending_many(conn, [(p + ":post", p) for p in [*pids, voided]])
    assert set(created) == {p + ":post" for p in pids}  # the voided one is not posted, nothing changed for it
    assert all(t.kind == "post" and t.status == "posted" for t in created.values())
    card_balance, fund_balance = await ledger.get_balance(conn, card), await ledger.get_balance(conn, fund)
    assert card_balance.posted == 600 and card_balance.credits_pending == 0
    assert fund_balance.debits_pending == 0 and fund_balance.available == 10_000 - 600
    async with conn.transaction():
        again = await ledger.post_pending_many(conn, [(p + ":post", p) for p in pids])
    assert again == {}  # already posted: post_pending answers EXISTS for each
    with pytest.raises(ValueError):
        await ledger.post_pending_many(conn, [("a", pids[0]), ("b", pids[0])])

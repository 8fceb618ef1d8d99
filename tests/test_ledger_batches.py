"""``ledger.create_transfers`` / ``resolve_pending``: a batch in, one outcome per event out, in one
statement; each event judged as if the batch's earlier events had run before it."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from recharge.ledger import transfers as ledger
from recharge.ledger.transfers import AccountKind, NewTransfer, Resolution, Result
from tests.test_ledger import _funded_pair, _tid, _transfer

pytestmark = pytest.mark.usefixtures("audited")


class _Statements:
    """Counts the statements a connection runs inside the ``async with``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.seen = conn, list[str]()

    def log(self, record: asyncpg.connection.LoggedQuery) -> None:
        self.seen.append(record.query)

    async def __aenter__(self) -> _Statements:
        await asyncio.sleep(0)  # asyncpg calls query loggers on the next loop turn
        self.conn.add_query_logger(self.log)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)
        self.conn.remove_query_logger(self.log)


async def _pending(conn: asyncpg.Connection, amount: int, timeout_at: dt.datetime | None = None) -> tuple[str, int, int]:
    fund, card = await _funded_pair(conn, 10_000)
    pid = _tid()
    outcome = await _transfer(
        conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=amount, pending=True, timeout_at=timeout_at
    )
    assert outcome.result is Result.CREATED
    return pid, fund, card


async def _resolve(conn: asyncpg.Connection, *events: Resolution) -> list[Result]:
    async with conn.transaction():
        return [o.result for o in await ledger.resolve_pending(conn, events)]


async def test_a_post_moves_the_reservation_in_one_statement(conn: asyncpg.Connection) -> None:
    pid, fund, card = await _pending(conn, 1_500)
    async with conn.transaction(), _Statements(conn) as counted:
        (posted,) = await ledger.resolve_pending(conn, [Resolution(pid + ":post", pid)])
    assert posted.result is Result.CREATED and len(counted.seen) == 1, counted.seen
    assert posted.transfer is not None and posted.transfer.kind == "post" and posted.transfer.pending_id == pid
    pending = await ledger.get_transfer(conn, pid)
    assert pending is not None and pending.status == "posted"
    card_balance, fund_balance = await ledger.get_balance(conn, card), await ledger.get_balance(conn, fund)
    assert card_balance.posted == 1_500 and card_balance.credits_pending == 0
    assert fund_balance.debits_pending == 0 and fund_balance.available == 10_000 - 1_500


async def test_repeated_posts_and_refusals(conn: asyncpg.Connection) -> None:
    pid, _, card = await _pending(conn, 700)
    async with conn.transaction():
        (first,) = await ledger.resolve_pending(conn, [Resolution(pid + ":post", pid)])
        (again,) = await ledger.resolve_pending(conn, [Resolution(pid + ":post", pid)])
        (other,) = await ledger.resolve_pending(conn, [Resolution(pid + ":post2", pid)])
    assert first.result is Result.CREATED
    assert again.result is Result.EXISTS and again.transfer == first.transfer
    assert other.result is Result.PENDING_ALREADY_POSTED
    assert (await ledger.get_balance(conn, card)).posted == 700

    voided_pid, _, _ = await _pending(conn, 300)
    after_void = await _resolve(
        conn, Resolution(voided_pid + ":void", voided_pid, void=True), Resolution(voided_pid + ":post", voided_pid),
        Resolution(_tid(), "no-such-transfer"),
    )
    assert after_void == [Result.CREATED, Result.PENDING_ALREADY_VOIDED, Result.PENDING_NOT_FOUND]


async def test_a_post_refuses_an_expired_reservation_and_a_used_id(conn: asyncpg.Connection) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with conn.transaction():  # one transaction: a running platform's sweeper cannot void it first
        expired_pid, _, card = await _pending(conn, 400, timeout_at=past)
        (late,) = await ledger.resolve_pending(conn, [Resolution(expired_pid + ":post", expired_pid)])
        (void_late,) = await ledger.resolve_pending(conn, [Resolution(expired_pid + ":void", expired_pid, void=True)])
    assert late.result is Result.PENDING_EXPIRED
    assert void_late.result is Result.CREATED  # an expired reservation can still be voided (the sweeper does)
    assert (await ledger.get_balance(conn, card)).posted == 0

    pid, _, card = await _pending(conn, 400)
    used = _tid()
    fund2, card2 = await _funded_pair(conn, 1_000)
    await _transfer(conn, id=used, debit_account_id=fund2, credit_account_id=card2, amount=10)
    assert await _resolve(conn, Resolution(used, pid)) == [Result.EXISTS_WITH_DIFFERENT_FIELDS]
    pending = await ledger.get_transfer(conn, pid)
    assert pending is not None and pending.status == "pending"
    assert (await ledger.get_balance(conn, card)).posted == 0


async def test_a_batch_of_posts_is_one_statement_and_moves_a_shared_fund_once(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 10_000)
    pids = [_tid() for _ in range(3)]
    for i, pid in enumerate(pids):
        await _transfer(conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=100 * (i + 1), pending=True)
    voided = _tid()
    await _transfer(conn, id=voided, debit_account_id=fund, credit_account_id=card, amount=50, pending=True)
    assert await _resolve(conn, Resolution(voided + ":void", voided, void=True)) == [Result.CREATED]
    posts = [Resolution(p + ":post", p) for p in [*pids, voided]]
    async with conn.transaction(), _Statements(conn) as counted:
        outcomes = await ledger.resolve_pending(conn, posts)
    assert len(counted.seen) == 1
    assert [o.result for o in outcomes] == [Result.CREATED] * 3 + [Result.PENDING_ALREADY_VOIDED]
    assert all(o.transfer is not None and o.transfer.kind == "post" for o in outcomes[:3])
    card_balance, fund_balance = await ledger.get_balance(conn, card), await ledger.get_balance(conn, fund)
    assert card_balance.posted == 600 and card_balance.credits_pending == 0
    assert fund_balance.debits_pending == 0 and fund_balance.available == 10_000 - 600
    assert await _resolve(conn, *posts[:3]) == [Result.EXISTS] * 3
    # The same reservation twice in one batch: the second sees the first's post.
    twice = _tid()
    await _transfer(conn, id=twice, debit_account_id=fund, credit_account_id=card, amount=5, pending=True)
    assert await _resolve(
        conn, Resolution(twice + ":a", twice), Resolution(twice + ":a", twice), Resolution(twice + ":b", twice, void=True)
    ) == [Result.CREATED, Result.EXISTS, Result.PENDING_ALREADY_POSTED]


async def test_a_batch_of_transfers_reserves_credits_in_order(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 100)
    prefix = _tid()
    batch = [NewTransfer(f"{prefix}:{k}", fund, card, amount) for k, amount in enumerate((60, 50, 30, 11))]
    async with conn.transaction(), _Statements(conn) as counted:
        outcomes = await ledger.create_transfers(conn, batch)
    assert len(counted.seen) == 1
    # 60 fits; 50 would exceed (refused, takes nothing); 30 fits beside the 60; 11 would exceed.
    assert [o.result for o in outcomes] == [
        Result.CREATED, Result.EXCEEDS_CREDITS, Result.CREATED, Result.EXCEEDS_CREDITS,
    ]
    assert outcomes[1].transfer is None and await ledger.get_transfer(conn, f"{prefix}:1") is None
    assert (await ledger.get_balance(conn, card)).posted == 90
    assert (await ledger.get_balance(conn, fund)).available == 10

    # What an earlier event of the batch posted to an account it may spend: the card pays 90 on at once.
    shop = await ledger.ensure_account(conn, ledger="CNY", kind=AccountKind.CARD_PURSE, card_no="6" + _tid()[-15:])
    onward = [NewTransfer(f"{prefix}:in", fund, card, 10), NewTransfer(f"{prefix}:out", card, shop, 100),
              NewTransfer(f"{prefix}:more", card, shop, 1)]
    async with conn.transaction():
        assert [o.result for o in await ledger.create_transfers(conn, onward)] == [
            Result.CREATED, Result.CREATED, Result.EXCEEDS_CREDITS,
        ]
    assert (await ledger.get_balance(conn, shop)).posted == 100


async def test_a_batch_answers_each_event_in_precedence_order(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 1_000)
    async with conn.transaction():
        points = await ledger.ensure_account(conn, ledger="PTS", kind=ledger.AccountKind.CARD_POINTS,
                                             card_no="8" + _tid()[-15:])
    known, twin = _tid(), _tid()
    await _transfer(conn, id=known, debit_account_id=fund, credit_account_id=card, amount=10)
    batch = [
        NewTransfer(known, fund, card, 0),  # the amount is checked before the id
        NewTransfer(known, fund, card, 10),
        NewTransfer(known, fund, 999_999_999_999, 10),  # an id that exists comes before a missing account
        NewTransfer(_tid(), fund, fund, 10),
        NewTransfer(_tid(), fund, 999_999_999_999, 10),
        NewTransfer(_tid(), fund, points, 10),
        NewTransfer(twin, fund, card, 20),
        NewTransfer(twin, fund, card, 20),  # the batch's earlier event made it
        NewTransfer(twin, fund, card, 21, pending=True),
        NewTransfer(_tid(), fund, card, 2_000),
    ]
    async with conn.transaction():
        outcomes = await ledger.create_transfers(conn, batch)
    assert [o.result for o in outcomes] == [
        Result.AMOUNT_MUST_BE_POSITIVE, Result.EXISTS, Result.EXISTS_WITH_DIFFERENT_FIELDS, Result.SAME_ACCOUNT,
        Result.ACCOUNT_NOT_FOUND, Result.LEDGER_MISMATCH, Result.CREATED, Result.EXISTS,
        Result.EXISTS_WITH_DIFFERENT_FIELDS, Result.EXCEEDS_CREDITS,
    ]
    assert outcomes[7].transfer == outcomes[6].transfer and outcomes[8].transfer == outcomes[6].transfer
    assert (await ledger.get_balance(conn, card)).posted == 30


async def test_timeouts_are_set_and_cleared_for_pending_transfers_only(conn: asyncpg.Connection) -> None:
    pid, _, _ = await _pending(conn, 100)
    posted, _, _ = await _pending(conn, 100)
    assert await _resolve(conn, Resolution(posted + ":post", posted)) == [Result.CREATED]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    async with conn.transaction():
        changed = await ledger.set_pending_timeouts(conn, [(pid, later), (posted, later), ("no-such-transfer", None)])
    assert changed == {pid}
    held, done = await ledger.get_transfer(conn, pid), await ledger.get_transfer(conn, posted)
    assert held is not None and held.timeout_at == later
    assert done is not None and done.timeout_at is None
    async with conn.transaction():
        assert await ledger.set_pending_timeouts(conn, [(pid, None)]) == {pid}
    cleared = await ledger.get_transfer(conn, pid)
    assert cleared is not None and cleared.timeout_at is None

"""The ledger's guarantees: idempotency, two-phase transfers, timeouts, no overdraft, concurrency."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable

import asyncpg
import pytest

from app.demo import external_account, fund_recharge_fund
from app.fixtures import fresh_merchant_code
from recharge import db
from recharge.ledger import transfers as ledger
from recharge.ledger.audit import audit
from recharge.ledger.transfers import AccountKind, Result
from recharge.merchants import ensure_merchant
from recharge.sweeper import sweep_once
from tests.conftest import sweep_until, unique_digits

pytestmark = pytest.mark.usefixtures("audited")


async def _funded_pair(conn: asyncpg.Connection, fund_cents: int) -> tuple[int, int]:
    """A merchant recharge fund holding ``fund_cents`` and a fresh card purse."""
    async with conn.transaction():
        merchant = await ensure_merchant(conn, await fresh_merchant_code(conn), "ledger test")
        fund = await fund_recharge_fund(conn, merchant, fund_cents, f"t:{unique_digits(12)}") if fund_cents else (
            await ledger.ensure_account(conn, ledger="CNY", kind=AccountKind.RECHARGE_FUND, merchant_id=merchant)
        )
        card = await ledger.ensure_account(
            conn, ledger="CNY", kind=AccountKind.CARD_PURSE, card_no="9" + unique_digits(15)
        )
    return fund, card


def _tid() -> str:
    return "test:" + unique_digits(16)


async def _transfer(conn: asyncpg.Connection, **kw: object) -> ledger.Outcome:
    async with conn.transaction():
        return await _create(conn, **kw)


async def _create(conn: asyncpg.Connection, **kw: object) -> ledger.Outcome:
    return (await ledger.create_transfers(conn, [ledger.NewTransfer(**kw)]))[0]  # type: ignore[arg-type]


async def _post(conn: asyncpg.Connection, *, id: str, pending_id: str) -> ledger.Outcome:
    return (await ledger.resolve_pending(conn, [ledger.Resolution(id, pending_id)]))[0]


async def _void(conn: asyncpg.Connection, *, id: str, pending_id: str) -> ledger.Outcome:
    return (await ledger.resolve_pending(conn, [ledger.Resolution(id, pending_id, void=True)]))[0]


async def test_posted_transfer_moves_balances_and_retry_with_same_id_returns_exists(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 10_000)
    tid = _tid()
    first = await _transfer(conn, id=tid, debit_account_id=fund, credit_account_id=card, amount=700)
    again = await _transfer(conn, id=tid, debit_account_id=fund, credit_account_id=card, amount=700)
    assert first.result is Result.CREATED
    assert again.result is Result.EXISTS and again.transfer == first.transfer
    assert (await ledger.get_balance(conn, card)).posted == 700
    assert (await ledger.get_balance(conn, fund)).posted == 9_300


async def test_outcomes_without_details_judge_alike_and_carry_no_transfer(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 1_000)
    tid, too_much = _tid(), _tid()
    async with conn.transaction():
        lean = await ledger.create_transfers(conn, [ledger.NewTransfer(tid, fund, card, 700),
                                                    ledger.NewTransfer(too_much, fund, card, 700)], details=False)
    assert [(o.result, o.transfer) for o in lean] == [(Result.CREATED, None), (Result.EXCEEDS_CREDITS, None)]
    again = await _transfer(conn, id=tid, debit_account_id=fund, credit_account_id=card, amount=700)
    assert again.result is Result.EXISTS and again.transfer is not None and again.transfer.amount == 700
    assert (await ledger.get_balance(conn, card)).posted == 700


async def test_same_id_with_different_amount_is_refused_and_changes_nothing(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 10_000)
    tid = _tid()
    await _transfer(conn, id=tid, debit_account_id=fund, credit_account_id=card, amount=100)
    conflict = await _transfer(conn, id=tid, debit_account_id=fund, credit_account_id=card, amount=200)
    assert conflict.result is Result.EXISTS_WITH_DIFFERENT_FIELDS
    assert (await ledger.get_balance(conn, card)).posted == 100


async def test_overdraft_is_refused_counting_pending_debits(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 1_000)
    held = await _transfer(conn, id=_tid(), debit_account_id=fund, credit_account_id=card, amount=800, pending=True)
    too_much = await _transfer(conn, id=_tid(), debit_account_id=fund, credit_account_id=card, amount=201)
    exact = await _transfer(conn, id=_tid(), debit_account_id=fund, credit_account_id=card, amount=200)
    assert held.result is Result.CREATED
    assert too_much.result is Result.EXCEEDS_CREDITS
    assert exact.result is Result.CREATED
    balance = await ledger.get_balance(conn, fund)
    assert balance.available == 0 and balance.debits_pending == 800


async def test_pending_then_post_moves_reservation_to_posted(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 5_000)
    pid = _tid()
    await _transfer(conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=1_500, pending=True)
    assert (await ledger.get_balance(conn, card)).posted == 0
    async with conn.transaction():
        posted = await _post(conn, id=pid + ":post", pending_id=pid)
    async with conn.transaction():
        repost = await _post(conn, id=pid + ":post", pending_id=pid)
        second_post = await _post(conn, id=pid + ":post2", pending_id=pid)
        void_after = await _void(conn, id=pid + ":void", pending_id=pid)
    assert posted.result is Result.CREATED and repost.result is Result.EXISTS
    assert second_post.result is Result.PENDING_ALREADY_POSTED
    assert void_after.result is Result.PENDING_ALREADY_POSTED
    card_balance = await ledger.get_balance(conn, card)
    assert card_balance.posted == 1_500 and card_balance.credits_pending == 0


async def test_pending_then_void_releases_reservation(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 5_000)
    pid = _tid()
    await _transfer(conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=5_000, pending=True)
    async with conn.transaction():
        voided = await _void(conn, id=pid + ":void", pending_id=pid)
        post_after = await _post(conn, id=pid + ":post", pending_id=pid)
    assert voided.result is Result.CREATED
    assert post_after.result is Result.PENDING_ALREADY_VOIDED
    fund_balance = await ledger.get_balance(conn, fund)
    assert fund_balance.available == 5_000 and fund_balance.debits_pending == 0
    assert (await ledger.get_balance(conn, card)).posted == 0


async def test_post_of_unknown_pending_transfer_is_refused(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        outcome = await _post(conn, id=_tid(), pending_id="no-such-transfer")
    assert outcome.result is Result.PENDING_NOT_FOUND


async def test_expired_pending_cannot_post_and_sweeper_voids_it(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 3_000)
    pid = _tid()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    # One transaction: a running platform's sweeper cannot void it between the two steps.
    async with conn.transaction():
        await _transfer(conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=3_000, pending=True,
                        timeout_at=past)
        late_post = await _post(conn, id=pid + ":post", pending_id=pid)
    assert late_post.result is Result.PENDING_EXPIRED

    async def voided() -> bool:
        found = await ledger.get_transfer(conn, pid)
        return found is not None and found.status == "voided"

    await sweep_until(pool, voided)
    transfer = await ledger.get_transfer(conn, pid)
    assert transfer is not None and transfer.status == "voided"
    assert (await ledger.get_balance(conn, fund)).available == 3_000


async def test_held_pending_transfer_is_never_swept(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 3_000)
    pid = _tid()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    async with conn.transaction():  # one transaction: no sweeper sees it before the hold
        await _transfer(conn, id=pid, debit_account_id=fund, credit_account_id=card, amount=1_000, pending=True,
                        timeout_at=past)
        assert await ledger.set_pending_timeouts(conn, [(pid, None)]) == {pid}
    while await sweep_once(pool):
        pass
    transfer = await ledger.get_transfer(conn, pid)
    assert transfer is not None and transfer.status == "pending" and transfer.timeout_at is None


async def test_transfer_across_ledgers_is_refused(conn: asyncpg.Connection) -> None:
    fund, _ = await _funded_pair(conn, 1_000)
    async with conn.transaction():
        points = await ledger.ensure_account(conn, ledger="PTS", kind=AccountKind.CARD_POINTS, card_no="8" + unique_digits(15))
    outcome = await _transfer(conn, id=_tid(), debit_account_id=fund, credit_account_id=points, amount=1)
    assert outcome.result is Result.LEDGER_MISMATCH


async def test_non_positive_amount_is_refused(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 1_000)
    for amount in (0, -5):
        outcome = await _transfer(conn, id=_tid(), debit_account_id=fund, credit_account_id=card, amount=amount)
        assert outcome.result is Result.AMOUNT_MUST_BE_POSITIVE


async def test_concurrent_transfers_between_few_accounts_lose_no_update(pool: asyncpg.Pool) -> None:
    """Many tasks move money back and forth between three accounts in both directions;
    deadlocks are avoided or retried and every created transfer is reflected exactly."""
    async with pool.acquire() as c, c.transaction():
        accounts = []
        for _ in range(3):
            acc = await ledger.ensure_account(c, ledger="CNY", kind=AccountKind.CARD_PURSE, card_no="7" + unique_digits(15))
            await _create(
                c, id=_tid(), debit_account_id=await external_account(c), credit_account_id=acc, amount=10_000
            )
            accounts.append(acc)
    rng = random.Random(20261121)
    plan = [(rng.sample(accounts, 2), rng.randint(1, 500), _tid()) for _ in range(300)]

    async def move(pair: list[int], amount: int, tid: str) -> Result:
        async def work(conn: asyncpg.Connection) -> Result:
            return (await _create(conn, id=tid, debit_account_id=pair[0], credit_account_id=pair[1], amount=amount)).result

        return await db.retry_transaction(pool, work)

    results = await asyncio.gather(*(move(*step) for step in plan))
    expected = dict.fromkeys(accounts, 10_000)
    for (pair, amount, _), result in zip(plan, results, strict=True):
        assert result in (Result.CREATED, Result.EXCEEDS_CREDITS)
        if result is Result.CREATED:
            expected[pair[0]] -= amount
            expected[pair[1]] += amount
    async with pool.acquire() as c:
        for acc, cents in expected.items():
            assert (await ledger.get_balance(c, acc)).posted == cents


async def test_audit_catches_a_corrupted_balance(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as c:
        fund, card = await _funded_pair(c, 1_000)
        await _transfer(c, id=_tid(), debit_account_id=fund, credit_account_id=card, amount=10)
        tx = c.transaction()
        await tx.start()
        try:
            await c.execute("UPDATE accounts SET credits_posted = credits_posted + 1 WHERE id = $1", card)
            report = await audit(c)
        finally:
            await tx.rollback()
        assert not report.ok
        assert any(f"account {card} " in p for p in report.problems)
        assert any("CNY" in p and "sum" in p for p in report.problems)
        assert (await audit(c)).ok


async def test_a_transfer_is_one_statement_and_a_post_one(conn: asyncpg.Connection) -> None:
    fund, card = await _funded_pair(conn, 1000)
    seen: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        seen.append(record.query)

    async def statements(work: Awaitable[ledger.Outcome]) -> tuple[ledger.Outcome, int]:
        await asyncio.sleep(0)  # asyncpg calls query loggers on the next loop turn
        seen.clear()
        outcome = await work
        await asyncio.sleep(0)
        return outcome, len(seen)

    conn.add_query_logger(log)
    try:
        async with conn.transaction():
            created, n = await statements(_create(
                conn, id=_tid(), debit_account_id=fund, credit_account_id=card, amount=100
            ))
            assert created.result is Result.CREATED and n == 1, seen
            pending_id = _tid()
            await _create(
                conn, id=pending_id, debit_account_id=fund, credit_account_id=card, amount=50, pending=True
            )
            posted, n = await statements(_post(conn, id=_tid(), pending_id=pending_id))
            assert posted.result is Result.CREATED and n == 1, seen  # judged and written in one statement
    finally:
        conn.remove_query_logger(log)
    assert (await ledger.get_balance(conn, card)).posted == 150
    assert (await ledger.get_balance(conn, fund)).available == 1000 - 150


async def test_the_same_transfer_sent_twice_at_once_is_created_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        fund, card = await _funded_pair(conn, 1000)
    transfer_id = _tid()

    async def send() -> ledger.Outcome:
        async with pool.acquire() as conn, conn.transaction():
            outcome = await _create(
                conn, id=transfer_id, debit_account_id=fund, credit_account_id=card, amount=300
            )
            await asyncio.sleep(0.05)  # hold the account locks while the twin waits for them
            return outcome

    results = sorted(o.result.value for o in await asyncio.gather(send(), send(), send()))
    assert results == ["created", "exists", "exists"]
    async with pool.acquire() as conn:
        assert (await ledger.get_balance(conn, card)).posted == 300

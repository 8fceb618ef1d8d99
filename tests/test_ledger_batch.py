"""The group-commit batcher (recharge.ledger.group_commit): shared transactions, isolation, retries, bounds, durability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.demo import fund_recharge_fund
from app.fixtures import fresh_merchant_code
from recharge.context import Busy
from recharge.ledger import transfers as ledger
from recharge.ledger.group_commit import Batcher
from recharge.ledger.transfers import AccountKind
from recharge.merchants import ensure_merchant
from tests.conftest import scratch_table, unique_digits

pytestmark = pytest.mark.usefixtures("audited")


@pytest.fixture
async def probe(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A scratch table of its own: (k int primary key, v int)."""
    async with scratch_table(pool, "ledger_batch_probe", "k int PRIMARY KEY, v int NOT NULL DEFAULT 0") as name:
        yield name


async def _fund_and_purses(pool: asyncpg.Pool, fund_cents: int, purses: int) -> tuple[int, list[int]]:
    async with pool.acquire() as c, c.transaction():
        merchant = await ensure_merchant(c, await fresh_merchant_code(c), "batch test")
        fund = await fund_recharge_fund(c, merchant, fund_cents, f"batch:{unique_digits(12)}")
        cards = [
            await ledger.ensure_account(
                c, ledger="CNY", kind=AccountKind.CARD_PURSE, card_no="7" + unique_digits(15), name="purse"
            )
            for _ in range(purses)
        ]
    return fund, cards


def _transfer(fund: int, card: int, amount: int, transfer_id: str):  # type: ignore[no-untyped-def]
    async def work(conn: asyncpg.Connection) -> int:
        move = ledger.NewTransfer(transfer_id, fund, card, amount, code="batch_test")
        (await ledger.create_transfers(conn, [move]))[0].check(transfer_id)
        return int(await conn.fetchval("SELECT txid_current()"))

    return work


async def test_concurrent_steps_on_one_hot_fund_commit_in_fewer_transactions(pool: asyncpg.Pool) -> None:
    fund, cards = await _fund_and_purses(pool, 10_000, 40)
    batcher = Batcher(pool, max_batch=16, max_wait_ms=5)
    prefix = f"batch:{unique_digits(12)}"
    txids = await asyncio.gather(
        *(batcher.run(_transfer(fund, card, 25, f"{prefix}:{i}"), hot=True) for i, card in enumerate(cards))
    )
    stats = batcher.stats
    assert stats.steps == 40
    assert stats.batches < 40 and len(set(txids)) == stats.batches
    async with pool.acquire() as c:
        assert (await ledger.get_balance(c, fund)).available == 10_000 - 40 * 25
        for card in cards:
            assert (await ledger.get_balance(c, card)).posted == 25
    await batcher.wait_idle()


async def test_a_failing_step_rolls_back_alone_and_its_batch_mates_commit(pool: asyncpg.Pool) -> None:
    fund, (card_a, card_b, card_c, card_d) = await _fund_and_purses(pool, 1_000, 4)
    batcher = Batcher(pool, max_batch=4, max_wait_ms=500)
    prefix = f"batch:{unique_digits(12)}"

    async def wrote_then_refused(conn: asyncpg.Connection) -> None:
        await _transfer(fund, card_b, 100, f"{prefix}:b")(conn)
        raise LookupError("refused after writing")

    async def sql_error(conn: asyncpg.Connection) -> None:
        await _transfer(fund, card_d, 100, f"{prefix}:d")(conn)
        await conn.execute("SELECT 1 / 0")

    results = await asyncio.gather(
        batcher.run(_transfer(fund, card_a, 100, f"{prefix}:a")),
        batcher.run(wrote_then_refused),
        batcher.run(_transfer(fund, card_c, 100, f"{prefix}:c")),
        batcher.run(sql_error),
        return_exceptions=True,
    )
    assert isinstance(results[0], int) and isinstance(results[2], int) and results[0] == results[2]
    assert isinstance(results[1], LookupError)
    assert isinstance(results[3], asyncpg.DivisionByZeroError)
    assert batcher.stats.batches == 1
    async with pool.acquire() as c:
        assert (await ledger.get_balance(c, card_a)).posted == 100
        assert (await ledger.get_balance(c, card_c)).posted == 100
        assert (await ledger.get_balance(c, card_b)).posted == 0
        assert (await ledger.get_balance(c, card_d)).posted == 0
        assert await ledger.get_transfer(c, f"{prefix}:b") is None
        assert (await ledger.get_balance(c, fund)).available == 800


async def test_hot_steps_run_after_the_other_steps_of_their_batch(pool: asyncpg.Pool) -> None:
    batcher = Batcher(pool, max_batch=4, max_wait_ms=500)
    order: list[str] = []

    def step(name: str):  # type: ignore[no-untyped-def]
        async def work(conn: asyncpg.Connection) -> None:
            order.append(name)

        return work

    await asyncio.gather(
        batcher.run(step("hot1"), hot=True), batcher.run(step("cold1")),
        batcher.run(step("hot2"), hot=True), batcher.run(step("cold2")),
    )
    assert order == ["cold1", "cold2", "hot1", "hot2"]


async def test_a_deadlock_rolls_the_whole_batch_back_and_runs_it_once_more(pool: asyncpg.Pool, probe: str) -> None:
    async with pool.acquire() as c:
        await c.execute(f"INSERT INTO {probe} (k) VALUES (1), (2)")
    batcher = Batcher(pool, max_batch=2, max_wait_ms=500)
    runs = {"first": 0, "second": 0}

    async def first(conn: asyncpg.Connection) -> None:
        runs["first"] += 1
        await conn.execute("SET LOCAL deadlock_timeout = '400ms'")  # this side detects the cycle
        await conn.execute(f"UPDATE {probe} SET v = v + 1 WHERE k = 2")

    async def second(conn: asyncpg.Connection) -> None:
        runs["second"] += 1
        await conn.execute(f"UPDATE {probe} SET v = v + 10 WHERE k = 1")  # waits for the other side

    async with pool.acquire() as other:
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute("SET LOCAL deadlock_timeout = '30s'")
        await other.execute(f"UPDATE {probe} SET v = v + 100 WHERE k = 1")
        batch = asyncio.gather(batcher.run(first), batcher.run(second))
        await asyncio.sleep(0.15)  # the batch now waits for row 1; close the cycle on row 2
        await other.execute(f"UPDATE {probe} SET v = v + 1000 WHERE k = 2")  # returns once the batch rolled back
        await other_tx.commit()
        await asyncio.wait_for(batch, 10)
    assert batcher.stats.retries >= 1 and runs["first"] >= 2 and runs["second"] >= 2
    async with pool.acquire() as c:
        values = dict(await c.fetch(f"SELECT k, v FROM {probe} ORDER BY k"))
    assert values == {1: 110, 2: 1001}  # each side's update applied exactly once


async def test_a_full_queue_answers_busy_at_once(pool: asyncpg.Pool) -> None:
    batcher = Batcher(pool, max_batch=1, max_wait_ms=0, queue_depth=2, pipeline=1)
    gate = asyncio.Event()

    async def blocked(conn: asyncpg.Connection) -> str:
        await gate.wait()
        return "first"

    async def quick(conn: asyncpg.Connection) -> str:
        return "queued"

    running = asyncio.ensure_future(batcher.run(blocked))
    await asyncio.sleep(0.05)  # the first step is running, the queue is empty
    queued = [asyncio.ensure_future(batcher.run(quick)) for _ in range(2)]
    await asyncio.sleep(0)
    assert batcher.queued == 2
    with pytest.raises(Busy):
        await batcher.run(quick)
    gate.set()
    assert await running == "first"
    assert await asyncio.gather(*queued) == ["queued", "queued"]


async def test_callers_are_answered_only_once_their_step_is_committed(pool: asyncpg.Pool, probe: str) -> None:
    batcher = Batcher(pool, max_batch=8, max_wait_ms=2)

    async def insert(k: int) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(f"INSERT INTO {probe} (k) VALUES ($1)", k)

        await batcher.run(work)
        async with pool.acquire() as other:  # another session sees it the moment the caller hears back
            assert await other.fetchval(f"SELECT count(*) FROM {probe} WHERE k = $1", k) == 1

    await asyncio.gather(*(insert(k) for k in range(8)))


async def test_a_batch_whose_commit_fails_reports_no_success_to_anyone(pool: asyncpg.Pool) -> None:
    name = f"ledger_batch_deferred_{unique_digits(10)}"
    async with pool.acquire() as c:
        await c.execute(f"CREATE TABLE {name} (k int, CONSTRAINT {name}_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)")
    try:
        batcher = Batcher(pool, max_batch=3, max_wait_ms=500)

        def insert(k: int):  # type: ignore[no-untyped-def]
            async def work(conn: asyncpg.Connection) -> str:
                await conn.execute(f"INSERT INTO {name} (k) VALUES ($1)", k)
                return "inserted"

            return work

        # Each step succeeds on its own; the duplicate only fails at COMMIT.
        results = await asyncio.gather(
            batcher.run(insert(1)), batcher.run(insert(1)), batcher.run(insert(2)), return_exceptions=True
        )
        assert all(isinstance(r, asyncpg.UniqueViolationError) for r in results), results
        async with pool.acquire() as c:
            assert await c.fetchval(f"SELECT count(*) FROM {name}") == 0
        assert batcher.stats.batches == 0
    finally:
        async with pool.acquire() as c:
            await c.execute(f"DROP TABLE {name}")


async def test_the_batcher_lets_its_connections_go_when_idle(pool: asyncpg.Pool) -> None:
    batcher = Batcher(pool, max_batch=4, max_wait_ms=1)

    async def work(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT 1"))

    assert await asyncio.gather(*(batcher.run(work) for _ in range(20))) == [1] * 20
    await batcher.wait_idle()
    assert batcher._spare == []


async def test_reads_beyond_max_readers_wait_their_turn_and_all_are_answered(pool: asyncpg.Pool) -> None:
    batcher = Batcher(pool, max_batch=4, max_wait_ms=1, max_readers=2)
    running = peak = 0
    backends: set[int] = set()

    async def read(conn: asyncpg.Connection) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            backends.add(int(await conn.fetchval("SELECT pg_backend_pid()")))
            await asyncio.sleep(0.02)  # long enough for every caller to arrive meanwhile
            return int(await conn.fetchval("SELECT 41 + 1"))
        finally:
            running -= 1

    answers = await asyncio.gather(*(batcher.read(read) for _ in range(9)))
    assert answers == [42] * 9
    assert peak == 2 and len(backends) <= 2
    await batcher.wait_idle()
    with pytest.raises(ValueError):
        Batcher(pool, max_batch=4, max_wait_ms=1, max_readers=0)


async def test_a_read_that_finds_no_reader_free_in_time_is_busy(pool: asyncpg.Pool) -> None:
    batcher = Batcher(pool, max_batch=4, max_wait_ms=1, max_readers=1, read_wait_s=0.05)
    started = asyncio.Event()

    async def slow(conn: asyncpg.Connection) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "slow"

    first = asyncio.create_task(batcher.read(slow))
    await started.wait()
    with pytest.raises(Busy):
        await batcher.read(slow)
    assert await first == "slow"
    assert await batcher.read(lambda conn: conn.fetchval("SELECT 'free again'")) == "free again"
    await batcher.wait_idle()

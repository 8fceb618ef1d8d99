"""The group commit (recharge.ledger.group_commit): items of concurrent callers done by their groups in
shared transactions; refusals are answers; failures, retries, bounds, durability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.demo import fund_recharge_fund
from app.fixtures import fresh_merchant_code
from recharge.context import Busy
from recharge.ledger import transfers as ledger
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import Group, GroupCommit, ItemFailed
from recharge.ledger.transfers import AccountKind, NewTransfer, Result
from recharge.merchants import ensure_merchant
from tests.conftest import eventually, scratch_table, unique_digits

pytestmark = pytest.mark.usefixtures("audited")


def _writer(pool: asyncpg.Pool, *, max_kept: int = 4, linger_ms: float = 0.0, **limits: Any) -> GroupCommit:
    return GroupCommit(KeptConnections(pool, max_kept=max_kept, linger_ms=linger_ms), **limits)


@pytest.fixture
async def probe(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A scratch table of its own: (k int primary key, v int)."""
    async with scratch_table(pool, "group_commit_probe", "k int PRIMARY KEY CHECK (k < 1000), v int NOT NULL DEFAULT 0") as name:
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


async def _transfer_all(conn: asyncpg.Connection, items: list[NewTransfer]) -> list[tuple[Result, int]]:
    """The group of the tests below: every transfer in one statement; each answered (result, txid)."""
    outcomes = await ledger.create_transfers(conn, items)
    txid = int(await conn.fetchval("SELECT txid_current()"))
    return [(o.result, txid) for o in outcomes]


TRANSFERS = Group("transfers", _transfer_all, hot=True)


def _probe_group(table: str, calls: list[list[int]], name: str = "probe", hot: bool = False) -> Group[int, str]:
    async def run_all(conn: asyncpg.Connection, items: list[int]) -> list[str]:
        calls.append(list(items))
        await conn.execute(f"INSERT INTO {table} (k, v) SELECT k, 1 FROM unnest($1::int[]) AS k", items)
        return [f"{name} {k}" for k in items]

    return Group(name, run_all, hot=hot)


async def test_concurrent_items_on_one_hot_fund_commit_in_fewer_transactions(pool: asyncpg.Pool) -> None:
    fund, cards = await _fund_and_purses(pool, 10_000, 40)
    writer = _writer(pool, max_batch=16, max_wait_ms=5)
    prefix = f"batch:{unique_digits(12)}"
    answers = await asyncio.gather(
        *(writer.submit(TRANSFERS, NewTransfer(f"{prefix}:{i}", fund, card, 25)) for i, card in enumerate(cards))
    )
    stats = writer.stats
    assert stats.steps == 40 and all(result is Result.CREATED for result, _ in answers)
    assert stats.batches < 40 and len({txid for _, txid in answers}) == stats.batches
    async with pool.acquire() as c:
        assert (await ledger.get_balance(c, fund)).available == 10_000 - 40 * 25
        for card in cards:
            assert (await ledger.get_balance(c, card)).posted == 25
    await writer.wait_idle()


async def test_a_refused_item_is_answered_its_refusal_and_its_batch_mates_commit(pool: asyncpg.Pool) -> None:
    fund, (card_a, card_b, card_c) = await _fund_and_purses(pool, 1_000, 3)
    writer = _writer(pool, max_batch=3, max_wait_ms=500)
    prefix = f"batch:{unique_digits(12)}"
    answers = await asyncio.gather(
        writer.submit(TRANSFERS, NewTransfer(f"{prefix}:a", fund, card_a, 600)),
        writer.submit(TRANSFERS, NewTransfer(f"{prefix}:b", fund, card_b, 500)),  # would overdraw the fund
        writer.submit(TRANSFERS, NewTransfer(f"{prefix}:c", fund, card_c, 400)),
    )
    assert [result for result, _ in answers] == [Result.CREATED, Result.EXCEEDS_CREDITS, Result.CREATED]
    assert len({txid for _, txid in answers}) == 1 and writer.stats.batches == 1  # one transaction, never rerun
    async with pool.acquire() as c:
        assert [(await ledger.get_balance(c, card)).posted for card in (card_a, card_b, card_c)] == [600, 0, 400]
        assert await ledger.get_transfer(c, f"{prefix}:b") is None
        assert (await ledger.get_balance(c, fund)).available == 0
    await writer.wait_idle()


async def test_a_failing_group_fails_its_own_callers_and_the_batch_commits_without_it(
    pool: asyncpg.Pool, probe: str
) -> None:
    calls: list[list[int]] = []
    good = _probe_group(probe, calls, "good")
    bad = _probe_group(probe, calls, "bad")  # 1001 breaks the CHECK: the whole statement fails
    writer = _writer(pool, max_batch=5, max_wait_ms=500)
    results = await asyncio.gather(
        writer.submit(good, 1), writer.submit(bad, 2), writer.submit(good, 3), writer.submit(bad, 1001),
        return_exceptions=True,
    )
    assert results[0] == "good 1" and results[2] == "good 3"
    assert isinstance(results[1], asyncpg.CheckViolationError) and results[3] is results[1]
    assert calls == [[1, 3], [2, 1001], [1, 3]]  # the batch again without the failed group: whole, not item by item
    assert writer.stats.batches == 1
    async with pool.acquire() as c:
        assert dict(await c.fetch(f"SELECT k, v FROM {probe} ORDER BY k")) == {1: 1, 3: 1}
    await writer.wait_idle()


async def test_an_item_that_fails_fails_only_its_caller_and_the_batch_commits_without_it(
    pool: asyncpg.Pool, probe: str
) -> None:
    calls: list[list[int]] = []

    async def one_by_one(conn: asyncpg.Connection, items: list[int]) -> list[str]:
        calls.append(list(items))
        for index, k in enumerate(items):
            try:  # 1001 breaks the CHECK and aborts the transaction
                await conn.execute(f"INSERT INTO {probe} (k, v) VALUES ($1, 1)", k)
            except asyncpg.PostgresError as exc:
                raise ItemFailed(index, exc) from exc
        return [f"item {k}" for k in items]

    writer = _writer(pool, max_batch=4, max_wait_ms=500)
    group = Group("one by one", one_by_one)
    results = await asyncio.gather(
        writer.submit(group, 1), writer.submit(group, 1001), writer.submit(group, 3), return_exceptions=True,
    )
    assert results[0] == "item 1" and results[2] == "item 3"
    assert isinstance(results[1], asyncpg.CheckViolationError)
    assert calls == [[1, 1001, 3], [1, 3]] and writer.stats.batches == 1
    async with pool.acquire() as c:
        assert dict(await c.fetch(f"SELECT k, v FROM {probe} ORDER BY k")) == {1: 1, 3: 1}
    await writer.wait_idle()


async def test_a_batch_hands_each_group_its_items_in_one_call_hot_groups_last(pool: asyncpg.Pool, probe: str) -> None:
    calls: list[list[int]] = []
    hot, cold = _probe_group(probe, calls, "hot", hot=True), _probe_group(probe, calls, "cold")
    writer = _writer(pool, max_batch=4, max_wait_ms=500)
    answers = await asyncio.gather(
        writer.submit(hot, 1), writer.submit(cold, 2), writer.submit(hot, 3), writer.submit(cold, 4),
    )
    assert answers == ["hot 1", "cold 2", "hot 3", "cold 4"]
    assert calls == [[2, 4], [1, 3]]
    await writer.wait_idle()


async def test_a_deadlock_rolls_the_whole_batch_back_and_runs_it_once_more(pool: asyncpg.Pool, probe: str) -> None:
    async with pool.acquire() as c:
        await c.execute(f"INSERT INTO {probe} (k) VALUES (1), (2)")
    runs = {"first": 0, "second": 0}

    async def first(conn: asyncpg.Connection, items: list[int]) -> list[None]:
        runs["first"] += 1
        await conn.execute("SET LOCAL deadlock_timeout = '400ms'")  # this side detects the cycle
        await conn.execute(f"UPDATE {probe} SET v = v + 1 WHERE k = 2")
        return [None for _ in items]

    async def second(conn: asyncpg.Connection, items: list[int]) -> list[None]:
        runs["second"] += 1
        await conn.execute(f"UPDATE {probe} SET v = v + 10 WHERE k = 1")  # waits for the other side
        return [None for _ in items]

    writer = _writer(pool, max_batch=2, max_wait_ms=500)
    async with pool.acquire() as other, pool.acquire() as other_check:
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute("SET LOCAL deadlock_timeout = '30s'")
        await other.execute(f"UPDATE {probe} SET v = v + 100 WHERE k = 1")
        batch = asyncio.gather(writer.submit(Group("first", first), 0), writer.submit(Group("second", second), 0))
        waiting = ("SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                   f" AND query = 'UPDATE {probe} SET v = v + 10 WHERE k = 1'")
        await eventually(lambda: other_check.fetchval(waiting), "the batch waiting for row 1")
        # ... so close the cycle on row 2
        await other.execute(f"UPDATE {probe} SET v = v + 1000 WHERE k = 2")  # returns once the batch rolled back
        await other_tx.commit()
        await asyncio.wait_for(batch, 10)
    assert writer.stats.retries >= 1 and runs["first"] >= 2 and runs["second"] >= 2
    async with pool.acquire() as c:
        values = dict(await c.fetch(f"SELECT k, v FROM {probe} ORDER BY k"))
    assert values == {1: 110, 2: 1001}  # each side's update applied exactly once
    await writer.wait_idle()


def _gate_group(gate: asyncio.Event, entered: asyncio.Event) -> Group[str, str]:
    async def run_all(conn: asyncpg.Connection, items: list[str]) -> list[str]:
        entered.set()
        await gate.wait()
        return items

    return Group("gated", run_all)


async def test_a_full_queue_answers_busy_at_once(pool: asyncpg.Pool) -> None:
    writer = _writer(pool, max_batch=1, max_wait_ms=0, queue_depth=2, pipeline=1)
    gate, entered = asyncio.Event(), asyncio.Event()
    group = _gate_group(gate, entered)
    running = asyncio.ensure_future(writer.submit(group, "first"))
    await eventually(entered.is_set, "the first item running")  # ... and the queue empty
    assert writer.queued == 0
    queued = [asyncio.ensure_future(writer.submit(group, "queued")) for _ in range(2)]
    await asyncio.sleep(0)
    assert writer.queued == 2
    with pytest.raises(Busy):
        await writer.submit(group, "one too many")
    gate.set()
    assert await running == "first"
    assert await asyncio.gather(*queued) == ["queued", "queued"]
    await writer.wait_idle()


async def test_callers_are_answered_only_once_their_item_is_committed(pool: asyncpg.Pool, probe: str) -> None:
    writer = _writer(pool, max_batch=8, max_wait_ms=2)
    group = _probe_group(probe, [])

    async def insert(k: int) -> None:
        await writer.submit(group, k)
        async with pool.acquire() as other:  # another session sees it the moment the caller hears back
            assert await other.fetchval(f"SELECT count(*) FROM {probe} WHERE k = $1", k) == 1

    await asyncio.gather(*(insert(k) for k in range(8)))
    await writer.wait_idle()


async def test_a_batch_whose_commit_fails_reports_no_success_to_anyone(pool: asyncpg.Pool) -> None:
    name = f"group_commit_deferred_{unique_digits(10)}"
    async with pool.acquire() as c:
        await c.execute(f"CREATE TABLE {name} (k int, CONSTRAINT {name}_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)")
    try:
        writer = _writer(pool, max_batch=3, max_wait_ms=500)

        async def insert(conn: asyncpg.Connection, items: list[int]) -> list[str]:
            await conn.execute(f"INSERT INTO {name} (k) SELECT * FROM unnest($1::int[])", items)
            return ["inserted" for _ in items]

        group = Group("insert", insert)
        # The statement succeeds; the duplicate only fails at COMMIT.
        results = await asyncio.gather(
            writer.submit(group, 1), writer.submit(group, 1), writer.submit(group, 2), return_exceptions=True
        )
        assert all(isinstance(r, asyncpg.UniqueViolationError) for r in results), results
        async with pool.acquire() as c:
            assert await c.fetchval(f"SELECT count(*) FROM {name}") == 0
        assert writer.stats.batches == 0
        await writer.wait_idle()
    finally:
        async with pool.acquire() as c:
            await c.execute(f"DROP TABLE {name}")


async def test_the_group_commit_lets_its_connections_go_when_idle(pool: asyncpg.Pool) -> None:
    writer = _writer(pool, max_batch=4, max_wait_ms=1)

    async def one(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        return [int(await conn.fetchval("SELECT 1")) for _ in items]

    group = Group("one", one)
    assert await asyncio.gather(*(writer.submit(group, k) for k in range(20))) == [1] * 20
    await writer.wait_idle()
    assert writer.connections.kept == 0
    with pytest.raises(ValueError):
        _writer(pool, max_batch=0, max_wait_ms=1)


async def test_a_kept_connection_released_by_the_pool_when_it_died_is_replaced(pool: asyncpg.Pool) -> None:
    """Found by the chaos harness (make chaos, seed 1976022878): during a database restart a kept
    connection died and asyncpg released its proxy back to the pool; the next batch called
    ``is_closed()`` on the detached proxy, got InterfaceError, and DD17 answered 0xEE, not 0xDD."""
    kept = KeptConnections(pool, max_kept=2, linger_ms=10_000)
    kept.enter()
    holder, conn = await kept.take()
    await kept.give_back(holder, conn, clean=True)
    assert kept.kept == 1
    conn.terminate()  # the server went away: asyncpg detaches the proxy and frees its pool slot
    holder, fresh = await kept.take()
    assert fresh is not conn and await fresh.fetchval("SELECT 1") == 1
    await kept.give_back(holder, fresh, clean=True)
    kept.leave()
    await kept.wait_idle()


async def test_a_begins_group_opens_the_transaction_in_its_first_statement(pool: asyncpg.Pool, probe: str) -> None:
    """A ``begins`` group sends BEGIN with its first statement (the runner sends none) and its batch still
    commits once; one that opens no transaction fails its callers (what it wrote was committed on its own,
    outside any batch: the runner cannot vouch for it)."""

    async def opening(conn: asyncpg.Connection, items: list[int]) -> list[str]:
        assert not conn.is_in_transaction()
        await conn.execute(f"BEGIN; INSERT INTO {probe} (k) VALUES {', '.join(f'({k})' for k in items)}")
        return [f"opened {k}" for k in items]

    async def forgetful(conn: asyncpg.Connection, items: list[int]) -> list[str]:
        await conn.execute(f"INSERT INTO {probe} (k) SELECT unnest($1::int[])", items)  # autocommitted
        return [f"forgot {k}" for k in items]

    writer = _writer(pool, max_batch=8, max_wait_ms=5)
    group = Group("opening", opening, begins=True)
    answers = await asyncio.gather(*(writer.submit(group, k) for k in (1, 2, 3)))
    assert sorted(answers) == ["opened 1", "opened 2", "opened 3"] and writer.stats.batches == 1
    with pytest.raises(RuntimeError, match="opened no transaction"):
        await writer.submit(Group("forgetful", forgetful, begins=True), 7)
    async with pool.acquire() as c:
        assert sorted(await c.fetchval(f"SELECT array_agg(k) FROM {probe}")) == [1, 2, 3, 7]

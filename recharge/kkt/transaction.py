"""How the card service runs its database work: the one transaction helper of ``recharge.kkt``.

``in_transaction(db, work, settings)`` runs ``work`` in one transaction (a savepoint when the
caller's connection is already in one), retried whole by the code base's one retry policy
(``recharge.db.RetryPolicy``: deadlock, serialization failure, at most ``ledger_max_retries``
times with jittered backoff). A concurrent twin of a REQID that committed first is such a
serialization failure (``Retry``): the run again replays the twin's answer.
``without_transaction(db, work)`` runs statements that are atomic one by one (a balance
query's fast path). Both take a pool, a connection or an acquire callable (``Platform.acquire``:
a connection is taken only when one is needed).

``trade_lane(platform)`` is the process's group commit of trades (``recharge.ledger.group_commit``,
sized by the ``ledger_batch_*`` settings like a DD lane): concurrent trades of different cards
share one transaction and one commit (``recharge.kkt.trades.TRADES``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias, TypeVar

import asyncpg

from recharge import db as database
from recharge import metrics
from recharge.config import Settings
from recharge.context import Platform
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import GroupCommit

T = TypeVar("T")
Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection | database.Acquire"
Work = Callable[[asyncpg.Connection], Awaitable[T]]


class Retry(asyncpg.SerializationError):
    """Roll the transaction back and run it again: a concurrent REQID insert committed first."""


@asynccontextmanager
async def connection(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A connection: ``db`` itself, or one taken from the pool (or the acquire callable) for the block."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    elif isinstance(db, asyncpg.Connection):
        yield db
    else:
        async with db() as conn:
            yield conn


def in_transaction_already(db: Db) -> bool:
    """``db`` is a connection inside a transaction (its caller holds locks the trade must share)."""
    return isinstance(db, asyncpg.Connection) and db.is_in_transaction()


def trade_lane(platform: Platform) -> GroupCommit:
    """The group commit a process's trades share (one per process: ``http_api.app``)."""
    s = platform.settings
    kept = KeptConnections(platform.acquire, max_kept=s.ledger_batch_pipeline, linger_ms=s.ledger_batch_linger_ms)
    return GroupCommit(
        kept, max_batch=s.ledger_batch_max, max_wait_ms=s.ledger_batch_max_wait_ms,
        queue_depth=s.ledger_batch_queue_depth, pipeline=s.ledger_batch_pipeline,
        retry=database.RetryPolicy.from_settings(s), batch_size=metrics.KKT_BATCH_SIZE,
    )


async def in_transaction(db: Db, work: Work[T], settings: Settings) -> T:
    return await database.retry_transaction(db, work, policy=database.RetryPolicy.from_settings(settings))


async def without_transaction(db: Db, work: Work[T]) -> T:
    async with connection(db) as conn:
        return await work(conn)

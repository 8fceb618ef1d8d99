"""The process-wide context both servers share: settings, database pool, master keys."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg

from recharge.config import Settings
from recharge.keys import MasterKeys


class Busy(Exception):
    """The platform is saturated (pool exhausted, queue full): answer busy, do not queue."""


@dataclass
class Platform:
    settings: Settings
    pool: asyncpg.Pool
    keys: MasterKeys
    dsn: str = ""
    started_at: float = field(default_factory=time.monotonic)
    draining: bool = False
    ready: bool = False
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def acquire(self, timeout_s: float | None = None) -> _BoundedAcquire:
        """A pool connection, or ``Busy`` when none frees up within the acquire timeout."""
        return _BoundedAcquire(self.pool, timeout_s or self.settings.pool_acquire_timeout_s)


class _BoundedAcquire:
    def __init__(self, pool: asyncpg.Pool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self._conn = await self._pool.acquire(timeout=self._timeout_s)
        except TimeoutError:
            raise Busy("database pool exhausted") from None
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._pool.release(self._conn)
            self._conn = None

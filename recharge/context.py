"""The process-wide context both servers share: settings, database pool, master keys, and the
budget of client connections (DD and HTTP together) the process's file descriptors allow."""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass, field
from types import TracebackType

import asyncpg

from recharge.config import Settings
from recharge.db import breaks_connection, discard, unavailable
from recharge.keys import MasterKeys


class Busy(Exception):
    """The platform is saturated (pool exhausted, queue full): answer busy, do not queue."""


class DatabaseUnavailable(Busy):
    """The database is down, restarting or cut off (``recharge.db.unavailable``): answered busy like
    saturation. Nothing was acknowledged; a retry with the same idempotency key is safe."""


@dataclass
class ConnectionBudget:
    """Client connections, DD and HTTP together, that a process may hold: its file-descriptor
    limit (``RLIMIT_NOFILE``) less the database pool's connections and ``fd_reserve`` for
    everything else it opens. Each server takes a slot per connection it admits, on top of its
    own limit, so a flood on one listener sheds load before ``accept`` or the pool fail for
    lack of descriptors — and before the other listener's clients are locked out."""

    limit: int
    open: int = 0

    @classmethod
    def of(cls, settings: Settings) -> ConnectionBudget:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 2**20
        return cls(max(0, soft - settings.pool_max_size - settings.fd_reserve))

    def take(self) -> bool:
        """Count one more connection in; False (nothing counted) when the budget is spent."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give(self) -> None:
        self.open -= 1


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
    connections: ConnectionBudget = field(init=False)

    def __post_init__(self) -> None:
        self.connections = ConnectionBudget.of(self.settings)

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
        except Exception as exc:
            if unavailable(exc):
                raise DatabaseUnavailable(type(exc).__name__) from exc
            raise
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Gives the connection back (terminated when the error may have broken it,
        ``recharge.db.breaks_connection``); an error of an unreachable database raised inside the
        block leaves it as ``DatabaseUnavailable``, so every channel answers it busy."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if exc is not None and breaks_connection(exc):
                discard(conn)  # not back into the pool: the next caller would meet it mid-answer
            await self._pool.release(conn)
        if exc is not None and not isinstance(exc, Busy) and isinstance(exc, Exception) and unavailable(exc):
            raise DatabaseUnavailable(type(exc).__name__) from exc

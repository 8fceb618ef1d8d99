"""Pool connections kept between uses by a busy group commit or read gate (skipping the pool's reset).

Taking a connection from an asyncpg pool and giving it back costs the pool's reset (four
statements) each time. ``KeptConnections`` keeps up to ``max_kept`` idle connections for the
next use while its users are busy — a user is anything that ``enter``s and ``leave``s: a group
commit's runner and batches, a read, a lookup runner — and ``linger_ms`` after the last one
left (0: given back as soon as nobody is busy). A connection that is closed or left inside a
transaction goes back to the pool at once; one given back unclean (an interrupted statement, a
failed rollback, an error that may have broken it) is terminated first, so the pool replaces it.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

import asyncpg

from recharge.db import Acquire, discard

Holder = AbstractAsyncContextManager[asyncpg.Connection]


def closed(conn: asyncpg.Connection) -> bool:
    """True when ``conn`` is closed — or is a pool proxy that asyncpg already released back to the
    pool because its connection died (a database restart): every method of such a proxy raises."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True


class KeptConnections:
    """Idle pool connections kept for the next use while there is work, bounded by ``max_kept``."""

    def __init__(self, acquire: Acquire | asyncpg.Pool, *, max_kept: int, linger_ms: float = 0.0) -> None:
        if max_kept < 0 or linger_ms < 0:
            raise ValueError("max_kept and linger_ms must not be negative")
        self._acquire: Acquire = acquire.acquire if isinstance(acquire, asyncpg.Pool) else acquire
        self.max_kept = max_kept
        self.linger_s = linger_ms / 1000.0
        self._spare: list[tuple[Holder, asyncpg.Connection]] = []
        self._out: set[int] = set()  # ids of the holders ``take`` handed out and not given back yet (debug)
        self._active = 0
        self._last_use = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def kept(self) -> int:
        """Idle connections kept now."""
        return len(self._spare)

    @property
    def busy(self) -> bool:
        return self._active > 0

    def enter(self) -> None:
        """A user starts work (its connections may be kept meanwhile)."""
        self._active += 1

    def leave(self) -> None:
        """A user is done; with nobody busy, the kept connections go (now, or after ``linger_ms``)."""
        self._active -= 1
        assert self._active >= 0, "leave without enter"
        if not self._active and self._spare:
            if self.linger_s <= 0:
                self._release_soon()
            elif self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(self.linger_s, self._linger_over)

    async def take(self) -> tuple[Holder, asyncpg.Connection]:
        """A kept connection, else one from the pool (``Busy`` from a bounded acquire)."""
        while self._spare:
            holder, conn = self._spare.pop()
            if not closed(conn):
                return self._hand_out(holder), conn
            await holder.__aexit__(None, None, None)
        holder = self._acquire()
        conn = await holder.__aenter__()
        return self._hand_out(holder), conn

    def _hand_out(self, holder: Holder) -> Holder:
        if __debug__:
            self._out.add(id(holder))
        return holder

    async def give_back(self, holder: Holder, conn: asyncpg.Connection, *, clean: bool) -> None:
        """Keep the connection for the next use when it is clean and there is room, else return it.

        Debug builds (``assert``) refuse a holder ``take`` did not hand out or that was given back
        already: kept twice, one connection would serve two users at once (docs/RELIABILITY.md)."""
        if __debug__:
            assert id(holder) in self._out, "give_back of a connection not taken, or given back twice"
            assert all(c is not conn for _, c in self._spare), "a connection kept twice"
            self._out.discard(id(holder))
        if (
            clean and len(self._spare) < self.max_kept and (self._active or self.linger_s > 0)
            and not closed(conn) and not conn.is_in_transaction()
        ):
            self._spare.append((holder, conn))
            self._last_use = asyncio.get_running_loop().time()
        else:
            if not clean:
                discard(conn)  # its state is unknown; the pool's reset would not notice (recharge.db)
            await holder.__aexit__(None, None, None)

    async def wait_idle(self) -> None:
        """Give every kept connection back now and wait until they are (for a graceful stop and tests)."""
        if not self._active:
            self._release_soon()
        while self._closing:
            await asyncio.wait(set(self._closing))

    def _release_soon(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self._spare:
            return
        spares, self._spare = self._spare, []
        task = asyncio.get_running_loop().create_task(self._release(spares))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _linger_over(self) -> None:
        self._linger = None
        if self._active or not self._spare:  # the last user to leave schedules it again
            return
        loop = asyncio.get_running_loop()
        left = self._last_use + self.linger_s - loop.time()
        if left > 0:
            self._linger = loop.call_later(left, self._linger_over)
        else:
            self._release_soon()

    @staticmethod
    async def _release(spares: list[tuple[Holder, asyncpg.Connection]]) -> None:
        for holder, _ in spares:
            await holder.__aexit__(None, None, None)

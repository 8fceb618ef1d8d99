"""The read gate: reads outside any transaction, bounded, and concurrent lookups merged into one statement.

- ``read(work)`` runs a read-only ``work`` at once on a kept connection (``KeptConnections``),
  outside any transaction (nothing to commit, no wait). At most ``max_readers`` reads run at a
  time; the others wait their turn (a burst of reads does not spread over the whole pool: fewer
  busy server processes do the same work with less CPU) — at most ``read_wait_s``, then ``Busy``,
  like an exhausted pool.
- ``lookup(group, item)`` is a read merged with others of its ``Group`` (group commit, for reads):
  at most ``lookup_runners`` lookup statements run at once; the lookups that arrive meanwhile
  wait, and the next statement (``group.run_all``) answers all of them (at most ``max_batch``, the
  longest-waiting one's group). A lookup that finds no statement running starts one at once: no
  added wait at low load. A statement answers only lookups queued before it started, so every
  answer is at least as fresh as its lookup (it sees what was committed before the caller asked).
  ``Busy`` when ``queue_depth`` lookups wait, or when one has waited ``read_wait_s`` for a
  statement to take it (checked when a statement could: at worst after the statement running
  then, itself bounded by ``statement_timeout``).
- A read (or lookup statement) whose first statement asyncpg refused before writing a byte of it (the
  server had ended the kept connection while it sat idle, or it was found closed) runs again, once, on
  another connection, by the group commit's rule (``recharge.db.sent_nothing``): nothing of it was sent.
  A read changes nothing, so a broader retry would be safe too; it keeps the one rule of every user of a
  kept connection instead: a connection lost after a statement was sent is the database going away (a
  failover, a restart), answered busy at once rather than waited on.

``server.flows`` uses one per DD worker for DD11's reads (``DDContext.reads``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from recharge import metrics
from recharge.context import Busy
from recharge.db import (
    NothingSent,
    breaks_connection,
    once_more_if_nothing_sent,
    sent_nothing,
    statements_sent,
)
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import Group

Item = TypeVar("Item")
R = TypeVar("R")
T = TypeVar("T")
_Lookup = tuple[Group[Any, Any], Any, "asyncio.Future[Any]", float]  # group, item, the caller's future, when queued


@dataclass(frozen=True, slots=True)
class LookupStats:
    """Lookup statements run and lookups they answered since the gate was made; reads and lookup statements
    run again on another connection (``retries``: the first sent nothing)."""

    statements: int
    lookups: int
    retries: int


class ReadGate:
    """Bounded reads, and lookups of concurrent callers answered by one statement per group."""

    def __init__(
        self,
        connections: KeptConnections,
        *,
        max_readers: int = 4,
        read_wait_s: float = 5.0,
        lookup_runners: int = 1,
        max_batch: int = 32,
        queue_depth: int = 1024,
    ) -> None:
        if max_readers < 1 or read_wait_s <= 0 or lookup_runners < 1 or max_batch < 1 or queue_depth < 1:
            raise ValueError("read gate limits must be positive")
        self.connections = connections
        self.read_wait_s = read_wait_s
        self.lookup_runners = lookup_runners
        self.max_batch = max_batch
        self.queue_depth = queue_depth
        self._readers = asyncio.Semaphore(max_readers)
        self._lookups: collections.deque[_Lookup] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # bound at first use (get_running_loop costs a getpid)
        self._runs: set[asyncio.Task[None]] = set()
        self._stats = [0, 0, 0]  # lookup statements, lookups they answered, retries

    @property
    def stats(self) -> LookupStats:
        return LookupStats(*self._stats)

    async def read(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` (read-only) on a kept connection, outside any transaction; its result at once."""
        self.connections.enter()
        try:
            await self._reader_turn()
            try:
                return await self._on_a_connection(work)
            finally:
                self._readers.release()
        finally:
            self.connections.leave()

    async def _on_a_connection(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` on a kept connection; once more on another when the first sent nothing (``NothingSent``)."""
        return await once_more_if_nothing_sent(lambda: self._on_one_connection(work), self._count_retry)

    def _count_retry(self) -> None:
        self._stats[2] += 1

    async def _on_one_connection(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        holder, conn = await self.connections.take()
        sent, clean = statements_sent(conn), False
        try:
            result = await work(conn)
            clean = True
            return result
        except Exception as exc:
            clean = not breaks_connection(exc)  # an answer (a refusal, an SQL error) leaves it usable
            if sent_nothing(conn, sent, exc):
                raise NothingSent(exc) from exc
            raise
        finally:  # cancelled mid-statement: the connection goes back to the pool, unclean
            await self.connections.give_back(holder, conn, clean=clean)

    async def _reader_turn(self) -> None:
        """Take one of the ``max_readers`` turns: at most ``read_wait_s`` (no timer when one is free)."""
        if self._readers.locked():
            try:
                async with asyncio.timeout(self.read_wait_s):
                    await self._readers.acquire()
            except TimeoutError:
                raise Busy(f"no reader free within {self.read_wait_s} s") from None
        else:
            await self._readers.acquire()

    async def lookup(self, group: Group[Item, R], item: Item) -> R:
        """``group.run_all``'s answer for ``item``, read in one statement with the other lookups of
        ``group`` waiting when it runs. ``run_all`` must answer every item; if it raises (or does
        not), every lookup of that statement gets the exception."""
        if len(self._lookups) >= self.queue_depth:
            raise Busy("lookup queue full")
        loop = self._loop or self._bind_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._lookups.append((group, item, future, loop.time()))
        # Count the runners still running: a finished one stays in the set until its done
        # callback runs, after callers it answered may already have asked again.
        if sum(1 for t in self._runs if not t.done()) < self.lookup_runners:
            task = loop.create_task(self._run_lookups(loop))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
        answer: R = await future
        return answer

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def wait_idle(self) -> None:
        """Until no lookup runs, and the kept connections are back (for a graceful stop and tests)."""
        while running := [t for t in self._runs if not t.done()]:
            await asyncio.wait(running)
        await self.connections.wait_idle()

    async def _run_lookups(self, loop: asyncio.AbstractEventLoop) -> None:
        """A lookup runner: while lookups wait, answer the longest-waiting one's group in one statement.

        The wait is bounded here, not by a timer per lookup: a lookup that has waited
        ``read_wait_s`` when a statement could take it is answered ``Busy`` (so is every waiting
        lookup when no reader's turn comes within ``read_wait_s``).
        """
        queue = self._lookups
        self.connections.enter()
        try:
            while queue:
                try:
                    await self._reader_turn()
                except Busy as exc:
                    while queue:
                        if not (future := queue.popleft()[2]).done():
                            future.set_exception(exc)
                    break
                try:
                    group, items, futures = self._next_statement(loop.time() - self.read_wait_s)
                    if items:
                        await self._answer_lookups(group, items, futures)
                finally:
                    self._readers.release()
        finally:
            self.connections.leave()

    def _next_statement(self, too_old: float) -> tuple[Group[Any, Any], list[Any], list[asyncio.Future[Any]]]:
        """The longest-waiting lookup's group and its queued items (at most ``max_batch``); the
        lookups of other groups keep their places; the ones queued before ``too_old`` are ``Busy``."""
        queue = self._lookups
        group = queue[0][0]
        items: list[Any] = []
        futures: list[asyncio.Future[Any]] = []
        kept: list[_Lookup] = []
        while queue and len(items) < self.max_batch:
            entry = queue.popleft()
            future = entry[2]
            if future.done():  # its caller went away
                continue
            if entry[3] < too_old:
                future.set_exception(Busy(f"no lookup ran within {self.read_wait_s} s"))
            elif entry[0] is group:
                items.append(entry[1])
                futures.append(future)
            else:
                kept.append(entry)
        queue.extendleft(reversed(kept))
        return group, items, futures

    async def _answer_lookups(
        self, group: Group[Any, Any], items: list[Any], futures: list[asyncio.Future[Any]]
    ) -> None:
        try:
            answers: list[Any] = await self._on_a_connection(lambda conn: group.run_all(conn, items))
            if len(answers) != len(items):
                raise RuntimeError(f"lookup group {group.name} did not answer every item")
        except asyncio.CancelledError:  # shutdown: its callers must not wait for nothing
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # Busy (pool exhausted), a refused connection, an SQL error
            answers, failed = [exc] * len(items), True
        else:
            failed = False
        self._stats[0] += 1
        self._stats[1] += len(items)
        metrics.LEDGER_LOOKUP_BATCH_SIZE.observe(len(items))
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():
                if failed:
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


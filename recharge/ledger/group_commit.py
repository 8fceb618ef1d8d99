"""Group commit: the short database steps of many concurrent flows share one transaction and one commit.

A recharge step (pay, mark *loading*, post, confirm) is a few statements whose cost is
dominated by its commit's WAL flush and, for a post, by the merchant's recharge-fund row it
locks until that flush is done. ``Batcher`` pays that once per batch (TigerBeetle's lesson):

- ``run(work)`` queues ``work`` (an ``async (conn) -> T``) and waits. A runner takes up to
  ``max_batch`` queued steps (lingering at most ``max_wait_ms`` for more), runs them in ONE
  transaction and commits once. A step that raises is rolled back alone; its exception goes to
  its own caller only, its batch-mates commit. (The first run of a batch takes no savepoints;
  when a step fails there, the whole batch is rolled back and run again with a savepoint per
  step — one round trip per step saved in the common case.) **Every caller is answered only after the commit** (a step's success is durable
  before anyone hears of it; if the commit fails, every caller of the batch gets the error).
- Steps marked ``hot`` (they lock a shared row, like the recharge fund) run after the
  others of their batch, so the batch holds the hot row for the shortest time and the next
  batch can run its other steps while this one commits.
- Pipeline: at most ``pipeline`` batches in flight. With 1 (the DD default), steps queue
  while a batch commits and the next batch takes them all; with 2, the next one collects and
  runs while the previous one commits (the statements of two batches never run at the same
  time, so two batches cannot deadlock each other).
- A deadlock or serialization failure (40P01/40001) anywhere in the batch rolls the whole
  batch back and runs it again (every step is re-runnable: all of it was rolled back), as
  ``retry`` (``recharge.db.RetryPolicy``, the code base's one retry policy) says. ``work`` may therefore run more than once: it must not keep
  side effects outside the connection (return values; set state after ``run`` returns).
- Merging: a step may name a ``Group`` and an item. The first run of a batch hands all its
  steps of one group to the group's ``run_all`` at once (one statement for all of them
  instead of one each); ``run_all`` answers each item's result, or ``SINGLY`` for an item it
  left untouched, whose ``work`` then runs on its own as usual. An isolated re-run never
  merges: every step runs its own ``work``. So ``run_all`` must do for each item it answers
  exactly what that step's ``work`` would have done, and nothing at all for the others.
- The queue is bounded: ``run`` raises ``Busy`` at once when ``queue_depth`` steps wait.
- Connections: a batch's connection is kept for the next batch while there is work, and
  ``linger_ms`` after the last use (0: given back at once), so a busy batcher does not pay
  the pool's reset (four statements) per batch. ``read(work)`` runs a read-only ``work`` on
  one of those connections at once, outside any transaction (nothing to commit, no wait); at
  most ``max_readers`` reads run at a time, the others wait their turn (a burst of reads
  does not spread over the whole pool: fewer busy server processes do the same work with
  less CPU) — at most ``read_wait_s``, then ``Busy``, like an exhausted pool.
- Lookups: ``lookup(group, item)`` is a read merged like a step, without a transaction: at
  most ``lookup_runners`` lookup statements run at once; the lookups that arrive meanwhile
  wait, and the next statement (``group.run_all``) answers all of them (group commit, for
  reads). A lookup that finds no statement running starts one at once: no added wait at low load.
  A statement answers only lookups queued before it started: every answer is at least as fresh
  as its lookup (it sees what was committed before the caller asked).

Nothing here knows the DD protocol; ``server.flows`` uses two per DD worker: one for the steps
that lock a merchant's recharge fund (pay, post), one for the others (``DDContext.batched``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from recharge import metrics
from recharge.context import Busy
from recharge.db import DEFAULT_RETRY, RETRYABLE_SQLSTATES, RetryPolicy

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[Any]]
SINGLY: Any = object()  # ``Group.run_all``'s answer for an item it left to the step's own ``work``


@dataclass(frozen=True, eq=False, slots=True)
class Group:
    """Steps of one kind that a batch's first run may do together (see the module docstring).

    ``run_all(conn, items)`` returns one answer per item, in order: the step's result or ``SINGLY``.
    """

    name: str
    run_all: Callable[[asyncpg.Connection, list[Any]], Awaitable[list[Any]]]
Acquire = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]

# One savepoint name, re-made after each step: ROLLBACK TO keeps it, RELEASE + SAVEPOINT in one round trip.
_SAVEPOINT = "SAVEPOINT ledger_batch_step"
_NEXT_STEP = "RELEASE SAVEPOINT ledger_batch_step; SAVEPOINT ledger_batch_step"
_UNDO_STEP = "ROLLBACK TO SAVEPOINT ledger_batch_step"


@dataclass(eq=False, slots=True)
class _Step:
    work: Work
    future: asyncio.Future[Any]
    hot: bool
    group: Group | None = None
    item: Any = None
    outcome: tuple[bool, Any] = field(default=(False, None))  # (ok, result or exception) of the last attempt


_Lookup = tuple[Group, Any, "asyncio.Future[Any]", float]  # group, item, the caller's future, when it was queued


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What a batcher has done since it was made (for tests and the benchmark)."""

    batches: int
    steps: int
    retries: int
    lookup_statements: int = 0
    lookups: int = 0


class Batcher:
    """Run concurrent callers' database steps in shared transactions, one commit per batch."""

    def __init__(
        self,
        acquire: Acquire | asyncpg.Pool,
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_depth: int = 1024,
        pipeline: int = 2,
        retry: RetryPolicy = DEFAULT_RETRY,
        linger_ms: float = 0.0,
        max_kept: int | None = None,
        max_readers: int = 4,
        read_wait_s: float = 5.0,
        lookup_runners: int = 1,
    ) -> None:
        if (
            max_batch < 1 or queue_depth < 1 or pipeline < 1 or max_wait_ms < 0 or linger_ms < 0
            or max_readers < 1 or read_wait_s <= 0 or lookup_runners < 1
        ):
            raise ValueError("ledger batch limits must be positive")
        # Idle connections kept for reuse are bounded: a burst of concurrent reads must not
        # leave a busy batcher holding the pool (another lane would starve and answer busy).
        # By default as many as it can use at once (its batches and its readers), so a busy
        # batcher does not give a connection back only to take one again at the next read.
        self.max_kept = pipeline + max_readers if max_kept is None else max_kept
        if self.max_kept < 0:
            raise ValueError("max_kept must not be negative")
        self._acquire: Acquire = acquire.acquire if isinstance(acquire, asyncpg.Pool) else acquire
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_depth = queue_depth
        self.retry = retry
        self.linger_s = linger_ms / 1000.0
        self._reading = 0
        self._last_use = 0.0
        self._linger: asyncio.TimerHandle | None = None
        self._queue: collections.deque[_Step] = collections.deque()
        self._slots = asyncio.Semaphore(pipeline)
        self._readers = asyncio.Semaphore(max_readers)
        self.read_wait_s = read_wait_s
        self.lookup_runners = lookup_runners
        self._lookups: collections.deque[_Lookup] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # bound at first use (get_running_loop costs a getpid)
        self._lookup_runs: set[asyncio.Task[None]] = set()
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._spare: list[tuple[AbstractAsyncContextManager[asyncpg.Connection], asyncpg.Connection]] = []
        self._closing: asyncio.Task[None] | None = None
        self._stats = [0, 0, 0, 0, 0]  # batches committed, steps in them, retries, lookup statements, lookups

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def stats(self) -> BatchStats:
        return BatchStats(*self._stats)

    @property
    def kept(self) -> int:
        """Idle pool connections kept for the next batch or read."""
        return len(self._spare)

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, hot: bool = False, group: Group | None = None,
        item: Any = None,
    ) -> T:
        """``work``'s result once its batch has committed; its exception if it (or the batch) failed.

        ``group``/``item``: the batch may do this step together with others of its group.
        Raises ``Busy`` at once when the queue is full.
        """
        if len(self._queue) >= self.queue_depth:
            raise Busy("ledger batch queue full")
        loop = self._loop or self._bind_loop()
        step = _Step(work, loop.create_future(), hot, group, item)
        self._queue.append(step)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._drain())
        elif self._arrived is not None:
            self._arrived.set()
        result: T = await step.future
        return result

    async def read(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` (read-only) on a kept connection, outside any transaction; its result at once."""
        self._reading += 1
        try:
            await self._reader_turn()
            try:
                holder, conn = await self._connection()
                clean = False
                try:
                    result = await work(conn)
                    clean = True
                    return result
                except Exception:
                    clean = True  # an answer (a refusal, an SQL error) leaves the connection usable
                    raise
                finally:
                    await self._give_back(holder, conn, clean=clean)
            finally:
                self._readers.release()
        finally:
            self._done_reading()

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

    async def lookup(self, group: Group, item: Any) -> Any:
        """``group.run_all``'s answer for ``item``: a read outside any transaction, in one statement
        with the other lookups of ``group`` that are waiting when it runs.

        At most ``lookup_runners`` such statements run at a time (each takes a reader's turn, as
        ``read`` does); lookups arriving meanwhile queue and the next statement answers them all,
        so under load a read costs a fraction of a round trip (group commit, for reads). ``run_all``
        must answer every item (``SINGLY`` is not allowed here); if it raises, every lookup of that
        statement gets the exception. ``Busy`` when ``queue_depth`` lookups wait, or when one has
        waited ``read_wait_s`` for a statement to take it (checked when a statement could: at
        worst after the statement running then, itself bounded by ``statement_timeout``).
        """
        if len(self._lookups) >= self.queue_depth:
            raise Busy("lookup queue full")
        loop = self._loop or self._bind_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._lookups.append((group, item, future, loop.time()))
        # Count the runners still running: a finished one stays in the set until its done
        # callback runs, after callers it answered may already have asked again.
        if sum(1 for t in self._lookup_runs if not t.done()) < self.lookup_runners:
            task = loop.create_task(self._run_lookups(loop))
            self._lookup_runs.add(task)
            task.add_done_callback(self._lookup_runs.discard)
        return await future

    async def _run_lookups(self, loop: asyncio.AbstractEventLoop) -> None:
        """A lookup runner: while lookups wait, answer the longest-waiting one's group in one statement.

        The wait is bounded here, not by a timer per lookup: a lookup that has waited
        ``read_wait_s`` when a statement could take it is answered ``Busy`` (so is every waiting
        lookup when no reader's turn comes within ``read_wait_s``).
        """
        queue = self._lookups
        self._reading += 1
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
                    group = queue[0][0]
                    items: list[Any] = []
                    futures: list[asyncio.Future[Any]] = []
                    kept: list[_Lookup] = []
                    too_old = loop.time() - self.read_wait_s
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
                    if items:
                        await self._answer_lookups(group, items, futures)
                finally:
                    self._readers.release()
        finally:
            self._done_reading()

    def _done_reading(self) -> None:
        """A read or a lookup runner ends: with nothing else running, the kept connections may go."""
        self._reading -= 1
        if self._idle():
            self._spares_idle()

    async def _answer_lookups(self, group: Group, items: list[Any], futures: list[asyncio.Future[Any]]) -> None:
        try:
            await self._lookups_once(group, items, futures)
        except BaseException:  # cancelled (shutdown): its callers must not wait for nothing
            for future in futures:
                future.cancel()
            raise

    async def _lookups_once(self, group: Group, items: list[Any], futures: list[asyncio.Future[Any]]) -> None:
        try:
            holder, conn = await self._connection()
        except Exception as exc:  # Busy (pool exhausted), a refused connection
            answers: list[Any] = [exc] * len(items)
            failed = True
        else:
            clean = False
            try:
                answers = await group.run_all(conn, items)
                clean = True
                if len(answers) != len(items) or any(a is SINGLY for a in answers):
                    raise RuntimeError(f"lookup group {group.name} did not answer every item")
                failed = False
            except Exception as exc:
                clean = True  # an answer (an SQL error) leaves the connection usable
                answers, failed = [exc] * len(items), True
            finally:
                await self._give_back(holder, conn, clean=clean)
        self._stats[3] += 1
        self._stats[4] += len(items)
        metrics.LEDGER_LOOKUP_BATCH_SIZE.observe(len(items))
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():
                if failed:
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def wait_idle(self) -> None:
        """Until nothing is queued, running or committing (for a graceful stop and tests)."""
        while self._queue or self._spare or any(t is not None and not t.done() for t in self._tasks()):
            pending = [t for t in self._tasks() if t is not None and not t.done()]
            if pending:
                await asyncio.wait(pending)
            elif self._spare and self._idle():
                await self._release_spares()
            else:
                await asyncio.sleep(0)

    def _tasks(self) -> list[asyncio.Task[None] | None]:
        return [self._runner, self._closing, *self._batches, *self._lookup_runs]

    # --- the runner: one at a time, started by ``run`` and ending when the queue is empty

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            await self._slots.acquire()
            try:
                batch = await self._collect(loop)
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            executed: asyncio.Future[None] = loop.create_future()
            task = loop.create_task(self._run_batch(batch, executed))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            await executed  # the next batch collects and runs while this one commits
        if not self._batches and self._spare and not self._reading:  # no await after the queue check
            self._spares_idle()

    def _take(self, batch: list[_Step]) -> None:
        while self._queue and len(batch) < self.max_batch:
            step = self._queue.popleft()
            if not step.future.done():  # skip callers that went away before their step ran
                batch.append(step)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Step]:
        batch: list[_Step] = []
        self._take(batch)
        if not batch or len(batch) >= self.max_batch or self.max_wait_s <= 0:
            return batch
        deadline = loop.time() + self.max_wait_s
        self._arrived = arrived = asyncio.Event()
        try:
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                arrived.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await arrived.wait()
                except TimeoutError:
                    break
                self._take(batch)
        finally:
            self._arrived = None
        self._take(batch)
        return batch

    # --- connections: kept between batches while there is work, so a batch skips the pool's reset

    async def _connection(self) -> tuple[AbstractAsyncContextManager[asyncpg.Connection], asyncpg.Connection]:
        while self._spare:
            holder, conn = self._spare.pop()
            if not conn.is_closed():
                return holder, conn
            await holder.__aexit__(None, None, None)
        holder = self._acquire()
        return holder, await holder.__aenter__()

    async def _give_back(
        self, holder: AbstractAsyncContextManager[asyncpg.Connection], conn: asyncpg.Connection, *, clean: bool
    ) -> None:
        busy = bool(self._queue) or (self._runner is not None and not self._runner.done()) or self._reading > 0
        if (
            clean and (busy or self.linger_s > 0) and len(self._spare) < self.max_kept
            and not conn.is_closed() and not conn.is_in_transaction()
        ):
            self._spare.append((holder, conn))
            self._last_use = (self._loop or self._bind_loop()).time()
        else:
            await holder.__aexit__(None, None, None)

    def _idle(self) -> bool:
        return (
            not self._queue and not self._batches and not self._reading
            and (self._runner is None or self._runner.done())
        )

    def _spares_idle(self) -> None:
        """Nothing runs: give the kept connections back now, or ``linger_ms`` after their last use."""
        if not self._spare:
            return
        if self.linger_s <= 0:
            spares, self._spare = self._spare, []
            self._closing = asyncio.get_running_loop().create_task(self._release(spares))
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.linger_s, self._linger_over)

    def _linger_over(self) -> None:
        self._linger = None
        if not self._spare:
            return
        loop = asyncio.get_running_loop()
        left = self._last_use + self.linger_s - loop.time()
        if left > 0 or not self._idle():
            self._linger = loop.call_later(max(left, self.linger_s / 4), self._linger_over)
            return
        spares, self._spare = self._spare, []
        self._closing = loop.create_task(self._release(spares))

    async def _release_spares(self) -> None:
        spares, self._spare = self._spare, []
        await self._release(spares)

    @staticmethod
    async def _release(spares: list[tuple[AbstractAsyncContextManager[asyncpg.Connection], asyncpg.Connection]]) -> None:
        for holder, _ in spares:
            await holder.__aexit__(None, None, None)

    # --- one batch

    async def _run_batch(self, batch: list[_Step], executed: asyncio.Future[None]) -> None:
        ordered = [s for s in batch if not s.hot] + [s for s in batch if s.hot]
        isolate = False  # the first run has no savepoints; a step that fails makes the batch run again with them

        async def attempt() -> None:
            nonlocal isolate
            while not await self._attempt(ordered, executed, isolate=isolate):
                isolate = True  # a step failed in an unisolated run: everything was rolled back

        try:
            try:
                await self.retry.run(attempt, on_retry=self._count_retry)
            except Exception as exc:  # not retryable, or retried enough; Busy (pool exhausted), a lost connection
                self._fail(ordered, exc)
                return
            self._stats[0] += 1
            self._stats[1] += len(ordered)
            metrics.LEDGER_BATCH_SIZE.observe(len(ordered))
            for step in ordered:
                ok, value = step.outcome
                if step.future.done():
                    continue
                if ok:
                    step.future.set_result(value)
                else:
                    step.future.set_exception(value)
        except BaseException:  # cancelled (shutdown): nobody may think their step committed
            for step in ordered:
                step.future.cancel()
            raise
        finally:
            if not executed.done():
                executed.set_result(None)
            self._slots.release()
            if (self._runner is None or self._runner.done()) and not self._reading:
                if self.linger_s <= 0:
                    await self._release_spares()
                else:
                    self._spares_idle()

    def _count_retry(self) -> None:
        self._stats[2] += 1

    async def _attempt(self, steps: list[_Step], executed: asyncio.Future[None], *, isolate: bool) -> bool:
        """Run and commit the batch once; False (all rolled back) when a step failed unisolated."""
        holder, conn = await self._connection()
        clean = False
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                if not await self._steps(conn, steps, isolate=isolate):
                    await tx.rollback()
                    clean = True
                    return False
            except BaseException:
                if not conn.is_closed():
                    await tx.rollback()
                raise
            if not executed.done():
                executed.set_result(None)
            await tx.commit()
            clean = True
            return True
        finally:
            await self._give_back(holder, conn, clean=clean)

    @staticmethod
    async def _steps(conn: asyncpg.Connection, steps: list[_Step], *, isolate: bool) -> bool:
        if isolate:
            await conn.execute(_SAVEPOINT)
        merged: set[_Step] = set()
        groups_done: set[Group] = set()
        for index, step in enumerate(steps):
            if step in merged:
                continue
            group = step.group
            if not isolate and group is not None and group not in groups_done:
                groups_done.add(group)
                members = [s for s in steps[index:] if s.group is group]
                if len(members) > 1:
                    try:
                        answers = await group.run_all(conn, [s.item for s in members])
                    except Exception as exc:
                        if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES:
                            raise
                        return False  # the isolated re-run does every step on its own
                    for member, answer in zip(members, answers, strict=True):
                        if answer is not SINGLY:
                            member.outcome = (True, answer)
                            merged.add(member)
                    if step in merged:
                        continue
            try:
                step.outcome = (True, await step.work(conn))
            except Exception as exc:
                if getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES:
                    raise  # the batch holds locks the other side waits for: all of it again
                if not isolate:
                    return False
                await conn.execute(_UNDO_STEP)
                step.outcome = (False, exc)
                continue
            if isolate and index + 1 < len(steps):
                await conn.execute(_NEXT_STEP)
        return True

    @staticmethod
    def _fail(steps: list[_Step], exc: BaseException) -> None:
        for step in steps:
            if not step.future.done():
                step.future.set_exception(exc)

"""Group commit: the items of many concurrent callers' state changes share one transaction and one commit.

A recharge step (pay, mark *loading*, post, confirm) is a statement or two whose cost is
dominated by its commit's WAL flush and, for a post, by the merchant's recharge-fund row it locks
until that flush is done. ``GroupCommit`` pays that once per batch (TigerBeetle's lesson):

- A caller hands an **item** to a ``Group`` — a batch function ``run_all(conn, items)`` that
  answers one value per item, refusals included (``recharge.ledger.transfers.create_transfers``,
  ``recharge.orders.lifecycle.mark_loaded``, ...) — with ``submit(group, item)`` and waits. A
  runner takes up to ``max_batch`` queued items (lingering at most ``max_wait_ms`` for more), hands
  each group its items in ONE call (one statement or two for all of them), all groups in ONE
  transaction, and commits once. A refusal is an answer like any other, for which the group wrote
  nothing: a batch is never rolled back or rerun because one item was refused.
- **Every caller is answered only after the commit**: an answer is durable before anyone hears
  of it; if the commit fails, every caller of the batch gets the error.
- Groups marked ``hot`` (they lock a shared row, like the recharge fund) run after the others of
  their batch, so the batch holds the hot row for the shortest time.
- A group marked ``begins`` opens the transaction itself when it is its batch's first group, with
  ``BEGIN`` in the same message as its first statement (the card service's trades: one round trip
  fewer per batch); the runner still commits or rolls it back.
- A deadlock or serialization failure anywhere rolls the whole batch back and runs it again, as
  ``retry`` (``recharge.db.RetryPolicy``, the code base's one retry policy) says: every group must
  be safe to run again (all it did was rolled back; it keeps no state outside the connection).
- A batch whose first statement asyncpg refused before writing a byte of it runs again, once, on another
  connection (its first connection's server had ended it while it sat idle, or it was found closed): nothing
  of the batch ran (``recharge.db.sent_nothing``, ``once_more_if_nothing_sent``). Once a statement of the
  batch has been written, a lost connection fails its callers as below (busy: the outcome is not known).
- A group that raises anything else (a defect, an SQL error) fails its own callers with that
  exception; the batch is rolled back and run again without that group (whole, not step by step).
  A group whose items run one by one may raise ``ItemFailed(index, error)`` instead: only that
  item's caller gets ``error``, and the batch is rolled back and run again without that item.
- Pipeline: at most ``pipeline`` batches in flight. With 1, items queue while a batch commits and
  the next batch takes them all; with 2, the next one collects and runs while the previous one
  commits (the statements of two batches never run at the same time, so they cannot deadlock
  each other).
- The queue is bounded: ``submit`` raises ``Busy`` at once when ``queue_depth`` items wait.
- Connections come from ``KeptConnections`` (kept between batches while there is work).

Nothing here knows the DD protocol; ``server.flows`` runs two per DD worker (``DDContext``): one
for the hot groups (pay, post), one for the others, each with its own pipeline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
from prometheus_client import Histogram

from recharge import metrics
from recharge.context import Busy
from recharge.db import (
    DEFAULT_RETRY,
    NothingSent,
    RetryPolicy,
    once_more_if_nothing_sent,
    sent_nothing,
    statements_sent,
)
from recharge.ledger.connections import KeptConnections, closed

Item = TypeVar("Item")
R = TypeVar("R")


@dataclass(frozen=True, eq=False, slots=True)
class Group(Generic[Item, R]):
    """Items of one kind done together: ``run_all(conn, items)`` answers each item, in order.

    ``hot``: it locks a shared row (a merchant's recharge fund); it runs last in its batch.
    ``begins``: when it is its batch's first group, ``run_all`` opens the transaction itself, with
    ``BEGIN`` in the message of its first statement that needs one (a round trip saved); it
    must open it whenever it is called on a connection outside a transaction.
    A ``ReadGate`` lookup group reads only (no transaction; ``hot`` does not apply).
    """

    name: str
    run_all: Callable[[asyncpg.Connection, list[Item]], Awaitable[list[R]]]
    hot: bool = False
    begins: bool = False


@dataclass(eq=False, slots=True)
class _Step:
    group: Group[Any, Any]
    item: Any
    future: asyncio.Future[Any]
    answer: Any = None


class _GroupFailed(Exception):
    def __init__(self, group: Group[Any, Any], error: Exception) -> None:
        super().__init__(f"group {group.name} failed: {error!r}")
        self.group, self.error = group, error


class ItemFailed(Exception):
    """Raised by a group's ``run_all``: its item at ``index`` (of that call) failed with ``error``
    (a defect, or an SQL error that aborted the transaction). Only that item's caller hears of it;
    the batch is rolled back and run again without the item."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"item {index} failed: {error!r}")
        self.index, self.error = index, error


class _StepFailed(Exception):
    def __init__(self, step: _Step, error: Exception) -> None:
        super().__init__(f"a step of group {step.group.name} failed: {error!r}")
        self.step, self.error = step, error


@dataclass(frozen=True, slots=True)
class CommitStats:
    """What a group commit has done since it was made (for tests and the benchmark)."""

    batches: int
    steps: int
    retries: int


class GroupCommit:
    """Concurrent callers' items, done by their groups in shared transactions, one commit per batch."""

    def __init__(
        self,
        connections: KeptConnections,
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_depth: int = 1024,
        pipeline: int = 2,
        retry: RetryPolicy = DEFAULT_RETRY,
        batch_size: Histogram = metrics.LEDGER_BATCH_SIZE,
    ) -> None:
        if max_batch < 1 or queue_depth < 1 or pipeline < 1 or max_wait_ms < 0:
            raise ValueError("group commit limits must be positive")
        self.connections = connections
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_depth = queue_depth
        self.retry = retry
        self._batch_size = batch_size  # the histogram of items per committed batch
        self._queue: collections.deque[_Step] = collections.deque()
        self._slots = asyncio.Semaphore(pipeline)
        self._loop: asyncio.AbstractEventLoop | None = None  # bound at first use (get_running_loop costs a getpid)
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._stats = [0, 0, 0]  # batches committed, items in them, retries
        self._in_flight = 0

    @property
    def stats(self) -> CommitStats:
        return CommitStats(*self._stats)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Items submitted and not answered yet (queued, in a batch running or committing)."""
        return self._in_flight

    async def submit(self, group: Group[Item, R], item: Item) -> R:
        """``group``'s answer for ``item`` once its batch has committed; ``Busy`` at once when the
        queue is full; the exception of the group (or of the batch's commit) if it failed."""
        if len(self._queue) >= self.queue_depth:
            raise Busy("group commit queue full")
        loop = self._loop or self._bind_loop()
        step = _Step(group, item, loop.create_future())
        self._queue.append(step)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._drain())
        elif self._arrived is not None:
            self._arrived.set()
        self._in_flight += 1
        try:
            answer: R = await step.future
        finally:
            self._in_flight -= 1
        return answer

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def wait_idle(self) -> None:
        """Until nothing is queued, running or committing, and the kept connections are back."""
        while True:
            running = [t for t in self._tasks() if not t.done()]
            if running:
                await asyncio.wait(running)
            elif self._queue:
                await asyncio.sleep(0)
            else:
                break
        await self.connections.wait_idle()

    def _tasks(self) -> list[asyncio.Task[None]]:
        return [t for t in (self._runner, *self._batches) if t is not None]

    # --- the runner: one at a time, started by ``submit`` and ending when the queue is empty

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        self.connections.enter()
        try:
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
        finally:
            self.connections.leave()

    def _take(self, batch: list[_Step]) -> None:
        while self._queue and len(batch) < self.max_batch:
            step = self._queue.popleft()
            if not step.future.done():  # skip callers that went away before their item ran
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

    # --- one batch

    async def _run_batch(self, batch: list[_Step], executed: asyncio.Future[None]) -> None:
        steps = [s for s in batch if not s.group.hot] + [s for s in batch if s.group.hot]
        self.connections.enter()
        try:
            while steps:
                try:
                    await self.retry.run(functools.partial(self._attempt, steps, executed), self._count_retry)
                except _GroupFailed as failed:  # its callers hear of it; the others run again without it
                    _fail([s for s in steps if s.group is failed.group], failed.error)
                    steps = [s for s in steps if s.group is not failed.group]
                    continue
                except _StepFailed as failed:  # the same for one item of a group
                    _fail([failed.step], failed.error)
                    steps = [s for s in steps if s is not failed.step]
                    continue
                except Exception as exc:  # not retryable, retried enough, the commit failed, Busy, a lost connection
                    _fail(steps, exc)
                    return
                self._answer(steps)
                return
        except BaseException:  # cancelled (shutdown): nobody may think their item committed
            for step in steps:
                step.future.cancel()
            raise
        finally:
            if not executed.done():
                executed.set_result(None)
            self._slots.release()
            self.connections.leave()

    def _answer(self, steps: list[_Step]) -> None:
        self._stats[0] += 1
        self._stats[1] += len(steps)
        self._batch_size.observe(len(steps))
        for step in steps:
            if not step.future.done():
                step.future.set_result(step.answer)

    def _count_retry(self) -> None:
        self._stats[2] += 1

    async def _attempt(self, steps: list[_Step], executed: asyncio.Future[None]) -> None:
        """Run every group's items of the batch in one transaction and commit it (once); once more on another
        connection when the first refused the batch's first statement before sending anything (``NothingSent``)."""
        await once_more_if_nothing_sent(functools.partial(self._attempt_on_a_connection, steps, executed),
                                        self._count_retry)

    async def _attempt_on_a_connection(self, steps: list[_Step], executed: asyncio.Future[None]) -> None:
        holder, conn = await self.connections.take()
        sent, clean = statements_sent(conn), False
        try:
            tx = None if steps[0].group.begins else conn.transaction()  # else the first group sends BEGIN
            if tx is not None:
                await tx.start()
            try:
                await self._run_groups(conn, steps)
                if not conn.is_in_transaction():
                    raise RuntimeError(f"group {steps[0].group.name} opened no transaction")
            except BaseException:
                if not closed(conn):
                    with contextlib.suppress(Exception):  # a broken connection: discarded below, the first error raised
                        await _rollback(conn, tx)
                        clean = True
                raise
            if not executed.done():
                executed.set_result(None)
            await _commit(conn, tx)
            clean = True
        except Exception as exc:  # the error of the group or item it names: refused before anything was sent?
            if sent_nothing(conn, sent, exc.error if isinstance(exc, _GroupFailed | _StepFailed) else exc):
                raise NothingSent(exc) from exc
            raise
        finally:
            await self.connections.give_back(holder, conn, clean=clean)

    async def _run_groups(self, conn: asyncpg.Connection, steps: list[_Step]) -> None:
        members: dict[Group[Any, Any], list[_Step]] = {}
        for step in steps:
            members.setdefault(step.group, []).append(step)
        for group, its in members.items():
            try:
                answers = await group.run_all(conn, [s.item for s in its])
            except ItemFailed as failed:
                if self.retry.retryable(failed.error):
                    raise failed.error from None
                raise _StepFailed(its[failed.index], failed.error) from failed.error
            except Exception as exc:
                if self.retry.retryable(exc):
                    raise  # the batch holds locks the other side waits for: all of it again
                raise _GroupFailed(group, exc) from exc
            assert len(answers) == len(its), f"group {group.name} answered {len(answers)} of {len(its)} items"
            for step, answer in zip(its, answers, strict=True):
                step.answer = answer


async def _commit(conn: asyncpg.Connection, tx: asyncpg.transaction.Transaction | None) -> None:
    if tx is not None:
        await tx.commit()
        return
    status = await conn.execute("COMMIT")
    if status != "COMMIT":  # PostgreSQL answers ROLLBACK to the COMMIT of a failed transaction
        raise RuntimeError(f"the batch's transaction ended with {status}")


async def _rollback(conn: asyncpg.Connection, tx: asyncpg.transaction.Transaction | None) -> None:
    if tx is not None:
        await tx.rollback()
    elif conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _fail(steps: list[_Step], exc: BaseException) -> None:
    for step in steps:
        if not step.future.done():
            step.future.set_exception(exc)

"""The group-commit lanes every load's state changes go through (``LoadLanes``), and the rounds that turn a
batch function of loads into a group's batch function (``each``, ``in_rounds``).

A load step's write (*loading*, post, release, and DD's pay, card balances and confirm) is an item handed to a
``Group`` (``LoadLanes.commit``): the group's batch function does all the items of a batch in one call and
answers each item its value — the load as it is now, or its refusal, for which nothing was written — and
nothing is answered before the batch has committed. Groups that lock a shared hot row (``hot``: a merchant's
recharge fund for DD's pay and post) go to a lane of their own (its own pipeline), so that row serialises only
their batches; the others share the second lane, whose kept connections also serve DD's read gate.

One ``LoadLanes`` per process, made by the composition root (app/runtime.py) and handed to both servers: the
DD recharge steps and the SIM wallet's load paths (STK, hall POS) share its batches and commits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from recharge.context import Platform
from recharge.db import RetryPolicy
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import Group, GroupCommit

Item = TypeVar("Item")
R = TypeVar("R")
A = TypeVar("A")


@dataclass
class LoadLanes:
    """The two group commits of load steps: ``writer`` (no shared hot row) and ``fund_writer`` (hot groups)."""

    kept: KeptConnections  # the writer's kept connections (DD's read gate reads on them too)
    writer: GroupCommit
    fund_writer: GroupCommit

    @classmethod
    def create(cls, platform: Platform) -> LoadLanes:
        s = platform.settings
        kept = KeptConnections(
            platform.acquire, max_kept=s.ledger_batch_pipeline + s.ledger_batch_max_readers,
            linger_ms=s.ledger_batch_linger_ms,
        )
        fund_kept = KeptConnections(platform.acquire, max_kept=s.ledger_batch_pipeline, linger_ms=s.ledger_batch_linger_ms)

        def writer(connections: KeptConnections) -> GroupCommit:
            return GroupCommit(
                connections, max_batch=s.ledger_batch_max, max_wait_ms=s.ledger_batch_max_wait_ms,
                queue_depth=s.ledger_batch_queue_depth, pipeline=s.ledger_batch_pipeline,
                retry=RetryPolicy.from_settings(s),
            )

        return cls(kept, writer(kept), writer(fund_kept))

    async def commit(self, group: Group[Item, R], item: Item) -> R:
        """``group``'s answer for ``item`` once its batch has committed (``hot`` groups: the fund lane)."""
        return await (self.fund_writer if group.hot else self.writer).submit(group, item)

    async def wait_idle(self) -> None:
        """Until no batch runs on either lane (a graceful stop)."""
        for lane in (self.writer, self.fund_writer):
            await lane.wait_idle()


async def in_rounds(
    conn: asyncpg.Connection, change: Callable[[asyncpg.Connection, list[Item]], Awaitable[Mapping[str, A]]],
    items: list[Item], key: Callable[[Item], str],
) -> list[A]:
    """Each item's answer from a batch function answering ``{key: answer}``, in order. A load named again in
    the batch (two terminals on one order) goes to a next call, which sees what the first one did — as if the
    items came one after the other (the second *loading* of a load is refused)."""
    answers: list[A | None] = [None] * len(items)
    waiting = list(range(len(items)))
    while waiting:
        firsts: dict[str, int] = {}
        again = [k for k in waiting if firsts.setdefault(key(items[k]), k) != k]
        done = await change(conn, [items[k] for k in firsts.values()])
        for name, k in firsts.items():
            answers[k] = done[name]
        waiting = again
    answered = [a for a in answers if a is not None]
    assert len(answered) == len(items)
    return answered


def each(
    change: Callable[[asyncpg.Connection, list[Item]], Awaitable[Mapping[str, A]]], key: Callable[[Item], str]
) -> Callable[[asyncpg.Connection, list[Item]], Awaitable[list[A]]]:
    """A group's batch function from a batch function of loads: each item's answer, in order."""

    async def run_all(conn: asyncpg.Connection, items: list[Item]) -> list[A]:
        return await in_rounds(conn, change, items, key)

    return run_all

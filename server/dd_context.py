"""What every DD step may use (``DDContext``), and the recharge steps' groups of the group commit.

A recharge step's write is an item handed to a ``Group`` (``DDContext.commit``): the group's
batch function does all the items of a batch in one call — pay, the card balances, *loading*,
release, post, confirm, each one of ``recharge.orders.lifecycle``'s batch functions — and answers
each item its value: the order, or the refusal (an ``OrderError``, for which nothing was written).
Nothing is answered before its batch has committed. Groups that lock a merchant's recharge fund
(``hot``: pay, post) go to a group commit of their own (a lane with its own pipeline), so the
fund row serialises only their batches; the others share the second lane, whose kept connections
also serve the read gate (DD11's lookups and reads, outside any transaction).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from recharge.context import Platform
from recharge.db import RetryPolicy
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import Group, GroupCommit
from recharge.ledger.read_gate import ReadGate
from recharge.orders import lifecycle
from recharge.orders.lifecycle import Loaded, Loading, Payment
from recharge.orders.model import Answers, Order, OrderError
from server import store
from server.flow_state import TerminalCache, utc_now

Item = TypeVar("Item")
R = TypeVar("R")


@dataclass
class DDContext:
    """What every flow step may use: the platform (settings, pool, keys), the caches, the group
    commits of the recharge steps and the read gate of their reads."""

    platform: Platform
    terminals: TerminalCache
    writer: GroupCommit  # the recharge steps that lock no shared row
    fund_writer: GroupCommit  # the steps that lock a merchant's recharge fund (pay, post)
    reads: ReadGate  # DD11's reads: bounded, and merged lookups
    record_ids: store.RecordIds  # DD20 receipt record ids, from blocks of dd_record_seq
    post_group: Group[tuple[str, int], Order | OrderError]  # DD17's posts (they take ids from ``record_ids``)

    @classmethod
    def create(cls, platform: Platform) -> DDContext:
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

        reads = ReadGate(
            kept, max_readers=s.ledger_batch_max_readers, read_wait_s=s.pool_acquire_timeout_s,
            lookup_runners=s.ledger_batch_lookup_runners, max_batch=s.ledger_batch_max,
            queue_depth=s.ledger_batch_queue_depth,
        )
        record_ids = store.RecordIds()
        terminals = TerminalCache(s.dd_terminal_cache_ttl_s, s.dd_max_connections)
        return cls(platform, terminals, writer(kept), writer(fund_kept), reads, record_ids, _post_group(record_ids))

    async def commit(self, group: Group[Item, R], item: Item) -> R:
        """``group``'s answer for ``item`` once its batch has committed (``hot`` groups: the fund lane)."""
        return await (self.fund_writer if group.hot else self.writer).submit(group, item)

    async def wait_idle(self) -> None:
        """Until no batch or lookup runs and the kept connections are back (a graceful stop)."""
        for part in (self.writer, self.fund_writer, self.reads):
            await part.wait_idle()


async def _in_rounds(
    conn: asyncpg.Connection, change: Callable[[asyncpg.Connection, list[Item]], Awaitable[Answers]],
    items: list[Item], order_no: Callable[[Item], str],
) -> list[Order | OrderError]:
    """Each item's answer from an order batch function, in order. An order named again in the
    batch (two terminals on one order) goes to a next call, which sees what the first one did —
    as if the items came one after the other (the second DD15 of an order is refused)."""
    answers: list[Order | OrderError | None] = [None] * len(items)
    waiting = list(range(len(items)))
    while waiting:
        firsts: dict[str, int] = {}
        again = [k for k in waiting if firsts.setdefault(order_no(items[k]), k) != k]
        done = await change(conn, [items[k] for k in firsts.values()])
        for no, k in firsts.items():
            answers[k] = done[no]
        waiting = again
    answered = [a for a in answers if a is not None]
    assert len(answered) == len(items)
    return answered


def _each(
    change: Callable[[asyncpg.Connection, list[Item]], Awaitable[Answers]], order_no: Callable[[Item], str]
) -> Callable[[asyncpg.Connection, list[Item]], Awaitable[list[Order | OrderError]]]:
    """A group's batch function from an order batch function: each item's answer, in order."""

    async def run_all(conn: asyncpg.Connection, items: list[Item]) -> list[Order | OrderError]:
        return await _in_rounds(conn, change, items, order_no)

    return run_all


def _order_of(item: Payment | Loading | Loaded) -> str:
    return item.order_no


def _itself(order_no: str) -> str:
    return order_no


async def _pay_at_card(
    conn: asyncpg.Connection, items: list[tuple[str, int, Payment]]
) -> list[Order | OrderError | None]:
    """DD13 of an order naming no card: note the card's balance, then pay the order to that card.
    None for a card that is not a CPU card (nothing written, nothing paid)."""
    cpu = await store.record_cpu_card_balances(conn, [(card, balance) for card, balance, _ in items])
    paid = iter(await _in_rounds(conn, lifecycle.pay_orders, [p for card, _, p in items if card in cpu], _order_of))
    return [next(paid) if card in cpu else None for card, _, _ in items]


async def _card_balances(conn: asyncpg.Connection, items: list[tuple[str, int]]) -> list[bool]:
    """DD13 of a card the platform has not seen as the order's CPU card: True when it is a CPU card."""
    cpu = await store.record_cpu_card_balances(conn, items)
    return [card in cpu for card, _ in items]


def _post_group(record_ids: store.RecordIds) -> Group[tuple[str, int], Order | OrderError]:
    async def run_all(conn: asyncpg.Connection, items: list[tuple[str, int]]) -> list[Order | OrderError]:
        """(order, balance after) each: the receipts' record ids, then the orders loaded and posted."""
        ids = await record_ids.take(conn, len(items), utc_now())
        loads = [Loaded(no, balance, rid) for (no, balance), rid in zip(items, ids, strict=True)]
        return await _in_rounds(conn, lifecycle.mark_loaded, loads, _order_of)

    return Group("dd17_post", run_all, hot=True)


# The groups of the recharge steps (DD17's posts: ``DDContext.post_group``).
PAY = Group("dd11_pay", _each(lifecycle.pay_orders, _order_of), hot=True)
PAY_AT_CARD = Group("dd13_pay_at_card", _pay_at_card, hot=True)
CARD_BALANCES = Group("dd13_card_balance", _card_balances)
LOADING = Group("dd15_loading", _each(lifecycle.mark_loading, _order_of))
RELEASE = Group("dd17_release", _each(lifecycle.release_loading, _itself))
CONFIRM = Group("dd19_confirm", _each(lifecycle.confirm_orders, _itself))
# DD11's reads (terminal, order, card kind) of concurrent terminals in one statement (ReadGate.lookup).
DD11_READS = Group("dd11_reads", store.terminals_and_orders)

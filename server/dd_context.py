"""What every DD step may use (``DDContext``), and the recharge steps' groups of the group commit.

A recharge step's write is an item handed to a ``Group`` (``DDContext.commit``, through the process's
``LoadLanes``, recharge/loads/lanes.py, which the SIM wallet's loads share): the group's
batch function does all the items of a batch in one call — pay, the card balances, *loading*,
release, post, confirm (DD21's release, post and confirm as well), each one of
``recharge.orders.lifecycle``'s batch functions — and answers each item its value: the order, or
the refusal (an ``OrderError``, for which nothing was written). Nothing is answered before its
batch has committed. Groups that lock a merchant's recharge fund (``hot``: pay, post) go to a
group commit of their own (a lane with its own pipeline), so the fund row serialises only their
batches; the others share the second lane, whose kept connections also serve the read gate
(DD11's lookups and reads, outside any transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from recharge.context import Platform
from recharge.ledger.group_commit import Group, GroupCommit
from recharge.ledger.read_gate import ReadGate
from recharge.loads.engine import Book, Marking, Proven
from recharge.loads.lanes import LoadLanes, each, in_rounds
from recharge.orders import lifecycle
from recharge.orders.lifecycle import Loaded, Loading, Payment
from recharge.orders.model import Order, OrderError
from server import store
from server.flow_state import TerminalCache, utc_now

Item = TypeVar("Item")
R = TypeVar("R")


@dataclass
class DDContext:
    """What every flow step may use: the platform (settings, pool, keys), the caches, the load lanes (the
    group commits the recharge steps share with the SIM wallet's loads) and the read gate of their reads."""

    platform: Platform
    terminals: TerminalCache
    lanes: LoadLanes  # recharge/loads/lanes.py: one per process, shared with the wallet's load paths
    reads: ReadGate  # DD11's reads: bounded, and merged lookups
    record_ids: store.RecordIds  # DD20 receipt record ids, from blocks of dd_record_seq
    book: Book[Order | OrderError] = field(init=False)  # the orders' loading, post (record ids), release: DD15-21

    def __post_init__(self) -> None:
        self.book = Book(LOADING, _post_group(self.record_ids), RELEASE)

    @property
    def writer(self) -> GroupCommit:  # the recharge steps that lock no shared row
        return self.lanes.writer

    @property
    def fund_writer(self) -> GroupCommit:  # the steps that lock a merchant's recharge fund (pay, post)
        return self.lanes.fund_writer

    @classmethod
    def create(cls, platform: Platform, lanes: LoadLanes | None = None) -> DDContext:
        s = platform.settings
        lanes = lanes or LoadLanes.create(platform)
        reads = ReadGate(
            lanes.kept, max_readers=s.ledger_batch_max_readers, read_wait_s=s.pool_acquire_timeout_s,
            lookup_runners=s.ledger_batch_lookup_runners, max_batch=s.ledger_batch_max,
            queue_depth=s.ledger_batch_queue_depth,
        )
        terminals = TerminalCache(s.dd_terminal_cache_ttl_s, s.dd_max_connections)
        return cls(platform, terminals, lanes, reads, store.RecordIds())

    async def commit(self, group: Group[Item, R], item: Item) -> R:
        """``group``'s answer for ``item`` once its batch has committed (``hot`` groups: the fund lane)."""
        return await self.lanes.commit(group, item)

    async def wait_idle(self) -> None:
        """Until no batch or lookup runs and the kept connections are back (a graceful stop)."""
        await self.lanes.wait_idle()
        await self.reads.wait_idle()


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
    paid = iter(await in_rounds(conn, lifecycle.pay_orders, [p for card, _, p in items if card in cpu], _order_of))
    return [next(paid) if card in cpu else None for card, _, _ in items]


async def _card_balances(conn: asyncpg.Connection, items: list[tuple[str, int]]) -> list[bool]:
    """DD13 of a card the platform has not seen as the order's CPU card: True when it is a CPU card."""
    cpu = await store.record_cpu_card_balances(conn, items)
    return [card in cpu for card, _ in items]


def _post_group(record_ids: store.RecordIds) -> Group[Proven, Order | OrderError]:
    async def run_all(conn: asyncpg.Connection, items: list[Proven]) -> list[Order | OrderError]:
        """(order, balance after) each: the receipts' record ids, then the orders loaded and posted."""
        ids = await record_ids.take(conn, len(items), utc_now())
        loads = [Loaded(p.load_id, p.balance_after, rid) for p, rid in zip(items, ids, strict=True)]
        return await in_rounds(conn, lifecycle.mark_loaded, loads, _order_of)

    return Group("order_post", run_all, hot=True)


def _loading(marking: Marking) -> Loading:
    """The order's *loading* fields from the load engine's mark (recharge/loads/engine.py)."""
    load = marking.load
    return Loading(
        marking.load_id, terminal_code=load.terminal_id, online_serial=load.serial,
        balance_before_cents=load.balance_before, load_date=load.load_date, load_time=load.load_time,
        load_random=load.load_random, load_peer=marking.peer,
    )


async def _mark_loading(conn: asyncpg.Connection, items: list[Marking]) -> list[Order | OrderError]:
    return await in_rounds(conn, lifecycle.mark_loading, [_loading(m) for m in items], _order_of)


# The groups of the recharge steps (the posts of DD17 and DD21: ``DDContext.book.post``; RELEASE: DD17's and DD21's).
PAY = Group("dd11_pay", each(lifecycle.pay_orders, _order_of), hot=True)
PAY_AT_CARD = Group("dd13_pay_at_card", _pay_at_card, hot=True)
CARD_BALANCES = Group("dd13_card_balance", _card_balances)
LOADING = Group("dd15_loading", _mark_loading)
RELEASE = Group("order_release", each(lifecycle.release_loading, _itself))
CONFIRM = Group("dd19_confirm", each(lifecycle.confirm_orders, _itself))
# DD11's reads (terminal, order, card kind) of concurrent terminals in one statement (ReadGate.lookup).
DD11_READS = Group("dd11_reads", store.terminals_and_orders)

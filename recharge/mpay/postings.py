"""The mobile payment account's only door to the ledger: named accounts and batches of moves.

Ledger accounts are named as in SPEC 6.2 — ``C/<acct>`` (cash, no overdraft), ``K/<acct>``
(prepaid-card bucket), ``W/<acct>`` (wallet shadow, 7.3; may go negative: a TAC-proven
purchase is cleared even while a load is unresolved, 7.4), ``MER/<merchant>``, and the
platform's own ``BANK/<bank>``, ``HALL/<hall>``, ``PPC/<province>``, ``BILL``, ``PAYOUT``,
``FEE``, ``RETIRED``, ``SUSPENSE`` (may go negative). The name is kept in
``accounts.card_no`` (kind ``mpay``), unique with the kind.

``move(conn, [Move, ...])`` creates transfers (posted, or pending with a timeout) and
``settle(conn, [Settle, ...])`` posts or voids pending ones; both return one ledger
``Outcome`` per item, in order, inside the caller's transaction (``ledger.create_transfers`` /
``ledger.resolve_pending``: one statement per batch). They are the one place that calls
``recharge.ledger.transfers``. The SIM wallet (``recharge/wallet``) moves money through them too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from recharge.ledger import transfers as ledger

KIND = "mpay"
OVERDRAWN = ("W/", "BANK/", "HALL/", "PPC/", "BILL", "PAYOUT", "FEE", "RETIRED", "SUSPENSE")


def may_overdraw(name: str) -> bool:
    return name.startswith(OVERDRAWN)


async def account_id(conn: asyncpg.Connection, name: str) -> int:
    """The ledger account of a SPEC 6.2 name, created on first use (CNY ledger)."""
    found = await conn.fetchval("SELECT id FROM accounts WHERE card_no = $1 AND kind = $2", name, KIND)
    if found is not None:
        return int(found)
    created = await conn.fetchval(
        "INSERT INTO accounts (ledger, kind, card_no, no_overdraft, name) VALUES ('CNY', $1, $2, $3, $2)"
        " ON CONFLICT DO NOTHING RETURNING id",
        KIND,
        name,
        not may_overdraw(name),
    )
    if created is None:  # created meanwhile by another transaction
        return await account_id(conn, name)
    return int(created)


@dataclass(frozen=True, slots=True)
class Move:
    """One transfer: ``id`` makes it idempotent; ``pending`` reserves (until ``timeout_at``)."""

    id: str
    debit: int
    credit: int
    amount: int
    code: str
    reference: str = ""
    pending: bool = False
    timeout_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Settle:
    """Post (``post=True``) or void the pending transfer ``pending_id``; ``id`` is the resolution's."""

    id: str
    pending_id: str
    post: bool


async def move(conn: asyncpg.Connection, moves: list[Move]) -> list[ledger.Outcome]:
    return await ledger.create_transfers(conn, [
        ledger.NewTransfer(m.id, m.debit, m.credit, m.amount, code=m.code, reference=m.reference, pending=m.pending,
                           timeout_at=m.timeout_at)
        for m in moves
    ])


async def settle(conn: asyncpg.Connection, items: list[Settle]) -> list[ledger.Outcome]:
    return await ledger.resolve_pending(conn, [ledger.Resolution(s.id, s.pending_id, void=not s.post) for s in items])


async def must(conn: asyncpg.Connection, moves: list[Move]) -> None:
    """``move`` that must succeed (the caller checked funds under the account lock)."""
    for m, outcome in zip(moves, await move(conn, moves), strict=True):
        outcome.check(m.id)


async def must_settle(conn: asyncpg.Connection, items: list[Settle]) -> None:
    for s, outcome in zip(items, await settle(conn, items), strict=True):
        outcome.check(s.id)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A C or K account's figures: posted balance, pending debits, what may be spent."""

    posted: int
    pending_debits: int

    @property
    def available(self) -> int:
        return self.posted - self.pending_debits


async def buckets(conn: asyncpg.Connection, *ids: int) -> dict[int, Bucket]:
    rows = await conn.fetch(
        "SELECT id, credits_posted - debits_posted AS posted, debits_pending FROM accounts"
        " WHERE id = ANY($1::bigint[])",
        list(ids),
    )
    return {int(r["id"]): Bucket(int(r["posted"]), int(r["debits_pending"])) for r in rows}

"""The card service's money and points movements: which ledger accounts a trade uses, and
the one place it creates ledger transfers (``recharge.ledger.transfers``): ``plan`` says what a
trade moves, ``create`` creates the planned transfers of a batch's trades in one statement.

| trade kind | debit → credit | short of funds |
|---|---|---|
| consume | card purse → terminal merchant's sales | 08 |
| recharge | terminal merchant's recharge fund → card purse | 54 issuer / 65 other merchant |
| points_add | merchant's issued points (may go negative) → card points | — |
| points_use | card points → merchant's issued points | 66 |
"""

from __future__ import annotations

import uuid

import asyncpg

from recharge import metrics
from recharge.config import Settings
from recharge.kkt import reference
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import Refused
from recharge.kkt.table import TradeKind
from recharge.ledger import transfers as ledger

K = ledger.AccountKind
MERCHANT_ACCOUNT_OF = {  # trade kind: the terminal merchant's account it moves money or points with
    "consume": K.MERCHANT_SALES,
    "recharge": K.RECHARGE_FUND,
    "points_add": K.POINTS_ISSUED,
    "points_use": K.POINTS_ISSUED,
}


def ledger_of(kind: ledger.AccountKind) -> str:
    return "PTS" if kind in (K.CARD_POINTS, K.POINTS_ISSUED) else "CNY"


async def account(conn: asyncpg.Connection, kind: ledger.AccountKind, *, card_no: str | None = None,
                  merchant_id: int | None = None) -> int:
    return await ledger.ensure_account(
        conn, ledger=ledger_of(kind), kind=kind, card_no=card_no, merchant_id=merchant_id,
        # points a merchant grants are created out of nothing: its issued-points account goes negative
        no_overdraft=kind is not K.POINTS_ISSUED,
    )


async def trade_account(conn: asyncpg.Connection, card: asyncpg.Record, trade_kind: str,
                        kind: ledger.AccountKind, merchant_id: int) -> int:
    """An account the row of ``checks.trade_card(…, trade_kind, merchant_id)`` names, opened
    when it does not exist yet."""
    if kind is K.CARD_PURSE or kind is K.CARD_POINTS:
        found = card["purse_account" if kind is K.CARD_PURSE else "points_account"]
        return int(found) if found is not None else await account(conn, kind, card_no=card["card_no"])
    found = card["merchant_account"]
    if found is not None and MERCHANT_ACCOUNT_OF.get(trade_kind) is kind:
        return int(found)
    return await account(conn, kind, merchant_id=merchant_id)


async def transfer(
    conn: asyncpg.Connection, *, debit: int, credit: int, amount: int, code: str, reference: str
) -> str | None:
    """Create one posted transfer; its id, or None when the debit account cannot pay it
    (exceeds credits: nothing was written). Any other refusal is a defect and raises."""
    transfer_id = f"kkt:{uuid.uuid4().hex}"
    (outcome,) = await ledger.create_transfers(
        conn, [ledger.NewTransfer(transfer_id, debit, credit, amount, code=code, reference=reference)], details=False
    )
    metrics.child(metrics.LEDGER_TRANSFERS, "single", outcome.result.value).inc()
    if outcome.result is ledger.Result.EXCEEDS_CREDITS:
        return None
    outcome.check(transfer_id)
    return transfer_id


async def _points_rule(conn: asyncpg.Connection, merchant_id: int, settings: Settings) -> int | None:
    """Cents per point of the merchant's points rule, None when it has none (cached)."""

    async def load() -> int | None:
        value = await conn.fetchval("SELECT cents_per_point FROM points_rules WHERE merchant_id = $1", merchant_id)
        return None if value is None else int(value)

    return await reference.cached(("points_rule", merchant_id), settings, load)  # type: ignore[no-any-return]


async def plan(
    conn: asyncpg.Connection, kind: TradeKind, terminal: Terminal, card: asyncpg.Record, amount: int,
    settings: Settings,
) -> tuple[int, ledger.NewTransfer | None, str]:
    """What a consume, recharge or points trade moves, not moved yet: (points moved, the transfer
    to create or None when nothing moves, the refusal when its debit cannot pay: 08/54/65/66).
    Refused: 16 no points rule."""
    m = terminal.merchant_id
    points = 0
    if kind.kind == "consume":
        debit_kind, credit_kind, short = K.CARD_PURSE, K.MERCHANT_SALES, "08"
    elif kind.kind == "recharge":
        debit_kind, credit_kind, short = K.RECHARGE_FUND, K.CARD_PURSE, "54" if card["merchant_id"] == m else "65"
    elif kind.kind == "points_add":
        cents_per_point = await _points_rule(conn, m, settings)
        if cents_per_point is None:
            raise Refused("16")
        points = amount // cents_per_point
        debit_kind, credit_kind, short = K.POINTS_ISSUED, K.CARD_POINTS, "00"
    else:  # points_use: AMOUNT is the points to spend
        points = amount
        debit_kind, credit_kind, short = K.CARD_POINTS, K.POINTS_ISSUED, "66"
    debit = await trade_account(conn, card, kind.kind, debit_kind, m)
    credit = await trade_account(conn, card, kind.kind, credit_kind, m)
    moved = points if kind.family == "pts" else amount
    if moved <= 0:
        return points, None, short
    new = ledger.NewTransfer(f"kkt:{uuid.uuid4().hex}", debit, credit, moved, code=f"kkt_{kind.kind}",
                             reference=card["card_no"])
    return points, new, short


async def create(conn: asyncpg.Connection, transfers: list[ledger.NewTransfer]) -> list[bool]:
    """Create planned transfers in one statement (``ledger.create_transfers``): True for each
    created, False for each whose debit could not pay it (nothing written). Any other refusal is a
    defect and raises."""
    if not transfers:
        return []
    outcomes = await ledger.create_transfers(conn, transfers, details=False)  # only their results are read
    created = []
    for new, outcome in zip(transfers, outcomes, strict=True):
        metrics.child(metrics.LEDGER_TRANSFERS, "single", outcome.result.value).inc()
        if outcome.result is ledger.Result.EXCEEDS_CREDITS:
            created.append(False)
            continue
        outcome.check(new.id)
        created.append(True)
    return created

"""Undoing a trade: a cancel (撤销, the *_cancel kinds, naming the original by STANCE_REV)
and the 0400 reversal (冲正, a POS that never saw its answer).

The original is looked up on the card (hot path by card): none → 61; only another
merchant's → 64; itself a cancel or reversal → 62; already cancelled → 63; of another type,
another AMOUNT, another terminal (0400) or too old → 06. The undo is the original transfer
reversed; short of funds → 08/66/65 by the debited account.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from recharge.kkt import checks, journal, moves
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import Config, Refused, TradeRequest
from recharge.kkt.table import REVERSAL, TRADES, TradeKind
from recharge.ledger import transfers as ledger

_SHORT_CODES = {"card_purse": "08", "card_points": "66", "merchant_sales": "65", "recharge_fund": "65"}


async def _find_original(
    conn: asyncpg.Connection, card_no: str, stance: str, merchant_id: int
) -> asyncpg.Record:
    """The trade with this Stance on this card, preferring the caller's merchant (61/64)."""
    rows = await conn.fetch(
        "SELECT * FROM kkt_trades WHERE card_no = $1 AND stance = $2 ORDER BY id DESC", card_no, stance
    )
    if not rows:
        raise Refused("61")
    mine = [r for r in rows if r["merchant_id"] == merchant_id]
    if not mine:
        raise Refused("64")
    return mine[0]


def _check_not_undone(original: asyncpg.Record) -> None:
    if original["original_id"] is not None:
        raise Refused("62")
    if original["cancelled_by"] is not None:
        raise Refused("63")


async def undo(conn: asyncpg.Connection, original: asyncpg.Record, card: asyncpg.Record) -> str | None:
    """Create the transfer that reverses ``original``'s; returns its id (None: nothing moved)."""
    if original["transfer_id"] is None:
        return None
    first = await ledger.get_transfer(conn, original["transfer_id"])
    assert first is not None, "a journalled trade's transfer exists"
    transfer_id = await moves.transfer(conn, debit=first.credit_account_id, credit=first.debit_account_id,
                                       amount=first.amount, code=f"kkt_undo_{original['kind']}",
                                       reference=card["card_no"])
    if transfer_id is None:
        debit_kind = await conn.fetchval("SELECT kind FROM accounts WHERE id = $1", first.credit_account_id)
        raise Refused(_SHORT_CODES.get(debit_kind, "00"))
    return transfer_id


async def cancellable(
    conn: asyncpg.Connection, kind: TradeKind, cfg: Config, terminal: Terminal, card: asyncpg.Record,
    stance_rev: str, amount: int, now: dt.datetime,
) -> asyncpg.Record:
    """The trade a cancel names, if it may be cancelled (61 62 63 64 06)."""
    original = await _find_original(conn, card["card_no"], stance_rev, terminal.merchant_id)
    _check_not_undone(original)
    if (original["trade_type"], original["trade_mode"]) != kind.original:
        raise Refused("06")
    if amount and amount != original["amount_cents"]:
        raise Refused("06")
    if original["created_at"] < now - dt.timedelta(seconds=cfg.settings.kkt_cancel_window_s):
        raise Refused("06")
    return original


async def reverse(
    conn: asyncpg.Connection, req: TradeRequest, cfg: Config, terminal: Terminal, card: asyncpg.Record,
    stance_rev: str | None, now: dt.datetime,
) -> journal.Entry:
    """0400: undo the terminal's latest trade on this card that moved something (or the one
    named by STANCE_REV), when the terminal never saw its answer: its journal entry (answered 18)."""
    since = now - dt.timedelta(seconds=cfg.settings.kkt_reversal_window_s)
    if stance_rev is not None:
        original = await _find_original(conn, card["card_no"], stance_rev, terminal.merchant_id)
    else:
        original = await conn.fetchrow(
            "SELECT * FROM kkt_trades WHERE card_no = $1 AND terminal_code = $2 AND created_at > $3"
            " AND transfer_id IS NOT NULL AND original_id IS NULL AND cancelled_by IS NULL"
            " ORDER BY id DESC LIMIT 1",
            card["card_no"], terminal.code, since,
        )
        if original is None:
            raise Refused("61")
    _check_not_undone(original)
    if original["terminal_code"] != terminal.code or original["created_at"] <= since:
        raise Refused("06")
    if req.amount and checks.amount(req.amount, cfg) != original["amount_cents"]:
        raise Refused("06")
    transfer_id = await undo(conn, original, card)
    family = TRADES[(original["trade_type"], original["trade_mode"])].family
    kind = TradeKind("reversal", family, REVERSAL.name_zh, REVERSAL.name_en, needs_amount=False)
    return journal.entry(req, kind, terminal, card["card_no"], original["amount_cents"], original["points"], None,
                         (REVERSAL.name_zh, REVERSAL.name_en), transfer_id, original["id"], code="18")

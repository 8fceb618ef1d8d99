"""A trade's limits, checked after its card is locked: the duplicate rule (12: the same card,
terminal, trade and amount within ``kkt_duplicate_window_s``), the per-trade limit (09), the card's
daily count (67) and the terminal's daily recharges (58).

The duplicate flag and the daily count come from a statement of their own run after the card's
row lock was taken, so its snapshot sees the trades committed while the lock was awaited.
``figures`` reads them for every trade of a group-commit round in one such statement (after all
the round's cards are locked); ``check`` uses them when given, else reads its trade's own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from recharge.config import Settings
from recharge.kkt import checks
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import Config, Refused, TradeRequest
from recharge.kkt.table import TradeKind

_FIGURES_SQL = """
SELECT i.idx,
       CASE WHEN $7::timestamptz IS NULL OR i.amount <= 0 THEN false ELSE EXISTS (
           SELECT 1 FROM kkt_trades t WHERE t.card_no = i.card_no AND t.created_at > $7::timestamptz
           AND t.terminal_code = i.terminal_code AND t.trade_type = i.trade_type AND t.trade_mode = i.trade_mode
           AND t.amount_cents = i.amount) END AS duplicate,
       (SELECT count(*) FROM (SELECT 1 FROM kkt_trades t WHERE t.card_no = i.card_no AND t.created_at >= $8
        AND t.amount_cents > 0 LIMIT i.count_limit) AS x) AS today
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
     WITH ORDINALITY AS i(card_no, terminal_code, trade_type, trade_mode, amount, count_limit, idx)
ORDER BY i.idx
"""


@dataclass(frozen=True, slots=True)
class Asked:
    """What a trade's duplicate flag and daily count depend on."""

    card_no: str
    terminal_code: str
    trade_type: str
    trade_mode: str
    amount: int
    count_limit: int


Figures = dict[Asked, tuple[bool, int]]  # (duplicate, trades of the card today, at most its count limit)


def count_limit(card: asyncpg.Record, settings: Settings) -> int:
    return int(card["daily_count_limit"]) if card["daily_count_limit"] is not None else settings.kkt_card_daily_count


def asked(card: asyncpg.Record, terminal: Terminal, req: TradeRequest, amount: int, settings: Settings) -> Asked:
    return Asked(card["card_no"], terminal.code, req.trade_type, req.trade_mode, amount, count_limit(card, settings))


async def figures(conn: asyncpg.Connection, wanted: list[Asked], now: dt.datetime, settings: Settings) -> Figures:
    """Every wanted trade's duplicate flag and daily count, in one statement."""
    if not wanted:
        return {}
    window = settings.kkt_duplicate_window_s
    rows = await conn.fetch(
        _FIGURES_SQL, [a.card_no for a in wanted], [a.terminal_code for a in wanted], [a.trade_type for a in wanted],
        [a.trade_mode for a in wanted], [a.amount for a in wanted], [a.count_limit for a in wanted],
        now - dt.timedelta(seconds=window) if window > 0 else None, checks.day_start(now),
    )
    return {a: (bool(row["duplicate"]), int(row["today"])) for a, row in zip(wanted, rows, strict=True)}


async def _own_figures(conn: asyncpg.Connection, a: Asked, now: dt.datetime, settings: Settings) -> tuple[bool, int]:
    return (await figures(conn, [a], now, settings))[a]


async def check(
    conn: asyncpg.Connection, card: asyncpg.Record, terminal: Terminal, req: TradeRequest, kind: TradeKind,
    amount: int, cfg: Config, now: dt.datetime, known: Figures | None = None,
) -> None:
    """12, 09, 67, 58 in that order; ``known``: figures read ahead (a round of a batch)."""
    s = cfg.settings
    a = asked(card, terminal, req, amount, s)
    duplicate, today_count = known[a] if known and a in known else await _own_figures(conn, a, now, s)
    if duplicate:
        raise Refused("12")
    limit = card["per_txn_limit_cents"] if card["per_txn_limit_cents"] is not None else s.kkt_per_txn_limit_cents
    if kind.family == "sv" and amount > limit:
        raise Refused("09")
    if today_count >= a.count_limit:
        raise Refused("67")
    if kind.kind == "recharge":
        # serialise a terminal's recharges so two cannot both slip under its daily limit (the
        # limit is read with the lock, never from the reference cache)
        day_limit = await conn.fetchval(
            "SELECT daily_recharge_limit_cents FROM terminals WHERE id = $1 FOR UPDATE", terminal.id
        )
        if day_limit is None:
            day_limit = s.kkt_terminal_daily_recharge_cents
        today = await conn.fetchval(
            "SELECT coalesce(sum(amount_cents), 0) FROM kkt_trades WHERE terminal_code = $1"
            " AND created_at >= $2 AND kind = 'recharge' AND cancelled_by IS NULL",
            terminal.code, checks.day_start(now),
        )
        if today + amount > day_limit:
            raise Refused("58")

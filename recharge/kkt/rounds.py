"""The reads of one round of a group-commit batch of trades (``recharge.kkt.trades.run_trades``), in
two round trips: the round's cards locked, then everything its trades' checks read.

1. ``lock``: the cards of the trades that take the row lock, in card-number order (as every batch
   takes them). When the round opens the batch's transaction (its group is ``begins``: the group
   commit sent no BEGIN) the lock travels in the same message as ``BEGIN`` — a simple query whose
   card numbers are written into it (16 digits each, checked here), saving the round trip a
   ``BEGIN`` of its own costs; later rounds lock with a prepared statement.
2. ``read``: one statement after those locks (so its snapshot sees every trade committed while a
   lock was awaited) reads each trade's card with the ledger accounts the trade may move and
   whether the terminal's merchant may serve it, and — for the trades whose limits
   ``limits.check`` checks — the duplicate flag and the card's count of trades today.

Before, a round's locked read and its figures were two statements after a separate ``BEGIN``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import asyncpg

from recharge.config import Settings
from recharge.kkt import checks, limits
from recharge.kkt.moves import MERCHANT_ACCOUNT_OF, ledger_of
from recharge.kkt.table import TradeKind

_CARD_NO_RE = re.compile(r"[0-9]{16}")
_LOCK_SQL = "SELECT FROM cards WHERE card_no = ANY($1::text[]) ORDER BY card_no FOR UPDATE"

# Each trade's card ($1, for the terminal merchant $2, the trade's merchant account kind and ledger $3/$4),
# and the figures of the trades that ask for them ($7): duplicate within the window from $11 (NULL: no
# window), trades today from $12 up to the card's count limit (default $13).
_READ_SQL = """
SELECT c.*, m.code AS merchant_code, m.closed AS merchant_closed,
       (c.merchant_id = i.merchant_id OR EXISTS (SELECT FROM kkt_acceptance x WHERE x.issuer_id = c.merchant_id
        AND x.merchant_id = i.merchant_id)) AS accepted,
       (SELECT a.id FROM accounts a WHERE a.card_no = c.card_no AND a.kind = 'card_purse') AS purse_account,
       (SELECT a.id FROM accounts a WHERE a.card_no = c.card_no AND a.kind = 'card_points') AS points_account,
       (SELECT a.id FROM accounts a WHERE a.merchant_id = i.merchant_id AND a.kind = i.account_kind
        AND a.ledger = i.ledger AND a.card_no IS NULL) AS merchant_account,
       i.merchant_id AS for_merchant_id, i.trade_kind, i.locked AS read_locked, i.terminal_code AS asked_terminal,
       i.trade_type AS asked_type, i.trade_mode AS asked_mode, i.amount AS asked_amount,
       CASE WHEN NOT i.figures OR $11::timestamptz IS NULL OR i.amount <= 0 THEN false ELSE EXISTS (
           SELECT 1 FROM kkt_trades t WHERE t.card_no = c.card_no AND t.created_at > $11::timestamptz
           AND t.terminal_code = i.terminal_code AND t.trade_type = i.trade_type AND t.trade_mode = i.trade_mode
           AND t.amount_cents = i.amount) END AS figure_duplicate,
       CASE WHEN i.figures THEN (SELECT count(*) FROM (SELECT 1 FROM kkt_trades t WHERE t.card_no = c.card_no
        AND t.created_at >= $12 AND t.amount_cents > 0 LIMIT coalesce(c.daily_count_limit, $13)) AS x)
       END AS figure_today
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::boolean[], $7::boolean[],
            $8::text[], $9::text[], $10::text[], $14::bigint[])
     AS i(card_no, merchant_id, account_kind, ledger, trade_kind, locked, figures, terminal_code, trade_type,
          trade_mode, amount)
JOIN cards c ON c.card_no = i.card_no LEFT JOIN merchants m ON m.id = c.merchant_id
WHERE c.card_no = ANY($1::text[])
"""


@dataclass(frozen=True, slots=True)
class Wanted:
    """A trade's card to read (under the lock or not), and what its limits' figures depend on
    (``asking``: terminal code, trade type, trade mode, amount; None when its limits are not checked)."""

    card_no: str
    merchant_id: int
    kind: TradeKind
    lock: bool
    asking: tuple[str, str, str, int] | None = None


async def lock(conn: asyncpg.Connection, card_nos: list[str], *, begin: bool) -> None:
    """Lock these cards in card-number order; with ``begin``, open the transaction in the same message."""
    cards = sorted(set(card_nos))
    if not begin:
        if cards:
            await conn.execute(_LOCK_SQL, cards)
        return
    if not all(_CARD_NO_RE.fullmatch(c) for c in cards):
        raise ValueError("a card number to lock is not 16 digits")  # checks.card_no never lets one through
    if cards:
        await conn.execute(
            f"BEGIN; SELECT FROM cards WHERE card_no = ANY('{{{','.join(cards)}}}'::text[]) ORDER BY card_no FOR UPDATE"
        )
    else:
        await conn.execute("BEGIN")


async def read(
    conn: asyncpg.Connection, wanted: list[Wanted], now: dt.datetime, settings: Settings
) -> tuple[checks.KnownCards, limits.Figures]:
    """Every wanted card (keyed as ``checks.trade_card`` asks; None: no such card) and the figures of
    the trades that ask for them, in one statement (the caller holds the locks)."""
    if not wanted:
        return {}, {}
    kinds = [MERCHANT_ACCOUNT_OF.get(w.kind.kind) for w in wanted]
    asking = [w.asking or ("", "", "", 0) for w in wanted]
    window = settings.kkt_duplicate_window_s
    rows = await conn.fetch(
        _READ_SQL, [w.card_no for w in wanted], [w.merchant_id for w in wanted],
        [k.value if k else "" for k in kinds], [ledger_of(k) if k else "" for k in kinds],
        [w.kind.kind for w in wanted], [w.lock for w in wanted], [w.asking is not None for w in wanted],
        [a[0] for a in asking], [a[1] for a in asking], [a[2] for a in asking],
        now - dt.timedelta(seconds=window) if window > 0 else None, checks.day_start(now),
        settings.kkt_card_daily_count, [a[3] for a in asking],
    )
    cards: checks.KnownCards = {(w.card_no, w.merchant_id, w.kind.kind, w.lock): None for w in wanted}
    figures: limits.Figures = {}
    for row in rows:
        cards[(row["card_no"], int(row["for_merchant_id"]), row["trade_kind"], row["read_locked"])] = row
        if row["figure_today"] is not None:
            asked = limits.Asked(row["card_no"], row["asked_terminal"], row["asked_type"], row["asked_mode"],
                                 int(row["asked_amount"]), limits.count_limit(row, settings))
            figures[asked] = (bool(row["figure_duplicate"]), int(row["figure_today"]))
    return cards, figures


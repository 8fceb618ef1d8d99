"""The checks every card method shares once the gateway let the request in: the request's
card number (01) and amount (02), the card row (05) read with its lock, whether the
terminal's merchant may serve the card (52), and the card's state and dates (17 14 15 19 69,
60, 13, 10).

Values are taken exactly as sent: a card number or an amount with blanks around it, or an
amount with leading zeros, is malformed (issue 14 item 9). Who may serve a card: its issuing
merchant, and the merchants its issuer accepts (``kkt_acceptance``, set by an operator).
"""

from __future__ import annotations

import datetime as dt
import re

import asyncpg

from recharge.kkt import cards
from recharge.kkt.messages import SHANGHAI, Config, Refused
from recharge.kkt.moves import MERCHANT_ACCOUNT_OF, ledger_of
from recharge.kkt.table import TradeKind

AMOUNT_RE = re.compile(r"[1-9][0-9]{0,11}")  # cents; no sign, blank or leading zero
STANCE_RE = re.compile(r"[0-9]{8}")
STATE_CODES = {"inactive": "17", "lost": "14", "cancelled": "15", "reissued": "19", "frozen": "69"}

# The card's issuer is the terminal's merchant ($2), or accepts it.
_ACCEPTED = (
    "(c.merchant_id = $2 OR EXISTS (SELECT FROM kkt_acceptance x WHERE x.issuer_id = c.merchant_id"
    " AND x.merchant_id = $2)) AS accepted"
)
_CARD_SQL = (
    f"SELECT c.*, m.code AS merchant_code, m.closed AS merchant_closed, {_ACCEPTED} FROM cards c"
    " LEFT JOIN merchants m ON m.id = c.merchant_id WHERE c.card_no = $1 FOR UPDATE OF c"
)
# A trade's card, with the ledger accounts the trade may move (NULL: not opened yet): the
# card's purse and points, and the terminal merchant's account of the kind the trade uses
# ($3/$4; '' for none). Account ids never change, so reading them here saves a round trip
# per account.
_TRADE_CARD_SQL = (
    f"SELECT c.*, m.code AS merchant_code, m.closed AS merchant_closed, {_ACCEPTED},"
    " (SELECT a.id FROM accounts a WHERE a.card_no = c.card_no AND a.kind = 'card_purse') AS purse_account,"
    " (SELECT a.id FROM accounts a WHERE a.card_no = c.card_no AND a.kind = 'card_points') AS points_account,"
    " (SELECT a.id FROM accounts a WHERE a.merchant_id = $2 AND a.kind = $3 AND a.ledger = $4"
    " AND a.card_no IS NULL) AS merchant_account"
    " FROM cards c LEFT JOIN merchants m ON m.id = c.merchant_id WHERE c.card_no = $1"
)


CardKey = tuple[str, int, str, bool]  # card number, terminal merchant, trade kind, locked
KnownCards = dict[CardKey, "asyncpg.Record | None"]


def card_no(raw: str | None, merchant_code: str) -> str:
    """The 16-digit number of ``raw`` (16 digits, or 8 expanded with the merchant), else 01."""
    found = cards.expand_card_no(raw or "", merchant_code)
    if found is None:
        raise Refused("01")
    return found


def amount(raw: str | None, cfg: Config) -> int:
    """Cents from 1 to ``kkt_max_amount_cents``, else 02."""
    if raw is None or not AMOUNT_RE.fullmatch(raw):
        raise Refused("02")
    cents = int(raw)
    if cents > cfg.settings.kkt_max_amount_cents:
        raise Refused("02")
    return cents


async def read_card(conn: asyncpg.Connection, card_no: str, merchant_id: int) -> asyncpg.Record | None:
    """The card, locked, with ``accepted`` for the merchant ``merchant_id``; None when none."""
    return await conn.fetchrow(_CARD_SQL, card_no, merchant_id)


async def lock_card(conn: asyncpg.Connection, card_no: str, merchant_id: int) -> asyncpg.Record:
    """The card, locked, once ``merchant_id`` may serve it (05 no such card, 52 not served)."""
    row = await read_card(conn, card_no, merchant_id)
    if row is None:
        raise Refused("05")
    check_accepted(row)
    return row


async def trade_card(
    conn: asyncpg.Connection, card_no: str, kind: TradeKind, merchant_id: int, lock: bool = True,
    known: KnownCards | None = None,
) -> asyncpg.Record:
    """The card (locked unless ``lock`` is false: a query's fast path) and the accounts
    ``kind`` moves, with ``accepted`` for the terminal's merchant (05 when none); from ``known``
    (``recharge.kkt.rounds.read``) when it was read there — once: a trade read again reads it again."""
    if known is not None and (key := (card_no, merchant_id, kind.kind, lock)) in known:
        known_row = known.pop(key)
        if known_row is None:
            raise Refused("05")
        return known_row
    account_kind = MERCHANT_ACCOUNT_OF.get(kind.kind)
    sql = _TRADE_CARD_SQL + " FOR UPDATE OF c" if lock else _TRADE_CARD_SQL
    row = await conn.fetchrow(
        sql, card_no, merchant_id, account_kind.value if account_kind else "",
        ledger_of(account_kind) if account_kind else "",
    )
    if row is None:
        raise Refused("05")
    return row


def check_accepted(card: asyncpg.Record) -> None:
    """52 unless the terminal's merchant issued the card or its issuer accepts that merchant."""
    if not card["accepted"]:
        raise Refused("52")


def check_card_usable(card: asyncpg.Record, today: dt.date) -> None:
    code = STATE_CODES.get(card["state"])
    if code:
        raise Refused(code)
    if card["merchant_closed"]:
        raise Refused("60")
    if card["valid_from"] is not None and today < card["valid_from"]:
        raise Refused("13")
    if card["valid_to"] is not None and today > card["valid_to"]:
        raise Refused("10")


def today() -> dt.date:
    return dt.datetime.now(SHANGHAI).date()


def day_start(now: dt.datetime) -> dt.datetime:
    """The start of ``now``'s Asia/Shanghai calendar day, in UTC (daily limits)."""
    local = now.astimezone(SHANGHAI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)

"""Every trade of the seed's table (cTRequest / soapCardTrade / the SMS trades): consume,
recharge, points accumulate and consume, their cancels, the balance and points queries, and
the 0400 reversal (``recharge.kkt.reversals``).

Order of checks (docs/PROTOCOL.md): terminal (70/60) → CARDNO (01) → REQID replay → amount
(02) → ITEMCODE (00) → STANCE_REV (06) → card (05) → who may serve it (52) → state and dates
→ card kind (20 31 32) → password (07) → test mode (68) → the original of a cancel → duplicate
(12) → limits (09 67 58) → the ledger → journal and Stance, 11. A refusal writes nothing but
the wrong-password counter. A query without REQID runs without a transaction (two
statements); its password check is ``passwords.check_unlocked``, and when that cannot decide
the query runs again in a transaction under the card's row lock.
"""

from __future__ import annotations

import datetime as dt
import re

import asyncpg

from recharge import metrics
from recharge.config import Settings
from recharge.kkt import checks, gateway, journal, moves, passwords, reference, reversals
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import SHANGHAI, Config, Refused, TradeRequest, TradeResult
from recharge.kkt.table import CARD_KIND_FAMILIES, REVERSAL, TRADE_TYPES, TradeKind, kind_of
from recharge.kkt.transaction import Db, in_transaction, without_transaction

_ITEM_RE = re.compile(r"[0-9]{3,8}")
_UNREMEMBERED = ("01", "70", "60")  # refusals that identify the request too little to remember it


async def trade(db: Db, req: TradeRequest, cfg: Config) -> TradeResult:
    """Run one trade of the seed's table; never raises for a business refusal."""
    kind = kind_of(req.trade_type, req.trade_mode)
    if kind is None:
        result = TradeResult("03" if req.trade_type not in TRADE_TYPES else "04")
    elif not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    elif kind.query and not req.req_id:
        result = await _query(db, req, kind, cfg)
    else:
        result = await in_transaction(db, lambda conn: _trade(conn, req, kind, cfg), cfg.settings)
    metrics.KKT_TRADES.labels("cTRequest", result.code).inc()
    return result


async def _query(db: Db, req: TradeRequest, kind: TradeKind, cfg: Config) -> TradeResult:
    """A balance or points query moves nothing: the card read unlocked, then one statement
    that reads the balances, takes the Stance and journals it. A password check that only
    the card's row lock can decide runs the query again in a transaction."""
    try:
        return await without_transaction(db, lambda conn: _trade(conn, req, kind, cfg, lock=False))
    except passwords.Contended:
        return await in_transaction(db, lambda conn: _trade(conn, req, kind, cfg), cfg.settings)


async def _trade(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, lock: bool = True
) -> TradeResult:
    card_no = ""
    try:
        terminal = await gateway.terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = checks.card_no(req.card_no, terminal.merchant_code)
        replay = await journal.replay(conn, req, terminal)
        if replay is not None:
            return replay
        result = await _trade_checked(conn, req, kind, cfg, terminal, card_no, lock)
    except Refused as refusal:
        result = TradeResult(refusal.code, card_no=card_no, trade_name_zh=kind.name_zh, trade_name_en=kind.name_en)
        if refusal.code in _UNREMEMBERED:
            return result
    if req.req_id:
        await journal.remember(conn, req, result)
    return result


def _fields(req: TradeRequest, kind: TradeKind, cfg: Config) -> tuple[int, str | None, str | None]:
    """(amount in cents, ITEMCODE, STANCE_REV) of a trade, checked (02, 00, 06)."""
    amount = checks.amount(req.amount, cfg) if kind.needs_amount and kind.original is None else 0
    if kind.original is not None and req.amount:
        amount = checks.amount(req.amount, cfg)  # a cancel may repeat the original's amount
    item_code = (req.item_code or "").strip() or None
    if item_code is not None and not _ITEM_RE.fullmatch(item_code):
        raise Refused("00")
    stance_rev = (req.stance_rev or "").strip() or None
    undoes = kind.original is not None or kind is REVERSAL
    if kind.original is not None and stance_rev is None:
        raise Refused("06")
    if undoes and stance_rev is not None and not checks.STANCE_RE.fullmatch(stance_rev):
        raise Refused("06")
    return amount, item_code, stance_rev



async def _trade_checked(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, terminal: Terminal, card_no: str,
    lock: bool,
) -> TradeResult:
    now = dt.datetime.now(dt.UTC)
    amount, item_code, stance_rev = _fields(req, kind, cfg)
    card = await checks.trade_card(conn, card_no, kind, terminal.merchant_id, lock)
    if kind is REVERSAL:
        return await reversals.reverse(conn, req, cfg, terminal, card, stance_rev, now)
    if kind.original is None:
        checks.check_accepted(card)  # a cancel names the merchant's own trade (64), made when accepted
    checks.check_card_usable(card, now.astimezone(SHANGHAI).date())
    _check_family(kind, card)
    guard = await _check_password(conn, req, card, cfg, lock)
    if req.test_mode:
        await _check_test_mode(conn, terminal, cfg, now)
    names = await _trade_names(conn, kind, terminal, item_code, cfg.settings)
    if kind.query:
        return await journal.finish(conn, req, kind, terminal, card_no, 0, 0, item_code, names, None, None,
                                    guard=guard)
    if kind.original is not None:
        original = await reversals.cancellable(conn, kind, cfg, terminal, card, stance_rev or "", amount, now)
        await _check_limits(conn, card, terminal, req, kind, original["amount_cents"], cfg, now)
        transfer_id = await reversals.undo(conn, original, card)
        return await journal.finish(conn, req, kind, terminal, card_no, original["amount_cents"],
                                    original["points"], item_code, names, transfer_id, original["id"])
    await _check_limits(conn, card, terminal, req, kind, amount, cfg, now)
    points, transfer_id = await moves.move(conn, kind, terminal, card, amount, cfg.settings)
    return await journal.finish(conn, req, kind, terminal, card_no, amount, points, item_code, names,
                                transfer_id, None)


def _check_family(kind: TradeKind, card: asyncpg.Record) -> None:
    """20 a points card on a stored-value trade, 31/32 a card without the trade's family."""
    if kind.family not in CARD_KIND_FAMILIES[card["kind"]]:
        if card["kind"] == "points":
            raise Refused("20")
        raise Refused("31" if kind.family == "sv" else "32")


async def _check_password(
    conn: asyncpg.Connection, req: TradeRequest, card: asyncpg.Record, cfg: Config, lock: bool
) -> str | None:
    """07 unless the password is right; the guard the journal statement needs on the fast path."""
    if req.skip_password:
        return None
    if lock:
        await passwords.check_locked(conn, card, req.password, cfg)
        return None
    return await passwords.check_unlocked(conn, card, req.password, cfg)


async def _check_test_mode(conn: asyncpg.Connection, terminal: Terminal, cfg: Config, now: dt.datetime) -> None:
    """68: a test-mode key's merchant has made its daily number of trades."""
    count = await conn.fetchval(
        "SELECT count(*) FROM kkt_trades WHERE merchant_id = $1 AND created_at >= $2",
        terminal.merchant_id, checks.day_start(now),
    )
    if count >= cfg.settings.kkt_test_mode_daily_max:
        raise Refused("68")


async def _trade_names(
    conn: asyncpg.Connection, kind: TradeKind, terminal: Terminal, item_code: str | None, settings: Settings
) -> tuple[str, str]:
    """The trade's names (Chinese, English): the merchant's name for its ITEMCODE, if any."""
    if item_code is not None:
        merchant_id = terminal.merchant_id

        async def load() -> str | None:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT name FROM service_codes WHERE merchant_id = $1 AND item_code = $2", merchant_id, item_code
            )

        service = await reference.cached(("service", merchant_id, item_code), settings, load)
        if service:
            return service, service
    return kind.name_zh, kind.name_en


_TODAY_COUNT_SQL = (
    "(SELECT count(*) FROM (SELECT 1 FROM kkt_trades WHERE card_no = $1 AND created_at >= $2"
    " AND amount_cents > 0 LIMIT $3) AS t) AS today"
)


async def _check_limits(
    conn: asyncpg.Connection, card: asyncpg.Record, terminal: Terminal, req: TradeRequest, kind: TradeKind,
    amount: int, cfg: Config, now: dt.datetime,
) -> None:
    s = cfg.settings
    card_no = card["card_no"]
    day_start = checks.day_start(now)
    count_limit = card["daily_count_limit"] if card["daily_count_limit"] is not None else s.kkt_card_daily_count
    # a separate statement from the card lock: its snapshot sees trades committed while we waited
    if s.kkt_duplicate_window_s > 0 and amount > 0:
        row = await conn.fetchrow(
            f"SELECT EXISTS (SELECT 1 FROM kkt_trades WHERE card_no = $1 AND created_at > $4 AND terminal_code = $5"
            f" AND trade_type = $6 AND trade_mode = $7 AND amount_cents = $8) AS duplicate, {_TODAY_COUNT_SQL}",
            card_no, day_start, count_limit, now - dt.timedelta(seconds=s.kkt_duplicate_window_s), terminal.code,
            req.trade_type, req.trade_mode, amount,
        )
    else:
        row = await conn.fetchrow(f"SELECT false AS duplicate, {_TODAY_COUNT_SQL}", card_no, day_start, count_limit)
    if row["duplicate"]:
        raise Refused("12")
    limit = card["per_txn_limit_cents"] if card["per_txn_limit_cents"] is not None else s.kkt_per_txn_limit_cents
    if kind.family == "sv" and amount > limit:
        raise Refused("09")
    if row["today"] >= count_limit:
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
            terminal.code, day_start,
        )
        if today + amount > day_limit:
            raise Refused("58")


"""The SMS channel's business side (SPEC 3.3, seed 000): who sent a command, and running it.

``handle(db, cfg, msisdn, text)`` parses the text (``recharge.kkt.sms``), decides the sender's
role and runs the command through the card service (``recharge.kkt.trades`` and
``recharge.kkt.card_admin``: one implementation of every method, shared with REST and SOAP), answering an ``Answer`` — the reply SMS and the
metric labels. It never raises for anything a sender can do.

- **Operator**: the sender's number is an SMS terminal's (``terminals.kind = 'sms'`` and
  ``terminals.msisdn``); the command runs as that terminal (its merchant expands 8-digit
  card numbers, pays recharges, gets consumes, numbers the serials). Commands without a
  password in seed 000 (points, cancel, queries) run with ``skip_password``: the registered
  number is the authentication.
- **Cardholder**: anyone else. Only queries, bind/unbind and password change, and only on a
  card bound to the sender's number (``cards.bound_mobile``; an 8-digit number is the bound
  card ending in those digits). Such commands run as the card's issuing merchant's
  cardholder terminal ``SMSH<merchant>`` (kind ``sms``, no msisdn), created on first use,
  so that queries get a serial of that merchant like every other trade.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from recharge.kkt import card_admin, cards, sms, trades
from recharge.kkt.messages import SMS_TERMINAL_KINDS, Config, TradeRequest
from recharge.kkt.table import TRADES
from recharge.kkt.transaction import Db, connection

HOLDER_TERMINAL_PREFIX = "SMSH"  # + the 4-digit merchant code: reserved terminal codes
HOLDER_ACTOR = "sms-channel"
TRADE_PAIRS = {  # SMS command → the seed-002 TRADETYPE/TRADEMODE it is
    "CZCZ": ("1102", "0"),  # 终端储值充值: an SMS terminal is a terminal
    "CZXF": ("0022", "1"),
    "JFLJ": ("0033", "0"),
    "JFXF": ("0034", "1"),
    "YECX": ("0011", "0"),
    "JFCX": ("0011", "1"),
}
PASSWORD_CHECKED = frozenset({"CZCZ", "CZXF"})  # trades whose seed format carries the card password
# the cancel of each cancellable trade: (type, mode) of the original → (type, mode) of its cancel
CANCEL_OF = {kind.original: pair for pair, kind in TRADES.items() if kind.original is not None}
FALLBACK_CANCEL = ("0022", "0")  # no trade with that serial: the card service answers 61/64/06


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply SMS, and the ``recharge_sms_requests_total`` labels (command, outcome)."""

    reply: str
    command: str  # the letter code, or "unknown"
    outcome: str  # a two-digit return code, or a word (see docs/OPERATIONS.md)


@dataclass(frozen=True, slots=True)
class Operator:
    terminal_code: str
    merchant_id: int
    merchant_code: str


async def find_operator(conn: asyncpg.Connection, msisdn: str) -> Operator | None:
    """The SMS terminal registered with this number (enabled or not: a disabled one answers 70)."""
    row = await conn.fetchrow(
        "SELECT t.code, t.merchant_id, m.code AS merchant_code FROM terminals t"
        " JOIN merchants m ON m.id = t.merchant_id WHERE t.msisdn = $1 AND t.kind = 'sms'", msisdn,
    )
    return None if row is None else Operator(row["code"], int(row["merchant_id"]), row["merchant_code"])


async def handle(db: Db, cfg: Config, msisdn: str, text: str, message_id: str | None = None) -> Answer:
    """Parse and run one inbound SMS from ``msisdn`` (11 digits for mainland mobiles).

    ``db``: a pool, a connection or an acquire callable (``Platform.acquire``, what the HTTP hook
    passes). An operator's command holds no connection of its own while it waits: the lookup of
    the sender takes one for its statement, and the trade goes to the trade lane (``Config.lane``)
    like a REST or SOAP trade. A cardholder's command holds one connection and its transaction
    from the binding check (the card locked) to the end of the trade."""
    s = cfg.settings
    parsed = sms.parse(text, s.sms_max_message_chars)
    if isinstance(parsed, sms.Rejected):
        code = parsed.command.code if parsed.command else "unknown"
        return Answer(sms.fit(parsed.reply, s.sms_max_reply_chars), code, parsed.outcome)
    async with connection(db) as conn:
        operator = await find_operator(conn, msisdn)
    if operator is not None:
        return await _run(db, cfg, parsed, operator.terminal_code, operator.merchant_id,
                          operator.merchant_code, parsed.card, message_id)
    async with connection(db) as conn:
        return await _run_as_holder(conn, cfg, parsed, msisdn, message_id)


async def _run_as_holder(
    conn: asyncpg.Connection, cfg: Config, parsed: sms.SmsCommand, msisdn: str, message_id: str | None
) -> Answer:
    command = parsed.command
    limit = cfg.settings.sms_max_reply_chars
    if not command.holder:
        return Answer(sms.fit(f"{command.name}{sms.HOLDER_FORBIDDEN}", limit), command.code, "holder_forbidden")
    async with conn.transaction():
        # the card stays locked from the binding check to the end of the trade
        card = await _bound_card(conn, parsed.card, msisdn)
        if card is None:
            return Answer(sms.fit(sms.NOT_BOUND, limit), command.code, "not_bound")
        terminal_code = await ensure_holder_terminal(conn, card["merchant_id"], card["merchant_code"])
        return await _run(conn, cfg, parsed, terminal_code, int(card["merchant_id"]), card["merchant_code"],
                          card["card_no"], message_id)


async def _bound_card(conn: asyncpg.Connection, raw: str, msisdn: str) -> asyncpg.Record | None:
    """The card ``raw`` names if it is bound to ``msisdn`` (8 digits: the bound card ending so)."""
    sql = (
        "SELECT c.card_no, c.merchant_id, m.code AS merchant_code FROM cards c JOIN merchants m ON m.id = c.merchant_id"
        " WHERE c.bound_mobile = $1 AND {} FOR UPDATE OF c"
    )
    if len(raw) == 16:
        return await conn.fetchrow(sql.format("c.card_no = $2"), msisdn, raw)
    rows = await conn.fetch(sql.format("substr(c.card_no, 9) = $2"), msisdn, raw)
    return rows[0] if len(rows) == 1 else None


async def ensure_holder_terminal(conn: asyncpg.Connection, merchant_id: int, merchant_code: str) -> str:
    """The issuing merchant's cardholder SMS terminal, created (and recorded) on first use."""
    code = HOLDER_TERMINAL_PREFIX + merchant_code
    created = await conn.fetchval(
        "INSERT INTO terminals (code, merchant_id, kind) VALUES ($1, $2, 'sms') ON CONFLICT (code) DO NOTHING"
        " RETURNING id", code, merchant_id,
    )
    if created is not None:
        await cards.record_action(conn, HOLDER_ACTOR, "terminal_upsert", code,
                                  "cardholder SMS terminal created on first use", kind="sms")
    return code


async def _run(
    db: Db, cfg: Config, parsed: sms.SmsCommand, terminal_code: str, merchant_id: int,
    merchant_code: str, card: str, message_id: str | None,
) -> Answer:
    command = parsed.command
    code = command.code
    limit = cfg.settings.sms_max_reply_chars
    kinds = SMS_TERMINAL_KINDS
    if code in ("HMBD", "BDCX"):
        result = await card_admin.bind(db, card_admin.BindRequest(
            card_no=card, password=parsed.password, id_num=parsed.id_num or "",
            trade_mode="1" if code == "HMBD" else "0", terminal_code=terminal_code, terminal_kinds=kinds,
        ), cfg)
        return Answer(sms.account_reply(command, result, limit), code, result.code)
    if code in ("MMXG", "MMCZ"):
        result = await card_admin.change_password(db, card_admin.PasswordRequest(
            card_no=card, new_password=parsed.new_password, terminal_code=terminal_code,
            license_merchant_id=merchant_id, old_password=parsed.password if code == "MMXG" else None,
            terminal_kinds=kinds,
        ), cfg)
        return Answer(sms.account_reply(command, result, limit), code, result.code)
    if code == "JYCX":
        async with connection(db) as conn:
            trade_type, trade_mode = await cancel_pair(conn, card, merchant_code, merchant_id, parsed.serial or "")
    else:
        trade_type, trade_mode = TRADE_PAIRS[code]
    amount = parsed.points if code == "JFXF" else parsed.amount_cents
    result = await trades.trade(db, TradeRequest(
        trade_type=trade_type, trade_mode=trade_mode, card_no=card, terminal_code=terminal_code,
        password=parsed.password, amount=None if amount is None else str(amount), item_code=parsed.item_code,
        stance_rev=parsed.serial, req_id=message_id, skip_password=code not in PASSWORD_CHECKED,
        terminal_kinds=kinds,
    ), cfg)
    return Answer(sms.trade_reply(command, result, limit), code, result.code)


async def cancel_pair(
    conn: asyncpg.Connection, raw_card: str, merchant_code: str, merchant_id: int, serial: str
) -> tuple[str, str]:
    """Which cancel JYCX means: seed 000 names only the serial, the card service wants the
    cancel's TRADETYPE/TRADEMODE, so look at the trade the serial names on that card (the
    operator's merchant's first, as the card service does). The card service then checks
    everything again (61 62 63 64 06), inside its own transaction."""
    card_no = cards.expand_card_no(raw_card, merchant_code)
    if card_no is None:
        return FALLBACK_CANCEL
    row = await conn.fetchrow(
        "SELECT trade_type, trade_mode FROM kkt_trades WHERE card_no = $1 AND stance = $2"
        " ORDER BY (merchant_id = $3) DESC, id DESC LIMIT 1", card_no, serial, merchant_id,
    )
    if row is None:
        return FALLBACK_CANCEL
    return CANCEL_OF.get((row["trade_type"], row["trade_mode"]), FALLBACK_CANCEL)

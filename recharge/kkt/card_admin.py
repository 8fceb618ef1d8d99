"""Card administration through the gateways: activation (aCRequest), password change and
reset (rSCardPwd), binding a mobile or ID number (bCRequest) and the holder's information
(cIRequest).

Success answers 11 as the seed's examples do; ``TradeResult.text_code`` carries the seed's
texts 57/45/47/40/44 for the SMS channel. Every method runs in one transaction with the card
row locked; only the card's issuer activates it, resets its password or sees its holder's
information (52/05 otherwise), and a password change or binding needs a merchant that may
serve the card (52, ``checks.lock_card``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from recharge import metrics
from recharge.kkt import cards, checks, gateway, journal, moves, passwords
from recharge.kkt.codes import OK
from recharge.kkt.gateway import License
from recharge.kkt.messages import GATEWAY_TERMINAL_KINDS, Config, Refused, TradeRequest, TradeResult
from recharge.kkt.table import KIND_NAMES, TradeKind
from recharge.kkt.transaction import Db, Work, in_transaction
from recharge.ledger import transfers as ledger

_MOBILE_RE = re.compile(r"1[0-9]{10}")
_IDNO_RE = re.compile(r"[0-9]{15}|[0-9]{17}[0-9Xx]")
_NOT_ACTIVATABLE = ("cancelled", "reissued", "lost", "frozen")


async def _run(db: Db, method: str, work: Work[TradeResult], cfg: Config) -> TradeResult:
    """``work`` in one transaction (51 when the gateway is closed), counted by method."""
    if not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    else:
        result = await in_transaction(db, work, cfg.settings)
    metrics.KKT_TRADES.labels(method, result.code).inc()
    return result


# --- aCRequest: activation ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActivateRequest:
    card_no: str
    password: str | None
    terminal_code: str
    license_merchant_id: int
    amount: str | None = None  # optional first recharge from the issuing merchant's fund
    mobile: str | None = None  # optional holder mobile, bound at activation (59 if taken)
    terminal_kinds: frozenset[str] = GATEWAY_TERMINAL_KINDS



async def activate(db: Db, req: ActivateRequest, cfg: Config) -> TradeResult:
    """领卡激活: an issuing merchant hands out one of its generated cards and sets its password.

    Success answers 11 (as the seed's example; text 57). With AMOUNT, the issuing merchant's
    fund pays a first recharge; if it cannot, the card stays activated and the answer is 55.
    """
    return await _run(db, "aCRequest", lambda conn: _activate(conn, req, cfg), cfg)


async def _activate(conn: asyncpg.Connection, req: ActivateRequest, cfg: Config) -> TradeResult:
    card_no = ""
    try:
        terminal = await gateway.terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = checks.card_no(req.card_no, terminal.merchant_code)
        amount = checks.amount(req.amount, cfg) if req.amount else 0
        md5_hex = cards.normalise_password((req.password or "").strip() or None)
        if md5_hex is None:
            raise Refused("07")
        mobile = (req.mobile or "").strip() or None
        if mobile is not None and not _MOBILE_RE.fullmatch(mobile):
            raise Refused("41")
        card = await checks.read_card(conn, card_no, req.license_merchant_id)
        if card is None or card["state"] in _NOT_ACTIVATABLE:
            raise Refused("53")
        if card["merchant_id"] != req.license_merchant_id:
            raise Refused("52")
        if card["merchant_closed"]:
            raise Refused("60")
        if card["state"] != "inactive":
            raise Refused("56")
        if mobile is not None and await conn.fetchval("SELECT 1 FROM cards WHERE bound_mobile = $1", mobile):
            raise Refused("59")
        await conn.execute(
            "UPDATE cards SET state = 'active', activated_at = now(), password_hash = $2, password_failures = 0,"
            " locked_until = NULL, bound_mobile = coalesce($3, bound_mobile) WHERE card_no = $1",
            card_no, cards.hash_password(md5_hex, cfg.pepper, cfg.settings.kkt_password_hash_iterations), mobile,
        )
    except Refused as refusal:
        return TradeResult(refusal.code, card_no=card_no)
    return await _first_recharge(conn, terminal, card, amount)


async def _first_recharge(
    conn: asyncpg.Connection, terminal: gateway.Terminal, card: asyncpg.Record, amount: int
) -> TradeResult:
    """An activation's optional first recharge from the issuing merchant's fund (55 short)."""
    names = KIND_NAMES["activation_recharge"]
    card_no = card["card_no"]
    if amount == 0:
        return TradeResult(OK, card_no=card_no, text_code="57", trade_name_zh=names[0], trade_name_en=names[1])
    K = ledger.AccountKind
    fund = await moves.account(conn, K.RECHARGE_FUND, merchant_id=card["merchant_id"])
    purse = await moves.account(conn, K.CARD_PURSE, card_no=card_no)
    transfer_id = await moves.transfer(conn, debit=fund, credit=purse, amount=amount,
                                       code="kkt_activation_recharge", reference=card_no)
    if transfer_id is None:
        return TradeResult("55", card_no=card_no)
    kind = TradeKind("activation_recharge", "sv", names[0], names[1])
    request = TradeRequest("0001", "1", card_no, terminal.code)
    return await journal.finish(conn, request, kind, terminal, card_no, amount, 0, None, names, transfer_id, None)


# --- rSCardPwd: change or reset the password ---------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordRequest:
    card_no: str
    new_password: str | None
    terminal_code: str
    license_merchant_id: int
    old_password: str | None = None  # given: a change (46 when wrong); empty: an issuer's reset
    terminal_kinds: frozenset[str] = GATEWAY_TERMINAL_KINDS


PASSWORD_TRADE_NAMES = ("修改/重置密码", "Change/reset password")


async def change_password(db: Db, req: PasswordRequest, cfg: Config) -> TradeResult:
    """Change (with the old password) or reset (issuing merchant only) a card's password.
    Success answers 11 as the seed's example (texts 45 change / 47 reset); a reset also
    lifts a wrong-password lock."""
    return await _run(db, "rSCardPwd", lambda conn: _change_password(conn, req, cfg), cfg)


async def _change_password(conn: asyncpg.Connection, req: PasswordRequest, cfg: Config) -> TradeResult:
    zh, en = PASSWORD_TRADE_NAMES
    card_no = ""
    try:
        terminal = await gateway.terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = checks.card_no(req.card_no, terminal.merchant_code)
        new_md5 = cards.normalise_password((req.new_password or "").strip() or None)
        if new_md5 is None:
            raise Refused("07")
        card = await checks.lock_card(conn, card_no, terminal.merchant_id)
        checks.check_card_usable(card, checks.today())
        old = (req.old_password or "").strip()
        if old:
            await passwords.check_locked(conn, card, old, cfg, wrong_code="46")
        elif card["merchant_id"] != req.license_merchant_id:
            raise Refused("52")  # only the issuing merchant resets a password it does not know
        await conn.execute(
            "UPDATE cards SET password_hash = $2, password_failures = 0, locked_until = NULL WHERE card_no = $1",
            card_no, cards.hash_password(new_md5, cfg.pepper, cfg.settings.kkt_password_hash_iterations),
        )
        return TradeResult(OK, card_no=card_no, text_code="45" if old else "47", trade_name_zh=zh, trade_name_en=en)
    except Refused as refusal:
        return TradeResult(refusal.code, card_no=card_no, trade_name_zh=zh, trade_name_en=en)


# --- bCRequest: bind or unbind a mobile / ID number --------------------------------------


@dataclass(frozen=True, slots=True)
class BindRequest:
    card_no: str
    password: str | None
    id_num: str
    trade_mode: str  # "1" bind, "0" unbind
    terminal_code: str
    skip_password: bool = False
    terminal_kinds: frozenset[str] = GATEWAY_TERMINAL_KINDS


async def bind(db: Db, req: BindRequest, cfg: Config) -> TradeResult:
    """Bind (mode 1) or unbind (0) a mobile (11 digits from 1) or a PRC ID number (15/18).
    Success answers 11 as the seed's examples (texts 40 / 44)."""
    return await _run(db, "bCRequest", lambda conn: _bind(conn, req, cfg), cfg)


def _bound_column(id_num: str) -> tuple[str, str]:
    """(cards column, value) an IDNUM binds: a mobile, or an ID number in upper case (41)."""
    if _MOBILE_RE.fullmatch(id_num):
        return "bound_mobile", id_num
    if _IDNO_RE.fullmatch(id_num):
        return "bound_id_no", id_num.upper()
    raise Refused("41")


async def _bind(conn: asyncpg.Connection, req: BindRequest, cfg: Config) -> TradeResult:
    if req.trade_mode not in ("0", "1"):
        return TradeResult("04")
    card_no = ""
    id_num = (req.id_num or "").strip()
    try:
        terminal = await gateway.terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = checks.card_no(req.card_no, terminal.merchant_code)
        column, id_num = _bound_column(id_num)
        card = await checks.lock_card(conn, card_no, terminal.merchant_id)
        checks.check_card_usable(card, checks.today())
        if not req.skip_password:
            await passwords.check_locked(conn, card, req.password, cfg)
        current = card[column]
        if req.trade_mode == "1":
            if current is not None and current != id_num:
                raise Refused("42")
            if column == "bound_mobile" and await conn.fetchval(
                "SELECT 1 FROM cards WHERE bound_mobile = $1 AND card_no <> $2", id_num, card_no
            ):
                raise Refused("42")  # one mobile, one card: the SMS channel finds cards by it
            await conn.execute(f"UPDATE cards SET {column} = $2 WHERE card_no = $1", card_no, id_num)
            return TradeResult(OK, card_no=card_no, text_code="40", id_num=id_num)
        if current is None or current != id_num:
            raise Refused("43")
        await conn.execute(f"UPDATE cards SET {column} = NULL WHERE card_no = $1", card_no)
        return TradeResult(OK, card_no=card_no, text_code="44", id_num=id_num)
    except Refused as refusal:
        return TradeResult(refusal.code, card_no=card_no, id_num=id_num)


# --- cIRequest: cardholder information ---------------------------------------------------

HOLDER_FIELDS = {  # request parameter: (stored key, reply element, max length)
    "USR_CH_NAME": ("ch_name", "UsrChName", 50),
    "USR_EN_NAME": ("en_name", "UsrEnName", 100),
    "USR_ADDR": ("addr", "UsrAddr", 200),
    "USR_EMAIL": ("email", "UsrEmail", 100),
    "USR_MOBILE_NO": ("mobile", "UsrMobile", 11),
    "USR_TEL_PHONE": ("tel", "UsrTel", 20),
    "USR_BIRTHDAY": ("birthday", "UsrBirthday", 10),
}
_FIELD_RULES = {
    "email": re.compile(r"[^@\s<>]{1,64}@[^@\s<>]{1,100}"),
    "mobile": _MOBILE_RE,
    "tel": re.compile(r"[0-9+() -]{3,20}"),
    "birthday": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
}


@dataclass(frozen=True, slots=True)
class InfoResult:
    code: str  # "" success (the seed's example leaves Result empty), else a return code
    card_no: str = ""
    merchant_code: str = ""
    holder: dict[str, str] = field(default_factory=dict)



def _holder_changes(updates: Mapping[str, str]) -> dict[str, str] | None:
    """The non-empty USR_* fields to store, by stored key; None when one is malformed (00)."""
    changes: dict[str, str] = {}
    for param, raw in updates.items():
        if param not in HOLDER_FIELDS or not raw.strip():
            continue
        key, _, max_len = HOLDER_FIELDS[param]
        value = raw.strip()
        rule = _FIELD_RULES.get(key)
        if len(value) > max_len or any(ord(ch) < 32 for ch in value) or (rule and not rule.fullmatch(value)):
            return None
        if key == "birthday":
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                return None
        changes[key] = value
    return changes


async def card_info(db: Db, card_no_raw: str, license: License, updates: Mapping[str, str],
                    cfg: Config) -> InfoResult:
    """Read, and update the non-empty fields of, a card's holder information. Only the
    card's issuing merchant (the license key's) sees or changes it (05 otherwise)."""
    if not cfg.settings.kkt_gateway_open:
        return InfoResult("51")

    async def work(conn: asyncpg.Connection) -> InfoResult:
        card_no = cards.expand_card_no(card_no_raw or "", license.merchant_code)
        if card_no is None:
            return InfoResult("01")
        changes = _holder_changes(updates)
        if changes is None:
            return InfoResult("00", card_no, license.merchant_code)
        row = await conn.fetchrow(
            "SELECT holder::text AS holder FROM cards WHERE card_no = $1 AND merchant_id = $2 FOR UPDATE", card_no,
            license.merchant_id,
        )
        if row is None:
            return InfoResult("05", card_no, license.merchant_code)
        holder = {**json.loads(row["holder"] or "{}"), **changes}
        if changes:
            await conn.execute("UPDATE cards SET holder = $2::text::jsonb WHERE card_no = $1", card_no,
                               json.dumps(holder, ensure_ascii=False))
        return InfoResult("", card_no, license.merchant_code, {k: str(v) for k, v in holder.items()})

    result = await in_transaction(db, work, cfg.settings)
    metrics.KKT_TRADES.labels("cIRequest", result.code or OK).inc()
    return result

"""The KaKaTong card service (SPEC 3.1, seed 002): one implementation of every trade.

REST (``http_api.kkt_rest``), SOAP (``http_api.kkt_soap``) and the SMS channel call the
functions here with plain request objects and get result objects back; they only parse
their wire format and render the result. Nothing here knows about HTTP or XML.

- ``authorize`` — the license-key check the web gateways do first (0 ok, 1–4 bare codes).
- ``trade`` — every TRADETYPE/TRADEMODE pair of the seed's table (cTRequest / soapCardTrade).
- ``activate``, ``change_password``, ``history``, ``card_info``, ``bind`` — the other methods.

Every function takes a pool or a connection, runs one transaction (a savepoint when the
caller is already in one), retries it whole on deadlock/serialization failure, and moves
money and points only through ``recharge.ledger.transfers``. Checks come before any write, so a
refused request changes nothing — except the wrong-password counter, which must count.
Return codes are the seed's two-digit strings; ``text(code, chinese)`` gives their texts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import asyncpg

from recharge import metrics
from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.kkt import cards
from recharge.kkt import reference as kkt_reference
from recharge.ledger import transfers as ledger

T = TypeVar("T")
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
CHINESE = "GB2312"  # LANG value that selects Chinese texts (case-insensitive); else English
GATEWAY_TERMINAL_KINDS = frozenset({"pos", "operator", "admin"})  # REST and SOAP callers
SMS_TERMINAL_KINDS = frozenset({"sms"})

# --- return codes -------------------------------------------------------------------------

OK = "11"
TEXTS: dict[str, tuple[str, str]] = {
    "00": ("交易失败！", "Transaction failed!"),
    "01": ("卡号输入错误！", "Card number is malformed!"),
    "02": ("交易金额输入错误！", "Amount is malformed!"),
    "03": ("交易类型校验错误！", "Trade type is invalid!"),
    "04": ("交易模式校验错误！", "Trade mode is invalid!"),
    "05": ("卡号不存在！", "Card does not exist!"),
    "06": ("原始交易校验失败！", "Original transaction check failed!"),
    "07": ("校验失败，密码错误！", "Check failed: wrong password!"),
    "08": ("卡的可用额度不够！", "Insufficient card balance!"),
    "09": ("卡单笔交易额度超出限额", "Amount exceeds the card's per-transaction limit"),
    "10": ("卡有效期已过！", "Card has expired!"),
    "11": ("交易成功！", "Transaction succeeded!"),
    "12": ("重复交易！", "Duplicate transaction!"),
    "13": ("此卡启用时间未到！", "Card is not valid yet!"),
    "14": ("此卡已挂失！", "Card is reported lost!"),
    "15": ("此卡已注销！", "Card is cancelled!"),
    "16": ("积分规则不存在！", "No points rule exists!"),
    "17": ("此卡尚未被激活，请先激活后再交易！", "Card is not activated; activate it first!"),
    "18": ("自动冲正成功！", "Automatic reversal succeeded!"),
    "19": ("此卡已补办！", "Card has been reissued!"),
    "20": ("积分卡不能进行储值相关操作！", "A points card cannot do stored-value trades!"),
    "21": ("转入卡号与转出卡号不能相同！", "Source and target cards must differ!"),
    "22": ("请输入转帐交易中的转出卡号！", "Enter the source card of the transfer!"),
    "23": ("转入卡启用时间未到！", "Target card is not valid yet!"),
    "24": ("转入卡已挂失！", "Target card is reported lost!"),
    "25": ("转入卡已注销！", "Target card is cancelled!"),
    "26": ("转入卡号不支持储值功能！", "Target card does not support stored value!"),
    "27": ("转入卡号不支持积分功能！", "Target card does not support points!"),
    "28": ("请正确设置次卡的次数和价格！", "Set the count card's uses and price correctly!"),
    "31": ("此卡不支持储值卡功能！", "Card does not support stored value!"),
    "32": ("此卡不支持积分卡功能！", "Card does not support points!"),
    "40": ("绑定成功:被绑定手机/身份证号码：{IDNUM}！", "Bound: mobile/ID number {IDNUM}!"),
    "41": ("请求绑定的手机/身份证号码错误!", "The mobile/ID number to bind is invalid!"),
    "42": ("此卡号已和其他手机/身份证绑定!", "Card is already bound to another mobile/ID number!"),
    "43": ("此卡号在系统中没有与之绑定的手机号码/身份证!", "Card has no such bound mobile/ID number!"),
    "44": ("绑定撤销成功！", "Binding removed!"),
    "45": ("密码修改成功!", "Password changed!"),
    "46": ("本卡原密码输入不正确!", "The card's old password is wrong!"),
    "47": ("密码重置成功!", "Password reset!"),
    "50": ("非法版本网关！", "Illegal gateway version!"),
    "51": ("网关服务关闭，暂停交易！", "Gateway closed; trading suspended!"),
    "52": ("请确认所领卡为本发卡商户所申请之卡！", "Card was not issued by this merchant!"),
    "53": ("领卡失败，请确认卡号已生成且废卡回收卡不能领卡", "Activation failed: card not generated, or scrapped"),
    "54": ("发卡商户帐户余额不足，不足以对此卡充值", "Issuing merchant's fund is insufficient for this recharge"),
    "55": ("领卡成功，充值失败", "Card activated; recharge failed"),
    "56": ("领卡失败！", "Activation failed!"),
    "57": ("领卡成功！", "Card activated!"),
    "58": ("终端当天最大充值额已达到！", "Terminal's daily recharge maximum reached!"),
    "59": ("领卡失败，持卡人手机号码在系统中已存在！", "Activation failed: holder's mobile already exists!"),
    "60": ("商户被封闭，请联系发卡机构", "Merchant is closed; contact the issuer"),
    "61": ("输入交易流水号不存在！", "Serial number does not exist!"),
    "62": ("此交易流水号为已撤销交易流水号！", "This serial is itself a cancellation!"),
    "63": ("此交易已经被撤销！", "This trade is already cancelled!"),
    "64": ("不能撤销不同消费商户所做交易！", "Cannot cancel another consuming merchant's trade!"),
    "65": ("消费商户余额不足，不能对此卡充值！", "Consuming merchant's fund is insufficient!"),
    "66": ("积分卡积分余额不足，不能进行积分消费！", "Insufficient points!"),
    "67": ("已达到当天最大交易次数！", "Daily trade count reached!"),
    "68": ("测试模式下当天交易次数不能超过100！", "Test mode: at most 100 trades a day!"),
    "69": ("此卡已冻结！", "Card is frozen!"),  # the seed's unnumbered "frozen" text; 69 is ours
    "70": ("非网关支持POS机具！", "Terminal is not supported by the gateway!"),
    "71": ("请确认在系统中已申请考勤服务!", "Attendance service is not enabled!"),
}
ILLEGAL = ("非法操作！", "Illegal operation!")
# Busy: the platform is saturated or its database unreachable. The gateway answers the seed's
# "not trading now" code 51 with this text and HTTP 503 (Retry-After); nothing was done, and a
# retry with the same REQID is safe. 51 with HTTP 200 is the operator's closed gateway.
BUSY = "51"
BUSY_TEXTS = ("系统繁忙，请稍后再试", "System busy; retry later")


def busy_text(chinese: bool) -> str:
    return BUSY_TEXTS[0] if chinese else BUSY_TEXTS[1]


def is_chinese(lang: str | None) -> bool:
    return (lang or "").strip().upper() == CHINESE


def text(code: str, chinese: bool, **values: str) -> str:
    """The seed's text for a return code (``{IDNUM}`` filled in), Chinese or English."""
    zh, en = TEXTS.get(code, ILLEGAL)
    return (zh if chinese else en).format_map(_Missing(values))


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


# --- the trade table ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TradeKind:
    kind: str
    family: str  # "sv" stored value, "pts" points, "rev" reversal
    name_zh: str
    name_en: str
    original: tuple[str, str] | None = None  # a cancel: the (type, mode) it cancels
    query: bool = False
    needs_amount: bool = True


TRADES: dict[tuple[str, str], TradeKind] = {
    ("0022", "1"): TradeKind("consume", "sv", "储值消费", "Stored-value consume"),
    ("0022", "0"): TradeKind("consume_cancel", "sv", "消费撤销", "Consume cancel", ("0022", "1")),
    **{
        (t, "0"): TradeKind("recharge", "sv", "储值充值", "Stored-value recharge")
        for t in ("1100", "1101", "1102", "1103")
    },
    **{
        (t, "1"): TradeKind("recharge_cancel", "sv", "充值撤销", "Recharge cancel", (t, "0"))
        for t in ("1100", "1101", "1102", "1103")
    },
    ("0033", "0"): TradeKind("points_add", "pts", "积分累加", "Points accumulate"),
    ("0033", "1"): TradeKind("points_add_cancel", "pts", "累加撤销", "Points accumulate cancel", ("0033", "0")),
    ("0034", "1"): TradeKind("points_use", "pts", "积分消费", "Points consume"),
    ("0034", "0"): TradeKind("points_use_cancel", "pts", "积分消费撤销", "Points consume cancel", ("0034", "1")),
    ("0011", "0"): TradeKind("balance_query", "sv", "储值查询", "Balance query", query=True, needs_amount=False),
    ("0011", "1"): TradeKind("points_query", "pts", "积分查询", "Points query", query=True, needs_amount=False),
}
REVERSAL_TYPE = "0400"
REVERSAL = TradeKind("reversal", "rev", "交易冲正", "Reversal", needs_amount=False)
KIND_NAMES = {t.kind: (t.name_zh, t.name_en) for t in (*TRADES.values(), REVERSAL)}
KIND_NAMES["activation_recharge"] = ("领卡充值", "Activation recharge")
_TRADE_TYPES = {t for t, _ in TRADES} | {REVERSAL_TYPE}
_CARD_KIND_FAMILIES = {"sv": {"sv"}, "points": {"pts"}, "both": {"sv", "pts"}, "cpu": set()}

_AMOUNT_RE = re.compile(r"[0-9]{1,12}")
_STANCE_RE = re.compile(r"[0-9]{8}")
_ITEM_RE = re.compile(r"[0-9]{3,8}")
_REQID_RE = re.compile(r"[0-9A-Za-z_.:-]{1,64}")
_MOBILE_RE = re.compile(r"1[0-9]{10}")
_IDNO_RE = re.compile(r"[0-9]{15}|[0-9]{17}[0-9Xx]")


@dataclass(frozen=True, slots=True)
class Config:
    """The limits and the password pepper a call needs (built once per process or request)."""

    settings: Settings
    pepper: bytes = field(repr=False)

    @classmethod
    def of(cls, settings: Settings, keys: MasterKeys) -> Config:
        return cls(settings, cards.password_pepper(keys))


# --- requests and results -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TradeRequest:
    """One cTRequest / soapCardTrade / SMS trade. Fields are the raw texts the caller sent.

    ``amount`` is cents as decimal digits (SMS converts yuan first). ``skip_password`` is for
    callers that authenticated the cardholder another way (an SMS operator terminal); the
    web gateways never set it. ``terminal_kinds`` are the terminal kinds this channel
    accepts (70 otherwise).
    """

    trade_type: str
    trade_mode: str
    card_no: str
    terminal_code: str
    password: str | None = None
    amount: str | None = None
    item_code: str | None = None
    stance_rev: str | None = None
    req_id: str | None = None
    skip_password: bool = False
    test_mode: bool = False
    terminal_kinds: frozenset[str] = GATEWAY_TERMINAL_KINDS

    def digest(self) -> str:
        fields = (self.trade_type, self.trade_mode, self.card_no, self.amount, self.item_code, self.stance_rev)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TradeResult:
    """What a trade answered: ``code`` (two digits), and on success its Stance and balances.

    ``integral`` is the seed's Integral field: the stored value in cents after a
    stored-value trade, the points after a points trade. ``text_code`` names the text to
    show when it differs from ``code`` (the SMS channel shows 40/44/45/47/57 for successes
    that the web gateways answer as 11, as the seed's examples do).
    """

    code: str
    card_no: str = ""
    stance: str = ""
    purse_cents: int | None = None
    points: int | None = None
    integral: int | None = None
    amount_cents: int = 0
    points_moved: int = 0
    trade_name_zh: str = ""
    trade_name_en: str = ""
    text_code: str = ""
    id_num: str = ""

    @property
    def ok(self) -> bool:
        return self.code in (OK, "18")

    def text(self, chinese: bool) -> str:
        return text(self.text_code or self.code, chinese, IDNUM=self.id_num)

    def trade_name(self, chinese: bool) -> str:
        return self.trade_name_zh if chinese else self.trade_name_en

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TradeResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True, slots=True)
class _Names:
    zh: str
    en: str


class _Retry(Exception):
    """Roll the transaction back and run it again (a concurrent REQID insert)."""


_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, _Retry)


async def _in_transaction(
    db: asyncpg.Pool | asyncpg.Connection, work: Callable[[asyncpg.Connection], Awaitable[T]], retries: int
) -> T:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _in_transaction(conn, work, retries)
    attempt = 0
    while True:
        try:
            async with db.transaction():
                return await work(db)
        except _RETRYABLE:
            attempt += 1
            metrics.LEDGER_RETRIES.inc()
            if attempt > retries:
                raise


async def _without_transaction(
    db: asyncpg.Pool | asyncpg.Connection, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await work(conn)
    return await work(db)


# --- the license check -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class License:
    code: int  # 0 ok, 1 invalid, 2 expired, 3 illegal, 4 not authorised for this site
    merchant_id: int = 0
    merchant_code: str = ""
    test_mode: bool = False


@dataclass(frozen=True, slots=True)
class _KeyRow:
    merchant_id: int
    merchant_code: str
    enabled: bool
    valid_to: dt.datetime | None
    allowed_networks: tuple[str, ...]
    test_mode: bool


@dataclass(frozen=True, slots=True)
class _TerminalRow:
    id: int
    code: str
    kind: str
    enabled: bool
    merchant_id: int
    merchant_code: str
    closed: bool
    is_consuming: bool
    daily_recharge_limit_cents: int | None


_TERMINAL_COLUMNS = (
    "t.id, t.code, t.kind, t.enabled, t.merchant_id, m.code AS merchant_code, m.closed, m.is_consuming,"
    " t.daily_recharge_limit_cents"
)
_TERMINAL_SQL = (
    f"SELECT {_TERMINAL_COLUMNS} FROM terminals t JOIN merchants m ON m.id = t.merchant_id WHERE t.code = $1"
)
# The license key and (when named) the terminal in one round trip; both rows are cached.
_LICENSE_SQL = (
    "SELECT k.merchant_id AS k_merchant_id, k.enabled AS k_enabled, k.valid_to AS k_valid_to,"
    " k.allowed_networks AS k_allowed_networks, k.test_mode AS k_test_mode, km.code AS k_merchant_code,"
    f" tt.* FROM license_keys k JOIN merchants km ON km.id = k.merchant_id"
    f" LEFT JOIN (SELECT {_TERMINAL_COLUMNS} FROM terminals t JOIN merchants m ON m.id = t.merchant_id"
    " WHERE t.code = $2) AS tt ON true WHERE k.license_key = $1"
)


def _cache_settings(settings: Settings | None) -> tuple[float, int]:
    if settings is None:
        return 0.0, 0
    return settings.kkt_reference_cache_ttl_s, settings.kkt_reference_cache_max_entries


def _terminal_from(row: Mapping[str, Any]) -> _TerminalRow:
    return _TerminalRow(int(row["id"]), row["code"], row["kind"], bool(row["enabled"]), int(row["merchant_id"]),
                        row["merchant_code"], bool(row["closed"]), bool(row["is_consuming"]),
                        row["daily_recharge_limit_cents"])


async def _terminal_row(conn: asyncpg.Connection, code: str, settings: Settings | None) -> _TerminalRow | None:
    """The terminal and its merchant's state, from the reference cache when fresh there."""
    ttl_s, max_entries = _cache_settings(settings)
    key = ("terminal", code)
    cached = kkt_reference.CACHE.get(key, ttl_s)
    if cached is not kkt_reference.MISSING:
        return cached  # type: ignore[no-any-return]
    row = await conn.fetchrow(_TERMINAL_SQL, code)
    if row is None:
        return None  # unknown terminals are not cached: one created now is seen at once
    terminal = _terminal_from(row)
    kkt_reference.CACHE.put(key, terminal, ttl_s, max_entries)
    return terminal


async def _license_rows(
    conn: asyncpg.Connection, key: str, terminal_code: str, settings: Settings | None
) -> tuple[_KeyRow | None, _TerminalRow | None]:
    ttl_s, max_entries = _cache_settings(settings)
    cached = kkt_reference.CACHE.get(("license", key), ttl_s)
    if cached is not kkt_reference.MISSING:
        terminal = await _terminal_row(conn, terminal_code, settings) if terminal_code else None
        return cached, terminal
    row = await conn.fetchrow(_LICENSE_SQL, key, terminal_code)
    if row is None:
        return None, None  # unknown keys are not cached
    key_row = _KeyRow(int(row["k_merchant_id"]), row["k_merchant_code"], bool(row["k_enabled"]), row["k_valid_to"],
                      tuple(row["k_allowed_networks"] or ()), bool(row["k_test_mode"]))
    kkt_reference.CACHE.put(("license", key), key_row, ttl_s, max_entries)
    terminal = None
    if row["id"] is not None:
        terminal = _terminal_from(row)
        kkt_reference.CACHE.put(("terminal", terminal.code), terminal, ttl_s, max_entries)
    return key_row, terminal


async def authorize(
    db: asyncpg.Pool | asyncpg.Connection,
    license_key: str | None,
    remote_ip: str | None,
    *,
    copno: str | None = None,
    terminal_code: str | None = None,
    settings: Settings | None = None,
) -> License:
    """Check a LICENSEKEY first, as the seed does: 1 unknown or malformed, 2 expired,
    3 disabled or used for another merchant (COPNO, or a terminal of another merchant),
    4 the caller's address is outside the key's allowed networks.

    With ``settings``, the key and terminal rows come from the reference cache
    (``recharge.kkt.reference``) when fresh there; without, they are read every time."""
    key = (license_key or "").strip()
    if not 16 <= len(key) <= 512:
        return License(1)
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await authorize(conn, key, remote_ip, copno=copno, terminal_code=terminal_code,
                                   settings=settings)
    row, terminal = await _license_rows(db, key, terminal_code or "", settings)
    if row is None:
        return License(1)
    if row.valid_to is not None and row.valid_to < dt.datetime.now(dt.UTC):
        return License(2)
    if not row.enabled or (copno and copno.strip() and copno.strip() != row.merchant_code):
        return License(3)
    if terminal is not None and terminal.merchant_id != row.merchant_id:
        return License(3)
    if not _address_allowed(remote_ip, list(row.allowed_networks)):
        return License(4)
    return License(0, row.merchant_id, row.merchant_code, row.test_mode)


def _address_allowed(remote_ip: str | None, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address((remote_ip or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for net in networks:
        try:
            if address in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


# --- shared checks ------------------------------------------------------------------------


class Refused(Exception):
    """A check failed: the request is answered with ``code`` (inside a trade function)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Terminal:
    id: int
    code: str
    kind: str
    merchant_id: int
    merchant_code: str
    merchant_closed: bool
    daily_recharge_limit_cents: int | None


async def _terminal(
    conn: asyncpg.Connection, code: str | None, kinds: frozenset[str], settings: Settings | None = None
) -> Terminal:
    if not code or len(code) > 16:
        raise Refused("70")
    row = await _terminal_row(conn, code, settings)
    if row is None or not row.enabled or row.kind not in kinds:
        raise Refused("70")
    if row.closed or not row.is_consuming:
        raise Refused("60")
    return Terminal(row.id, row.code, row.kind, row.merchant_id, row.merchant_code, row.closed,
                    row.daily_recharge_limit_cents)


def _card_no(raw: str | None, merchant_code: str) -> str:
    card_no = cards.expand_card_no((raw or "").strip(), merchant_code)
    if card_no is None:
        raise Refused("01")
    return card_no


async def _lock_card(conn: asyncpg.Connection, card_no: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT c.*, m.code AS merchant_code, m.closed AS merchant_closed FROM cards c"
        " LEFT JOIN merchants m ON m.id = c.merchant_id WHERE c.card_no = $1 FOR UPDATE OF c", card_no,
    )
    if row is None:
        raise Refused("05")
    return row


# A trade's card, locked, with the ledger accounts the trade may move (NULL: not opened yet):
# the card's purse and points, and the terminal merchant's account of the kind the trade
# uses ($3/$4; '' for none). Account ids never change, so reading them here saves a round
# trip per account.
_TRADE_CARD_SQL = (
    "SELECT c.*, m.code AS merchant_code, m.closed AS merchant_closed,"
    " (SELECT a.id FROM accounts a WHERE a.card_no = c.card_no AND a.kind = 'card_purse') AS purse_account,"
    " (SELECT a.id FROM accounts a WHERE a.card_no = c.card_no AND a.kind = 'card_points') AS points_account,"
    " (SELECT a.id FROM accounts a WHERE a.merchant_id = $2 AND a.kind = $3 AND a.ledger = $4"
    " AND a.card_no IS NULL) AS merchant_account"
    " FROM cards c LEFT JOIN merchants m ON m.id = c.merchant_id WHERE c.card_no = $1"
)
_MERCHANT_ACCOUNT_OF = {  # trade kind: the terminal merchant's account it moves money or points with
    "consume": ledger.AccountKind.MERCHANT_SALES,
    "recharge": ledger.AccountKind.RECHARGE_FUND,
    "points_add": ledger.AccountKind.POINTS_ISSUED,
    "points_use": ledger.AccountKind.POINTS_ISSUED,
}


async def _lock_trade_card(
    conn: asyncpg.Connection, card_no: str, kind: TradeKind, merchant_id: int, lock: bool = True
) -> asyncpg.Record:
    """The card (locked unless ``lock`` is false: a query) and the accounts ``kind`` moves."""
    account_kind = _MERCHANT_ACCOUNT_OF.get(kind.kind)
    sql = _TRADE_CARD_SQL + " FOR UPDATE OF c" if lock else _TRADE_CARD_SQL
    row = await conn.fetchrow(
        sql, card_no, merchant_id, account_kind.value if account_kind else "",
        _ledger_of(account_kind) if account_kind else "",
    )
    if row is None:
        raise Refused("05")
    return row


_STATE_CODES = {"inactive": "17", "lost": "14", "cancelled": "15", "reissued": "19", "frozen": "69"}


def _check_card_usable(card: asyncpg.Record, today: dt.date) -> None:
    code = _STATE_CODES.get(card["state"])
    if code:
        raise Refused(code)
    if card["merchant_closed"]:
        raise Refused("60")
    if card["valid_from"] is not None and today < card["valid_from"]:
        raise Refused("13")
    if card["valid_to"] is not None and today > card["valid_to"]:
        raise Refused("10")


async def _check_password(
    conn: asyncpg.Connection, card: asyncpg.Record, raw: str | None, cfg: Config, wrong_code: str = "07"
) -> None:
    """Verify the password; a wrong one counts, and the limit locks the card (all 07/46)."""
    s = cfg.settings
    if card["locked_until"] is not None and card["locked_until"] > dt.datetime.now(dt.UTC):
        raise _CommitThenRefuse(wrong_code)
    md5_hex = cards.normalise_password((raw or "").strip() or None)
    if md5_hex is not None and cards.verify_password(card["password_hash"], md5_hex, cfg.pepper):
        if card["password_failures"] or card["locked_until"] is not None:
            await conn.execute(
                "UPDATE cards SET password_failures = 0, locked_until = NULL WHERE card_no = $1", card["card_no"]
            )
        return
    await conn.execute(
        "UPDATE cards SET password_failures = CASE WHEN password_failures + 1 >= $2 THEN 0"
        " ELSE password_failures + 1 END,"
        " locked_until = CASE WHEN password_failures + 1 >= $2 THEN now() + make_interval(secs => $3)"
        " ELSE locked_until END WHERE card_no = $1",
        card["card_no"], s.kkt_password_max_failures, float(s.kkt_password_lock_s),
    )
    raise _CommitThenRefuse(wrong_code)


class _CommitThenRefuse(Exception):
    """A refusal whose bookkeeping (the password counter) must commit."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _day_start(now: dt.datetime) -> dt.datetime:
    local = now.astimezone(SHANGHAI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


def _ledger_of(kind: ledger.AccountKind) -> str:
    return "PTS" if kind in (ledger.AccountKind.CARD_POINTS, ledger.AccountKind.POINTS_ISSUED) else "CNY"


async def _account(conn: asyncpg.Connection, kind: ledger.AccountKind, *, card_no: str | None = None,
                   merchant_id: int | None = None) -> int:
    return await ledger.ensure_account(
        conn, ledger=_ledger_of(kind), kind=kind, card_no=card_no, merchant_id=merchant_id,
        # points a merchant grants are created out of nothing: its issued-points account goes negative
        no_overdraft=kind is not ledger.AccountKind.POINTS_ISSUED,
    )


async def _trade_account(conn: asyncpg.Connection, card: asyncpg.Record, trade_kind: str,
                         kind: ledger.AccountKind, merchant_id: int) -> int:
    """An account the row of ``_lock_trade_card(…, trade_kind, merchant_id)`` names, opened
    when it does not exist yet."""
    K = ledger.AccountKind
    if kind is K.CARD_PURSE or kind is K.CARD_POINTS:
        found = card["purse_account" if kind is K.CARD_PURSE else "points_account"]
        return int(found) if found is not None else await _account(conn, kind, card_no=card["card_no"])
    found = card["merchant_account"]
    if found is not None and _MERCHANT_ACCOUNT_OF.get(trade_kind) is kind:
        return int(found)
    return await _account(conn, kind, merchant_id=merchant_id)


async def _service_name(conn: asyncpg.Connection, merchant_id: int, item_code: str, settings: Settings) -> str | None:
    """The merchant's name for a service code (ITEMCODE), None when it has none (cached)."""
    ttl_s, max_entries = _cache_settings(settings)
    key = ("service", merchant_id, item_code)
    cached = kkt_reference.CACHE.get(key, ttl_s)
    if cached is not kkt_reference.MISSING:
        return cached  # type: ignore[no-any-return]
    name = await conn.fetchval(
        "SELECT name FROM service_codes WHERE merchant_id = $1 AND item_code = $2", merchant_id, item_code
    )
    kkt_reference.CACHE.put(key, name, ttl_s, max_entries)
    return name  # type: ignore[no-any-return]


async def _points_rule(conn: asyncpg.Connection, merchant_id: int, settings: Settings) -> int | None:
    """Cents per point of the merchant's points rule, None when it has none (cached)."""
    ttl_s, max_entries = _cache_settings(settings)
    key = ("points_rule", merchant_id)
    cached = kkt_reference.CACHE.get(key, ttl_s)
    if cached is not kkt_reference.MISSING:
        return cached  # type: ignore[no-any-return]
    value = await conn.fetchval("SELECT cents_per_point FROM points_rules WHERE merchant_id = $1", merchant_id)
    result = None if value is None else int(value)
    kkt_reference.CACHE.put(key, result, ttl_s, max_entries)
    return result


# --- cTRequest ----------------------------------------------------------------------------


async def trade(db: asyncpg.Pool | asyncpg.Connection, req: TradeRequest, cfg: Config) -> TradeResult:
    """Run one trade of the seed's table; never raises for a business refusal."""
    kind = TRADES.get((req.trade_type, req.trade_mode))
    if kind is None and req.trade_type == REVERSAL_TYPE:
        kind = REVERSAL
    if kind is None:
        result = TradeResult("03" if req.trade_type not in _TRADE_TYPES else "04")
    elif not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    elif kind.query and not req.req_id:
        # A balance or points query moves nothing: two statements, no transaction around
        # them. The card is read unlocked; the journal statement (balances, Stance, row) is
        # atomic by itself; a wrong password's counter is an atomic UPDATE of its own.
        result = await _without_transaction(db, lambda conn: _trade(conn, req, kind, cfg, lock=False))
    else:
        result = await _in_transaction(db, lambda conn: _trade(conn, req, kind, cfg),
                                       cfg.settings.ledger_max_retries)
    metrics.KKT_TRADES.labels("cTRequest", result.code).inc()
    return result


async def _trade(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, lock: bool = True
) -> TradeResult:
    names = _Names(kind.name_zh, kind.name_en)
    card_no = ""
    try:
        terminal = await _terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = _card_no(req.card_no, terminal.merchant_code)
        replay = await _replay(conn, req, terminal)
        if replay is not None:
            return replay
        result = await _trade_checked(conn, req, kind, cfg, terminal, card_no, lock)
    except _CommitThenRefuse as refusal:
        result = TradeResult(refusal.code, card_no=card_no, trade_name_zh=names.zh, trade_name_en=names.en)
    except Refused as refusal:
        result = TradeResult(refusal.code, card_no=card_no, trade_name_zh=names.zh, trade_name_en=names.en)
        if refusal.code in ("01", "70", "60"):
            return result  # nothing identifies the request well enough to remember it
    if req.req_id:
        await _remember(conn, req, req.terminal_code, result)
    return result


async def _replay(conn: asyncpg.Connection, req: TradeRequest, terminal: Terminal) -> TradeResult | None:
    if req.req_id is None or req.req_id == "":
        return None
    if not _REQID_RE.fullmatch(req.req_id):
        raise Refused("00")
    row = await conn.fetchrow(
        "SELECT digest, reply::text AS reply FROM kkt_requests WHERE terminal_code = $1 AND req_id = $2",
        terminal.code, req.req_id,
    )
    if row is None:
        return None
    if row["digest"] != req.digest():
        return TradeResult("00")  # the same REQID for a different request: refused, never re-run
    return TradeResult.from_json(json.loads(row["reply"]))


async def _remember(conn: asyncpg.Connection, req: TradeRequest, terminal_code: str, result: TradeResult) -> None:
    if not req.req_id or not _REQID_RE.fullmatch(req.req_id):
        return
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO kkt_requests (terminal_code, req_id, digest, reply) VALUES ($1,$2,$3,$4::text::jsonb)",
                terminal_code, req.req_id, req.digest(), json.dumps(result.to_json(), ensure_ascii=False),
            )
    except asyncpg.UniqueViolationError:
        raise _Retry() from None  # a concurrent twin committed first: start over and replay it


def _parse_amount(raw: str | None, cfg: Config) -> int:
    text_ = (raw or "").strip()
    if not _AMOUNT_RE.fullmatch(text_):
        raise Refused("02")
    amount = int(text_)
    if amount <= 0 or amount > cfg.settings.kkt_max_amount_cents:
        raise Refused("02")
    return amount


async def _trade_checked(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, terminal: Terminal, card_no: str,
    lock: bool = True,
) -> TradeResult:
    s = cfg.settings
    now = dt.datetime.now(dt.UTC)
    amount = _parse_amount(req.amount, cfg) if kind.needs_amount and kind.original is None else 0
    if kind.original is not None and (req.amount or "").strip():
        amount = _parse_amount(req.amount, cfg)  # a cancel may repeat the original's amount
    item_code = (req.item_code or "").strip() or None
    if item_code is not None and not _ITEM_RE.fullmatch(item_code):
        raise Refused("00")
    stance_rev = (req.stance_rev or "").strip() or None
    if kind.original is not None and (stance_rev is None or not _STANCE_RE.fullmatch(stance_rev)):
        raise Refused("06")
    if kind is REVERSAL and stance_rev is not None and not _STANCE_RE.fullmatch(stance_rev):
        raise Refused("06")
    card = await _lock_trade_card(conn, card_no, kind, terminal.merchant_id, lock)
    if kind is REVERSAL:
        return await _reverse(conn, req, cfg, terminal, card, stance_rev, now)
    _check_card_usable(card, now.astimezone(SHANGHAI).date())
    if kind.family not in _CARD_KIND_FAMILIES[card["kind"]]:
        if card["kind"] == "points":
            raise Refused("20")
        raise Refused("31" if kind.family == "sv" else "32")
    if not req.skip_password:
        await _check_password(conn, card, req.password, cfg)
    if req.test_mode:
        count = await conn.fetchval(
            "SELECT count(*) FROM kkt_trades WHERE merchant_id = $1 AND created_at >= $2",
            terminal.merchant_id, _day_start(now),
        )
        if count >= s.kkt_test_mode_daily_max:
            raise Refused("68")
    trade_name_zh, trade_name_en = kind.name_zh, kind.name_en
    if item_code is not None:
        service = await _service_name(conn, terminal.merchant_id, item_code, s)
        if service:
            trade_name_zh = trade_name_en = service
    if kind.query:
        _, stance, purse, points = await _journal(conn, terminal, card_no, req, kind, 0, 0, item_code,
                                                  trade_name_zh, None, None)
        integral = purse if kind.family == "sv" else points
        return TradeResult(OK, card_no, stance, purse, points if kind.family == "pts" else None, integral,
                           trade_name_zh=trade_name_zh, trade_name_en=trade_name_en)
    if kind.original is not None:
        original = await _cancellable(conn, kind, cfg, terminal, card, stance_rev or "", amount, now)
        await _check_limits(conn, card, terminal, req, kind, original["amount_cents"], cfg, now)
        transfer_id = await _undo(conn, original, card, terminal)
        return await _finish(conn, req, kind, terminal, card_no, original["amount_cents"], original["points"],
                             item_code, (trade_name_zh, trade_name_en), transfer_id, original["id"])
    await _check_limits(conn, card, terminal, req, kind, amount, cfg, now)
    return await _move(conn, req, kind, terminal, card, amount, item_code, (trade_name_zh, trade_name_en), s)


# trades of the card today that moved something, counted only up to the limit ($1 card, $2 day
# start, $3 limit): never a scan of a busy card's whole day
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
    day_start = _day_start(now)
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


async def _move(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, terminal: Terminal, card: asyncpg.Record,
    amount: int, item_code: str | None, names: tuple[str, str], settings: Settings,
) -> TradeResult:
    K = ledger.AccountKind
    card_no = card["card_no"]
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
    debit = await _trade_account(conn, card, kind.kind, debit_kind, m)
    credit = await _trade_account(conn, card, kind.kind, credit_kind, m)
    moved = points if kind.family == "pts" else amount
    transfer_id = None
    if moved > 0:
        transfer_id = f"kkt:{uuid.uuid4().hex}"
        (outcome,) = await ledger.create_transfers(
            conn, [ledger.NewTransfer(transfer_id, debit, credit, moved, code=f"kkt_{kind.kind}", reference=card_no)]
        )
        metrics.LEDGER_TRANSFERS.labels("single", outcome.result.value).inc()
        if outcome.result is ledger.Result.EXCEEDS_CREDITS:
            raise Refused(short)
        outcome.check(transfer_id)
    return await _finish(conn, req, kind, terminal, card_no, amount, points, item_code, names, transfer_id, None)


async def _finish(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, terminal: Terminal, card_no: str,
    amount: int, points: int, item_code: str | None, names: tuple[str, str], transfer_id: str | None,
    original_id: int | None, code: str = OK,
) -> TradeResult:
    _, stance, purse, points_after = await _journal(conn, terminal, card_no, req, kind, amount, points, item_code,
                                                    names[0], transfer_id, original_id)
    sv = kind.family == "sv"
    return TradeResult(
        code, card_no, stance, purse, None if sv else points_after, purse if sv else points_after,
        amount, points, names[0], names[1],
    )


# The end of every trade in one round trip: the card's balances after it, the merchant's next
# 8-digit Stance (wrapping after 99999999; taken last, so the merchant row stays locked for as
# short a time as possible), the journal row, and a cancelled original's cancelled_by.
_JOURNAL_SQL = """
WITH balances AS (
    SELECT coalesce(sum(credits_posted - debits_posted) FILTER (WHERE kind = 'card_purse'), 0)::bigint AS purse,
           coalesce(sum(credits_posted - debits_posted) FILTER (WHERE kind = 'card_points'), 0)::bigint AS points
    FROM accounts WHERE card_no = $3::text AND kind IN ('card_purse', 'card_points')
), serial AS (
    UPDATE merchants SET stance_seq = CASE WHEN stance_seq >= 99999999 THEN 1 ELSE stance_seq + 1 END
    WHERE id = $1::bigint RETURNING stance_seq
), journal AS (
    INSERT INTO kkt_trades (merchant_id, stance, card_no, terminal_code, trade_type, trade_mode, kind,
                            amount_cents, points, item_code, trade_name, transfer_id, original_id,
                            purse_after_cents, points_after)
    SELECT $1::bigint, lpad(serial.stance_seq::text, 8, '0'), $3::text, $4::text, $5::text, $6::text, $7::text,
           $8::bigint, $9::bigint, $10::text, $11::text, $12::text, $2::bigint, balances.purse, balances.points
    FROM serial, balances
    RETURNING id, stance, purse_after_cents, points_after
), cancelled AS (
    UPDATE kkt_trades o SET cancelled_by = journal.id FROM journal WHERE o.id = $2::bigint
)
SELECT id, stance, purse_after_cents, points_after FROM journal
"""


async def _journal(
    conn: asyncpg.Connection, terminal: Terminal, card_no: str, req: TradeRequest, kind: TradeKind,
    amount: int, points: int, item_code: str | None, trade_name: str, transfer_id: str | None,
    original_id: int | None,
) -> tuple[int, str, int, int]:
    """Journal a successful trade: (its id, its Stance, the card's stored value and points after)."""
    row = await conn.fetchrow(
        _JOURNAL_SQL, terminal.merchant_id, original_id, card_no, terminal.code, req.trade_type,
        req.trade_mode if kind is not REVERSAL else "", kind.kind, amount, points, item_code, trade_name,
        transfer_id,
    )
    if row is None:
        raise LookupError(f"merchant {terminal.merchant_id} does not exist")
    return int(row["id"]), row["stance"], int(row["purse_after_cents"]), int(row["points_after"])


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


async def _undo(
    conn: asyncpg.Connection, original: asyncpg.Record, card: asyncpg.Record, terminal: Terminal
) -> str | None:
    """Create the transfer that reverses ``original``'s; returns its id (None: nothing moved)."""
    if original["transfer_id"] is None:
        return None
    first = await ledger.get_transfer(conn, original["transfer_id"])
    assert first is not None
    transfer_id = f"kkt:{uuid.uuid4().hex}"
    (outcome,) = await ledger.create_transfers(conn, [ledger.NewTransfer(
        transfer_id, first.credit_account_id, first.debit_account_id, first.amount,
        code=f"kkt_undo_{original['kind']}", reference=card["card_no"],
    )])
    metrics.LEDGER_TRANSFERS.labels("single", outcome.result.value).inc()
    if outcome.result is ledger.Result.EXCEEDS_CREDITS:
        debit_kind = await conn.fetchval("SELECT kind FROM accounts WHERE id = $1", first.credit_account_id)
        raise Refused({"card_purse": "08", "card_points": "66", "merchant_sales": "65",
                       "recharge_fund": "65"}.get(debit_kind, "00"))
    outcome.check(transfer_id)
    return transfer_id


async def _cancellable(
    conn: asyncpg.Connection, kind: TradeKind, cfg: Config, terminal: Terminal, card: asyncpg.Record,
    stance_rev: str, amount: int, now: dt.datetime,
) -> asyncpg.Record:
    """The trade a cancel names, if it may be cancelled (61 62 63 64 06)."""
    original = await _find_original(conn, card["card_no"], stance_rev, terminal.merchant_id)
    if original["original_id"] is not None:
        raise Refused("62")
    if original["cancelled_by"] is not None:
        raise Refused("63")
    if (original["trade_type"], original["trade_mode"]) != kind.original:
        raise Refused("06")
    if amount and amount != original["amount_cents"]:
        raise Refused("06")
    if original["created_at"] < now - dt.timedelta(seconds=cfg.settings.kkt_cancel_window_s):
        raise Refused("06")
    return original


async def _reverse(
    conn: asyncpg.Connection, req: TradeRequest, cfg: Config, terminal: Terminal, card: asyncpg.Record,
    stance_rev: str | None, now: dt.datetime,
) -> TradeResult:
    """0400: undo the terminal's latest trade on this card that moved something (or the one
    named by STANCE_REV), when the terminal never saw its answer. Answers 18."""
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
    if original["original_id"] is not None:
        raise Refused("62")
    if original["cancelled_by"] is not None:
        raise Refused("63")
    if original["terminal_code"] != terminal.code or original["created_at"] <= since:
        raise Refused("06")
    if (req.amount or "").strip() and _parse_amount(req.amount, cfg) != original["amount_cents"]:
        raise Refused("06")
    transfer_id = await _undo(conn, original, card, terminal)
    family = TRADES[(original["trade_type"], original["trade_mode"])].family
    kind = TradeKind("reversal", family, REVERSAL.name_zh, REVERSAL.name_en, needs_amount=False)
    return await _finish(conn, req, kind, terminal, card["card_no"], original["amount_cents"], original["points"],
                         None, (REVERSAL.name_zh, REVERSAL.name_en), transfer_id, original["id"], code="18")


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


async def activate(db: asyncpg.Pool | asyncpg.Connection, req: ActivateRequest, cfg: Config) -> TradeResult:
    """领卡激活: an issuing merchant hands out one of its generated cards and sets its password.

    Success answers 11 (as the seed's example; text 57). With AMOUNT, the issuing merchant's
    fund pays a first recharge; if it cannot, the card stays activated and the answer is 55.
    """
    if not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    else:
        result = await _in_transaction(db, lambda conn: _activate(conn, req, cfg), cfg.settings.ledger_max_retries)
    metrics.KKT_TRADES.labels("aCRequest", result.code).inc()
    return result


async def _activate(conn: asyncpg.Connection, req: ActivateRequest, cfg: Config) -> TradeResult:
    card_no = ""
    try:
        terminal = await _terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = _card_no(req.card_no, terminal.merchant_code)
        amount = _parse_amount(req.amount, cfg) if (req.amount or "").strip() else 0
        md5_hex = cards.normalise_password((req.password or "").strip() or None)
        if md5_hex is None:
            raise Refused("07")
        mobile = (req.mobile or "").strip() or None
        if mobile is not None and not _MOBILE_RE.fullmatch(mobile):
            raise Refused("41")
        card = await conn.fetchrow(
            "SELECT c.*, m.closed AS merchant_closed FROM cards c LEFT JOIN merchants m ON m.id = c.merchant_id"
            " WHERE card_no = $1 FOR UPDATE OF c", card_no,
        )
        if card is None or card["state"] in ("cancelled", "reissued", "lost", "frozen"):
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
    names = KIND_NAMES["activation_recharge"]
    if amount == 0:
        return TradeResult(OK, card_no=card_no, text_code="57", trade_name_zh=names[0], trade_name_en=names[1])
    K = ledger.AccountKind
    fund = await _account(conn, K.RECHARGE_FUND, merchant_id=card["merchant_id"])
    purse = await _account(conn, K.CARD_PURSE, card_no=card_no)
    transfer_id = f"kkt:{uuid.uuid4().hex}"
    (outcome,) = await ledger.create_transfers(conn, [ledger.NewTransfer(
        transfer_id, fund, purse, amount, code="kkt_activation_recharge", reference=card_no
    )])
    metrics.LEDGER_TRANSFERS.labels("single", outcome.result.value).inc()
    if outcome.result is ledger.Result.EXCEEDS_CREDITS:
        return TradeResult("55", card_no=card_no)
    outcome.check(transfer_id)
    kind = TradeKind("activation_recharge", "sv", names[0], names[1])
    request = TradeRequest("0001", "1", card_no, terminal.code)
    return await _finish(conn, request, kind, terminal, card_no, amount, 0, None, names, transfer_id, None)


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


async def change_password(db: asyncpg.Pool | asyncpg.Connection, req: PasswordRequest, cfg: Config) -> TradeResult:
    """Change (with the old password) or reset (issuing merchant only) a card's password.
    Success answers 11 as the seed's example (texts 45 change / 47 reset); a reset also
    lifts a wrong-password lock."""
    if not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    else:
        result = await _in_transaction(db, lambda conn: _change_password(conn, req, cfg),
                                       cfg.settings.ledger_max_retries)
    metrics.KKT_TRADES.labels("rSCardPwd", result.code).inc()
    return result


async def _change_password(conn: asyncpg.Connection, req: PasswordRequest, cfg: Config) -> TradeResult:
    zh, en = PASSWORD_TRADE_NAMES
    card_no = ""
    try:
        terminal = await _terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = _card_no(req.card_no, terminal.merchant_code)
        new_md5 = cards.normalise_password((req.new_password or "").strip() or None)
        if new_md5 is None:
            raise Refused("07")
        card = await _lock_card(conn, card_no)
        _check_card_usable(card, dt.datetime.now(SHANGHAI).date())
        old = (req.old_password or "").strip()
        if old:
            await _check_password(conn, card, old, cfg, wrong_code="46")
        elif card["merchant_id"] != req.license_merchant_id:
            raise Refused("52")  # only the issuing merchant resets a password it does not know
        await conn.execute(
            "UPDATE cards SET password_hash = $2, password_failures = 0, locked_until = NULL WHERE card_no = $1",
            card_no, cards.hash_password(new_md5, cfg.pepper, cfg.settings.kkt_password_hash_iterations),
        )
        return TradeResult(OK, card_no=card_no, text_code="45" if old else "47", trade_name_zh=zh, trade_name_en=en)
    except (Refused, _CommitThenRefuse) as refusal:
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


async def bind(db: asyncpg.Pool | asyncpg.Connection, req: BindRequest, cfg: Config) -> TradeResult:
    """Bind (mode 1) or unbind (0) a mobile (11 digits from 1) or a PRC ID number (15/18).
    Success answers 11 as the seed's examples (texts 40 / 44)."""
    if not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    elif req.trade_mode not in ("0", "1"):
        result = TradeResult("04")
    else:
        result = await _in_transaction(db, lambda conn: _bind(conn, req, cfg), cfg.settings.ledger_max_retries)
    metrics.KKT_TRADES.labels("bCRequest", result.code).inc()
    return result


async def _bind(conn: asyncpg.Connection, req: BindRequest, cfg: Config) -> TradeResult:
    card_no = ""
    id_num = (req.id_num or "").strip()
    try:
        terminal = await _terminal(conn, req.terminal_code, req.terminal_kinds, cfg.settings)
        card_no = _card_no(req.card_no, terminal.merchant_code)
        if _MOBILE_RE.fullmatch(id_num):
            column = "bound_mobile"
        elif _IDNO_RE.fullmatch(id_num):
            column, id_num = "bound_id_no", id_num.upper()
        else:
            raise Refused("41")
        card = await _lock_card(conn, card_no)
        _check_card_usable(card, dt.datetime.now(SHANGHAI).date())
        if not req.skip_password:
            await _check_password(conn, card, req.password, cfg)
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
    except (Refused, _CommitThenRefuse) as refusal:
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


async def card_info(
    db: asyncpg.Pool | asyncpg.Connection, card_no_raw: str, license: License, updates: Mapping[str, str],
    cfg: Config,
) -> InfoResult:
    """Read, and update the non-empty fields of, a card's holder information. Only the
    card's issuing merchant (the license key's) sees or changes it (05 otherwise)."""
    if not cfg.settings.kkt_gateway_open:
        return InfoResult("51")

    async def work(conn: asyncpg.Connection) -> InfoResult:
        card_no = cards.expand_card_no((card_no_raw or "").strip(), license.merchant_code)
        if card_no is None:
            return InfoResult("01")
        changes: dict[str, str] = {}
        for param, value in updates.items():
            if param not in HOLDER_FIELDS or not value.strip():
                continue
            key, _, max_len = HOLDER_FIELDS[param]
            value = value.strip()
            rule = _FIELD_RULES.get(key)
            if len(value) > max_len or any(ord(ch) < 32 for ch in value) or (rule and not rule.fullmatch(value)):
                return InfoResult("00", card_no, license.merchant_code)
            if key == "birthday":
                try:
                    dt.date.fromisoformat(value)
                except ValueError:
                    return InfoResult("00", card_no, license.merchant_code)
            changes[key] = value
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

    result = await _in_transaction(db, work, cfg.settings.ledger_max_retries)
    metrics.KKT_TRADES.labels("cIRequest", result.code or OK).inc()
    return result


# --- tSRequest: transaction history ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    stance: str
    card_no: str
    amount_cents: int
    points: int
    trade_time: dt.datetime  # UTC; shown in Asia/Shanghai
    terminal_code: str
    kind: str
    trade_name: str

    def name(self, chinese: bool) -> str:
        if chinese and self.trade_name:
            return self.trade_name
        zh, en = KIND_NAMES.get(self.kind, ("", ""))
        return zh if chinese else en


@dataclass(frozen=True, slots=True)
class HistoryResult:
    code: str
    records: list[HistoryRecord] = field(default_factory=list)


def _is_unset(value: str | None) -> bool:
    return (value or "").strip() in ("", "0")


def parse_time(raw: str | None) -> dt.datetime | None:
    """``YYYY-MM-DD hh:mm:ss`` (or a date) in Asia/Shanghai; None when unset (0 or empty)."""
    if _is_unset(raw):
        return None
    value = (raw or "").strip()
    if len(value) > 19:
        raise ValueError(value)
    try:
        parsed = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        parsed = dt.datetime.strptime(value, "%Y-%m-%d")
    try:
        return parsed.replace(tzinfo=SHANGHAI).astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01 in Shanghai is before the first UTC instant Python has
        raise ValueError(value) from None


async def history(
    db: asyncpg.Pool | asyncpg.Connection, license: License, *, trade_type: str, trade_mode: str,
    card_no: str | None, terminal_code: str | None, stance_no: str | None, start: str | None,
    end: str | None, cfg: Config,
) -> HistoryResult:
    """Trades by one of terminal, card or serial (all unset: by the key's merchant), within
    an optional time range, limited to the key's merchant's trades and cards."""
    result = await _history(db, license, trade_type, trade_mode, card_no, terminal_code, stance_no, start, end, cfg)
    metrics.KKT_TRADES.labels("tSRequest", result.code).inc()
    return result


async def _history(
    db: asyncpg.Pool | asyncpg.Connection, license: License, trade_type: str, trade_mode: str,
    card_no_raw: str | None, terminal_code: str | None, stance_no: str | None, start: str | None,
    end: str | None, cfg: Config,
) -> HistoryResult:
    if not cfg.settings.kkt_gateway_open:
        return HistoryResult("51")
    if trade_type != "0012":
        return HistoryResult("03")
    if trade_mode != "0":
        return HistoryResult("04")
    filters = [not _is_unset(v) for v in (card_no_raw, terminal_code, stance_no)]
    if sum(filters) > 1:
        return HistoryResult("00")  # the seed: query by exactly one of them
    try:
        t0, t1 = parse_time(start), parse_time(end)
    except ValueError:
        return HistoryResult("00")
    where = ["(t.merchant_id = $1 OR c.merchant_id = $1)"]
    args: list[Any] = [license.merchant_id]
    if filters[0]:
        card_no = cards.expand_card_no((card_no_raw or "").strip(), license.merchant_code)
        if card_no is None:
            return HistoryResult("01")
        args.append(card_no)
        where.append(f"t.card_no = ${len(args)}")
    if filters[1]:
        code = (terminal_code or "").strip()
        if len(code) > 16:
            return HistoryResult("70")
        args.append(code)
        where.append(f"t.terminal_code = ${len(args)}")
    if filters[2]:
        stance = (stance_no or "").strip()
        if not _STANCE_RE.fullmatch(stance):
            return HistoryResult("61")
        args.append(stance)
        where.append(f"t.stance = ${len(args)}")
    if t0 is not None:
        args.append(t0)
        where.append(f"t.created_at >= ${len(args)}")
    if t1 is not None:
        args.append(t1)
        where.append(f"t.created_at <= ${len(args)}")
    args.append(cfg.settings.kkt_history_max_rows)
    sql = (
        "SELECT t.stance, t.card_no, t.amount_cents, t.points, t.created_at, t.terminal_code, t.kind, t.trade_name"
        " FROM kkt_trades t JOIN cards c ON c.card_no = t.card_no WHERE " + " AND ".join(where)
        + f" ORDER BY t.created_at DESC, t.id DESC LIMIT ${len(args)}"
    )
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            rows = await conn.fetch(sql, *args)
    else:
        rows = await db.fetch(sql, *args)
    if not rows and filters[2]:
        return HistoryResult("61")
    return HistoryResult(OK, [HistoryRecord(*r) for r in rows])

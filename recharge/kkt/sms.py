"""The SMS channel's language (SPEC 3.3, seed 000), without any I/O.

``parse(text, max_chars)`` turns an inbound SMS such as ``2929*1680100100000001*10.5*123456*12``
into a ``SmsCommand`` (or a ``Rejected`` with the reply to send); the reply formatters turn
a card service result (``recharge.kkt.messages.TradeResult``) into one SMS of at most 70
(UCS-2) characters. Who may send what, and running it against the card service, is
``recharge.kkt.sms_channel``; HTTP is
``http_api.sms``.

Rules (docs/PROTOCOL.md "SMS channel"): the 11 commands in letter form (any case) or as the
keypad digits of those letters; fields separated by ``*``; whitespace anywhere is dropped
(the seed's own examples carry spaces, even inside a number); full-width ASCII (what a
Chinese input method types: ``２９２９＊…``, ``１０``) is read as ASCII, deliberately, and
nothing else is (no other Unicode digits); trailing ``*`` are ignored; card numbers are 16
digits or 8 (expanded later); amounts are yuan with at most two decimals; passwords are 6
digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from recharge.kkt import codes
from recharge.kkt.messages import TradeResult

KEYPAD = {letter: digit for digit, letters in (
    ("2", "ABC"), ("3", "DEF"), ("4", "GHI"), ("5", "JKL"), ("6", "MNO"), ("7", "PQRS"), ("8", "TUV"), ("9", "WXYZ"),
) for letter in letters}
# U+FF01..U+FF5E are the full-width forms of ASCII 0x21..0x7E; U+3000 is the ideographic space
_FULL_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_CARD_RE = re.compile(r"[0-9]{16}|[0-9]{8}")
_YUAN_RE = re.compile(r"([0-9]{1,10})(?:\.([0-9]{1,2}))?")
_POINTS_RE = re.compile(r"[0-9]{1,12}")
_PIN_RE = re.compile(r"[0-9]{6}")
_ITEM_RE = re.compile(r"[0-9]{1,8}")
_SERIAL_RE = re.compile(r"[0-9]{1,8}")
_ID_NUM_MAX_CHARS = 18  # a PRC ID number; a mobile is 11
ITEM_MIN_DIGITS = 3  # seed 002: ITEMCODE is 3–8 digits; seed 000's example sends "12"
STANCE_DIGITS = 8


def keypad_digits(letters: str) -> str:
    """The phone-keypad digits of a letter code: ``YECX`` → ``9329``."""
    return "".join(KEYPAD[ch] for ch in letters.upper())


@dataclass(frozen=True, slots=True)
class Command:
    """One operation of seed 000's table: its letter code, name, fields and who may send it."""

    code: str  # letter form, e.g. "CZCZ"; the digit form is derived (keypad_digits)
    name: str  # the seed's Chinese name, used in replies
    required: tuple[str, ...]  # field kinds after the code, in order
    optional: tuple[str, ...] = ()
    holder: bool = False  # a cardholder (not an operator terminal) may send it

    @property
    def digits(self) -> str:
        return keypad_digits(self.code)

    @property
    def usage(self) -> str:
        parts = "".join("*" + FIELD_LABELS[f] for f in self.required)
        extra = "".join("[*" + FIELD_LABELS[f] + "]" for f in self.optional)
        return f"{self.code}{parts}{extra}"


FIELD_LABELS = {
    "card": "卡号", "yuan": "金额(元)", "points": "积分", "password": "卡密码", "old_password": "原密码",
    "new_password": "新密码", "item": "服务代码", "serial": "流水号", "id_num": "手机或身份证号",
}

COMMANDS: tuple[Command, ...] = (
    Command("CZCZ", "储值充值", ("card", "yuan", "password"), ("item",)),
    Command("CZXF", "储值消费", ("card", "yuan", "password"), ("item",)),
    Command("JFLJ", "积分累加", ("card", "yuan"), ("item",)),
    Command("JFXF", "积分消费", ("card", "points"), ("item",)),
    Command("JYCX", "交易撤销", ("card", "serial")),
    Command("YECX", "余额查询", ("card",), holder=True),
    Command("JFCX", "积分查询", ("card",), holder=True),
    Command("HMBD", "号码绑定", ("card", "password", "id_num"), holder=True),
    Command("BDCX", "绑定撤销", ("card", "password", "id_num"), holder=True),
    Command("MMXG", "密码修改", ("card", "old_password", "new_password"), holder=True),
    Command("MMCZ", "密码重置", ("card", "new_password")),
)
BY_CODE: dict[str, Command] = {c.code: c for c in COMMANDS} | {c.digits: c for c in COMMANDS}
HOLDER_CODES = tuple(c.code for c in COMMANDS if c.holder)


@dataclass(frozen=True, slots=True)
class SmsCommand:
    """A well-formed command. ``card`` is 16 or 8 ASCII digits as sent (8: expanded later)."""

    command: Command
    card: str
    amount_cents: int | None = None  # "yuan" fields, converted
    points: int | None = None
    password: str | None = None  # the card password, or the old one for MMXG
    new_password: str | None = None
    item_code: str | None = None  # zero-padded to 3 digits
    serial: str | None = None  # zero-padded to 8 digits
    id_num: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that is not a well-formed command: ``outcome`` (a metric label) and the reply."""

    outcome: str
    reply: str
    command: Command | None = None


# --- parsing --------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Full-width ASCII to ASCII, then every whitespace character removed."""
    return "".join(ch for ch in text.translate(_FULL_WIDTH) if not ch.isspace())


def parse_yuan(raw: str) -> int | None:
    """Cents for a positive yuan amount with at most two decimals (``10.5`` → 1050), else None."""
    found = _YUAN_RE.fullmatch(raw)
    if found is None:
        return None
    cents = int(found.group(1)) * 100 + int((found.group(2) or "0").ljust(2, "0"))
    return cents if cents > 0 else None


def parse_points(raw: str) -> int | None:
    """A positive whole number of points, else None."""
    if not _POINTS_RE.fullmatch(raw):
        return None
    points = int(raw)
    return points if points > 0 else None


class _Bad(Exception):
    def __init__(self, outcome: str, reply: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.reply = reply


def parse(text: str, max_chars: int) -> SmsCommand | Rejected:
    """Read one inbound SMS; never raises for anything a sender can type."""
    if len(text) > max_chars:
        return Rejected("too_long", f"短信过长(最多{max_chars}字)。{HELP}")
    parts = normalise(text).rstrip("*").split("*")
    code = parts[0].upper() if parts[0].isascii() else parts[0]
    command = BY_CODE.get(code)
    if command is None:
        return Rejected("unknown_command" if parts[0] else "empty", f"无法识别的指令。{HELP}")
    fields = parts[1:]
    lowest, highest = len(command.required), len(command.required) + len(command.optional)
    if not lowest <= len(fields) <= highest:
        return Rejected("field_count", f"格式错误，应为{command.usage}", command)
    values: dict[str, Any] = {}
    try:
        for kind, raw in zip(command.required + command.optional, fields, strict=False):
            name, value = _field(kind, raw)
            values[name] = value
    except _Bad as bad:
        return Rejected(bad.outcome, bad.reply, command)
    return SmsCommand(command, **values)


def _field(kind: str, raw: str) -> tuple[str, Any]:
    if kind == "card":
        if not _CARD_RE.fullmatch(raw):
            raise _Bad("bad_card", "卡号输入错误！卡号为16位或8位数字")
        return "card", raw
    if kind == "yuan":
        cents = parse_yuan(raw)
        if cents is None:
            raise _Bad("bad_amount", "金额输入错误！金额以元为单位，最多两位小数，如10.5")
        return "amount_cents", cents
    if kind == "points":
        points = parse_points(raw)
        if points is None:
            raise _Bad("bad_points", "积分输入错误！积分为正整数，如50")
        return "points", points
    if kind in ("password", "old_password", "new_password"):
        if not _PIN_RE.fullmatch(raw):
            raise _Bad("bad_password", f"{FIELD_LABELS[kind]}应为6位数字")
        return ("new_password" if kind == "new_password" else "password"), raw
    if kind == "item":
        if not _ITEM_RE.fullmatch(raw):
            raise _Bad("bad_item", "服务代码应为数字")
        return "item_code", raw.zfill(ITEM_MIN_DIGITS)
    if kind == "serial":
        if not _SERIAL_RE.fullmatch(raw):
            raise _Bad("bad_serial", "流水号输入错误！流水号为8位数字")
        return "serial", raw.zfill(STANCE_DIGITS)
    if kind == "id_num":
        if not raw or len(raw) > _ID_NUM_MAX_CHARS or not raw.isascii() or not raw.isalnum():
            raise _Bad("bad_id_num", codes.text("41", True))
        return "id_num", raw
    raise AssertionError(kind)


# --- replies --------------------------------------------------------------------------------

HELP = "余额查询请发YECX*卡号，其他指令见卡卡通短信操作指南"
NOT_BOUND = "此卡未绑定本手机号码，不能办理"
HOLDER_FORBIDDEN = "须由商户操作员办理；持卡人可发" + "、".join(HOLDER_CODES)
BUSY = "系统繁忙，请稍后再试"
ELLIPSIS = "…"


def sms_chars(text: str) -> int:
    """Length in UCS-2 code units, what one 70-character SMS counts."""
    return len(text.encode("utf-16-be")) // 2


def fit(text: str, max_chars: int) -> str:
    """``text`` cut (with …) to fit ``max_chars`` UCS-2 units; the formatters stay well under."""
    if sms_chars(text) <= max_chars:
        return text
    out = []
    used = sms_chars(ELLIPSIS)
    for ch in text:
        used += sms_chars(ch)
        if used > max_chars:
            break
        out.append(ch)
    return "".join(out) + ELLIPSIS


def yuan(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _tail(card_no: str) -> str:
    return f"卡尾号{card_no[-4:]}" if card_no else ""


def trade_reply(command: Command, result: TradeResult, max_chars: int) -> str:
    """The reply to a trade: result, what moved, new balance and the serial (Stance)."""
    if not result.ok:
        return fit(f"{_tail(result.card_no)}{command.name}失败({result.code})：{result.text(True)}", max_chars)
    points_trade = result.points is not None
    if command.code in ("YECX", "JFCX"):
        what = f"积分余额{result.points}分" if points_trade else f"余额{yuan(result.purse_cents or 0)}元"
    else:
        name = command.name if command.code != "JYCX" else result.trade_name_zh
        moved = f"{result.points_moved}分" if points_trade else f"{yuan(result.amount_cents)}元"
        after = f"积分余额{result.points}分" if points_trade else f"余额{yuan(result.purse_cents or 0)}元"
        what = f"{name}{moved}，{after}"
    return fit(f"{result.text(True)}{_tail(result.card_no)}{what}，流水{result.stance}", max_chars)


def account_reply(command: Command, result: TradeResult, max_chars: int) -> str:
    """The reply to a bind/unbind or password change/reset (the seed's texts 40/44/45/47)."""
    if result.ok:
        return fit(f"{_tail(result.card_no)}{result.text(True)}", max_chars)
    return fit(f"{_tail(result.card_no)}{command.name}失败({result.code})：{result.text(True)}", max_chars)

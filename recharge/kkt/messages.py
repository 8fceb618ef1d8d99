"""What a channel hands the card service and gets back: the per-call configuration, the
trade request and result, and the refusal a check raises inside the service.

Fields of a request are the raw texts the caller sent (REST passes them untouched, so a
padded value is refused by the check that reads it; SOAP trims XML whitespace first; SMS
sends parsed values). Dates and days are Asia/Shanghai (``SHANGHAI``).
"""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.kkt import cards
from recharge.kkt.codes import OK, text

if TYPE_CHECKING:
    from recharge.ledger.group_commit import GroupCommit

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
GATEWAY_TERMINAL_KINDS = frozenset({"pos", "operator", "admin"})  # REST and SOAP callers
SMS_TERMINAL_KINDS = frozenset({"sms"})


@dataclass(frozen=True, slots=True)
class Config:
    """The limits and the password pepper a call needs (built once per process or request), and
    the process's group commit of trades (``lane``; None: each trade commits on its own)."""

    settings: Settings
    pepper: bytes = field(repr=False)
    lane: GroupCommit | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, settings: Settings, keys: MasterKeys, lane: GroupCommit | None = None) -> Config:
        return cls(settings, cards.password_pepper(keys), lane)


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


class Refused(Exception):
    """A check failed: the request is answered with ``code`` and changes nothing."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class CommitThenRefuse(Refused):
    """A refusal whose bookkeeping (the wrong-password counter) must commit."""

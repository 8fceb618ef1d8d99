"""The shapes of STK and POS requests (SPEC 6.12, 7.2, 7.4): field by field, anything unknown, missing or
mistyped is ``WireError`` (``1001``); purchase records are checked one by one, so one bad record of a batch
is refused alone."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_SEQ = 2**31 - 1
MAX_BATCH_RECORDS = 1000
MAX_CENTS = 100_000_00  # 100,000.00 yuan: above anything a wallet can hold; larger is malformed
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_HEX = re.compile(r"[0-9A-Fa-f]*")


class WireError(ValueError):
    """A request or record that is not of its documented shape (code 1001)."""

    code = "1001"


@dataclass(frozen=True, slots=True)
class Record:
    """One purchase record as uploaded (SPEC 7.4)."""

    card: str
    offline_serial: int
    amount: int
    balance_after: int
    tts: int
    date: str
    time: str
    tac: bytes = field(repr=False)
    void: bool


def digits(n: int) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or len(value) != n or not value.isascii() or not value.isdigit():
            raise WireError(f"expected {n} digits")
        return value
    return check


def integer(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise WireError(f"expected an integer in {low}..{high}")
        return value
    return check


def _hex(nbytes: int | None) -> Callable[[object], bytes]:
    def check(value: object) -> bytes:
        if not isinstance(value, str) or not value.isascii() or not _HEX.fullmatch(value) or len(value) % 2:
            raise WireError("expected hex")
        if nbytes is not None and len(value) != 2 * nbytes:
            raise WireError(f"expected {nbytes} bytes of hex")
        return bytes.fromhex(value)
    return check


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise WireError("expected a boolean")
    return value


def text(value: object) -> str:
    """Any string of at most 64 characters (a password whose format the operation itself judges)."""
    if not isinstance(value, str) or len(value) > 64:
        raise WireError("expected a string")
    return value


def _ident(value: object) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise WireError("expected an id of 1-32 [A-Za-z0-9_-]")
    return value


def _date(value: object) -> str:
    text = digits(8)(value)
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise WireError("not a date") from None
    return text


def _time(value: object) -> str:
    text = digits(6)(value)
    if int(text[:2]) > 23 or int(text[2:4]) > 59 or int(text[4:]) > 59:
        raise WireError("not a time")
    return text


def iso_date(value: object) -> dt.date:
    """A 6.12 date, ``YYYY-MM-DD``."""
    if not isinstance(value, str) or len(value) != 10 or not value.isascii():
        raise WireError("expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise WireError("not a date") from None


card16 = digits(16)
terminal12 = digits(12)
cents = integer(0, MAX_CENTS)
positive_cents = integer(1, MAX_CENTS)
challenge4 = _hex(4)
replies_hex = _hex(None)

RECORD_FIELDS: dict[str, Callable[[object], Any]] = {
    "card": card16, "offline_serial": integer(0, 0xFFFF), "amount": positive_cents, "balance_after": cents,
    "tts": lambda v: int.from_bytes(_hex(4)(v), "big"), "date": _date, "time": _time, "tac": _hex(4),
    "void": _boolean,
}


def fields(value: object, required: Mapping[str, Callable[[object], Any]],
           optional: Mapping[str, Callable[[object], Any]] | None = None) -> dict[str, Any]:
    """An object with exactly the required fields and any of the optional ones, each checked."""
    if not isinstance(value, dict):
        raise WireError("expected an object")
    optional = optional or {}
    unknown = set(value) - set(required) - set(optional)
    missing = set(required) - set(value)
    if unknown or missing:
        raise WireError("unknown or missing fields")
    checks = {**required, **optional}
    return {name: checks[name](item) for name, item in value.items()}


def record(value: object) -> Record:
    """One purchase record, or WireError."""
    return Record(**fields(value, RECORD_FIELDS))


def parse_json(body: bytes) -> Any:
    """The parsed body; WireError when it is not UTF-8 JSON."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WireError("body is not JSON") from None


POS_HEADER = {"terminal_id": terminal12, "pos_seq": integer(1, MAX_SEQ)}


def records(value: object) -> list[object]:
    """A batch's record list (each record is checked later, on its own)."""
    if not isinstance(value, list) or len(value) > MAX_BATCH_RECORDS:
        raise WireError(f"records must be a list of at most {MAX_BATCH_RECORDS}")
    return value


POS_ROUTES: dict[str, tuple[dict[str, Callable[[object], Any]], dict[str, Callable[[object], Any]]]] = {
    "batches": ({"batch_no": _ident, "records": records}, {}),
    "returns": ({"card": card16, "offline_serial": integer(0, 0xFFFF), "amount": positive_cents}, {}),
    "loads": ({"card": card16}, {"amount": positive_cents}),
    "continue": ({}, {"replies": replies_hex, "challenge": challenge4}),
    "recover": ({}, {}),
    "swaps": ({"record": record}, {}),
    "wallet-opens": ({"card": card16, "challenge": challenge4}, {}),
    "wallet-cancels": ({"record": record, "challenge": challenge4}, {}),
}


def pos_terminal(value: object) -> str | None:
    """The terminal id of a POS body, if it names a well-formed one (the key of its X-MAC)."""
    if isinstance(value, dict):
        try:
            return terminal12(value.get("terminal_id"))
        except WireError:
            return None
    return None


def pos_request(route: str, value: object) -> dict[str, Any]:
    """A POS request of ``route``: ``terminal_id``, ``pos_seq`` and the route's own fields, checked."""
    required, optional = POS_ROUTES[route]
    return fields(value, {**POS_HEADER, **required}, optional)

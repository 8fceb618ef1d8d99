"""How the mobile payment account reads and writes its values (SPEC 6 preamble).

Yuan shown as cents ÷ 100 with trailing zeros and a bare point dropped (2000 → ``20``,
10 → ``0.1``, 0 → ``0``); yuan read after NFKC and trimming as
``^[0-9]{1,7}(\\.[0-9]{1,2})?元?$``, never rounded; MSISDNs ``1[3-9]\\d{9}`` with a leading
``+86``, ``0086`` or ``86`` dropped; Shanghai calendar days.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import zoneinfo

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
_AMOUNT_RE = re.compile(r"([0-9]{1,7})(?:\.([0-9]{1,2}))?元?")
_MSISDN_RE = re.compile(r"1[3-9][0-9]{9}")
_PREFIXES = ("+86", "0086", "86")


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def yuan(cents: int) -> str:
    """``2000`` → ``20``, ``1990`` → ``19.9``, ``1`` → ``0.01``, ``0`` → ``0`` (no sign)."""
    whole, frac = divmod(abs(cents), 100)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:02d}".rstrip("0")


def signed_yuan(cents: int) -> str:
    """CXLS's amounts: ``+20``, ``-0.1``."""
    return ("-" if cents < 0 else "+") + yuan(cents)


def parse_yuan(text: str) -> int | None:
    """Cents of a yuan amount as a person types it, or None when it is not one."""
    found = _AMOUNT_RE.fullmatch(nfkc(text))
    if found is None:
        return None
    frac = (found.group(2) or "").ljust(2, "0")
    return int(found.group(1)) * 100 + int(frac or "0")


def msisdn(raw: str | None) -> str | None:
    """The 11-digit MSISDN of an input (prefixes dropped), or None."""
    if raw is None:
        return None
    text = nfkc(raw).replace(" ", "")
    for prefix in _PREFIXES:
        if text.startswith(prefix) and len(text) == len(prefix) + 11:
            text = text[len(prefix):]
            break
    return text if _MSISDN_RE.fullmatch(text) else None


def is_msisdn(text: str) -> bool:
    return _MSISDN_RE.fullmatch(text) is not None


def today(now: dt.datetime | None = None) -> dt.date:
    """The Shanghai calendar day of ``now`` (default: the current time)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(SHANGHAI).date()


def day_start(day: dt.date) -> dt.datetime:
    """00:00 Shanghai of ``day`` as an aware datetime."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=SHANGHAI)


def mask_name(name: str) -> str:
    """``张三`` → ``张*``, ``欧阳小明`` → ``欧***``."""
    return name[:1] + "*" * (len(name) - 1) if name else ""


def compact(text: str) -> str:
    """NFKC without any whitespace (how names and ID numbers are compared)."""
    return "".join(unicodedata.normalize("NFKC", text).split())

"""The subscriber registry (SPEC 6.1, the BOSS stand-in): records, validation, eligibility.

A record per MSISDN: name, ID type and number, province (GB/T 2260 ``xx0000``), brand,
status. ``validate`` turns an untrusted mapping (the PUT body, a CSV row, CLI flags) into a
``Subscriber`` or raises ``Refused("1001")``; writing a record and the account effects of
its change live in ``recharge.mpay.events`` (they commit together).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from recharge.mpay.codes import Refused

ID_TYPES = ("id_card", "passport", "officer", "hk_mo_permit", "tw_permit", "other")
STATUSES = ("normal", "suspended_oneway", "suspended_twoway", "arrears", "lost", "cancelled")
FIELDS = ("name", "id_type", "id_number", "province", "brand", "status")
SZX_STANDARD = "SZX_STD"  # 神州行标准卡: not eligible
_PROVINCE_RE = re.compile(r"[1-9][0-9]0000")
_ID_NUMBER_RE = re.compile(r"[0-9A-Za-z()-]{1,32}")


@dataclass(frozen=True, slots=True)
class Subscriber:
    msisdn: str
    name: str | None
    id_type: str | None
    id_number: str | None
    province: str
    brand: str
    status: str

    @property
    def real_name(self) -> bool:
        """Real-name data: name, ID type and number all set."""
        return bool(self.name and self.id_type and self.id_number)

    @property
    def eligible(self) -> bool:
        return self.brand != SZX_STANDARD and self.status == "normal"

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _optional(value: Any, check: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not check(value):
        raise Refused("1001")
    return value


def validate(msisdn: str, body: Mapping[str, Any]) -> Subscriber:
    """A record from untrusted fields (absent or null clears); ``Refused("1001")`` if malformed."""
    unknown = set(body) - set(FIELDS)
    if unknown:
        raise Refused("1001")
    name = _optional(body.get("name"), lambda v: 1 <= len(v) <= 32 and "\x00" not in v and v.strip() == v)
    id_type = _optional(body.get("id_type"), lambda v: v in ID_TYPES)
    id_number = _optional(body.get("id_number"), lambda v: _ID_NUMBER_RE.fullmatch(v) is not None)
    province = body.get("province")
    status = body.get("status", "normal")
    brand = body.get("brand") or ""
    if not isinstance(province, str) or not _PROVINCE_RE.fullmatch(province):
        raise Refused("1001")
    if status is None:
        status = "normal"
    if not isinstance(status, str) or status not in STATUSES:
        raise Refused("1001")
    if not isinstance(brand, str) or len(brand) > 16 or "\x00" in brand:
        raise Refused("1001")
    return Subscriber(msisdn, name, id_type, id_number, province, brand, status)


def of_row(row: asyncpg.Record | None) -> Subscriber | None:
    if row is None:
        return None
    return Subscriber(*(row[f] for f in ("msisdn", *FIELDS)))


async def get(conn: asyncpg.Connection, msisdn: str, *, lock: bool = False) -> Subscriber | None:
    row = await conn.fetchrow(
        "SELECT msisdn, name, id_type, id_number, province, brand, status FROM mpay_subscribers"
        f" WHERE msisdn = $1{' FOR UPDATE' if lock else ''}",
        msisdn,
    )
    return of_row(row)


async def is_china_mobile(conn: asyncpg.Connection, msisdn: str) -> bool:
    """Present and not cancelled (HF's target test, 4009)."""
    sub = await get(conn, msisdn)
    return sub is not None and sub.status != "cancelled"


async def store(conn: asyncpg.Connection, sub: Subscriber) -> None:
    await conn.execute(
        "INSERT INTO mpay_subscribers (msisdn, name, id_type, id_number, province, brand, status)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (msisdn) DO UPDATE SET name = $2, id_type = $3,"
        " id_number = $4, province = $5, brand = $6, status = $7, updated_at = now()",
        sub.msisdn, sub.name, sub.id_type, sub.id_number, sub.province, sub.brand, sub.status,
    )

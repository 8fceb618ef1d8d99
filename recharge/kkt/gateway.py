"""The gateway checks that come before any card is read: the license key (bare codes 1–4),
the caller's network, and the terminal (70 unknown, disabled or of another channel; 60 its
merchant closed or not consuming).

``authorize`` is what the web gateways call first (SPEC 3.1: ``LICENSEKEY`` is checked
first). ``terminal`` is what every card method checks first inside the service. The key and
terminal rows come from the process's reference cache (``recharge.kkt.reference``) when
fresh there (then ``authorize`` takes no connection at all); without settings they are read
every time. When a cached key or terminal expires, the first request to ask for it reads every
live key and terminal again in one statement (``_RELOAD_SQL``), so the keys and terminals in use
cost one statement per TTL between them; a key or terminal the cache does not hold is read on
its own.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from recharge.config import Settings
from recharge.kkt import reference
from recharge.kkt.messages import Refused
from recharge.kkt.transaction import Db, connection


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
class Terminal:
    id: int
    code: str
    kind: str
    merchant_id: int
    merchant_code: str
    merchant_closed: bool
    daily_recharge_limit_cents: int | None


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
    terminal: Terminal  # what ``terminal`` answers, built once per row read, not per lookup


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


# Every live license key ($1) and terminal ($2) the reference cache holds, in one statement (one
# per TTL: ``reference.refreshed``); ``family`` tells a key's row from a terminal's.
_RELOAD_SQL = (
    "SELECT 'license' AS family, k.license_key AS code, k.merchant_id, km.code AS merchant_code, k.enabled,"
    " k.valid_to, k.allowed_networks, k.test_mode, NULL::bigint AS id, NULL::text AS kind, NULL::boolean AS closed,"
    " NULL::boolean AS is_consuming, NULL::bigint AS daily_recharge_limit_cents"
    " FROM license_keys k JOIN merchants km ON km.id = k.merchant_id WHERE k.license_key = ANY($1::text[])"
    " UNION ALL SELECT 'terminal', t.code, t.merchant_id, m.code, t.enabled, NULL, NULL, NULL, t.id, t.kind,"
    " m.closed, m.is_consuming, t.daily_recharge_limit_cents"
    " FROM terminals t JOIN merchants m ON m.id = t.merchant_id WHERE t.code = ANY($2::text[])"
)
_FAMILIES = ("license", "terminal")


def _terminal_from(row: Mapping[str, Any]) -> _TerminalRow:
    terminal = Terminal(int(row["id"]), row["code"], row["kind"], int(row["merchant_id"]), row["merchant_code"],
                        bool(row["closed"]), row["daily_recharge_limit_cents"])
    return _TerminalRow(terminal.id, terminal.code, terminal.kind, bool(row["enabled"]), terminal.merchant_id,
                        terminal.merchant_code, terminal.merchant_closed, bool(row["is_consuming"]), terminal)


def _key_from(row: Mapping[str, Any], prefix: str = "") -> _KeyRow:
    return _KeyRow(int(row[prefix + "merchant_id"]), row[prefix + "merchant_code"], bool(row[prefix + "enabled"]),
                   row[prefix + "valid_to"], tuple(row[prefix + "allowed_networks"] or ()),
                   bool(row[prefix + "test_mode"]))


async def _reload(db: Db, keys: list[Any]) -> dict[Any, Any]:
    """``reference.refreshed``'s ``load_all``: the rows of these license keys and terminals, one statement."""
    async with connection(db) as conn:
        rows = await conn.fetch(_RELOAD_SQL, [k[1] for k in keys if k[0] == "license"],
                                [k[1] for k in keys if k[0] == "terminal"])
    return {(row["family"], row["code"]): _key_from(row) if row["family"] == "license" else _terminal_from(row)
            for row in rows}


async def _terminal_row(conn: asyncpg.Connection, code: str, settings: Settings | None) -> _TerminalRow | None:
    """The terminal and its merchant's state, from the reference cache when fresh there; an expired
    one is read again with every live key and terminal (one statement per TTL)."""
    if reference.CACHE.stale(("terminal", code), reference.limits(settings)[0]):
        found = await reference.refreshed((("terminal", code),), _FAMILIES, settings, functools.partial(_reload, conn))
        return found.get(("terminal", code))  # type: ignore[no-any-return]

    async def load() -> _TerminalRow | None:
        row = await conn.fetchrow(_TERMINAL_SQL, code)
        return None if row is None else _terminal_from(row)

    return await reference.cached(("terminal", code), settings, load, keep_none=False)  # type: ignore[no-any-return]


def _cached_license(key: str, terminal_code: str, settings: Settings | None) -> tuple[_KeyRow, _TerminalRow | None] | None:
    """The key's row and the terminal's when both are fresh in the reference cache (no connection needed)."""
    ttl_s, _ = reference.limits(settings)
    key_row = reference.CACHE.get(("license", key), ttl_s)
    if key_row is reference.MISSING:
        return None
    if not terminal_code:
        return key_row, None
    terminal_row = reference.CACHE.get(("terminal", terminal_code), ttl_s)
    return None if terminal_row is reference.MISSING else (key_row, terminal_row)


async def _loaded_license(
    db: Db, key: str, terminal_code: str, settings: Settings | None
) -> tuple[_KeyRow | None, _TerminalRow | None]:
    """The key's and the terminal's rows when the cache could not answer: an expired entry is read
    again with every live key and terminal in one statement (or waits for such a read under way,
    taking no connection); a key or terminal the cache does not hold is read on its own."""
    license_key, terminal_key = ("license", key), ("terminal", terminal_code)
    asked: tuple[Hashable, ...] = (license_key, terminal_key) if terminal_code else (license_key,)
    ttl_s, _ = reference.limits(settings)
    if any(reference.CACHE.stale(k, ttl_s) for k in asked):
        found = await reference.refreshed(asked, _FAMILIES, settings, functools.partial(_reload, db))
        return found.get(license_key), found.get(terminal_key) if terminal_code else None
    async with connection(db) as conn:  # ``db`` may be an acquire callable: a connection only now
        return await _license_rows(conn, key, terminal_code, settings)


async def _license_rows(
    conn: asyncpg.Connection, key: str, terminal_code: str, settings: Settings | None
) -> tuple[_KeyRow | None, _TerminalRow | None]:
    ttl_s, max_entries = reference.limits(settings)
    cached = reference.CACHE.get(("license", key), ttl_s)
    if cached is not reference.MISSING:
        terminal = await _terminal_row(conn, terminal_code, settings) if terminal_code else None
        return cached, terminal
    read_at = reference.clock()
    row = await conn.fetchrow(_LICENSE_SQL, key, terminal_code)
    if row is None:
        return None, None  # unknown keys are not cached
    key_row = _key_from(row, "k_")
    reference.CACHE.put(("license", key), key_row, ttl_s, max_entries, read_at=read_at)
    terminal = None
    if row["id"] is not None:
        terminal = _terminal_from(row)
        reference.CACHE.put(("terminal", terminal.code), terminal, ttl_s, max_entries, read_at=read_at)
    return key_row, terminal


async def authorize(
    db: Db,
    license_key: str | None,
    remote_ip: str | None,
    *,
    copno: str | None = None,
    terminal_code: str | None = None,
    settings: Settings | None = None,
) -> License:
    """Check a LICENSEKEY first, as the seed does: 1 unknown or malformed (padded included:
    the key is taken as sent), 2 expired, 3 disabled or used for another merchant (COPNO, or
    a terminal of another merchant), 4 the caller's address is outside the key's allowed
    networks."""
    key = license_key or ""
    if not 16 <= len(key) <= 512:
        return License(1)
    row: _KeyRow | None
    found = _cached_license(key, terminal_code or "", settings)
    if found is not None:
        row, terminal = found
    else:
        row, terminal = await _loaded_license(db, key, terminal_code or "", settings)
    if row is None:
        return License(1)
    if row.valid_to is not None and row.valid_to < dt.datetime.now(dt.UTC):
        return License(2)
    if not row.enabled or (copno and copno.strip() and copno.strip() != row.merchant_code):
        return License(3)
    if terminal is not None and terminal.merchant_id != row.merchant_id:
        return License(3)
    if not _address_allowed(remote_ip, row.allowed_networks):
        return License(4)
    return License(0, row.merchant_id, row.merchant_code, row.test_mode)


ADDRESS_VERDICTS_KEPT = 4096  # (caller's address, key's networks) verdicts kept: parsing them cost more than a trade's checks


@functools.lru_cache(maxsize=ADDRESS_VERDICTS_KEPT)
def _address_allowed(remote_ip: str | None, networks: tuple[str, ...]) -> bool:
    """Whether ``remote_ip`` is in one of ``networks`` (malformed entries never match). A pure
    function of its arguments, so its verdicts are kept (bounded): a key whose networks change
    is a new argument, never a stale answer."""
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


async def terminal(
    conn: asyncpg.Connection, code: str | None, kinds: frozenset[str], settings: Settings | None = None
) -> Terminal:
    if not code or len(code) > 16:
        raise Refused("70")
    row = reference.CACHE.get(("terminal", code), reference.limits(settings)[0])  # a trade asks up to three times
    if row is reference.MISSING:
        row = await _terminal_row(conn, code, settings)
    if row is None or not row.enabled or row.kind not in kinds:
        raise Refused("70")
    if row.closed or not row.is_consuming:
        raise Refused("60")
    return row.terminal  # type: ignore[no-any-return]

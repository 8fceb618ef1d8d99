"""POS terminals of the SIM wallet (SPEC 7.4) and merchant commission rates: registered by operators in
batches (one result per item), looked up by the POS endpoints."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

_MERCHANT = re.compile(r"[A-Z0-9]{4,16}")
_HALL = re.compile(r"[A-Za-z0-9]{1,16}")
_TERMINAL = re.compile(r"[0-9]{12}")


class Result(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Terminal:
    """A terminal of a merchant (purchases, returns) or of a hall (loads, swaps, buy-outs)."""

    terminal_id: str
    merchant: str | None = None
    hall: str | None = None
    enabled: bool = True


def _valid(t: Terminal) -> bool:
    if not _TERMINAL.fullmatch(t.terminal_id) or (t.merchant is None) == (t.hall is None):
        return False
    return bool(_MERCHANT.fullmatch(t.merchant) if t.merchant is not None else _HALL.fullmatch(t.hall or ""))


async def register(conn: asyncpg.Connection, terminals: list[Terminal]) -> list[Result]:
    """Register terminals; an existing one with the same owner is ``exists`` (idempotent)."""
    results = []
    for t in terminals:
        if not _valid(t):
            results.append(Result.INVALID)
            continue
        inserted = await conn.fetchval(
            "INSERT INTO wallet_terminals (terminal_id, merchant, hall) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING terminal_id",
            t.terminal_id, t.merchant, t.hall,
        )
        if inserted is not None:
            results.append(Result.CREATED)
            continue
        found = await find(conn, t.terminal_id)
        same = found is not None and (found.merchant, found.hall) == (t.merchant, t.hall)
        results.append(Result.EXISTS if same else Result.EXISTS_WITH_DIFFERENT_FIELDS)
    return results


async def find(conn: asyncpg.Connection, terminal_id: str) -> Terminal | None:
    row = await conn.fetchrow(
        "SELECT terminal_id, merchant, hall, enabled FROM wallet_terminals WHERE terminal_id = $1", terminal_id
    )
    return Terminal(*row) if row is not None else None


async def set_rates(conn: asyncpg.Connection, rates: list[tuple[str, int]]) -> list[Result]:
    """Set merchants' commission rates (hundredths of a per cent, 0..10000)."""
    results = []
    for merchant, rate_bp in rates:
        if not _MERCHANT.fullmatch(merchant) or not 0 <= rate_bp <= 10_000:
            results.append(Result.INVALID)
            continue
        await conn.execute(
            "INSERT INTO wallet_merchant_rates (merchant, commission_bp) VALUES ($1, $2)"
            " ON CONFLICT (merchant) DO UPDATE SET commission_bp = $2, updated_at = now()",
            merchant, rate_bp,
        )
        results.append(Result.CREATED)
    return results

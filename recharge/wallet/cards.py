"""The RFID-SIM registry (SPEC 7.1, 7.6): stock cards registered in batches, then bound to a number by the
counter's SIM swap and retired by the next one."""

from __future__ import annotations

import re

import asyncpg

from recharge.wallet.terminals import Result

_CARD = re.compile(r"[0-9]{16}")


async def add_stock(conn: asyncpg.Connection, card_nos: list[str]) -> list[Result]:
    """Register stock RFID-SIMs; one already registered (whatever its status) is ``exists``."""
    results = []
    for card_no in card_nos:
        if not _CARD.fullmatch(card_no):
            results.append(Result.INVALID)
            continue
        inserted = await conn.fetchval(
            "INSERT INTO wallet_cards (card_no, status) VALUES ($1, 'stock') ON CONFLICT DO NOTHING RETURNING card_no",
            card_no,
        )
        results.append(Result.CREATED if inserted is not None else Result.EXISTS)
    return results


async def status(conn: asyncpg.Connection, card_no: str) -> str | None:
    """``stock``, ``bound``, ``retired``, or None for a card the platform never registered."""
    value = await conn.fetchval("SELECT status FROM wallet_cards WHERE card_no = $1", card_no)
    return str(value) if value is not None else None

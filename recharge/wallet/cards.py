"""The RFID-SIM registry (SPEC 7.1, 7.6): stock cards registered in batches, then bound to a number by the
counter's SIM swap and retired by the next one."""

from __future__ import annotations

import re

import asyncpg

from recharge.wallet.terminals import Result

_CARD = re.compile(r"[0-9]{16}")
_MSISDN = re.compile(r"1[3-9][0-9]{9}")


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


async def bind(conn: asyncpg.Connection, pairs: list[tuple[str, str]]) -> list[Result]:
    """The counter's SIM swap, step ② (SPEC 7.6): bind each (MSISDN, stock card); the number's previous card
    retires (its late purchase records still debit the wallet it served). ``exists``: already bound so."""
    results = []
    for msisdn, card_no in pairs:
        row = await conn.fetchrow("SELECT status, msisdn FROM wallet_cards WHERE card_no = $1 FOR UPDATE", card_no)
        if row is not None and row["status"] == "bound" and row["msisdn"] == msisdn:
            results.append(Result.EXISTS)
            continue
        if row is None or row["status"] != "stock" or not _MSISDN.fullmatch(msisdn):
            results.append(Result.INVALID)
            continue
        await conn.execute("UPDATE wallet_cards SET status = 'retired', retired_at = now()"
                           " WHERE msisdn = $1 AND status = 'bound'", msisdn)
        await conn.execute("UPDATE wallet_cards SET status = 'bound', msisdn = $2, bound_at = now()"
                           " WHERE card_no = $1", card_no, msisdn)
        results.append(Result.CREATED)
    return results

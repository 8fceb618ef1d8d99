"""The wallet of a mobile payment account as other rooms ask about it (SPEC 6.6 Close: ``2011`` while a wallet
is neither cancelled nor never opened)."""

from __future__ import annotations

import asyncpg


async def is_open(conn: asyncpg.Connection, account: asyncpg.Record) -> bool:
    """Whether the account has a wallet that is not cancelled (it blocks closing the account)."""
    state = await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", account["id"])
    return state is not None and state != "cancelled"


async def summary(conn: asyncpg.Connection, account_id: int) -> dict[str, str] | None:
    """``{state, card_no}`` of the account's wallet (``GET /me``'s ``wallet``), None when it never had one."""
    row = await conn.fetchrow("SELECT state, card_no FROM wallets WHERE account_id = $1", account_id)
    return {"state": row["state"], "card_no": row["card_no"]} if row else None

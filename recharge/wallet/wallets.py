"""The wallet of a mobile payment account as other rooms ask about it (SPEC 6.6 Close: ``2011`` while a wallet
is neither cancelled nor never opened)."""

from __future__ import annotations

import asyncpg


async def is_open(conn: asyncpg.Connection, account: asyncpg.Record) -> bool:
    """Whether the account has a wallet that is not cancelled (it blocks closing the account)."""
    state = await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", account["id"])
    return state is not None and state != "cancelled"

"""Merchants: the reference rows that own cards, terminals, funds and platforms."""

from __future__ import annotations

import asyncpg


async def ensure_merchant(conn: asyncpg.Connection, code: str, name: str) -> int:
    row = await conn.fetchrow(
        "INSERT INTO merchants (code, name) VALUES ($1, $2)"
        " ON CONFLICT (code) DO UPDATE SET code = EXCLUDED.code RETURNING id",
        code,
        name,
    )
    assert row is not None
    return int(row["id"])


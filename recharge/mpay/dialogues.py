"""The SMS dialogue state of one MSISDN (SPEC 6.5): one at a time, 10 minutes after its last MO.

A dialogue is (command, step, data); ``start`` replaces any other, ``keep`` refreshes its
expiry (a ``3002`` or ``7003`` keeps it), ``end`` drops it. Rows past their expiry are
ignored (and overwritten by the next ``start``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Dialogue:
    command: str
    step: str
    data: dict[str, Any] = field(default_factory=dict)


async def current(conn: asyncpg.Connection, msisdn: str) -> Dialogue | None:
    row = await conn.fetchrow(
        "SELECT command, step, data FROM mpay_dialogues WHERE msisdn = $1 AND expires_at > now()", msisdn
    )
    if row is None:
        return None
    data = row["data"]
    return Dialogue(row["command"], row["step"], json.loads(data) if isinstance(data, str) else dict(data))


async def start(conn: asyncpg.Connection, msisdn: str, dialogue: Dialogue, ttl_s: int) -> None:
    await conn.execute(
        "INSERT INTO mpay_dialogues (msisdn, command, step, data, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))"
        " ON CONFLICT (msisdn) DO UPDATE SET command = $2, step = $3, data = $4, expires_at = EXCLUDED.expires_at",
        msisdn, dialogue.command, dialogue.step, json.dumps(dialogue.data), float(ttl_s),
    )


async def keep(conn: asyncpg.Connection, msisdn: str, ttl_s: int) -> None:
    await conn.execute(
        "UPDATE mpay_dialogues SET expires_at = now() + make_interval(secs => $2) WHERE msisdn = $1",
        msisdn, float(ttl_s),
    )


async def end(conn: asyncpg.Connection, msisdn: str) -> None:
    await conn.execute("DELETE FROM mpay_dialogues WHERE msisdn = $1", msisdn)

"""The audit trail: every operator decision in ``operator_actions`` (who, when, what, why)."""

from __future__ import annotations

import json

import asyncpg


async def record_action(
    conn: asyncpg.Connection, actor: str, action: str, subject: str, reason: str, **detail: object
) -> None:
    """One row, in the caller's transaction (so it commits with the change it records)."""
    # ::text::jsonb: works whether or not the connection has the pool's jsonb codec
    await conn.execute(
        "INSERT INTO operator_actions (actor, action, subject, reason, detail) VALUES ($1,$2,$3,$4,$5::text::jsonb)",
        actor, action, subject, reason, json.dumps(detail, ensure_ascii=False, default=str),
    )

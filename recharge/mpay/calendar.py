"""The operator calendar (SPEC 6 preamble): working days are Monday–Friday unless
``rechargectl mpay calendar set DATE workday|holiday`` says otherwise."""

from __future__ import annotations

import datetime as dt

import asyncpg


async def is_workday(conn: asyncpg.Connection, day: dt.date) -> bool:
    kind = await conn.fetchval("SELECT kind FROM mpay_calendar WHERE day = $1", day)
    if kind is not None:
        return bool(kind == "workday")
    return day.weekday() < 5

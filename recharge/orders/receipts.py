"""Receipt record ids of loads (DD20): the local date ‖ 12 digits of ``dd_record_seq``."""

from __future__ import annotations

import datetime as dt

import asyncpg

from recharge.orders.model import LOCAL_TZ


def record_id_of(seq: int, now: dt.datetime) -> str:
    return f"{now.astimezone(LOCAL_TZ):%Y%m%d}{seq % 10**12:012d}"


async def new_record_id(conn: asyncpg.Connection, now: dt.datetime) -> str:
    """A 20-digit receipt record id: local date ‖ 12 digits of dd_record_seq (the first of a block)."""
    return record_id_of(int(await conn.fetchval("SELECT nextval('dd_record_seq')")), now)

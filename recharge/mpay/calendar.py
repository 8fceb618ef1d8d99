"""The operator calendar and the 17:00 cut-off (SPEC 6 preamble).

Working days are Monday–Friday unless ``rechargectl mpay calendar set DATE workday|holiday``
says otherwise. Each working day closes its batch at the cut-off (``mpay_cutoff``, 17:00
Asia/Shanghai): what happens before it belongs to that day's batch, what happens after it
(or on a day off) to the next working day's. The batches are the withdrawals' payout export,
the merchants' payout (``MER → PAYOUT``) and the unexported-withdrawal alert's two working
days (docs/PROTOCOL.md "Mobile payment account").
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from recharge.mpay.text import SHANGHAI

HORIZON_DAYS = 400  # no calendar has a longer run of days off; beyond it the calendar is wrong


def cutoff_time(text: str) -> dt.time:
    """``mpay_cutoff`` (``HH:MM``) as a time of day, or ValueError."""
    moment = dt.time.fromisoformat(text)
    if len(text) != 5 or moment.second or moment.microsecond:
        raise ValueError(f"mpay_cutoff must be HH:MM, not {text!r}")
    return moment


def cutoff_at(day: dt.date, cutoff: dt.time) -> dt.datetime:
    """The instant of ``day``'s cut-off (Shanghai wall time)."""
    return dt.datetime.combine(day, cutoff, tzinfo=SHANGHAI)


async def _overrides(conn: asyncpg.Connection, first: dt.date, last: dt.date) -> dict[dt.date, bool]:
    rows = await conn.fetch("SELECT day, kind FROM mpay_calendar WHERE day BETWEEN $1 AND $2", first, last)
    return {r["day"]: r["kind"] == "workday" for r in rows}


async def is_workday(conn: asyncpg.Connection, day: dt.date) -> bool:
    return (await _overrides(conn, day, day)).get(day, day.weekday() < 5)


async def _walk(conn: asyncpg.Connection, start: dt.date, step: int, count: int) -> dt.date:
    """The ``count``-th working day from ``start`` (itself included when count is 0) going ``step``."""
    days = [start + dt.timedelta(days=step * i) for i in range(HORIZON_DAYS)]
    known = await _overrides(conn, min(days), max(days))
    seen = 0
    for day in days:
        if known.get(day, day.weekday() < 5):
            if seen == count:
                return day
            seen += 1
    raise ValueError(f"no working day within {HORIZON_DAYS} days of {start}: check the operator calendar")


async def workday_after(conn: asyncpg.Connection, day: dt.date, n: int = 1) -> dt.date:
    """The ``n``-th working day after ``day``."""
    return await _walk(conn, day + dt.timedelta(days=1), 1, n - 1)


async def batch_day(conn: asyncpg.Connection, moment: dt.datetime, cutoff: dt.time) -> dt.date:
    """The working day whose batch takes something done at ``moment``: its own Shanghai day when
    that is a working day and the cut-off has not passed, else the next working day."""
    local = moment.astimezone(SHANGHAI)
    day = local.date() if local.timetz().replace(tzinfo=None) < cutoff else local.date() + dt.timedelta(days=1)
    return await _walk(conn, day, 1, 0)


async def last_cutoff(conn: asyncpg.Connection, now: dt.datetime, cutoff: dt.time) -> dt.date:
    """The latest working day whose cut-off is at or before ``now``: the batch that is complete."""
    local = now.astimezone(SHANGHAI)
    day = local.date() if local.timetz().replace(tzinfo=None) >= cutoff else local.date() - dt.timedelta(days=1)
    return await _walk(conn, day, -1, 0)


async def due(conn: asyncpg.Connection, moment: dt.datetime, cutoff: dt.time, working_days: int) -> dt.datetime:
    """The cut-off ``working_days`` working days after the batch day of ``moment``."""
    return cutoff_at(await workday_after(conn, await batch_day(conn, moment, cutoff), working_days), cutoff)

"""Reading orders: the filters of the order API's and the operators' order queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from recharge.orders.model import COLUMNS, LOCAL_TZ, Order


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """What ``query_orders`` / ``count_orders`` match; every field given must hold.

    Dates are local (Asia/Shanghai), inclusive, on ``created_at``; ``userid`` and ``payway``
    match the order's ``extra`` fields of the same names.
    """

    platform_id: int | None = None
    merchant_id: int | None = None
    card_no: str | None = None
    order_no: str | None = None
    states: Sequence[str] | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    userid: str | None = None
    payway: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        for column in ("platform_id", "merchant_id", "card_no", "order_no"):
            value = getattr(self, column)
            if value is not None:
                add(f"{column} = ?", value)
        if self.states:
            add("state = ANY(?::text[])", list(self.states))
        start = _day_bound(self.start_date) if self.start_date is not None else None
        if start is not None:
            add("created_at >= ?", start)
        end = _day_bound(self.end_date, days_after=1) if self.end_date is not None else None
        if end is not None:
            add("created_at < ?", end)
        if self.userid is not None:
            add("extra ->> 'userid' = ?", self.userid)
        if self.payway is not None:
            add("extra ->> 'payway' = ?", self.payway)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


async def query_orders(conn: asyncpg.Connection, *, limit: int = 100, **filters: Any) -> list[Order]:
    """Orders matching ``OrderFilter(**filters)``, newest first, at most ``limit``."""
    where, args = OrderFilter(**filters).where()
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM orders{where} ORDER BY created_at DESC, order_no DESC LIMIT ${len(args)}",
        *args,
    )
    return [Order.from_row(r) for r in rows]


async def count_orders(conn: asyncpg.Connection, **filters: Any) -> int:
    where, args = OrderFilter(**filters).where()
    return int(await conn.fetchval(f"SELECT count(*) FROM orders{where}", *args))


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=LOCAL_TZ)




def _day_bound(day: dt.date, *, days_after: int = 0) -> dt.datetime | None:
    """Local midnight ``days_after`` days after ``day`` (in UTC); None at the calendar's ends
    (year 1, 9999-12-31), which bound nothing: every order lies between them."""
    try:
        return day_start(day + dt.timedelta(days=days_after)).astimezone(dt.UTC)
    except OverflowError:
        return None

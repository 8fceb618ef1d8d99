"""How the console shows values: money in yuan from integer cents, times in Asia/Shanghai, ages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from recharge.orders.model import LOCAL_TZ


def yuan(cents: int | None) -> str:
    if cents is None:
        return ""
    cents = int(cents)  # sums come back from PostgreSQL as numeric
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def local(moment: dt.datetime | dt.date | None) -> str:
    if moment is None:
        return ""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")
    return moment.isoformat()


def age(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """How long ago, as ``2d 3h``, ``3h 5m`` or ``4m 10s``."""
    if moment is None:
        return ""
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - moment).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


FILTERS: dict[str, Callable[..., Any]] = {"yuan": yuan, "local": local, "age": age}

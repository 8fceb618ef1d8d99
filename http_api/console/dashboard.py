"""The dashboard: today's orders by state, recharges, KaKaTong trades and SMS by result, the
ledger audit (run on demand, with its last result), loads awaiting customer service, recent
sign-in lockouts, and a server-side SVG chart of recharges per hour over the last 24 hours."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from http_api.console.web import PREFIX, Console, action, page
from recharge import metrics
from recharge.ledger import audit
from recharge.orders.model import LOCAL_TZ, local_date

CHART_WIDTH, CHART_HEIGHT, CHART_TOP = 480, 200, 24


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    hour: str
    count: int


def chart_bars(counts: dict[dt.datetime, int], now: dt.datetime) -> list[Bar]:
    """24 bars, one per hour ending with the current one (local hour labels)."""
    end = now.astimezone(LOCAL_TZ).replace(minute=0, second=0, microsecond=0)
    hours = [end - dt.timedelta(hours=23 - i) for i in range(24)]
    peak = max([*counts.values(), 1])
    width = CHART_WIDTH // 24
    bars = []
    for i, hour in enumerate(hours):
        count = counts.get(hour.astimezone(dt.UTC), 0)
        height = round((CHART_HEIGHT - CHART_TOP) * count / peak)
        bars.append(Bar(i * width + 2, CHART_HEIGHT - height, width - 4, height, f"{hour:%H}", count))
    return bars


async def _facts(conn: asyncpg.Connection, now: dt.datetime) -> dict[str, Any]:
    today = local_date(now)
    start = dt.datetime.combine(today, dt.time(0), tzinfo=LOCAL_TZ)
    # order numbers begin with their local creation date: the primary key bounds each scan
    by_state = await conn.fetch(
        "SELECT state, loading, count(*) AS n, coalesce(sum(amount_cents), 0)::bigint AS cents FROM orders"
        " WHERE order_no >= $1 AND created_at >= $2 GROUP BY 1, 2 ORDER BY 1, 2", f"{today:%Y%m%d}", start,
    )
    hourly = await conn.fetch(
        "SELECT date_trunc('hour', loaded_at) AS hour, count(*) AS n FROM orders"
        " WHERE order_no >= $1 AND loaded_at >= $2 GROUP BY 1",
        f"{today - dt.timedelta(days=2):%Y%m%d}", now - dt.timedelta(hours=24),
    )
    loading = await conn.fetch(
        "SELECT order_no, card_no, amount_cents, terminal_code, loading_since FROM orders WHERE loading"
        " ORDER BY loading_since LIMIT 10"
    )
    lockouts = await conn.fetch(
        "SELECT name, remote, created_at FROM operator_signins WHERE created_at > $1 AND outcome = 'now_locked'"
        " ORDER BY created_at DESC LIMIT 10", now - dt.timedelta(days=1),
    )
    locked_terminals = await conn.fetch("SELECT code, signin_failures FROM terminals WHERE locked OR signin_locked_until > now() ORDER BY code LIMIT 10")
    return {
        "by_state": by_state, "loading": loading, "lockouts": lockouts, "locked_terminals": locked_terminals,
        "bars": chart_bars({r["hour"]: r["n"] for r in hourly}, now), "last_audit": await audit.last_run(conn),
        "loading_count": await conn.fetchval("SELECT count(*) FROM orders WHERE loading"),
    }


@page("viewer")
async def dashboard(console: Console) -> web.StreamResponse:
    now = dt.datetime.now(dt.UTC)
    async with console.platform.acquire() as conn:
        facts = await _facts(conn, now)
    return console.render(
        "dashboard.html", title="Dashboard", now=now, chart_width=CHART_WIDTH, chart_height=CHART_HEIGHT, **facts,
        recharges=metrics.counter_totals(metrics.RECHARGES, "result"),
        kkt_codes=metrics.counter_totals(metrics.KKT_TRADES, "code"),
        sms_outcomes=metrics.counter_totals(metrics.SMS_REQUESTS, "outcome"),
        msg=console.query("msg"),
    )


@action("operator", once=False)
async def run_audit(console: Console) -> web.StreamResponse:
    """Recompute the ledger now; changes nothing but the kept result, so no form token needed."""
    async with console.platform.acquire(60.0) as conn:
        report = await audit.audit(conn)
        await audit.record_run(conn, report, actor=console.actor)
    return console.redirect("/", msg="audit_done")


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/", dashboard)
    app.router.add_post(f"{PREFIX}/audit", run_audit)

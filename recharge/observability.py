"""Runtime health signals the platform samples itself: event-loop lag and database pool use.

``run_monitors`` is one background task per worker (started by ``app.runtime``): every
``loop_lag_interval_s`` it sleeps on the loop and records how late the loop woke it up
(``recharge_event_loop_lag_seconds``) — the time any callback, protocol or task had to wait
behind blocking work — and refreshes the pool gauges (``recharge_db_pool_connections`` by
state, ``recharge_db_pool_waiting``). The ``/metrics`` handler refreshes the pool gauges too,
so a scrape never shows values older than the scrape itself.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import Histogram

from recharge import metrics
from recharge.config import Settings

log = logging.getLogger(__name__)


def pool_waiting(pool: asyncpg.Pool) -> int:
    """Tasks blocked in ``pool.acquire()`` right now.

    asyncpg has no public API for this; its free connections sit in an ``asyncio.Queue``
    whose pending ``get()`` futures are the waiters. Read defensively: a future asyncpg that
    changes this shows 0 waiting rather than failing a scrape.
    """
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", None)
    if getters is None:
        return 0
    return sum(1 for waiter in getters if not waiter.done())


def sample_pool(pool: asyncpg.Pool) -> None:
    """Refresh the pool gauges: connections in use, idle, the maximum, and waiting tasks."""
    size, idle = pool.get_size(), pool.get_idle_size()
    metrics.DB_POOL_CONNECTIONS.labels("in_use").set(size - idle)
    metrics.DB_POOL_CONNECTIONS.labels("idle").set(idle)
    metrics.DB_POOL_CONNECTIONS.labels("max").set(pool.get_max_size())
    metrics.DB_POOL_WAITING.set(pool_waiting(pool))


def export_settings(settings: Settings) -> None:
    """Limits the alert rules compare against, so a changed setting needs no rule edit."""
    metrics.ORDER_EXPIRY_SECONDS.set(settings.order_expiry_s)


async def measure_loop_lag(interval_s: float, histogram: Histogram | None = None) -> float:
    """Sleep ``interval_s``, record how much later than asked the loop woke us (≥ 0) in
    ``histogram`` (default ``recharge_event_loop_lag_seconds``) and return it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.sleep(interval_s)
    lag = max(0.0, loop.time() - started - interval_s)
    (histogram or metrics.EVENT_LOOP_LAG).observe(lag)
    return lag


async def run_monitors(pool: asyncpg.Pool, settings: Settings) -> None:
    """Forever: measure the loop's lag, refresh the pool gauges. Cancelled at shutdown."""
    export_settings(settings)
    interval_s = settings.loop_lag_interval_s
    while True:
        lag = await measure_loop_lag(interval_s)
        if lag > settings.loop_lag_warn_s:
            log.warning("event loop blocked: woke %.3fs late", lag)
        try:
            sample_pool(pool)
        except (AttributeError, asyncpg.InterfaceError) as exc:  # pool closing under us
            log.debug("pool sample skipped: %s", exc.__class__.__name__)

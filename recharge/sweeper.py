"""Background upkeep: void pending transfers past their timeout, expire their orders, and
export the gauges read from the database: how many loads are left *loading* and how old the
oldest is, how many DD terminals are locked and how many are targeted by failed sign-ins, and every
``wallet_shadow_audit_interval_s`` how many SIM wallet shadows are below zero, with and without a load
unresolved; purge the DD sign-in history past ``terminal_signin_history_days``.

A load whose MAC2 has left the platform has no timeout (``ledger.set_pending_timeouts``), so it is
never swept; the order filter below guards that rule a second time.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from recharge import db, metrics
from recharge.config import Settings
from recharge.ledger import transfers as ledger
from recharge.orders import lifecycle
from recharge.orders.lifecycle import Void
from recharge.orders.model import Answers, Order

log = logging.getLogger(__name__)
SWEEP_BATCH = 100
PURGE_BATCH = 10_000


async def sweep_once(pool: asyncpg.Pool, policy: db.RetryPolicy = db.DEFAULT_RETRY) -> int:
    """Void one batch of expired pending transfers (expiring their orders); returns how many were voided.

    One transaction, run again whole by ``policy`` after a deadlock with the DD batches that lock the
    same orders and accounts."""
    answers, outcomes = await db.retry_transaction(pool, _sweep, policy=policy)
    voided = sum(isinstance(a, Order) for a in answers.values()) + sum(o.ok for o in outcomes)
    metrics.SWEPT_TRANSFERS.inc(voided)
    return voided


async def _sweep(conn: asyncpg.Connection) -> tuple[Answers, list[ledger.Outcome]]:
    ids = await ledger.expired_pending_ids(conn, limit=SWEEP_BATCH)
    if not ids:
        return {}, []
    orders = {
        r["pay_transfer_id"]: (r["order_no"], r["loading"])
        for r in await conn.fetch(
            "SELECT order_no, pay_transfer_id, loading FROM orders WHERE pay_transfer_id = ANY($1::text[])", ids
        )
    }
    loading = [p for p in ids if p in orders and orders[p][1]]
    if loading:  # a load in flight is never swept (its timeout should have been cleared)
        await ledger.set_pending_timeouts(conn, [(pending_id, None) for pending_id in loading])
    expired = [Void(orders[p][0], reason="timeout") for p in ids if p in orders and not orders[p][1]]
    answers = await lifecycle.void_orders(conn, expired)
    others = [ledger.Resolution(f"{p}:timeout", p, void=True) for p in ids if p not in orders]
    return answers, await ledger.resolve_pending(conn, others)


async def export_loading_gauges(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(loading_since)), 0) AS age"
        " FROM orders WHERE loading"
    )
    assert row is not None
    metrics.LOADS_LOADING.set(row["n"])
    metrics.LOADS_LOADING_OLDEST_AGE.set(float(row["age"]))
    row = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(loading_since)), 0) AS age"
        " FROM wallet_loads WHERE state = 'loading'"
    )
    assert row is not None
    metrics.WALLET_LOADS_LOADING.set(row["n"])
    metrics.WALLET_LOADS_LOADING_OLDEST_AGE.set(float(row["age"]))


async def export_signin_gauges(pool: asyncpg.Pool, probe_alert: int, window_s: int) -> None:
    """Terminals locked now; terminals with ``probe_alert`` or more sign-ins that failed before any
    proof within the last ``window_s`` (docs/PROTOCOL.md "Sign-in failures and the lockout")."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE locked OR signin_locked_until > now()) AS locked,"
        " count(*) FILTER (WHERE signin_probes >= $1"
        "  AND signin_probes_since > now() - make_interval(secs => $2::float8)) AS targeted"
        " FROM terminals WHERE pki_no IS NOT NULL",
        probe_alert,
        window_s,
    )
    assert row is not None
    metrics.SIGNIN_LOCKED_TERMINALS.set(row["locked"])
    metrics.SIGNIN_TARGETED_TERMINALS.set(row["targeted"])


async def purge_terminal_signins(pool: asyncpg.Pool, days: int, *, batch: int = PURGE_BATCH) -> int:
    """Delete DD sign-ins older than ``days`` (``terminal_signin_history_days``), a batch per
    statement so no purge holds many rows at once; returns how many went."""
    purged = 0
    while True:
        status = await pool.execute(
            "DELETE FROM terminal_signins WHERE id IN (SELECT id FROM terminal_signins"
            " WHERE created_at < now() - make_interval(days => $1) LIMIT $2)", days, batch,
        )
        went = int(status.split()[-1])
        purged += went
        if went < batch:
            break
    metrics.PURGED_ROWS.labels("terminal_signins").inc(purged)
    return purged


async def export_wallet_shadow_gauges(pool: asyncpg.Pool) -> None:
    """SPEC 7.4's shadow audit as gauges: wallet shadows below zero, and those with no load unresolved (the
    same rule as ``rechargectl wallet shadows``)."""
    row = await pool.fetchrow(
        "SELECT count(*) AS negative, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM transfers t"
        " WHERE t.credit_account_id = a.id AND t.kind = 'pending' AND t.status = 'pending')) AS unexplained"
        " FROM accounts a WHERE a.kind = 'mpay' AND a.card_no LIKE 'W/%' AND a.credits_posted - a.debits_posted < 0"
    )
    assert row is not None
    metrics.WALLET_SHADOWS_NEGATIVE.set(row["negative"])
    metrics.WALLET_SHADOWS_UNEXPLAINED.set(row["unexplained"])


async def run_sweeper(pool: asyncpg.Pool, settings: Settings) -> None:
    """Forever: sweep until nothing is left, refresh the gauges, purge what is past its
    retention every ``retention_purge_interval_s``, sleep."""
    loop = asyncio.get_running_loop()
    next_purge = next_shadow_audit = loop.time()
    policy = db.RetryPolicy.from_settings(settings)
    while True:
        try:
            while await sweep_once(pool, policy) == SWEEP_BATCH:
                pass
            if loop.time() >= next_purge:
                next_purge = loop.time() + settings.retention_purge_interval_s
                await purge_terminal_signins(pool, settings.terminal_signin_history_days)
            await export_loading_gauges(pool)
            if loop.time() >= next_shadow_audit:
                next_shadow_audit = loop.time() + settings.wallet_shadow_audit_interval_s
                await export_wallet_shadow_gauges(pool)
            await export_signin_gauges(pool, settings.signin_probe_alert, settings.signin_probe_window_s)
        except db.BACKGROUND_ERRORS as exc:
            log.warning("sweeper pass failed: %s", exc.__class__.__name__)
        await asyncio.sleep(settings.sweeper_interval_s)

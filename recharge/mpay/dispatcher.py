"""Delivers the outbox (SPEC 6.8) to Kannel's ``sendsms`` HTTP interface, with retries.

Each pass claims due ``pending`` rows (``FOR UPDATE SKIP LOCKED``: several workers share
the work), POSTs each text as a UTF-8 ``text/plain`` body with the ``X-Kannel-*`` headers,
and in the same transaction marks it ``sent`` (a 2xx whose body starts ``0:`` Accepted or
``3:`` Queued) or schedules a retry 5 s later, doubling to 10 min, until 24 h after it was
queued (then ``failed``, counted for the alert). Sensitive texts are erased once sent or
failed. Delivery is at-least-once: a crash between Kannel's answer and the commit sends the
row again, and its uuid (in the DLR URL) names the duplicate. The same loop expires unpaid
remote payments and exports the outbox and withdrawal gauges.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
import asyncpg

from recharge import db, metrics
from recharge.mpay import outbox, payments, withdrawals
from recharge.mpay.env import Env

log = logging.getLogger(__name__)
ACCEPTED = ("0:", "3:")


def retry_delay(env: Env, attempts: int) -> float:
    s = env.settings
    return float(min(s.mpay_outbox_first_retry_s * 2 ** max(attempts - 1, 0), s.mpay_outbox_max_retry_s))


def headers_for(env: Env, row: asyncpg.Record, dlr_secret: str | None) -> dict[str, str]:
    s = env.settings
    dlr = f"{s.mpay_outbox_dlr_base.rstrip('/')}/mpay/v1/sms/dlr?id={row['id']}&status=%d"
    if dlr_secret:
        dlr += f"&secret={quote(dlr_secret, safe='')}"
    return {
        "Content-Type": "text/plain; charset=utf-8",
        "X-Kannel-Username": s.mpay_outbox_username,
        "X-Kannel-Password": s.mpay_outbox_password,
        "X-Kannel-From": s.mpay_sms_service_number,
        "X-Kannel-To": row["msisdn"],
        "X-Kannel-Coding": "2",
        "X-Kannel-DLR-Mask": "3",
        "X-Kannel-DLR-Url": dlr,
    }


async def _send(session: aiohttp.ClientSession, env: Env, row: asyncpg.Record, text: str) -> str | None:
    """None when Kannel accepted it, else what went wrong (never the text)."""
    url = env.settings.mpay_outbox_url or ""
    try:
        async with session.post(url, data=text.encode("utf-8"), headers=headers_for(
                env, row, env.settings.sms_shared_secret), timeout=aiohttp.ClientTimeout(total=10)) as resp:
            body = (await resp.read())[:200].decode("utf-8", "replace")
            if 200 <= resp.status < 300 and body.startswith(ACCEPTED):
                return None
            return f"HTTP {resp.status}: {body[:60]}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return type(exc).__name__


async def deliver_once(pool: asyncpg.Pool, env: Env, session: aiohttp.ClientSession) -> int:
    """One pass over due messages; returns how many were handled (sent, retried or failed)."""
    s = env.settings
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT *, created_at < now() - make_interval(secs => $2) AS too_old FROM mpay_outbox"
            " WHERE state = 'pending' AND next_at <= now() ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            s.mpay_outbox_batch, float(s.mpay_outbox_give_up_s),
        )
        for row in rows:
            text = outbox.text_of(env.keys, row) or ""
            error = await _send(session, env, row, text)
            if error is None:
                await conn.execute("UPDATE mpay_outbox SET state = 'sent', sent_at = now(), attempts = attempts + 1,"
                                   " text_enc = NULL, last_error = NULL WHERE id = $1", row["id"])
                metrics.MPAY_OUTBOX.labels("sent").inc()
            elif row["too_old"]:
                await conn.execute("UPDATE mpay_outbox SET state = 'failed', attempts = attempts + 1, text_enc = NULL,"
                                   " last_error = $2 WHERE id = $1", row["id"], error)
                metrics.MPAY_OUTBOX.labels("failed").inc()
                log.warning("outbound SMS %s failed for good: %s", row["id"], error)
            else:
                delay = dt.timedelta(seconds=retry_delay(env, row["attempts"] + 1))
                await conn.execute("UPDATE mpay_outbox SET attempts = attempts + 1, next_at = now() + $2,"
                                   " last_error = $3 WHERE id = $1", row["id"], delay, error)
                metrics.MPAY_OUTBOX.labels("retry").inc()
    return len(rows)


# What is kept only for a while: (table, time column, seconds kept; None = mpay_request_id_days).
RETAINED = (("mpay_request_replies", "created_at", None), ("mpay_merchant_signs", "created_at", None),
            ("mpay_auth_failures", "created_at", 3600), ("mpay_pin_failures", "created_at", 2 * 86400))


async def purge(conn: asyncpg.Connection, env: Env) -> None:
    """Drop kept replies, signatures and attempt rows past their windows (MO replies after
    ``mpay_mo_dedup_s``), a bounded batch per table and pass."""
    windows = [(t, c, float(k if k is not None else env.settings.mpay_request_id_days * 86400)) for t, c, k in RETAINED]
    windows.append(("mpay_mo_replies", "created_at", float(env.settings.mpay_mo_dedup_s)))
    for table, column, seconds in windows:  # names from the constant above, never from input
        await conn.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table}"
            f" WHERE {column} < now() - make_interval(secs => $1) LIMIT 1000))", seconds)


async def upkeep(pool: asyncpg.Pool, env: Env | None = None) -> None:
    """Expire unpaid payments; purge what is kept only for a while; refresh the gauges."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            await payments.expire_due(conn)
        if env is not None:
            await purge(conn, env)
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE state = 'pending') AS pending, count(*) FILTER (WHERE state = 'failed'"
            " AND created_at > now() - interval '24 hours') AS failed FROM mpay_outbox"
            " WHERE state IN ('pending', 'failed')")
        age = await conn.fetchval("SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                                  " FROM mpay_withdrawals WHERE state = 'submitted'")
        if env is not None:
            try:
                metrics.MPAY_WITHDRAWALS_OVERDUE.set(await withdrawals.overdue_seconds(
                    conn, env, await conn.fetchval("SELECT now()")))
            except ValueError as exc:  # a bad mpay_cutoff or calendar: say so, keep delivering
                log.warning("unexported-withdrawal deadline not computed: %s", exc)
    assert row is not None
    metrics.MPAY_WITHDRAWALS_WAITING_AGE.set(float(age))
    metrics.MPAY_OUTBOX_PENDING.set(row["pending"])
    metrics.MPAY_OUTBOX_FAILED.set(row["failed"])


async def run(pool: asyncpg.Pool, env_of: Callable[[], Env]) -> None:
    """Forever: deliver what is due (when a Kannel URL is set), upkeep, sleep.

    ``env_of`` returns the current ``Env`` (a running platform's settings may change)."""
    async with aiohttp.ClientSession() as session:
        while True:
            env = env_of()
            try:
                if env.settings.mpay_outbox_url:
                    while await deliver_once(pool, env, session) == env.settings.mpay_outbox_batch:
                        pass
                await upkeep(pool, env)
            except db.BACKGROUND_ERRORS as exc:
                log.warning("outbox pass failed: %s", exc.__class__.__name__)
            await asyncio.sleep(env.settings.mpay_outbox_interval_s)

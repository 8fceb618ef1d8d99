"""One-time codes (SPEC 6.3): 6 digits, 5 minutes, one purpose and object, HMAC-stored.

A new code for the same purpose and object voids the last; 3 wrong entries void it
(``3006``); at most one per 60 s and 10 a Shanghai day per destination MSISDN (``1006``).
The code leaves only as a sensitive outbox SMS.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets

import asyncpg

from recharge.mpay import outbox
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import day_start, today

TEXT = "验证码{code},5分钟内有效,用于{purpose},请勿告知他人。"
PURPOSES = {
    "open": "开通手机支付",
    "login_reset": "重置登录密码",
    "security_phone": "设置密保手机号",
    "real_name": "实名信息更新",
    "counter_open": "营业厅开户",
    "counter_close": "营业厅销户",
}
CODE_RE = re.compile(r"[0-9]{6}")


async def issue(
    conn: asyncpg.Connection, env: Env, destination: str, purpose: str, obj: str = "", *,
    text: str | None = None, account: asyncpg.Record | None = None,
) -> dt.datetime:
    """A new code to ``destination`` (the last one for this purpose and object voided).

    ``text`` is the SMS template (``{code}`` filled); default 6.3's with the purpose's words.
    Returns when it expires. ``1006`` when the destination's rate is used up.
    """
    s = env.settings
    now = await conn.fetchval("SELECT now()")
    last = await conn.fetchval(
        "SELECT max(created_at) FROM mpay_otps WHERE destination = $1", destination
    )
    if last is not None and (now - last).total_seconds() < s.mpay_otp_min_interval_s:
        raise Refused("1006")
    sent_today = await conn.fetchval(
        "SELECT count(*) FROM mpay_otps WHERE destination = $1 AND created_at >= $2",
        destination, day_start(today(now)),
    )
    if sent_today >= s.mpay_otp_daily_max:
        raise Refused("1006")
    await conn.execute(
        "UPDATE mpay_otps SET state = 'void' WHERE purpose = $1 AND object = $2 AND state = 'open'", purpose, obj
    )
    code = f"{secrets.randbelow(1_000_000):06d}"
    expires_at = now + dt.timedelta(seconds=s.mpay_otp_ttl_s)
    await conn.execute(
        "INSERT INTO mpay_otps (destination, purpose, object, mac, expires_at) VALUES ($1, $2, $3, $4, $5)",
        destination, purpose, obj, env.keys.otp_mac(purpose, obj, code), expires_at,
    )
    message = (text or TEXT.replace("{purpose}", PURPOSES.get(purpose, purpose))).replace("{code}", code)
    if account is not None:
        await outbox.notify(conn, env.keys, account, message, sensitive=True)
    else:
        await outbox.enqueue(conn, env.keys, destination, message, sensitive=True)
    return expires_at


async def verify(conn: asyncpg.Connection, env: Env, purpose: str, obj: str, code: object) -> None:
    """Use the open code of this purpose and object; ``3006`` when absent, expired or wrong
    (the 3rd wrong entry voids it). Call it last: a wrong entry is counted."""
    row = await conn.fetchrow(
        "SELECT id, mac, failures, expires_at <= now() AS expired FROM mpay_otps"
        " WHERE purpose = $1 AND object = $2 AND state = 'open' ORDER BY id DESC LIMIT 1 FOR UPDATE",
        purpose, obj,
    )
    if row is None or row["expired"]:
        raise Refused("3006")
    given = code if isinstance(code, str) and CODE_RE.fullmatch(code) else "------"
    if hmac.compare_digest(bytes(row["mac"]), env.keys.otp_mac(purpose, obj, given)):
        await conn.execute("UPDATE mpay_otps SET state = 'used' WHERE id = $1", row["id"])
        return
    failures = row["failures"] + 1
    state = "void" if failures >= env.settings.mpay_otp_max_failures else "open"
    await conn.execute("UPDATE mpay_otps SET failures = $2, state = $3 WHERE id = $1", row["id"], failures, state)
    raise Refused("3006")


async def failures_of(conn: asyncpg.Connection, purpose: str, obj: str) -> int:
    """Wrong entries of the latest code of this purpose and object (0 when none)."""
    found = await conn.fetchval(
        "SELECT failures FROM mpay_otps WHERE purpose = $1 AND object = $2 ORDER BY id DESC LIMIT 1", purpose, obj
    )
    return int(found or 0)

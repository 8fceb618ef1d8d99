"""Phone-bill payments (缴话费 HF, SPEC 6.6): own number over SMS; own or another's on web/STK.

Checks after the account's status and password state: amount 1.00–500.00 (``4001``),
target absent or cancelled (``4009``), target in a blocked province that is not the payer's
(``4010``), funds (``4002``: the card bucket when it covers, else cash — C1, one rule for
every channel), then the pay password where the channel asks for one. ``K|C → BILL``,
recorded for the daily BOSS export.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import asyncpg

from recharge.mpay import accounts, credentials, matrix, outbox, postings, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.payments import BUCKET_NAMES, bucket_account, choose_bucket
from recharge.mpay.text import SHANGHAI, yuan

REPLY = "缴费成功!已为{msisdn}缴话费{amt}元,从{bucket}扣款。"


@dataclass(frozen=True, slots=True)
class Paid:
    bucket: str
    amount: int
    reply: str


async def pay(
    conn: asyncpg.Connection, env: Env, account: asyncpg.Record, target: str, amount: int | None, channel: str,
    pay_password: str | None = None,
) -> Paid:
    """Pay ``amount`` of ``target``'s phone bill from the (locked) account; ``pay_password``
    None means the channel does not ask for it (SMS and STK to the own number, C22)."""
    s = env.settings
    matrix.require(account, "hf", channel)
    now = await conn.fetchval("SELECT now()")
    if pay_password is not None:
        credentials.ensure_usable(account, "pay", now)
    if amount is None or not s.mpay_hf_min_cents <= amount <= s.mpay_hf_max_cents:
        raise Refused("4001")
    sub = await registry.get(conn, target)
    if sub is None or sub.status == "cancelled":
        raise Refused("4009")
    if sub.province in env.provinces(s.mpay_hf_blocked_provinces) and sub.province != account["province"]:
        raise Refused("4010")
    bucket = choose_bucket(await accounts.balances(conn, account), True, amount)
    if pay_password is not None:
        await credentials.check(conn, env.hasher, env.policy, account, "pay", pay_password, now)
    bill_id = "hf" + secrets.token_hex(12)
    transfer_id = f"mpay:hf:{bill_id}"
    await postings.must(conn, [postings.Move(transfer_id, bucket_account(account, bucket),
                                             await postings.account_id(conn, "BILL"), amount, "mpay_hf", target)])
    await conn.execute(
        "INSERT INTO mpay_bill_payments (id, account_id, target, amount, bucket, transfer_id, channel)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        bill_id, account["id"], target, amount, bucket, transfer_id, channel,
    )
    reply = REPLY.format(msisdn=target, amt=yuan(amount), bucket=BUCKET_NAMES[bucket])
    if channel != "sms":
        await outbox.notify(conn, env.keys, account, reply)
    await accounts.close_if_settled(conn, env.keys, account["id"])
    return Paid(bucket, amount, reply)


EXPORT_HEADER = ["id", "target", "yuan", "paid_at"]


async def export_unexported(conn: asyncpg.Connection) -> list[list[str]]:
    """The daily BOSS file: every phone-bill payment not yet exported, once (marked exported)."""
    rows = await conn.fetch("UPDATE mpay_bill_payments SET exported_at = now() WHERE exported_at IS NULL"
                            " RETURNING id, target, amount, created_at")
    return [[r["id"], r["target"], f"{r['amount'] // 100}.{r['amount'] % 100:02d}",
             r["created_at"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")]
            for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]))]

"""Remote payments to merchants (SPEC 6.6): create, reserve with a one-time code, confirm, expire.

A merchant creates a payment naming the payer by MSISDN or alias; creation never reveals
the payer (an unknown or detached one still gets a ``created`` payment that only expires).
The payer confirms with the pay password within 15 minutes. Above 100.00 yuan (strictly)
the payer first asks for a one-time code, which reserves the amount (a pending transfer
``C|K → MER``, ``reserved``); the confirmation posts it. Below, confirming moves the money
at once. Bucket choice (6.2): the card bucket alone when the merchant's category allows it
and it covers the whole amount, else cash alone, else ``4002``.
"""

from __future__ import annotations

import datetime as dt
import secrets

import asyncpg

from recharge.mpay import accounts, credentials, matrix, otp, outbox, postings
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.merchants import CARD_CATEGORIES
from recharge.mpay.text import yuan

BUCKET_NAMES = {"card": "充值卡账户", "cash": "现金账户"}
PAID_SMS = "您已向{merchant}支付{amt}元,扣款账户:{bucket}。"
OTP_SMS = "验证码{code},5分钟内有效,用于向{merchant}支付{amt}元,请勿告知他人。"
OTP_PURPOSE = "payment"
OPEN_STATES = ("created", "reserved")


def choose_bucket(figures: accounts.Figures, card_allowed: bool, amount: int) -> str:
    if card_allowed and figures.card_available >= amount:
        return "card"
    if figures.cash_available >= amount:
        return "cash"
    raise Refused("4002")


def bucket_account(account: asyncpg.Record, bucket: str) -> int:
    return int(account["card_account" if bucket == "card" else "cash_account"])


async def create(
    conn: asyncpg.Connection, env: Env, merchant: asyncpg.Record, order_no: str, payer: str, amount: int,
    subject: str, open_limit: int,
) -> asyncpg.Record:
    """A new ``created`` payment, or the first one for a repeated order number (same amount and
    payer; else ``1005``). ``1006`` past ``open_limit`` unconfirmed per merchant and payer."""
    existing = await conn.fetchrow(
        "SELECT * FROM mpay_payments WHERE merchant_id = $1 AND merchant_order_no = $2", merchant["id"], order_no
    )
    if existing is not None:
        if existing["amount"] != amount or existing["payer"].lower() != payer.lower():
            raise Refused("1005")
        return existing
    if not 1 <= amount <= 500_000:
        raise Refused("4001")
    pending = await conn.fetchval(
        "SELECT count(*) FROM mpay_payments WHERE merchant_id = $1 AND lower(payer) = lower($2)"
        " AND state IN ('created', 'reserved') AND expires_at > now()",
        merchant["id"], payer,
    )
    if pending >= open_limit:
        raise Refused("1006")
    account = await (accounts.live_by_msisdn(conn, payer) if payer.isdigit() else accounts.by_alias(conn, payer))
    account_id = account["id"] if account is not None and account["status"] != "closed" else None
    return await conn.fetchrow(
        "INSERT INTO mpay_payments (id, merchant_id, merchant_order_no, payer, account_id, amount, subject,"
        " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '15 minutes') RETURNING *",
        "p" + secrets.token_hex(12), merchant["id"], order_no, payer, account_id, amount, subject,
    )


def otp_required(payment: asyncpg.Record) -> bool:
    return int(payment["amount"]) > 10_000


async def _expire(conn: asyncpg.Connection, payment: asyncpg.Record, state: str = "expired") -> asyncpg.Record:
    if payment["state"] == "reserved":
        outcome = (await postings.settle(conn, [postings.Settle(f"{payment['transfer_id']}:void",
                                                               payment["transfer_id"], post=False)]))[0]
        if not outcome.ok and outcome.result.value != "pending_transfer_already_voided":
            outcome.check(payment["transfer_id"])
    row = await conn.fetchrow("UPDATE mpay_payments SET state = $2 WHERE id = $1 RETURNING *", payment["id"], state)
    assert row is not None
    return row


async def load(conn: asyncpg.Connection, payment_id: str, account: asyncpg.Record) -> asyncpg.Record:
    """The payer's payment (locked, expired first if due); ``4011`` when absent or another's."""
    row = await conn.fetchrow("SELECT *, expires_at <= now() AS due FROM mpay_payments WHERE id = $1 FOR UPDATE",
                              payment_id)
    if row is None or row["account_id"] != account["id"]:
        raise Refused("4011")
    if row["due"] and row["state"] in OPEN_STATES:
        return await _expire(conn, row)
    return row


async def reserve(conn: asyncpg.Connection, env: Env, payment_id: str, account: asyncpg.Record,
                  channel: str) -> dt.datetime:
    """``POST /payments/{id}/otp``: reserve once (bucket chosen then) and send a new code."""
    payment = await load(conn, payment_id, account)
    if not otp_required(payment) or payment["state"] not in OPEN_STATES:
        raise Refused("4011")
    matrix.require(account, "payment", channel)
    credentials.ensure_usable(account, "pay", await conn.fetchval("SELECT now()"))
    merchant = await conn.fetchrow("SELECT * FROM mpay_merchants WHERE id = $1", payment["merchant_id"])
    if payment["state"] == "created":
        bucket = choose_bucket(await accounts.balances(conn, account), merchant["category"] in CARD_CATEGORIES,
                               payment["amount"])
    text = OTP_SMS.replace("{merchant}", merchant["name"]).replace("{amt}", yuan(payment["amount"]))
    expires = await otp.issue(conn, env, account["msisdn"], OTP_PURPOSE, payment["id"], text=text, account=account)
    if payment["state"] == "created":
        transfer_id = f"mpay:pay:{payment['id']}"
        mer = await postings.account_id(conn, f"MER/{merchant['id']}")
        await postings.must(conn, [postings.Move(transfer_id, bucket_account(account, bucket), mer,
                                                 payment["amount"], "mpay_payment", payment["id"], pending=True,
                                                 timeout_at=payment["expires_at"])])
        await conn.execute("UPDATE mpay_payments SET state = 'reserved', bucket = $2, transfer_id = $3 WHERE id = $1",
                           payment["id"], bucket, transfer_id)
    return expires


async def confirm(
    conn: asyncpg.Connection, env: Env, payment_id: str, account: asyncpg.Record, pay_password: str,
    code: str | None, channel: str,
) -> asyncpg.Record:
    """Pay (the account row locked by the caller): checks in 6.12's order, password and OTP last."""
    payment = await load(conn, payment_id, account)
    if payment["state"] not in OPEN_STATES or (otp_required(payment) and payment["state"] != "reserved"):
        raise Refused("4011")
    matrix.require(account, "payment", channel)
    now = await conn.fetchval("SELECT now()")
    credentials.ensure_usable(account, "pay", now)
    merchant = await conn.fetchrow("SELECT * FROM mpay_merchants WHERE id = $1", payment["merchant_id"])
    bucket = payment["bucket"] or choose_bucket(
        await accounts.balances(conn, account), merchant["category"] in CARD_CATEGORIES, payment["amount"])
    await credentials.check(conn, env.hasher, env.policy, account, "pay", pay_password, now)
    if payment["state"] == "reserved":
        try:
            await otp.verify(conn, env, OTP_PURPOSE, payment["id"], code)
        except Refused:
            if await otp.failures_of(conn, OTP_PURPOSE, payment["id"]) >= env.settings.mpay_otp_max_failures:
                await _expire(conn, payment, "failed")
            raise
        await postings.must_settle(conn, [postings.Settle(f"{payment['transfer_id']}:post", payment["transfer_id"],
                                                          post=True)])
        transfer_id = payment["transfer_id"]
    else:
        transfer_id = f"mpay:pay:{payment['id']}"
        mer = await postings.account_id(conn, f"MER/{merchant['id']}")
        await postings.must(conn, [postings.Move(transfer_id, bucket_account(account, bucket), mer,
                                                 payment["amount"], "mpay_payment", payment["id"])])
    row = await conn.fetchrow(
        "UPDATE mpay_payments SET state = 'paid', bucket = $2, transfer_id = $3, paid_at = now() WHERE id = $1"
        " RETURNING *", payment["id"], bucket, transfer_id,
    )
    await outbox.notify(conn, env.keys, account, PAID_SMS.format(
        merchant=merchant["name"], amt=yuan(payment["amount"]), bucket=BUCKET_NAMES[bucket]))
    await accounts.close_if_settled(conn, env.keys, account["id"])
    return row


async def expire_due(conn: asyncpg.Connection, limit: int = 100) -> int:
    """Expire unpaid payments past their 15 minutes (reservations voided); returns how many."""
    rows = await conn.fetch(
        "SELECT * FROM mpay_payments WHERE state IN ('created', 'reserved') AND expires_at <= now()"
        " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED", limit,
    )
    for row in rows:
        await _expire(conn, row)
    return len(rows)

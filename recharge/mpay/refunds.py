"""Merchant refunds of paid remote payments (SPEC 6.6 Refund; off unless ``mpay_refund_enabled``).

Checks in order: refunds enabled (``4015``), the payment ``paid`` (``4011``), its account
not closed (``2007``), amount ≤ paid − refunded (``4016``), the merchant's available
balance (``4017``). ``MER → `` the bucket the payment debited, whatever the account's other
status; SMS ``{merchant}退款{amt}元已退回您的{bucket}。``. ``refund_no`` is unique per
merchant (the same again with the same amount and payment answers the first refund).
"""

from __future__ import annotations

import secrets

import asyncpg

from recharge.mpay import accounts, outbox, postings
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.payments import BUCKET_NAMES, bucket_account
from recharge.mpay.text import yuan

REFUND_SMS = "{merchant}退款{amt}元已退回您的{bucket}。"


async def refund(conn: asyncpg.Connection, env: Env, merchant: asyncpg.Record, order_no: str, refund_no: str,
                 amount: int) -> asyncpg.Record:
    """The refund (or the first one of this ``refund_no``); returns the payment row after it."""
    if not env.settings.mpay_refund_enabled:
        raise Refused("4015")
    payment = await conn.fetchrow("SELECT * FROM mpay_payments WHERE merchant_id = $1 AND merchant_order_no = $2"
                                  " FOR UPDATE", merchant["id"], order_no)
    first = await conn.fetchrow("SELECT * FROM mpay_refunds WHERE merchant_id = $1 AND refund_no = $2",
                                merchant["id"], refund_no)
    if first is not None:
        if payment is None or first["payment_id"] != payment["id"] or first["amount"] != amount:
            raise Refused("1005")
        return payment
    if payment is None or payment["state"] != "paid":
        raise Refused("4011")
    account = await accounts.by_id(conn, payment["account_id"], lock=True)
    assert account is not None
    if account["status"] == "closed":
        raise Refused("2007")
    if amount < 1 or amount > payment["amount"] - payment["refunded"]:
        raise Refused("4016")
    mer = await postings.account_id(conn, f"MER/{merchant['id']}")
    if (await postings.buckets(conn, mer))[mer].available < amount:
        raise Refused("4017")
    refund_id = "r" + secrets.token_hex(12)
    transfer_id = f"mpay:refund:{refund_id}"
    await postings.must(conn, [postings.Move(transfer_id, mer, bucket_account(account, payment["bucket"]), amount,
                                             "mpay_refund", payment["id"])])
    await conn.execute("INSERT INTO mpay_refunds (id, merchant_id, refund_no, payment_id, amount, transfer_id)"
                       " VALUES ($1, $2, $3, $4, $5, $6)", refund_id, merchant["id"], refund_no, payment["id"], amount,
                       transfer_id)
    row = await conn.fetchrow("UPDATE mpay_payments SET refunded = refunded + $2 WHERE id = $1 RETURNING *",
                              payment["id"], amount)
    await outbox.notify(conn, env.keys, account, REFUND_SMS.format(
        merchant=merchant["name"], amt=yuan(amount), bucket=BUCKET_NAMES[payment["bucket"]]))
    assert row is not None
    return row

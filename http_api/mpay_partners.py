"""The merchants' endpoints (RSA-signed, SPEC 6.4) and the bank gateways' notices (6.6).

``/merchant/payments`` creates and polls remote payments, ``/merchant/refunds`` refunds;
``/bank/notify/{gw}`` takes a gateway's form-urlencoded notice and answers plain ``OK``
(200, every verified notice) or ``FAIL`` (403: bad signature or unknown gateway, nothing
stored). The website's bank-recharge order (``POST /me/recharges/bank``) is here too.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from aiohttp import web

from http_api.context import PLATFORM_KEY
from http_api.mpay_customer import me, rfc3339
from http_api.mpay_env import env_of_platform
from http_api.mpay_gate import PREFIX, Call, Endpoint, endpoint
from recharge import db, metrics
from recharge.context import Busy
from recharge.mpay import bank, payments, refunds
from recharge.mpay.codes import Refused

log = logging.getLogger(__name__)


def _payment_view(row: Any) -> dict[str, Any]:
    return {"payment_id": row["id"], "merchant_order_no": row["merchant_order_no"], "amount": row["amount"],
            "state": row["state"], "bucket": row["bucket"],
            "paid_at": rfc3339(row["paid_at"]) if row["paid_at"] else None, "refunded": row["refunded"]}


async def create_payment(call: Call) -> dict[str, Any]:
    f = call.fields
    if (f["msisdn"] is None) == (f["alias"] is None) or not 1 <= len(f["subject"]) <= 128:
        raise Refused("1001")
    assert call.merchant is not None
    payer = f["msisdn"] or f["alias"]
    row = await payments.create(call.conn, call.env, call.merchant, f["merchant_order_no"], payer, f["amount"],
                                f["subject"], call.env.settings.mpay_pay_open_per_payer)
    url = str(call.request.url.origin()) + f"{PREFIX}/payments/{row['id']}"
    return {"payment_id": row["id"], "state": row["state"], "pay_url": url, "expires_at": rfc3339(row["expires_at"])}


async def show_payment(call: Call) -> dict[str, Any]:
    assert call.merchant is not None
    row = await call.conn.fetchrow(
        "SELECT *, expires_at <= now() AS due FROM mpay_payments WHERE merchant_id = $1 AND merchant_order_no = $2"
        " FOR UPDATE", call.merchant["id"], call.request.match_info["order_no"])
    if row is None:
        raise Refused("4011")
    if row["due"] and row["state"] in payments.OPEN_STATES:
        await payments.expire_due(call.conn)
        row = await call.conn.fetchrow("SELECT * FROM mpay_payments WHERE id = $1", row["id"])
    return _payment_view(row)


async def refund(call: Call) -> dict[str, Any]:
    f = call.fields
    assert call.merchant is not None
    row = await refunds.refund(call.conn, call.env, call.merchant, f["merchant_order_no"], f["refund_no"],
                               f["amount"])
    refund_id = await call.conn.fetchval("SELECT id FROM mpay_refunds WHERE merchant_id = $1 AND refund_no = $2",
                                         call.merchant["id"], f["refund_no"])
    return {"refund_id": refund_id, "refunded": row["refunded"]}


async def bank_order(call: Call) -> dict[str, Any]:
    f = call.fields
    order = await bank.create_order(call.conn, call.env, await me(call), f["bank"], f["amount"], f["into"])
    redirect = f"https://{order.gateway}.bank.invalid/pay?order_id={order.id}&amount={f['amount']}"
    return {"order_id": order.id, "redirect_url": redirect, "expires_at": rfc3339(order.expires_at)}


async def bank_notify(request: web.Request) -> web.Response:
    """A gateway's notice: ``OK`` once verified (stored once), ``FAIL`` (403) otherwise."""
    ctx = request.config_dict[PLATFORM_KEY]
    raw = await request.read()
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        form = {}
    env, gateway = env_of_platform(ctx), request.match_info["gw"]

    async def one(conn: asyncpg.Connection) -> bool:
        return await bank.notice(conn, env, gateway, form)

    try:  # a deadlock rolls the notice back whole: run again by the one retry policy
        ok = await db.retry_transaction(ctx.acquire, one, policy=db.RetryPolicy.from_settings(ctx.settings))
    except Busy:
        return web.Response(text="BUSY", status=503, content_type="text/plain", charset="utf-8")
    metrics.MPAY_REQUESTS.labels("bank", "0000" if ok else "1002").inc()
    return web.Response(text="OK" if ok else "FAIL", status=200 if ok else 403, content_type="text/plain",
                        charset="utf-8")


ROUTES: list[tuple[str, str, Endpoint]] = [
    ("POST", "/merchant/payments", Endpoint(create_payment, "merchant", {
        "merchant_order_no": "id", "msisdn?": "msisdn", "alias?": "str", "amount": "cents", "subject": "str"},
        channel="merchant")),
    ("GET", "/merchant/payments/{order_no}", Endpoint(show_payment, "merchant", channel="merchant")),
    ("POST", "/merchant/refunds", Endpoint(refund, "merchant", {
        "merchant_order_no": "id", "refund_no": "id", "amount": "cents"}, channel="merchant")),
    ("POST", "/me/recharges/bank", Endpoint(bank_order, "customer", {"bank": "str", "amount": "cents",
                                                                      "into": "str"})),
]


def setup(app: web.Application) -> None:
    for method, path, ep in ROUTES:
        app.router.add_route(method, path, endpoint(ep))
    app.router.add_post("/bank/notify/{gw}", bank_notify)

"""The website's SIM wallet loads (SPEC 6.13, 7.3): ``POST /me/wallet/transfers`` (网络侧转存, C18: a load from
cash that waits for the next STK or hall POS contact) and ``POST /me/wallet/loads/{load_id}/cancel`` (a waiting
load voided, the money back in cash). Routes of the ``/mpay/v1`` sub-application, behind mpay's gate (session,
``X-Request-Id`` replay, the envelope); the rules are ``recharge.wallet.loads``'."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from http_api.mpay_customer import me
from http_api.mpay_gate import Call, Endpoint, endpoint
from recharge.mpay.codes import Refused
from recharge.wallet import loads, views


async def transfer(call: Call) -> dict[str, Any]:
    account = await me(call)
    now = await call.conn.fetchval("SELECT now()")
    rid = call.request.headers.get("X-Request-Id")
    load = await loads.queue_waiting_load(
        call.conn, call.env, account["id"], call.fields["amount"], path="transfer",
        request_key=f"web:{account['id']}:{rid}" if rid else None, pay_password=call.fields["pay_password"],
        channel="web", now=now)
    # 6.12 types ``waiting`` as cents: the loads waiting to be driven, as GET /me/wallet shows them
    return {"load_id": load.load_id, "waiting": await views.waiting(call.conn, account["id"])}


async def cancel(call: Call) -> dict[str, Any]:
    account = await me(call)
    load = await loads.get(call.conn, call.request.match_info["load_id"], lock=True)
    if load is None or load.account_id != account["id"]:
        raise Refused("4011")
    if load.state == loads.LOADING:
        raise Refused("5006")
    if load.state != loads.WAITING:
        raise Refused("4011")
    await loads.void_load(call.conn, load, "cancelled")
    return {}


ROUTES: list[tuple[str, str, Endpoint]] = [
    ("POST", "/me/wallet/transfers", Endpoint(transfer, "customer", {"amount": "cents", "pay_password": "digits"})),
    ("POST", "/me/wallet/loads/{load_id}/cancel", Endpoint(cancel, "customer")),
]


def setup(app: web.Application) -> None:
    for method, path, ep in ROUTES:
        app.router.add_route(method, path, endpoint(ep))

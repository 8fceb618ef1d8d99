"""The website's wallet views under ``/mpay/v1`` (SPEC 6.13, 7.5): ``GET /me/wallet`` (state, card, shadow, limit,
waiting), ``GET /me/wallet/history?from&to`` and ``GET /me/wallet/log`` (the card's last-ten log as the platform
knows it, SPEC 7.1's SFI ``0x18``), through mpay's gate (customer token; queries are allowed in
every account status, 6.7). The rules are ``recharge.wallet.views``'s."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from http_api.mpay_customer import me, rfc3339
from http_api.mpay_gate import Call, Endpoint, endpoint
from recharge.mpay.codes import Refused
from recharge.mpay.text import today
from recharge.wallet import views


async def me_wallet(call: Call) -> dict[str, Any]:
    """The wallet as the platform knows it (SPEC 6.13): state, card, shadow (参考余额), limit, waiting"""
    account = await me(call)
    found = await views.summary(call.conn, account["id"])
    if found is None:
        raise Refused("5001")
    return found


def _day(call: Call, name: str, default: dt.date) -> dt.date:
    raw = call.request.query.get(name)
    if raw is None:
        return default
    try:
        if len(raw) == 10:
            return dt.date.fromisoformat(raw)
    except ValueError:
        pass
    raise Refused("4001")


async def me_wallet_history(call: Call) -> dict[str, Any]:
    """The wallet shadow's movements by day range, ``to`` at most yesterday (SPEC 7.5)"""
    account = await me(call)
    if await views.summary(call.conn, account["id"]) is None:
        raise Refused("5001")
    now = dt.datetime.now(dt.UTC)
    until = _day(call, "to", today(now) - dt.timedelta(days=1))
    since = _day(call, "from", until - dt.timedelta(days=29))
    views.check_range(since, until, now, call.env.settings.wallet_history_max_days)
    items = await views.history(call.conn, account["id"], since, until)
    return {"items": [{"id": i.id, "created_at": rfc3339(i.created_at), "type": i.type, "amount": i.amount,
                       "state": i.state} for i in items]}


async def me_wallet_log(call: Call) -> dict[str, Any]:
    """The wallet card's last-ten log as the platform knows it (SPEC 7.1 SFI ``0x18``; docs/PROTOCOL.md)"""
    account = await me(call)
    found = await views.summary(call.conn, account["id"])
    if found is None:
        raise Refused("5001")
    card_no = str(found["card_no"])
    items = await views.card_log(call.conn, account["id"], card_no)
    return {"card_no": card_no, "items": [{"serial": r.serial, "type": r.type, "amount": r.amount,
                                           "terminal_id": r.terminal_id, "date": r.date, "time": r.time}
                                          for r in items]}


ROUTES: list[tuple[str, str, Endpoint]] = [
    ("GET", "/me/wallet", Endpoint(me_wallet, "customer")),
    ("GET", "/me/wallet/history", Endpoint(me_wallet_history, "customer")),
    ("GET", "/me/wallet/log", Endpoint(me_wallet_log, "customer")),
]


def setup(app: web.Application) -> None:
    for method, path, ep in ROUTES:
        app.router.add_route(method, path, endpoint(ep))

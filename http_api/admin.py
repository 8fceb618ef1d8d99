"""Admin HTTP API (JSON) behind ``settings.admin_token``: KaKaTong reference data and cards.

``Authorization: Bearer <admin_token>`` (or ``X-Admin-Token``), compared in constant time;
with no token configured every admin endpoint answers 403. The operator's name goes in
``X-Admin-Actor`` (recorded in ``operator_actions``). The same functions as
``rechargectl kkt`` (``recharge.kkt.cards``) do the work; a refused request answers 400 with
``{"error": …}`` and changes nothing.

    PUT  /admin/kkt/merchants/{code}            {"name", "issuing", "consuming", "closed"}
    PUT  /admin/kkt/terminals/{code}            {"merchant", "kind", "msisdn", "enabled", "daily_recharge_limit_cents"}
    PUT  /admin/kkt/license-keys                {"key", "merchant", "valid_to", "networks", "enabled", "test_mode"}
    PUT  /admin/kkt/service-codes/{merchant}/{item_code}   {"name"}
    PUT  /admin/kkt/points-rules/{merchant}     {"cents_per_point"}
    PUT  /admin/kkt/acceptance/{issuer}/{merchant}   {"accepted"}: the merchant serves the issuer's cards
    POST /admin/kkt/card-batches                {"merchant", "count", "kind", "valid_from", "valid_to", ...}
    GET  /admin/kkt/cards/{card_no}
    POST /admin/kkt/cards/{card_no}/state       {"action": lose|found|freeze|unfreeze|cancel, "reason"}
    POST /admin/kkt/cards/{card_no}/reissue     {"reason", "new_card_no"}
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from http_api import edge
from http_api.context import platform_of
from recharge.kkt import cards

AdminHandler = Callable[[web.Request, dict[str, Any], str], Awaitable[Any]]
MAX_BATCH_CARDS_HTTP = 100_000  # one request; larger batches: the CLI


def _authorised(request: web.Request) -> bool:
    token = platform_of(request).settings.admin_token
    if not token:
        return False
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.headers.get("X-Admin-Token", "")
    return edge.secret_matches(given, token)


def _str(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise cards.AdminError(f"{name!r} must be a string")
    return value


def _opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise cards.AdminError(f"{name!r} must be an integer")
    return value


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise cards.AdminError(f"{name!r} must be true or false")
    return value


def _opt_date(body: dict[str, Any], name: str) -> dt.date | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(_str(body, name))
    except ValueError:
        raise cards.AdminError(f"{name!r} must be a date YYYY-MM-DD") from None


def hostile(value: Any, where: str) -> str | None:
    """What no handler should see, anywhere in a path parameter, header or JSON body: a text
    holding NUL, another control character or bytes that are not UTF-8, an integer beyond a
    BIGINT (``http_api.edge``). None when there is nothing."""
    if isinstance(value, str):
        return None if edge.storable(value) else f"{where!r} holds control characters or bytes that are not UTF-8"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if edge.in_bigint(value) else f"{where!r} is out of range"
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := hostile(k, where) or hostile(v, str(k)))), None)
    if isinstance(value, list):
        return next((p for v in value if (p := hostile(v, where))), None)
    return None


async def _json_body(request: web.Request) -> dict[str, Any] | str:
    """The JSON object a POST/PUT carries ({} without a body), or why it is refused."""
    if request.method not in ("POST", "PUT") or not request.can_read_body:
        return {}
    try:
        parsed = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "body must be a JSON object"
    if not isinstance(parsed, dict):
        return "body must be a JSON object"
    return hostile(parsed, "body") or parsed


def endpoint(handler: AdminHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def wrapped(request: web.Request) -> web.Response:
        if not _authorised(request):
            return web.json_response({"error": "forbidden"}, status=403)
        body = await _json_body(request)
        actor = request.headers.get("X-Admin-Actor", "admin-api")[:64]
        refusal = body if isinstance(body, str) else (
            hostile(dict(request.match_info), "path") or hostile(actor, "X-Admin-Actor"))
        if refusal is not None:
            return web.json_response({"error": refusal}, status=400)
        assert isinstance(body, dict)
        try:
            result = await handler(request, body, actor)
        except cards.AdminError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if isinstance(result, web.Response):
            return result
        return web.json_response(result, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))

    return wrapped


async def _merchant(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    code = request.match_info["code"]
    async with platform_of(request).acquire() as conn, conn.transaction():
        merchant_id = await cards.upsert_merchant(
            conn, code, _str(body, "name", ""), issuing=_bool(body, "issuing", True),
            consuming=_bool(body, "consuming", True), closed=_bool(body, "closed", False), actor=actor,
        )
    return {"code": code, "id": merchant_id}


async def _terminal(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    code = request.match_info["code"]
    msisdn = body.get("msisdn")
    if msisdn is not None and not isinstance(msisdn, str):
        raise cards.AdminError("'msisdn' must be a string")
    async with platform_of(request).acquire() as conn, conn.transaction():
        await cards.upsert_terminal(
            conn, code, _str(body, "merchant", ""), _str(body, "kind", ""), msisdn=msisdn,
            enabled=_bool(body, "enabled", True),
            daily_recharge_limit_cents=_opt_int(body, "daily_recharge_limit_cents"), actor=actor,
        )
    return {"code": code}


async def _license_key(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    networks = body.get("networks")
    if networks is not None and not (isinstance(networks, list) and all(isinstance(n, str) for n in networks)):
        raise cards.AdminError("'networks' must be a list of CIDR strings")
    valid_to = None
    if body.get("valid_to") is not None:
        try:
            valid_to = dt.datetime.fromisoformat(_str(body, "valid_to"))
        except ValueError:
            raise cards.AdminError("'valid_to' must be an ISO time") from None
        if valid_to.tzinfo is None:
            valid_to = valid_to.replace(tzinfo=dt.UTC)
    key = _str(body, "key", "")
    async with platform_of(request).acquire() as conn, conn.transaction():
        await cards.upsert_license_key(
            conn, key, _str(body, "merchant", ""), valid_to=valid_to, networks=networks,
            enabled=_bool(body, "enabled", True), test_mode=_bool(body, "test_mode", False), actor=actor,
        )
    return {"key_tail": key[-4:]}


async def _service_code(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    merchant, item = request.match_info["merchant"], request.match_info["item_code"]
    async with platform_of(request).acquire() as conn, conn.transaction():
        await cards.upsert_service_code(conn, merchant, item, _str(body, "name", ""), actor=actor)
    return {"merchant": merchant, "item_code": item}


async def _points_rule(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    merchant = request.match_info["merchant"]
    cents = _opt_int(body, "cents_per_point")
    if cents is None:
        raise cards.AdminError("'cents_per_point' is required")
    async with platform_of(request).acquire() as conn, conn.transaction():
        await cards.upsert_points_rule(conn, merchant, cents, actor=actor)
    return {"merchant": merchant, "cents_per_point": cents}


async def _acceptance(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    issuer, merchant = request.match_info["issuer"], request.match_info["merchant"]
    accepted = _bool(body, "accepted", True)
    async with platform_of(request).acquire() as conn, conn.transaction():
        await cards.set_acceptance(conn, issuer, merchant, accepted=accepted, actor=actor)
    return {"issuer": issuer, "merchant": merchant, "accepted": accepted}


async def _card_batch(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    count = _opt_int(body, "count")
    if count is None:
        raise cards.AdminError("'count' is required")
    async with platform_of(request).acquire(30.0) as conn:
        batch = await cards.create_card_batch(
            conn, _str(body, "merchant", ""), count, kind=_str(body, "kind", "both"),
            valid_from=_opt_date(body, "valid_from"), valid_to=_opt_date(body, "valid_to"),
            per_txn_limit_cents=_opt_int(body, "per_txn_limit_cents"),
            daily_count_limit=_opt_int(body, "daily_count_limit"), max_count=MAX_BATCH_CARDS_HTTP, actor=actor,
        )
    return {"first": batch.first, "last": batch.last, "count": batch.count}


async def _card_show(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    async with platform_of(request).acquire() as conn:
        info = await cards.card_summary(conn, request.match_info["card_no"])
    if info is None:
        return web.json_response({"error": "no such card"}, status=404)
    return info


async def _card_state(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    card_no = request.match_info["card_no"]
    async with platform_of(request).acquire() as conn:
        state = await cards.change_card_state(conn, card_no, _str(body, "action", ""), actor=actor,
                                              reason=_str(body, "reason", ""))
    return {"card_no": card_no, "state": state}


async def _card_reissue(request: web.Request, body: dict[str, Any], actor: str) -> Any:
    card_no = request.match_info["card_no"]
    new = body.get("new_card_no")
    if new is not None and not isinstance(new, str):
        raise cards.AdminError("'new_card_no' must be a string")
    async with platform_of(request).acquire() as conn:
        new_card_no = await cards.reissue_card(conn, card_no, actor=actor, reason=_str(body, "reason", ""),
                                               new_card_no=new)
    return {"card_no": card_no, "new_card_no": new_card_no}


def setup(app: web.Application) -> None:
    r = app.router
    r.add_put("/admin/kkt/merchants/{code}", endpoint(_merchant))
    r.add_put("/admin/kkt/terminals/{code}", endpoint(_terminal))
    r.add_put("/admin/kkt/license-keys", endpoint(_license_key))
    r.add_put("/admin/kkt/service-codes/{merchant}/{item_code}", endpoint(_service_code))
    r.add_put("/admin/kkt/points-rules/{merchant}", endpoint(_points_rule))
    r.add_put("/admin/kkt/acceptance/{issuer}/{merchant}", endpoint(_acceptance))
    r.add_post("/admin/kkt/card-batches", endpoint(_card_batch))
    r.add_get("/admin/kkt/cards/{card_no}", endpoint(_card_show))
    r.add_post("/admin/kkt/cards/{card_no}/state", endpoint(_card_state))
    r.add_post("/admin/kkt/cards/{card_no}/reissue", endpoint(_card_reissue))

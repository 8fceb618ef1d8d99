"""The mobile payment JSON API's gate (SPEC 6.12): envelope, authentication, request ids, fields.

Every ``/mpay/v1`` JSON endpoint is an ``Endpoint`` (who may call it, its fields by name)
around a handler ``async (Call) -> dict``. The gate runs 6.12's order: authentication
(``1002`` merchant signature, ``1003`` token), ``1007`` (initial login password),
``X-Request-Id`` (``1001``; a kept id replays its first reply byte for byte or answers
``1005``), syntax (``1001``), then the handler (rate, role, target, status, passwords —
the domain's order) in one transaction that also keeps the reply. A refusal commits only
attempt counters (``recharge.mpay.unit``); replies are ``{code, msg_zh, msg_en, data}``,
HTTP 200 for every business answer, 400 only for a body that is not JSON at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from http_api import edge
from http_api.context import PLATFORM_KEY
from http_api.mpay_env import env_of_platform
from recharge import metrics
from recharge.context import Busy, Platform
from recharge.db import RetryPolicy
from recharge.mpay import merchants, sessions
from recharge.mpay.codes import Refused, en, zh
from recharge.mpay.env import Env
from recharge.mpay.text import msisdn as read_msisdn

log = logging.getLogger(__name__)
PREFIX = "/mpay/v1"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FINAL = re.compile(r"0000|[2-7][0-9]{3}")
_DIGITS = re.compile(r"[0-9]{1,32}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class BadBody(Exception):
    """The body is not JSON at all: HTTP 400 with 1001."""


def envelope(code: str, data: Any = None, *, n: int | None = None, request_id: str | None = None,
             status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"code": code, "msg_zh": zh(code, n), "msg_en": en(code, n),
                       "data": data if code == "0000" else None}, ensure_ascii=False).encode("utf-8")
    extra = dict(headers or {})
    if request_id:
        extra["X-Request-Id"] = request_id
    if code == "1006":
        extra["Retry-After"] = "60"
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8", headers=extra)


# --- fields by name (6.12)
def _check(kind: str, value: Any) -> Any:
    """The value of one field of ``kind``, or ``Refused("1001")``."""
    if kind == "cents":
        if type(value) is not int or value < 0 or not edge.in_bigint(value):
            raise Refused("1001")
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise Refused("1001")
        return value
    if kind == "answers":
        if not isinstance(value, list) or not all(isinstance(a, dict) and set(a) == {"id", "answer"}
                                                   and type(a["id"]) is int and isinstance(a["answer"], str)
                                                   and edge.storable(a["answer"]) and len(a["answer"]) <= 64
                                                   for a in value):
            raise Refused("1001")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise Refused("1001")
        return value
    if not isinstance(value, str) or not edge.storable(value) or len(value) > 256:
        raise Refused("1001")
    if kind == "reason" and not value.strip():
        raise Refused("1001")
    if kind == "digits" and not _DIGITS.fullmatch(value):
        raise Refused("1001")
    if kind == "id" and not _ID.fullmatch(value):
        raise Refused("1001")
    if kind == "msisdn":
        number = read_msisdn(value)
        if number is None:
            raise Refused("1001")
        return number
    return value


def read_fields(body: Any, spec: dict[str, str]) -> dict[str, Any]:
    """``spec``: name → kind (``cents``, ``bool``, ``digits``, ``msisdn``, ``id``, ``str``,
    ``reason`` (a string not blank), ``answers``, ``object``); a name ending in ``?`` is
    optional. Unknown, missing or mistyped fields: ``1001``."""
    if not isinstance(body, dict):
        raise Refused("1001")
    names = {name.rstrip("?"): (kind, name.endswith("?")) for name, kind in spec.items()}
    if set(body) - set(names):
        raise Refused("1001")
    out: dict[str, Any] = {}
    for name, (kind, optional) in names.items():
        if name not in body or body[name] is None:
            if not optional:
                raise Refused("1001")
            out[name] = None
            continue
        out[name] = _check(kind, body[name])
    return out


# --- callers
@dataclass
class Call:
    request: web.Request
    ctx: Platform
    env: Env
    conn: asyncpg.Connection
    fields: dict[str, Any]
    session: sessions.Session | None = None
    operator: asyncpg.Record | None = None
    merchant: asyncpg.Record | None = None
    principal: str = "anyone"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client(self) -> str:
        return self.request.remote or "unknown"


Handler = Callable[[Call], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Endpoint:
    """``auth``: ``anyone``, ``customer``, ``operator`` (``roles``), ``merchant``, ``ivr``."""

    handler: Handler
    auth: str = "anyone"
    fields: dict[str, str] | None = None  # None: no body (GET, or a POST without fields)
    roles: tuple[str, ...] = ()
    request_id: bool = True
    initial_ok: bool = False  # allowed with an initial login password (1007 otherwise)
    channel: str = "web"


async def _body(request: web.Request) -> tuple[bytes, Any]:
    raw = await request.read()
    if request.method == "GET" or not raw:
        return raw, {}
    try:
        return raw, json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadBody() from None


async def _authenticate(call: Call, ep: Endpoint, raw: bytes) -> None:
    request = call.request
    if ep.auth in ("customer", "operator"):
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        session = await sessions.authenticate(call.conn, call.env, token)
        if session is None or (ep.auth == "customer") != (session.account_id is not None):
            raise Refused("1003")
        call.session = session
        if ep.auth == "operator":
            call.operator = await sessions.operator(call.conn, session.operator_id or "")
            if call.operator is None:
                raise Refused("1003")
            call.principal = f"op:{call.operator['id']}"
        else:
            call.principal = f"acct:{session.account_id}"
    elif ep.auth == "merchant":
        await _merchant(call, raw)
    elif ep.auth == "ivr":
        secret = call.env.settings.mpay_ivr_secret
        if not edge.secret_matches(request.headers.get("X-Gateway-Secret"), secret):
            raise Refused("1002")
        call.principal = "ivr"


async def _merchant(call: Call, raw: bytes) -> None:
    h = call.request.headers
    merchant_id, stamp, rid, sign = (h.get(k, "") for k in ("X-Merchant-Id", "X-Timestamp", "X-Request-Id", "Sign"))
    merchant = await merchants.get(call.conn, merchant_id) if merchants.ID_RE.fullmatch(merchant_id) else None
    signature = merchants.decode_sign(sign) if sign else None
    if merchant is None or not merchant["enabled"] or signature is None or not stamp.isdigit() or len(stamp) > 12:
        raise Refused("1002")
    if abs(time.time() - int(stamp)) > call.env.settings.mpay_merchant_clock_skew_s:
        raise Refused("1002")
    path = call.request.raw_path[len(PREFIX):] if call.request.raw_path.startswith(PREFIX) else call.request.raw_path
    message = merchants.signed_message(stamp, call.request.method, path, rid,
                                       raw if call.request.method != "GET" else b"")
    if not merchants.verify(merchant["public_key_pem"], message, signature):
        raise Refused("1002")
    call.merchant = merchant
    call.principal = f"mer:{merchant_id}"
    call.extra["sign_sha"] = hashlib.sha256(signature).digest()


async def _replayed(call: Call, rid: str, raw: bytes) -> web.Response | None:
    """Claim (principal, request id) or answer from its first reply (``1005`` if it differs). The body is kept
    as its keyed MAC: a plain SHA-256 of a body holding a 6-digit pay password gave the password back to
    anyone trying the million values (a row kept before that still matches by its SHA-256 until it expires)."""
    request = call.request
    sha = call.env.keys.kept_mac(raw)
    await call.conn.execute("SET LOCAL lock_timeout = '10s'")
    claimed = await call.conn.fetchval(
        "INSERT INTO mpay_request_replies (principal, request_id, method, path, body_sha) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (principal, request_id) DO NOTHING RETURNING 1",
        call.principal, rid, request.method, request.raw_path, sha,
    )
    if claimed:
        call.extra["claimed"] = rid
        return None
    row = await call.conn.fetchrow(
        "SELECT method, path, body_sha, status, reply FROM mpay_request_replies WHERE principal = $1"
        " AND request_id = $2", call.principal, rid)
    if row is None or row["reply"] is None:
        raise Refused("9001")
    if (row["method"], row["path"]) != (request.method, request.raw_path) or bytes(row["body_sha"]) not in (
            sha, hashlib.sha256(raw).digest()):
        raise Refused("1005")
    return web.Response(body=bytes(row["reply"]), status=row["status"], content_type="application/json",
                        charset="utf-8", headers={"X-Request-Id": rid})


async def _keep(call: Call, rid: str | None, response: web.Response, code: str) -> None:
    if call.extra.get("sign_sha") and FINAL.fullmatch(code):
        await call.conn.execute("INSERT INTO mpay_merchant_signs (merchant_id, sign_sha) VALUES ($1, $2)"
                                " ON CONFLICT DO NOTHING", call.merchant["id"] if call.merchant else "",
                                call.extra["sign_sha"])
    if rid is None or call.extra.get("claimed") != rid:
        return  # only the request that claimed the id keeps or frees it (a 1005 or 1007 leaves it alone)
    if FINAL.fullmatch(code):
        await call.conn.execute(
            "UPDATE mpay_request_replies SET status = $3, reply = $4 WHERE principal = $1 AND request_id = $2",
            call.principal, rid, response.status, response.body,
        )
    else:  # 1001-1004, 1006, 9001, 9002: the id may be retried
        await call.conn.execute("DELETE FROM mpay_request_replies WHERE principal = $1 AND request_id = $2",
                                call.principal, rid)


async def _run(call: Call, ep: Endpoint, raw: bytes, body: Any) -> tuple[web.Response, str]:
    request = call.request
    rid = request.headers.get("X-Request-Id")
    await _authenticate(call, ep, raw)
    if call.session is not None and call.session.account_id is not None and not ep.initial_ok:
        initial = await call.conn.fetchval("SELECT login_initial FROM mpay_accounts WHERE id = $1",
                                           call.session.account_id)
        if initial:
            raise Refused("1007")
    needs_id = ep.request_id and request.method == "POST"
    if needs_id and (rid is None or not REQUEST_ID_RE.fullmatch(rid)):
        raise Refused("1001")
    if ep.auth == "merchant" and await call.conn.fetchval(
            "SELECT 1 FROM mpay_merchant_signs WHERE merchant_id = $1 AND sign_sha = $2",
            call.merchant["id"] if call.merchant else "", call.extra["sign_sha"]):
        if not needs_id:
            raise Refused("1002")
    if needs_id and rid is not None:
        replay = await _replayed(call, rid, raw)
        if replay is not None:
            return replay, "replay"
    call.fields = read_fields(body, ep.fields) if ep.fields is not None else {}
    if ep.fields is None and request.method != "GET" and body not in ({}, None):
        raise Refused("1001")
    if ep.roles and (call.operator is None or call.operator["role"] not in ep.roles):
        raise Refused("1004")
    data = await ep.handler(call)
    return envelope("0000", data, request_id=rid), "0000"


# Every handler ``endpoint`` made, with its declaration: the OpenAPI document reads the routing
# table through it (``http_api.mpay_openapi``), so no route can be left out of the document.
ENDPOINTS: weakref.WeakKeyDictionary[Callable[[web.Request], Awaitable[web.StreamResponse]], Endpoint] = (
    weakref.WeakKeyDictionary())


def endpoint(ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.config_dict[PLATFORM_KEY]
        env = env_of_platform(ctx)
        rid = request.headers.get("X-Request-Id")
        rid = rid if rid and REQUEST_ID_RE.fullmatch(rid) else None
        try:
            raw, body = await _body(request)
        except BadBody:
            return _count(ep, envelope("1001", status=400, request_id=rid), "1001")
        try:
            async with ctx.acquire() as conn:

                async def attempt() -> tuple[web.Response, str]:
                    call = Call(request, ctx, env, conn, {})
                    async with conn.transaction():  # a refusal commits too: its counters stay counted
                        try:
                            response, code = await _run(call, ep, raw, body)
                        except Refused as exc:
                            response, code = envelope(exc.code, n=exc.n, request_id=rid), exc.code
                        await _keep(call, rid if ep.request_id else None, response, code)
                    return response, code

                # A deadlock or serialization failure rolled the attempt back whole: run it again by the
                # code base's one retry policy.
                response, code = await RetryPolicy.from_settings(ctx.settings).run(attempt)
                return _count(ep, response, code)
        except Busy:
            return _count(ep, envelope("9001", status=503, request_id=rid, headers={"Retry-After": "1"}), "9001")
        except asyncpg.LockNotAvailableError:
            return _count(ep, envelope("9001", status=503, request_id=rid), "9001")
        except Exception:
            log.exception("mpay request failed: %s %s", request.method, request.match_info.route.resource)
            return _count(ep, envelope("9002", status=500, request_id=rid), "9002")

    ENDPOINTS[handle] = ep
    return handle


def _count(ep: Endpoint, response: web.Response, code: str) -> web.Response:
    metrics.MPAY_REQUESTS.labels(ep.channel, code).inc()
    return response

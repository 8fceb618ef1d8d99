"""The order JSON API of seed 004 3.2 (SPEC 2): ``POST /APPLLogin``, ``/AcctQueryLNT`` and
``/CreateAutoLoadOrder``, each in the 3DES envelope and signed with the platform's RSA key.

Every request goes through the same gate, cheapest checks first: JSON object → clear
fields and their types → timestamp window → platform → key for ``crt_version`` → ``Sign``
→ mac and decryption of ``data`` → the encrypted fields → replay (the same signature twice)
→ the endpoint's own work, in one database transaction with the replay record. Any refusal
answers HTTP 200 with ``status: 0`` and an ``errmsg`` and rolls everything back. Replies
are enveloped like the seed's reply example: millisecond timestamp, lower-case ``data``.
The decisions the seed left open are in docs/PROTOCOL.md "Order API".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

import core_ext
from http_api import edge
from http_api.context import platform_of
from http_api.order_envelope import EnvelopeError, envelope_encrypt, envelope_mac, open_envelope
from recharge import db, metrics
from recharge.config import Settings
from recharge.context import Busy
from recharge.orders import lifecycle as orders
from recharge.orders import model, queries
from recharge.orders import platforms as order_platforms
from recharge.orders.model import OrderError, OrderErrorCode
from recharge.orders.platforms import OrderPlatform

log = logging.getLogger(__name__)

VERSION = "v2"
LOGIN_TYPES = frozenset({1, 2, 3, 4, 5})  # every documented operation starts by reading the card
LOGIN_KEY = "00000000"  # no session key: requests are authenticated by Sign (docs/PROTOCOL.md)
CHARGETYPE_MERCHANT_LOAD = 0
TRANSTYPE_RECHARGE = 1
PAYWAY_MERCHANT_LOAD = "00"
QUERY_CONDITIONS = frozenset({"username", "cardnum", "time", "orderstep", "orderid", "payway"})
MAX_TEXT = 256  # any clear or encrypted string field
MAX_SERIAL_NO = 64  # biz_serial_no
MAX_STEP = 255  # step: the reader instruction reached, a one-byte sequence number (0 = all done)

# The card-reading script APPLLogin hands out (the same as DD12, SPEC 1.4): SELECT DDF1,
# SELECT ADF1, READ BINARY the issuer file (SFI 0x15), GET BALANCE.
READ_SEQ = 3
READ_SCRIPT = (
    core_ext.Instruction(1, bytes.fromhex("00A4000002DDF1"), b"\x90\x00", 2, 0),
    core_ext.Instruction(2, bytes.fromhex("00A4000002ADF1"), b"\x90\x00", 3, 0),
    core_ext.Instruction(READ_SEQ, bytes.fromhex("00B095001E"), b"\x90\x00", 4, 0),
    core_ext.Instruction(4, bytes.fromhex("805C000204"), b"\x90\x00", 0, 0),
)
TOREADER = [core_ext.script_encode([ins]).hex() for ins in READ_SCRIPT]


def now_s() -> float:
    """The clock the timestamp window is checked against (tests replace it)."""
    return time.time()


class Refused(Exception):
    """A request answered ``status: 0``; ``outcome`` is the low-cardinality metric label."""

    def __init__(self, errmsg: str, outcome: str = "refused") -> None:
        super().__init__(errmsg)
        self.errmsg = errmsg
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Request:
    """A request that passed the gate: authenticated, decrypted, not a replay."""

    timestamp: int
    clear: dict[str, Any]
    fields: dict[str, Any]
    platform: OrderPlatform
    settings: Settings


@dataclass(frozen=True, slots=True)
class Reply:
    secret: dict[str, Any]  # encrypted into data, in this order
    clear: dict[str, Any]  # beside status and errmsg, before data


Work = Callable[[asyncpg.Connection, Request], Awaitable[Reply]]


# --- envelope in and out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Refused(f"field {key} appears twice", "bad_request")
        result[key] = value
    return result


def parse_json_object(text: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise Refused(f"{what} is not JSON", "bad_request") from None
    if not isinstance(value, dict):
        raise Refused(f"{what} is not a JSON object", "bad_request")
    return value


def _want(obj: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """The field's value, checked for type (bool is not an int); None when optional and absent."""
    if name not in obj or obj[name] is None:
        if required:
            raise Refused(f"missing field: {name}", "bad_request")
        return None
    value = obj[name]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refused(f"field {name} must be an integer", "bad_request")
        if not edge.in_bigint(value):
            raise Refused(f"field {name} is out of range", "bad_request")
    if kind is str:
        if not isinstance(value, str):
            raise Refused(f"field {name} must be a string", "bad_request")
        if len(value) > MAX_TEXT and name not in ("data", "Sign"):
            raise Refused(f"field {name} is too long", "bad_request")
        if not edge.storable(value):
            raise Refused(f"field {name} holds control characters or bytes that are not UTF-8", "bad_request")
    if kind is list and not isinstance(value, list):
        raise Refused(f"field {name} must be an array", "bad_request")
    return value


def reply_body(status: int, errmsg: str, reply: Reply | None) -> dict[str, Any]:
    timestamp = str(int(now_s() * 1000))
    body: dict[str, Any] = {"timestamp": int(timestamp), "status": status, "errmsg": errmsg}
    if reply is None:
        body["mac"] = envelope_mac(body)
        return body
    body.update(reply.clear)
    plaintext = json.dumps(reply.secret, separators=(",", ":"), ensure_ascii=False)
    clear = {k: v for k, v in body.items() if k != "timestamp"}
    data, mac = envelope_encrypt(timestamp, plaintext, clear=clear, lowercase=True)
    body["data"] = data
    body["mac"] = mac
    return body


def _check_window(timestamp: int, settings: Settings) -> None:
    # The seed's request example counts seconds, its reply example milliseconds: take both.
    seconds = timestamp / 1000 if timestamp >= 10**11 else float(timestamp)
    if abs(now_s() - seconds) > settings.order_api_timestamp_window_s:
        raise Refused("timestamp outside the allowed window", "stale")


async def _gate(conn: asyncpg.Connection, body: bytes, settings: Settings, endpoint: str) -> Request:
    message = parse_json_object(body, "request")
    timestamp = _want(message, "timestamp", int)
    version = _want(message, "version", str)
    platform_raw = _want(message, "platformRaw", int)
    crt_version = _want(message, "crt_version", int)
    data = _want(message, "data", str)
    sign = _want(message, "Sign", str)
    _want(message, "mac", str)
    if endpoint == "CreateAutoLoadOrder":
        _want(message, "biz_serial_no", str)
    if timestamp <= 0:
        raise Refused("timestamp must be positive", "bad_request")
    if version != VERSION:
        raise Refused(f"unsupported version (expected {VERSION})", "bad_request")
    _check_window(timestamp, settings)
    platform = await order_platforms.get_platform(conn, str(platform_raw))
    if platform is None or not platform.enabled:
        raise Refused("unknown platform", "unknown_platform")
    pem = await order_platforms.get_public_key_pem(conn, platform.id, str(crt_version))
    if pem is None:
        raise Refused("unknown crt_version for this platform", "unknown_platform")
    signed = order_platforms.sign_message(timestamp, version, platform_raw, crt_version, data)
    if not order_platforms.verify_sign(pem, signed, sign):
        raise Refused("Sign does not verify", "bad_sign")
    clear = {k: v for k, v in message.items() if k not in ("timestamp", "data", "mac")}
    try:
        plaintext = open_envelope(message)
    except EnvelopeError as exc:
        raise Refused(f"bad envelope: {exc}", "bad_envelope") from None
    fields = parse_json_object(plaintext, "data")
    if _want(fields, "platform", int) != platform_raw:
        raise Refused("platform in data differs from platformRaw", "bad_request")
    return Request(timestamp, clear, fields, platform, settings)


async def _claim_nonce(conn: asyncpg.Connection, req: Request) -> None:
    """Record the signature (its bytes: every base64 spelling of it is the same request)."""
    signature = order_platforms.signature_bytes(req.clear["Sign"])
    assert signature is not None  # the gate verified it
    digest = hashlib.sha256(signature).hexdigest()
    claimed = await conn.fetchval(
        "INSERT INTO order_api_nonces (platform_id, sign_digest) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        req.platform.id,
        digest,
    )
    if not claimed:
        raise Refused("replayed request", "replay")


async def _purge(conn: asyncpg.Connection, settings: Settings) -> None:
    """Forget signatures older than twice the window and expired sessions (bounded work)."""
    horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2 * settings.order_api_timestamp_window_s)
    await conn.execute(
        "DELETE FROM order_api_nonces WHERE ctid IN"
        " (SELECT ctid FROM order_api_nonces WHERE seen_at < $1 LIMIT 100)",
        horizon,
    )
    await conn.execute(
        "DELETE FROM order_api_sessions WHERE ctid IN"
        " (SELECT ctid FROM order_api_sessions WHERE expires_at < now() - interval '1 day' LIMIT 100)"
    )


async def _serve(request: web.Request, endpoint: str, work: Work) -> web.Response:
    ctx = platform_of(request)
    outcome = "ok"
    try:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refused("request too large", "bad_request") from None
        async with ctx.acquire() as conn:

            async def gated(tx: asyncpg.Connection) -> Any:
                req = await _gate(tx, body, ctx.settings, endpoint)
                await _claim_nonce(tx, req)
                return await work(tx, req)

            # A deadlock or serialization failure rolled the whole request back (its nonce too): run
            # again by the code base's one retry policy.
            reply = await db.retry_transaction(conn, gated, policy=db.RetryPolicy.from_settings(ctx.settings))
            await _purge(conn, ctx.settings)
        answer = reply_body(1, "", reply)
    except Refused as exc:
        outcome = exc.outcome
        answer = reply_body(0, exc.errmsg, None)
    except Busy:
        # Saturated (pool exhausted): refused at once in the API's own signed reply format,
        # with 503 so that retrying clients and load balancers see it too. Nothing was done.
        outcome = "busy"
        metrics.BUSY_ANSWERS.labels("http").inc()
        answer = reply_body(0, "system busy, retry later", None)
        metrics.ORDER_API_REQUESTS.labels(endpoint, outcome).inc()
        return web.json_response(answer, status=503, dumps=lambda v: json.dumps(v, ensure_ascii=False))
    except asyncpg.PostgresError as exc:
        outcome = "error"
        log.error("order API %s failed: %s", endpoint, type(exc).__name__)
        answer = reply_body(0, "internal error", None)
    metrics.ORDER_API_REQUESTS.labels(endpoint, outcome).inc()
    return web.json_response(answer, dumps=lambda v: json.dumps(v, ensure_ascii=False))


# --- field helpers


def _userid(fields: dict[str, Any]) -> str:
    """userinfo is a JSON text in the seed ({"userid": …} or {"openid": …}); an object is fine too."""
    info = _want(fields, "userinfo", object)
    if isinstance(info, str):
        info = parse_json_object(info, "userinfo")
    if not isinstance(info, dict):
        raise Refused("field userinfo must be a JSON object or its text", "bad_request")
    for name in ("userid", "openid"):
        value = info.get(name)
        if isinstance(value, str) and 0 < len(value) <= MAX_TEXT and edge.storable(value):
            return value
    raise Refused("userinfo needs a userid or openid string", "bad_request")


def _reader_replies(fields: dict[str, Any], settings: Settings) -> dict[int, core_ext.Reply]:
    entries = _want(fields, "reqinfo", list)
    if len(entries) > settings.order_api_max_reqinfo_entries:
        raise Refused("reqinfo has too many entries", "bad_request")
    replies: dict[int, core_ext.Reply] = {}
    for i, entry in enumerate(entries):
        try:
            if not isinstance(entry, str) or not entry.isascii() or len(entry) > 2 * 257:
                raise ValueError
            decoded = core_ext.reply_decode(bytes.fromhex(entry))
            if len(decoded) != 1:
                raise ValueError
        except ValueError:
            raise Refused(f"reqinfo[{i}] is not one reader reply (seq, len, data) in hex", "bad_request") from None
        replies[decoded[0].seq] = decoded[0]
    return replies


def card_from_replies(replies: dict[int, core_ext.Reply]) -> str | None:
    """The logical card number the READ BINARY of the toreader script returned, if any.

    The whole issuer file (30 bytes) or just the card number (8 bytes, the seed's
    ``00B0950808``) are both accepted.
    """
    reply = replies.get(READ_SEQ)
    if reply is None:
        return None
    if reply.sw != b"\x90\x00":
        raise Refused("the card refused READ BINARY", "refused")
    body = reply.body
    if len(body) == 30:
        if body[4] != 0x01:
            raise Refused("card type not supported (CPU purse only)", "refused")
        number = body[8:16].hex()
    elif len(body) == 8:
        number = body.hex()
    else:
        raise Refused("READ BINARY reply has an unexpected length", "bad_request")
    if not number.isdigit():
        raise Refused("card number on the card is not BCD", "bad_request")
    return number


async def _check_serial(conn: asyncpg.Connection, req: Request, *, required: bool) -> None:
    serial = _want(req.fields, "serial", str, required=required)
    if not serial:
        if required:
            raise Refused("serial is required (from APPLLogin)", "bad_request")
        return
    live = await conn.fetchval(
        "SELECT 1 FROM order_api_sessions WHERE serial = $1 AND platform_id = $2 AND expires_at > now()",
        serial,
        req.platform.id,
    )
    if not live:
        raise Refused("unknown or expired serial; call APPLLogin again", "refused")


def _step(fields: dict[str, Any]) -> int:
    """``step``: how far the reader ran the toreader script (0 = all of it), a sequence byte."""
    step: int = _want(fields, "step", int)
    if not 0 <= step <= MAX_STEP:
        raise Refused(f"step must be 0 to {MAX_STEP}", "bad_request")
    return step


def _local_text(moment: dt.datetime | None) -> str:
    return moment.astimezone(model.LOCAL_TZ).strftime("%Y%m%d%H%M%S") if moment else ""


def _yyyymmdd(fields: dict[str, Any], name: str) -> dt.date | None:
    text = _want(fields, name, str, required=False)
    if not text:
        return None
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise Refused(f"field {name} must be a date YYYYMMDD", "bad_request") from None


# --- endpoints


async def appl_login(conn: asyncpg.Connection, req: Request) -> Reply:
    """Open a session: a handshake serial, the platform's PKI and the card-reading script."""
    f = req.fields
    userid = _userid(f)
    login_type = _want(f, "type", int)
    if login_type not in LOGIN_TYPES:
        raise Refused("operation type not supported", "refused")
    detail: dict[str, Any] = {}
    for name in ("biz_serial_no", "package_name", "package_version_name", "package_version_code",
                 "mobile_number", "mobile_imei", "mobile_vendor", "mobile_model", "lat_lng", "address", "ip"):
        value = _want(f, name, str, required=False)
        if value is not None:
            detail[name] = value
    money = _want(f, "money", int, required=False)
    if money is not None:
        if not 0 <= money <= req.settings.order_max_amount_cents:
            raise Refused(f"money must be 0 to {req.settings.order_max_amount_cents} cents", "bad_request")
        detail["money"] = money
    seq = int(await conn.fetchval("SELECT nextval('order_api_serial_seq')"))
    serial = f"{seq % 10**16:016d}"
    await conn.execute(
        "INSERT INTO order_api_sessions (serial, platform_id, userid, login_type, detail, expires_at)"
        " VALUES ($1, $2, $3, $4, $5::text::jsonb, now() + make_interval(secs => $6))",
        serial,
        req.platform.id,
        userid,
        login_type,
        json.dumps(detail, ensure_ascii=False),
        float(req.settings.order_api_session_ttl_s),
    )
    return Reply(
        {"pki": req.platform.pki_no or "", "serial": serial, "key": LOGIN_KEY, "toreader": TOREADER}, {}
    )


async def acct_query(conn: asyncpg.Connection, req: Request) -> Reply:
    """List the platform's orders matching the qrycondition fields."""
    f = req.fields
    userid = _userid(f)
    _want(f, "pki", str, required=False)
    await _check_serial(conn, req, required=True)
    _step(f)
    replies = _reader_replies(f, req.settings)
    condition = _want(f, "qrycondition", str)
    names = [n.strip() for n in condition.split(",") if n.strip()]
    unknown = set(names) - QUERY_CONDITIONS
    if unknown:
        raise Refused(f"unknown qrycondition: {','.join(sorted(unknown))}", "bad_request")
    filters: dict[str, Any] = {"platform_id": req.platform.id}
    if "username" in names:
        filters["userid"] = userid
    if "cardnum" in names:
        card = card_from_replies(replies)
        if card is None:
            raise Refused("cardnum needs the card's READ BINARY reply in reqinfo", "bad_request")
        filters["card_no"] = card
    if "time" in names:
        filters["start_date"] = _yyyymmdd(f, "starttime")
        filters["end_date"] = _yyyymmdd(f, "endtime")
        if filters["start_date"] is None and filters["end_date"] is None:
            raise Refused("time needs starttime or endtime", "bad_request")
    if "orderstep" in names:
        step_filter = _want(f, "orderstep", str)
        if step_filter != "00":
            if step_filter not in model.STATES:
                raise Refused("orderstep must be 00 to 06", "bad_request")
            filters["states"] = [step_filter]
    if "orderid" in names:
        order_id = _want(f, "orderid", str)
        if not model.is_order_no(order_id):
            raise Refused("orderid must be 20 digits", "bad_request")
        filters["order_no"] = order_id
    if "payway" in names:
        filters["payway"] = _want(f, "payway", str)
    found = await queries.query_orders(conn, limit=req.settings.order_api_max_query_rows, **filters)
    total = await queries.count_orders(conn, **filters)
    records = [
        {
            "orderseq": o.order_no,
            "logiccardnum": o.card_no or "",
            "physiccardnum": "",
            "ordertime": _local_text(o.created_at),
            "paytime": _local_text(o.paid_at),
            "amount": o.amount_cents,
            "payway": str(o.extra.get("payway", PAYWAY_MERCHANT_LOAD)),
            "step": o.state,
            "operate": "01",
        }
        for o in found
    ]
    card = filters.get("card_no")
    state = await conn.fetchval("SELECT state FROM cards WHERE card_no = $1", card) if card else None
    acctstatus = "00" if state in (None, "active") else "01"
    return Reply(
        {"pki": req.platform.pki_no or "", "acctresult": records},
        {"acctstatus": acctstatus, "chargerecordnum": total},
    )


async def create_auto_load_order(conn: asyncpg.Connection, req: Request) -> Reply:
    """Create and pay (reserve) an order for the card the reader replies name."""
    f = req.fields
    userid = _userid(f)
    serial_no = req.clear["biz_serial_no"]
    if not (0 < len(serial_no) <= MAX_SERIAL_NO and serial_no.isascii() and serial_no.isprintable()):
        raise Refused("biz_serial_no must be 1 to 64 printable ASCII characters", "bad_request")
    _want(f, "pki", str, required=False)
    amount = _want(f, "chargeamt", int)
    chargetype = _want(f, "chargetype", int)
    transtype = _want(f, "transtype", int)
    _step(f)
    if chargetype != CHARGETYPE_MERCHANT_LOAD:
        raise Refused("chargetype not supported (0x00 merchant load only)", "refused")
    if transtype != TRANSTYPE_RECHARGE:
        raise Refused("transtype not supported (01 recharge only)", "refused")
    await _check_serial(conn, req, required=False)
    card = card_from_replies(_reader_replies(f, req.settings))
    if card is None:
        raise Refused("reqinfo must carry the card's READ BINARY reply (toreader step 3)", "bad_request")
    digest = hashlib.sha256(
        json.dumps([card, amount, chargetype, transtype, userid], ensure_ascii=False).encode()
    ).hexdigest()
    try:
        await model.check_orderable_card(conn, card)  # the reader replies are the client's word
        created = await orders.create_order(
            conn,
            merchant_id=req.platform.merchant_id,
            amount_cents=amount,
            card_no=card,
            platform_id=req.platform.id,
            biz_serial_no=serial_no,
            request_digest=digest,
            pay=True,
            expiry_s=req.settings.order_expiry_s,
            max_amount_cents=req.settings.order_max_amount_cents,
            extra={"userid": userid, "payway": PAYWAY_MERCHANT_LOAD},
        )
    except OrderError as exc:
        raise Refused(_ORDER_ERRMSG.get(exc.code, str(exc)), "refused") from None
    return Reply({"pki": req.platform.pki_no or "", "order": created.order.order_no}, {})


_ORDER_ERRMSG = {
    OrderErrorCode.FUND_EMPTY: "merchant recharge fund is empty",
    OrderErrorCode.SERIAL_REUSED: "biz_serial_no already used for another order",
}


def _route(endpoint: str, work: Work) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await _serve(request, endpoint, work)

    handler.__name__ = endpoint
    return handler


def setup(app: web.Application) -> None:
    """The three endpoints; their description is part of ``GET /openapi.json`` (``http_api.openapi``)."""
    app.router.add_post("/APPLLogin", _route("APPLLogin", appl_login))
    app.router.add_post("/AcctQueryLNT", _route("AcctQueryLNT", acct_query))
    app.router.add_post("/CreateAutoLoadOrder", _route("CreateAutoLoadOrder", create_auto_load_order))

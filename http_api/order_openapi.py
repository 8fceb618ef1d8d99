"""The OpenAPI 3.1 description of the order JSON API, part of ``GET /openapi.json`` (``http_api.openapi``).

It documents the envelope (clear fields, ``data``, ``mac``, ``Sign``) and, for each
endpoint, the JSON object encrypted in ``data`` in both directions, so integrators see what
to encrypt without reading the seed.
"""

from __future__ import annotations

from typing import Any

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}  # a BIGINT
_STEP: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 255,
                         "description": "the reader instruction reached (0: the whole script ran)"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_ENVELOPE_DOC = (
    "Fields the seed lists as encrypted travel as one compact JSON object in `data`: "
    "3DES-ECB (two-key) under the 16 bytes of MD5(decimal timestamp), zero padding to 8 bytes, "
    "hex. `mac` = the last 8 hex digits (upper case) of MD5 over the compact JSON of the message "
    "without `mac`, with `timestamp` first, `data` last and the other clear fields in the order sent. "
    "`Sign` = base64 RSA PKCS#1 v1.5 SHA-256 signature over "
    "timestamp + version + platformRaw + crt_version + data, checked against the key registered "
    "for the platform and crt_version. Timestamps are seconds or milliseconds; a request outside "
    "the window (default ±300 s) or seen before (same Sign) is refused."
)

_REQUEST_CLEAR = {
    "timestamp": {**_INT, "description": "Unix time, seconds or milliseconds; also the envelope key"},
    "version": {"type": "string", "enum": ["v2"]},
    "platformRaw": {**_INT, "description": "the platform number in clear (equals `platform` in data)"},
    "crt_version": {**_INT, "description": "version of the platform's registered public key"},
    "data": {**_STR, "description": "hex of the encrypted fields (see the x-encrypted schema)"},
    "Sign": {**_STR, "description": "base64 RSA signature (see info.description)"},
    "mac": {**_STR, "description": "8 hex digits"},
}
_REQUEST_REQUIRED = ["timestamp", "version", "platformRaw", "crt_version", "data", "Sign", "mac"]

_REPLY = _obj(
    ["timestamp", "status", "errmsg", "mac"],
    timestamp={**_INT, "description": "milliseconds"},
    status={"type": "integer", "enum": [0, 1], "description": "1 success, 0 refused (see errmsg)"},
    errmsg=_STR,
    data={**_STR, "description": "lower-case hex of the encrypted reply fields; absent when refused"},
    mac=_STR,
)

_READER_REPLY = {**_STR, "description": "seq(1) len(1) response incl. SW(len), hex"}

_ENDPOINTS: dict[str, dict[str, Any]] = {
    "/APPLLogin": {
        "summary": "Open a session: handshake serial, PKI number and the card-reading script",
        "request": _obj(
            ["platform", "userinfo", "type"],
            platform=_INT,
            userinfo={**_STR, "description": 'JSON text {"userid": …} or {"openid": …}'},
            type={**_INT, "description": "operation type, 1-5 (5: third-party recharge order)"},
            biz_serial_no=_STR, money={**_INT, "minimum": 0, "description": "cents, at most order_max_amount_cents"}, package_name=_STR, package_version_name=_STR,
            package_version_code=_STR, mobile_number=_STR, mobile_imei=_STR, mobile_vendor=_STR,
            mobile_model=_STR, lat_lng=_STR, address=_STR, ip=_STR,
        ),
        "reply": _obj(
            ["pki", "serial", "key", "toreader"],
            pki=_STR,
            serial={**_STR, "description": "16 digits; AcctQueryLNT needs it"},
            key={**_STR, "description": "always 00000000 (no session key; Sign authenticates)"},
            toreader={"type": "array", "items": {**_STR, "description": "seq len APDU SW next-ok next-fail, hex"}},
        ),
        "reply_clear": {},
    },
    "/AcctQueryLNT": {
        "summary": "List the platform's orders filtered by qrycondition",
        "request": _obj(
            ["platform", "userinfo", "serial", "step", "reqinfo", "qrycondition"],
            platform=_INT, userinfo=_STR, pki=_STR, serial=_STR, step=_STEP,
            reqinfo={"type": "array", "items": _READER_REPLY},
            qrycondition={**_STR, "description": "comma list of username, cardnum, time, orderstep, orderid, payway"},
            starttime={**_STR, "description": "YYYYMMDD (local)"}, endtime={**_STR, "description": "YYYYMMDD"},
            orderstep={**_STR, "description": "00 all, 01 submitted, 02 paid, 03 loaded, 04 confirmed, "
                       "05 settled, 06 voided/expired"},
            orderid={**_STR, "description": "20 digits"}, payway=_STR,
        ),
        "reply": _obj(
            ["pki", "acctresult"],
            pki=_STR,
            acctresult={"type": "array", "items": _obj(
                ["orderseq", "logiccardnum", "physiccardnum", "ordertime", "paytime", "amount", "payway",
                 "step", "operate"],
                orderseq=_STR, logiccardnum=_STR, physiccardnum=_STR,
                ordertime={**_STR, "description": "YYYYMMDDhhmmss, Asia/Shanghai"}, paytime=_STR,
                amount={**_INT, "description": "cents"}, payway=_STR, step=_STR, operate=_STR,
            )},
        ),
        "reply_clear": {"acctstatus": {**_STR, "description": "00 normal, 01 card not active"},
                        "chargerecordnum": {**_INT, "description": "orders matching (acctresult may list fewer)"}},
    },
    "/CreateAutoLoadOrder": {
        "summary": "Create a recharge order and reserve its amount from the platform's merchant fund",
        "request": _obj(
            ["platform", "userinfo", "chargeamt", "chargetype", "transtype", "step", "reqinfo"],
            platform=_INT, userinfo=_STR, pki=_STR,
            chargeamt={**_INT, "description": "cents, 1 to order_max_amount_cents"},
            chargetype={**_INT, "enum": [0]}, transtype={**_INT, "enum": [1]},
            serial={**_STR, "description": "optional; when given, a live APPLLogin serial"},
            step=_STEP,
            reqinfo={"type": "array", "items": _READER_REPLY,
                     "description": "must hold the reply to toreader step 3 (READ BINARY): the card"},
        ),
        "reply": _obj(["pki", "order"], pki=_STR, order={**_STR, "description": "20-digit order number"}),
        "reply_clear": {},
        "extra_clear": {"biz_serial_no": {**_STR, "description": "the platform's serial; idempotency key"}},
    },
}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, spec in _ENDPOINTS.items():
        clear = {**_REQUEST_CLEAR, **spec.get("extra_clear", {})}
        required = _REQUEST_REQUIRED + list(spec.get("extra_clear", {}))
        reply = {**_REPLY, "properties": {**_REPLY["properties"], **spec["reply_clear"]}}
        paths[path] = {
            "post": {
                "summary": spec["summary"],
                "operationId": path.strip("/"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": required, "properties": clear,
                        "x-encrypted": spec["request"],
                    }}},
                },
                "responses": {
                    "200": {
                        "description": "status 1 with data, or status 0 with errmsg (nothing changed)",
                        "content": {"application/json": {"schema": {**reply, "x-encrypted": spec["reply"]}}},
                    },
                    "503": {"description": "system busy; retry later"},
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Recharge platform order API (seed 004 3.2)", "version": "v2", "description": _ENVELOPE_DOC},
        "paths": paths,
    }


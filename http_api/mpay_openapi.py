"""The OpenAPI 3.1 document of ``/mpay/v1`` (SPEC 6.12), generated from the routing table.

Every route whose handler ``mpay_gate.endpoint`` made is an operation: its request body
comes from its field list (the same one the gate validates with), its success reply's
``data`` from ``http_api.mpay_replies`` (a refusal's ``data`` is ``null``), so the document
can neither miss a route nor drift from what is accepted. STK and POS come from
``wallet_api``; the bank notice (form in, plain text out) and the delivery report are
described by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from http_api import mpay_replies, wallet_api
from http_api.mpay_gate import ENDPOINTS, PREFIX, Endpoint

KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "cents": {"type": "integer", "minimum": 0, "description": "integer cents"},
    "bool": {"type": "boolean"},
    "digits": {"type": "string", "pattern": "^[0-9]{1,32}$"},
    "msisdn": {"type": "string", "description": "11-digit MSISDN (+86, 0086 or 86 dropped)"},
    "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
    "str": {"type": "string", "maxLength": 256},
    "reason": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "\\S",
               "description": "why (required; recorded in operator_actions)"},
    "answers": {"type": "array", "items": {"type": "object", "required": ["id", "answer"], "properties": {
        "id": {"type": "integer"}, "answer": {"type": "string", "maxLength": 64}}}},
    "object": {"type": "object"},
}
ENVELOPE = {
    "type": "object",
    "required": ["code", "msg_zh", "msg_en", "data"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "pattern": "^[0-9]{4}$"},
        "msg_zh": {"type": "string"},
        "msg_en": {"type": "string"},
        "data": {"type": ["object", "null"]},
    },
}
REFUSAL = {"allOf": [{"$ref": "#/components/schemas/Envelope"}], "properties": {"data": {"type": "null"}}}
SECURITY: dict[str, list[dict[str, list[str]]]] = {"customer": [{"bearer": []}], "operator": [{"operatorBearer": []}], "merchant": [{"merchantSign": []}],
            "ivr": [{"gatewaySecret": []}], "anyone": []}


def _body(fields: dict[str, str]) -> dict[str, Any]:
    props = {name.rstrip("?"): KIND_SCHEMAS[kind] for name, kind in fields.items()}
    required = [name for name in fields if not name.endswith("?")]
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": props, "required": required}}}}


def _reply(method: str, path: str, op_id: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """The 200 reply: the envelope, its ``data`` this operation's (``0000``) or ``null`` (a refusal)."""
    data = mpay_replies.DATA.get((method, path), {"type": "object", "description": "not described"})
    name = f"{op_id}_data"
    schemas[name] = data
    return {"allOf": [{"$ref": "#/components/schemas/Envelope"}],
            "if": {"properties": {"code": {"const": "0000"}}, "required": ["code"]},
            "then": {"properties": {"data": {"$ref": f"#/components/schemas/{name}"}}},
            "else": {"properties": {"data": {"type": "null"}}}}


def _operation(method: str, path: str, ep: Endpoint, schemas: dict[str, Any]) -> dict[str, Any]:
    op_id = f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}"
    errors = {"$ref": "#/components/schemas/Refusal"}
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": (ep.handler.__doc__ or ep.handler.__name__).strip().splitlines()[0],
        "security": SECURITY[ep.auth],
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in re.findall(r"{(\w+)}", path)],
        "responses": {status: {"description": text, "content": {"application/json": {"schema": schema}}}
                      for status, text, schema in (
            ("200", "a business answer (code 0000 or a refusal)", _reply(method, path, op_id, schemas)),
            ("400", "not JSON (1001)", errors), ("404", "unknown path (1001)", errors),
            ("405", "unknown method (1001)", errors), ("413", "body too large (1001)", errors),
            ("500", "platform fault (9002)", errors), ("503", "busy (9001)", errors))},
    }
    if ep.roles:
        op["x-roles"] = list(ep.roles)  # the operator roles allowed (another role: 1004)
    if ep.fields is not None:
        op["requestBody"] = _body(ep.fields)
    if ep.request_id and method == "POST":
        op["parameters"].append({"name": "X-Request-Id", "in": "header", "required": True,
                                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}})
    return op


def endpoints(routes: Iterable[web.AbstractRoute]) -> list[tuple[str, str, Endpoint]]:
    """(method, path under ``/mpay/v1``, declaration) of every route ``mpay_gate.endpoint`` made."""
    found = []
    for route in routes:
        ep = ENDPOINTS.get(route.handler)
        if ep is not None and route.resource is not None:
            path = route.resource.canonical
            found.append((route.method, path[len(PREFIX):] if path.startswith(PREFIX) else path, ep))
    return found


# SPEC 6.6's notice as recharge.mpay.bank reads it: ``sign`` over the other non-empty fields.
_SERIAL = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
BANK_NOTICE = {"type": "object", "required": ["order_id", "amount", "result", "bank_serial", "sign"], "properties": {
    "order_id": _SERIAL, "amount": {"type": "string", "pattern": "^[0-9]{1,12}$", "description": "integer cents"},
    "result": {"enum": ["S", "F"]}, "bank_serial": _SERIAL,
    "paid_at": {"type": "string", "pattern": "^[0-9]{14}$", "description": "yyyyMMddHHmmss, Asia/Shanghai"},
    "sign": {"type": "string", "description": "base64 RSASSA-PKCS1-v1_5/SHA-256 of the gateway"}}}


def document(routes: Iterable[web.AbstractRoute]) -> dict[str, Any]:
    """The document of the ``/mpay/v1`` sub-application whose routes these are."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Envelope": ENVELOPE, "Refusal": REFUSAL}
    for method, path, ep in endpoints(routes):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, ep, schemas)
    paths.update(wallet_api.openapi_paths())  # STK and POS (SPEC 7.2, 7.4)
    paths.setdefault("/bank/notify/{gw}", {})["post"] = {
        "operationId": "post_bank_notify", "summary": "A bank gateway's signed notice (form-urlencoded)",
        "parameters": [{"name": "gw", "in": "path", "required": True, "schema": {"enum": ["icbc", "unionpay"]}}],
        "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": BANK_NOTICE}}},
        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"const": "OK"}}}},
                      "403": {"description": "FAIL", "content": {"text/plain": {"schema": {"const": "FAIL"}}}}},
    }
    paths.setdefault("/sms/dlr", {})["get"] = {
        "operationId": "get_sms_dlr", "summary": "Kannel delivery report (the SMS hook's secret)",
        "parameters": [{"name": n, "in": "query", "required": True, "schema": {"type": "string"}}
                       for n in ("id", "status", "secret")],
        "responses": {status: {"description": text, "content": {"application/json": {"schema": schema}}}
                      for status, text, schema in (
            ("200", "recorded (0000), or a malformed report (1001)", _reply("GET", "/sms/dlr", "get_sms_dlr", schemas)),
            ("403", "wrong secret (1002)", {"$ref": "#/components/schemas/Refusal"}))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Mobile payment account", "version": "1",
                 "description": "SPEC 6.12/6.13; every reply is the envelope, HTTP 200 for business answers."},
        "servers": [{"url": PREFIX}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a customer's session token"},
                "operatorBearer": {"type": "http", "scheme": "bearer", "description": "an operator's session token"},
                "merchantSign": {"type": "apiKey", "in": "header", "name": "Sign"},
                "gatewaySecret": {"type": "apiKey", "in": "header", "name": "X-Gateway-Secret"},
            },
        },
    }


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)

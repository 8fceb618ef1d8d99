"""The OpenAPI 3.1 document of ``/mpay/v1`` (SPEC 6.12), generated from the route declarations.

Every JSON endpoint's request body comes from its field list (the same one the gate
validates with), so the document cannot drift from what is accepted; every reply is the
envelope ``{code, msg_zh, msg_en, data}``. The bank notice (form in, plain text out) and
the delivery report are described by hand.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from http_api import mpay_customer, mpay_partners, mpay_staff, wallet_api, wallet_web
from http_api.mpay_gate import PREFIX, Endpoint

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
SECURITY: dict[str, list[dict[str, list[str]]]] = {"customer": [{"bearer": []}], "operator": [{"bearer": []}], "merchant": [{"merchantSign": []}],
            "ivr": [{"gatewaySecret": []}], "anyone": []}


def _body(fields: dict[str, str]) -> dict[str, Any]:
    props = {name.rstrip("?"): KIND_SCHEMAS[kind] for name, kind in fields.items()}
    required = [name for name in fields if not name.endswith("?")]
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "properties": props, "required": required}}}}


def _operation(method: str, path: str, ep: Endpoint) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
        "summary": (ep.handler.__doc__ or ep.handler.__name__).strip().splitlines()[0],
        "security": SECURITY[ep.auth],
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in re.findall(r"{(\w+)}", path)],
        "responses": {status: {"description": text, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Envelope"}}}} for status, text in (
            ("200", "a business answer (code 0000 or a refusal)"), ("400", "not JSON (1001)"),
            ("404", "unknown path (1001)"), ("405", "unknown method (1001)"), ("500", "platform fault (9002)"),
            ("503", "busy (9001)"))},
    }
    if ep.fields is not None:
        op["requestBody"] = _body(ep.fields)
    if ep.request_id and method == "POST":
        op["parameters"].append({"name": "X-Request-Id", "in": "header", "required": True,
                                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"}})
    return op


@functools.cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for module in (mpay_customer, mpay_partners, mpay_staff, wallet_web):
        for method, path, ep in module.ROUTES:
            paths.setdefault(path, {})[method.lower()] = _operation(method, path, ep)
    paths.update(wallet_api.openapi_paths())  # STK and POS (SPEC 7.2, 7.4)
    paths.setdefault("/bank/notify/{gw}", {})["post"] = {
        "operationId": "post_bank_notify", "summary": "A bank gateway's signed notice (form-urlencoded)",
        "parameters": [{"name": "gw", "in": "path", "required": True, "schema": {"enum": ["icbc", "unionpay"]}}],
        "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"const": "OK"}}}},
                      "403": {"description": "FAIL", "content": {"text/plain": {"schema": {"const": "FAIL"}}}}},
    }
    paths.setdefault("/sms/dlr", {})["get"] = {
        "operationId": "get_sms_dlr", "summary": "Kannel delivery report (the SMS hook's secret)",
        "responses": {"200": {"description": "recorded", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Envelope"}}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Mobile payment account", "version": "1",
                 "description": "SPEC 6.12/6.13; every reply is the envelope, HTTP 200 for business answers."},
        "servers": [{"url": PREFIX}],
        "paths": paths,
        "components": {
            "schemas": {"Envelope": ENVELOPE},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "merchantSign": {"type": "apiKey", "in": "header", "name": "Sign"},
                "gatewaySecret": {"type": "apiKey", "in": "header", "name": "X-Gateway-Secret"},
            },
        },
    }


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)

"""The OpenAPI 3.1 description of the card service's REST gateway (``/s/get``) and the SMS hook
(``/sms/inbound``), part of the platform's ``GET /openapi.json`` (``http_api.openapi``).

The REST gateway answers XML: its schemas describe ``<TradeResult>`` as OpenAPI's ``xml``
object reads it — an object whose ``Record`` elements (not wrapped) are objects of their
child elements' texts (an empty element: ``""``). The parameter names and the methods come
from ``http_api.kkt_rest`` itself, so the document cannot drift from what is read.
"""

from __future__ import annotations

from typing import Any

from defusedxml import ElementTree

from http_api import kkt_rest, sms
from recharge.kkt import card_admin
from recharge.kkt import codes as kkt_codes

_PARAM: dict[str, Any] = {"type": "string", "maxLength": kkt_rest.MAX_PARAM_CHARS}
# Every parameter a method reads (kkt_rest.Params.get), beside method and LICENSEKEY.
PARAMETERS = ("POSCODE", "COPNO", "LANG", "CARDNO", "CARDPWD", "AMOUNT", "TRADETYPE", "TRADEMODE", "ITEMCODE",
              "STANCE_REV", "REQID", "USR_MOBILE_NO", "NEW_PWD", "OLD_PWD", "IDNUM", "STANCE_NO", "START", "END",
              *(name for name in card_admin.HOLDER_FIELDS if name != "USR_MOBILE_NO"))
_CODE = {"type": "string", "pattern": "^[0-9]{2}$", "description": "the seed's return code (11: success)"}
_TEXT = {"type": "string"}
_RECORD = {"type": "object", "additionalProperties": _TEXT, "properties": {
    "PayInForm": _CODE, "Result": _CODE, "PayInResult": {"type": "string", "pattern": "^\\([0-9]{2}\\)"}}}
TRADE_RESULT = {
    "type": "object", "xml": {"name": "TradeResult"}, "additionalProperties": False,
    "description": "<TradeResult> with one <Record> per result; each child element's text by its name",
    "properties": {"Record": {"type": "array", "xml": {"wrapped": False}, "items": {**_RECORD, "xml": {"name": "Record"}}}},
}
LICENSE_CODE = {"type": "string", "enum": ["1", "2", "3", "4"],
                "description": "a refused LICENSEKEY: 1 unknown or malformed, 2 expired, 3 disabled or another "
                               "merchant's, 4 the caller's address not allowed"}


TOO_LONG = {"type": "string", "const": "400 Bad Request\n",
            "description": "the HTTP server's own answer to a request line over 8190 bytes (never quoting it)"}


def _xml(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/xml": {"schema": TRADE_RESULT}}}


def _kkt_operation(method: str) -> dict[str, Any]:
    params = [{"name": "method", "in": "query", "required": True, "schema": {"type": "string", "enum": sorted(kkt_rest.METHODS)},
               "description": "cTRequest, aCRequest, rSCardPwd, tSRequest, cIRequest or bCRequest"}]
    fields = {name: _PARAM for name in PARAMETERS}
    operation: dict[str, Any] = {
        "operationId": f"kkt_rest_{method}",
        "summary": "The card service (SPEC 3.1): trades, activation, passwords, history, holder data, binding",
        "security": [{"licenseKey": []}],
        "parameters": params,
        "responses": {
            "200": {"description": "the method's records (a business refusal carries its return code), or the bare "
                                   "license code when the LICENSEKEY is refused",
                    "content": {"text/xml": {"schema": TRADE_RESULT}, "text/plain": {"schema": LICENSE_CODE}}},
            "400": _xml("an unknown method (code 50), or a parameter holding control characters (code 00; when it "
                        "is the LICENSEKEY, the license code 1 with HTTP 200)"),
            "503": _xml(f"busy (code {kkt_codes.BUSY}), Retry-After: 1"),
        },
    }
    if method == "get":
        params += [{"name": name, "in": "query", "required": False, "schema": _PARAM} for name in PARAMETERS]
        operation["responses"]["400"]["content"]["text/plain"] = {"schema": TOO_LONG}
    else:
        operation["requestBody"] = {"required": True, "content": {"application/x-www-form-urlencoded": {
            "schema": {"type": "object", "properties": fields}}}}
    return operation


_SMS_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _sms_operation(method: str) -> dict[str, Any]:
    params = [{"name": "from", "in": "query", "required": True, "description": "the sender's MSISDN (+86, 0086, 86 dropped)",
               "schema": {"type": "string", "pattern": "^\\s*\\+?[0-9]{3,20}\\s*$"}},
              {"name": "to", "in": "query", "required": False, "description": "the number texted; "
               "the mobile payment service number (mpay_sms_service_number) routes to SPEC 6.5", "schema": {"type": "string"}},
              {"name": "id", "in": "query", "required": False, "description": "the gateway's message id: the idempotency key",
               "schema": {"type": "string", "pattern": "^[0-9A-Za-z_.:-]{1,64}$"}}]
    operation: dict[str, Any] = {
        "operationId": f"sms_inbound_{method}",
        "summary": "An inbound SMS from the gateway (SPEC 3.3, Kannel's get-url/post-url); the reply SMS is the body",
        "security": [{"smsSecret": []}, {"smsSecretParam": []}],
        "parameters": params,
        "responses": {
            "200": {"description": "the reply SMS: success, a business refusal, busy or help", "content": _SMS_TEXT},
            "400": {"description": "a malformed gateway request: no or bad from, bad id, an undecodable body, a "
                                   "form body that is not its Content-Type's form; a request line over 8190 bytes",
                    "content": _SMS_TEXT},
            "403": {"description": "the shared secret missing or wrong, or a client outside sms_allowed_networks",
                    "content": _SMS_TEXT},
        },
    }
    if method == "get":
        params.append({"name": "text", "in": "query", "required": False, "schema": {"type": "string"},
                       "description": "the message text"})
    else:
        operation["requestBody"] = {"required": False, "description": "none: an empty message (the help text)", "content": {
            "text/plain": {"schema": {"type": "string", "description": "Kannel's post-url: the message text"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                "text": {"type": "string"}}}}}}
    return operation


def paths() -> dict[str, dict[str, Any]]:
    return {
        "/s/get": {"get": _kkt_operation("get"), "post": _kkt_operation("post")},
        sms.PATH: {"get": _sms_operation("get"), "post": _sms_operation("post")},
    }


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "licenseKey": {"type": "apiKey", "in": "query", "name": "LICENSEKEY",
                   "description": "the merchant's license key (a form field of that name is read first on POST)"},
    "smsSecret": {"type": "apiKey", "in": "header", "name": sms.SECRET_HEADER},
    "smsSecretParam": {"type": "apiKey", "in": "query", "name": sms.SECRET_PARAM},
}


def trade_result(body: bytes) -> dict[str, Any]:
    """An answer of ``/s/get`` read as ``TRADE_RESULT`` describes it (what a response validator checks)."""
    root = ElementTree.fromstring(body)
    if root.tag != "TradeResult":
        return {root.tag: root.text or ""}  # not a TradeResult: fails the schema
    found: dict[str, Any] = {"Record": [{child.tag: child.text or "" for child in record} for record in root]}
    return found if root.findall("Record") == list(root) else {**found, "unexpected": [c.tag for c in root]}

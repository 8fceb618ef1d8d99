"""One request on each channel of the platform, as its clients send it, classified the same way.

Blocking calls (``http.client``, the blocking DD ``TerminalClient``): every chaos client is a
process of its own doing one thing at a time. Each call returns an ``Outcome``:

- ``ok``: the platform acknowledged it (DD18 ``0x00``, a REST/SOAP ``11``, an SMS success
  reply, an order-API ``status: 1``) — the client journals it;
- ``refused``: a definite business answer (nothing happened);
- ``busy``: the platform said busy (DD ``0xDD``, card service 51 + HTTP 503, the SMS busy
  text, order API 503) — nothing acknowledged, retry later;
- ``failed``: an answer that should never come (5xx other than busy, ``0xEE``, garbage);
- ``lost``: no answer (refused or cut connection, timeout) — the outcome is unknown.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import ParseError, fromstring

from http_api.order_client import ClientIdentity, build_request, open_reply
from recharge.kkt import service as kkt
from recharge.kkt import sms
from server.stages import INFO_BUSY, INFO_INTERNAL, INFO_OK
from server.terminal_client import ConnectionClosed

OK, REFUSED, BUSY, FAILED, LOST = "ok", "refused", "busy", "failed", "lost"
SMS_SUCCESS_PREFIX = kkt.text(kkt.OK, True)  # "交易成功！" opens every successful trade reply


@dataclass
class Outcome:
    status: str
    code: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Http:
    """Where the HTTP side answers; one connection per request (clients come and go)."""

    host: str
    port: int
    timeout_s: float = 10.0
    source: str = ""  # the local address to connect from (the proxy tells the clients apart by it)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s,
                                          source_address=(self.source, 0) if self.source else None)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


def gate_busy(status: int, body: bytes) -> bool:
    """The HTTP listener's own 503 (empty body): every connection of the worker had a request in progress."""
    return status == 503 and not body


def timed(call: Any) -> Outcome:
    """Run ``call()`` (an Outcome); a connection failure or timeout is ``lost``; time it."""
    started = time.monotonic()
    try:
        outcome: Outcome = call()
    except (OSError, http.client.HTTPException, ConnectionClosed) as exc:
        outcome = Outcome(LOST, type(exc).__name__)
    outcome.seconds = time.monotonic() - started
    return outcome


# --- KaKaTong REST and SOAP --------------------------------------------------------------------

def _records(body: bytes) -> list[dict[str, str]]:
    root = fromstring(body)
    return [{child.tag: child.text or "" for child in record} for record in root.findall("Record")]


def _trade_outcome(status: int, fields: dict[str, str], code: str) -> Outcome:
    if status == 503 and code == kkt.BUSY:
        return Outcome(BUSY, code, fields)
    if status != 200:
        return Outcome(FAILED, f"http {status}", fields)
    return Outcome(OK if code == kkt.OK else REFUSED, code, fields)


def kkt_rest(api: Http, params: dict[str, str]) -> Outcome:
    """``GET /s/get?method=cTRequest&…``; ok on PayInForm 11."""

    def call() -> Outcome:
        status, _, body = api.request("GET", "/s/get?" + urllib.parse.urlencode({"method": "cTRequest", **params}))
        if gate_busy(status, body):
            return Outcome(BUSY, "503")
        try:
            records = _records(body)
        except ParseError:
            return Outcome(FAILED, f"http {status}: not XML")
        fields = records[0] if records else {}
        return _trade_outcome(status, fields, fields.get("PayInForm", ""))

    return timed(call)


SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_SOAP_REQUEST = (
    '<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="' + SOAP11 + '"'
    ' xmlns:ns1="urn:KaKaTong"><SOAP-ENV:Body><ns1:{op}>{args}</ns1:{op}></SOAP-ENV:Body></SOAP-ENV:Envelope>'
)


def soap_envelope(operation: str, args: dict[str, str]) -> bytes:
    from xml.sax.saxutils import escape

    parts = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args.items())
    return _SOAP_REQUEST.format(op=operation, args=parts).encode()


def _map_items(element: Element) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in element.iter("item"):
        key, value = item.find("key"), item.find("value")
        if key is not None and value is not None:
            found[key.text or ""] = value.text or ""
    return found


def kkt_soap(api: Http, args: dict[str, str]) -> Outcome:
    """``soapCardTrade`` on the rpc port (parts by name, as PHP's SoapClient sends them)."""

    def call() -> Outcome:
        status, _, body = api.request("POST", "/s/sp.php", soap_envelope("soapCardTrade", args),
                                      {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "soapCardTrade"})
        if gate_busy(status, body):
            return Outcome(BUSY, "503")
        try:
            root = fromstring(body)
        except ParseError:
            return Outcome(FAILED, f"http {status}: not XML")
        fault = root.find(f".//{{{SOAP11}}}Fault")
        if fault is not None:
            text = fault.findtext("faultstring") or ""
            if status == 503 and text.startswith(f"({kkt.BUSY})"):
                return Outcome(BUSY, kkt.BUSY)
            return Outcome(FAILED, f"fault {status}: {text[:80]}")
        fields = _map_items(root)
        return _trade_outcome(status, fields, fields.get("PayInForm", ""))

    return timed(call)


# --- SMS -----------------------------------------------------------------------------------------

def sms_command(api: Http, secret: str, sender: str, text: str, message_id: str, to: str = "10658000") -> Outcome:
    """One inbound SMS through the gateway hook; ok on a success reply (its serial in ``stance``)."""

    def call() -> Outcome:
        query = urllib.parse.urlencode({"from": sender, "to": to, "text": text, "id": message_id})
        status, _, body = api.request("GET", "/sms/inbound?" + query, headers={"X-SMS-Secret": secret})
        reply = body.decode("utf-8", errors="replace")
        if gate_busy(status, body):
            return Outcome(BUSY, "503")
        if status != 200:
            return Outcome(FAILED, f"http {status}", {"reply": reply})
        if reply == sms.BUSY:
            return Outcome(BUSY, "busy", {"reply": reply})
        if reply.startswith(SMS_SUCCESS_PREFIX):
            stance = reply.rsplit("流水", 1)[-1] if "流水" in reply else ""
            return Outcome(OK, kkt.OK, {"reply": reply, "stance": stance})
        return Outcome(REFUSED, "", {"reply": reply})

    return timed(call)


# --- order API -----------------------------------------------------------------------------------

def order_api(api: Http, endpoint: str, body: dict[str, Any]) -> Outcome:
    """A signed order-API request; ok on ``status: 1`` (its decrypted reply in ``fields``)."""

    def call() -> Outcome:
        status, _, raw = api.request("POST", f"/{endpoint}", json.dumps(body, ensure_ascii=False).encode(),
                                     {"Content-Type": "application/json"})
        if gate_busy(status, raw):
            return Outcome(BUSY, "503")
        try:
            reply = json.loads(raw)
        except ValueError:
            return Outcome(FAILED, f"http {status}: not JSON")
        if status == 503:
            return Outcome(BUSY, "busy")
        if status != 200 or not isinstance(reply, dict):
            return Outcome(FAILED, f"http {status}")
        if reply.get("status") != 1:
            return Outcome(REFUSED, str(reply.get("errmsg", ""))[:80])
        opened = open_reply(reply)
        return Outcome(OK, "1", {k: v if isinstance(v, str) else json.dumps(v) for k, v in opened.items()})

    return timed(call)


def create_order(api: Http, who: ClientIdentity, card_no: str, amount_cents: int, serial_no: str,
                 reqinfo: list[str]) -> Outcome:
    """CreateAutoLoadOrder for a card (``reqinfo``: the card's replies to the reading script)."""
    fields = {"platform": who.platform_raw, "userinfo": json.dumps({"userid": "chaos"}), "pki": "",
              "chargeamt": amount_cents, "chargetype": 0, "transtype": 1, "serial": "", "step": 0,
              "reqinfo": reqinfo}
    return order_api(api, "CreateAutoLoadOrder", build_request(who, fields, extra_clear={"biz_serial_no": serial_no}))


# --- health --------------------------------------------------------------------------------------

def readyz(api: Http) -> int:
    """``/readyz``'s status (0 when it did not answer)."""
    try:
        return api.request("GET", "/readyz")[0]
    except (OSError, http.client.HTTPException):
        return 0


def dd_result_status(result: int) -> str:
    """A DD info code as an outcome status."""
    if result == INFO_OK:
        return OK
    if result == INFO_BUSY:
        return BUSY
    return FAILED if result == INFO_INTERNAL else REFUSED

"""KaKaTong SOAP gateway (SPEC 3.2): ``POST /s/sp.php``, WSDL at ``/s/sp.php?wsdl`` and ``/s/sp.wsdl``.

The binding is what the seed's PHP ``SoapClient`` example needs: rpc style, SOAP-encoded,
one part per positional argument, a single ``return`` part of type ``xsd:anyType`` that
holds an ``apache:Map`` (``<item><key/><value/></item>`` per field) on success and an
``xsd:int`` (the bare license code) on a bad key. One WSDL, two ports: SOAP 1.1 and SOAP
1.2, same operations. Requests are parsed with defusedxml (no DTD, so no entity expansion
and no external fetch) after a size check; arguments are matched by part name, or by
position when the client sent ``param0…`` (SoapClient without a WSDL); ``xsi:type`` is
ignored. The operations call ``recharge.kkt.service`` exactly as REST does. Texts are Chinese
unless the request carries a ``LANG`` element (or ``?LANG=``) other than GB2312: the
seed's SOAP example expects Chinese and sends no LANG.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import asyncpg
from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from http_api import edge
from http_api.context import kkt_config, platform_of, route_of
from http_api.kkt_rest import yuan
from recharge import metrics
from recharge.context import Busy
from recharge.kkt import service as kkt

TNS = "urn:KaKaTong"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
SOAP12_ENC = "http://www.w3.org/2003/05/soap-encoding"
APACHE = "http://xml.apache.org/xml-soap"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
log = logging.getLogger(__name__)

MAX_ARGUMENTS = 32  # more children than any operation has parts: refused as malformed

Map = Sequence[tuple[str, object]]
Reply = int | Map | Sequence[Map]


@dataclass(frozen=True, slots=True)
class Call:
    values: dict[str, str | None]
    chinese: bool
    remote: str | None

    def get(self, name: str) -> str | None:
        value = self.values.get(name)
        return None if value is None else value.strip()[:600]


Handler = Callable[[asyncpg.Connection, Call, kkt.License, kkt.Config], Awaitable[Reply]]


async def _card_trade(conn: asyncpg.Connection, c: Call, lic: kkt.License, cfg: kkt.Config) -> Reply:
    req = kkt.TradeRequest(
        trade_type=c.get("TRADETYPE") or "", trade_mode=c.get("TRADEMODE") or "", card_no=c.get("CARDNO") or "",
        terminal_code=c.get("POSCODE") or "", password=c.get("CARDPWD"), amount=c.get("AMOUNT"),
        item_code=c.get("ITEMCODE"), stance_rev=c.get("STANCE_REV"), req_id=c.get("REQID"),
        test_mode=lic.test_mode,
    )
    r = await kkt.trade(conn, req, cfg)
    return [("PayInForm", r.code), ("PayInResult", f"({r.code}){r.text(c.chinese)}"), ("Stance", r.stance),
            ("Integral", r.integral), ("Points", r.points), ("CardNo", r.card_no),
            ("TradeName", r.trade_name(c.chinese))]


async def _change_pwd(conn: asyncpg.Connection, c: Call, lic: kkt.License, cfg: kkt.Config) -> Reply:
    req = kkt.PasswordRequest(card_no=c.get("CARDNO") or "", new_password=c.get("NEW_PWD"),
                              terminal_code=c.get("POSCODE") or "", license_merchant_id=lic.merchant_id,
                              old_password=c.get("OLD_PWD"))
    r = await kkt.change_password(conn, req, cfg)
    return [("PayInForm", r.code), ("CardNo", r.card_no or c.get("CARDNO")), ("TradeName", r.trade_name(c.chinese))]


async def _activate(conn: asyncpg.Connection, c: Call, lic: kkt.License, cfg: kkt.Config) -> Reply:
    req = kkt.ActivateRequest(card_no=c.get("CARDNO") or "", password=c.get("CARDPWD"),
                              terminal_code=c.get("POSCODE") or "", license_merchant_id=lic.merchant_id,
                              amount=c.get("AMOUNT"), mobile=c.get("USR_MOBILE_NO"))
    r = await kkt.activate(conn, req, cfg)
    return [("Result", r.code), ("CardNo", r.card_no or c.get("CARDNO"))]


async def _bind(conn: asyncpg.Connection, c: Call, lic: kkt.License, cfg: kkt.Config) -> Reply:
    req = kkt.BindRequest(card_no=c.get("CARDNO") or "", password=c.get("CARDPWD"), id_num=c.get("IDNUM") or "",
                          trade_mode=c.get("TRADEMODE") or "", terminal_code=c.get("POSCODE") or "")
    r = await kkt.bind(conn, req, cfg)
    return [("Result", r.code), ("CardNo", r.card_no or c.get("CARDNO")), ("CopNo", lic.merchant_code),
            ("IDNum", c.get("IDNUM")), ("TmnNo", c.get("POSCODE"))]


async def _card_info(conn: asyncpg.Connection, c: Call, lic: kkt.License, cfg: kkt.Config) -> Reply:
    updates = {name: c.get(name) or "" for name in kkt.HOLDER_FIELDS}
    r = await kkt.card_info(conn, c.get("CARDNO") or "", lic, updates, cfg)
    reply: list[tuple[str, object]] = [("Result", r.code), ("CardNo", r.card_no or c.get("CARDNO")), ("CopNo", lic.merchant_code)]
    for key, element, _max in kkt.HOLDER_FIELDS.values():
        default = "0000-00-00" if key == "birthday" else ""
        reply.append((element, r.holder.get(key, default) if not r.code else default))
    return reply


async def _trade_stance(conn: asyncpg.Connection, c: Call, lic: kkt.License, cfg: kkt.Config) -> Reply:
    r = await kkt.history(conn, lic, trade_type=c.get("TRADETYPE") or "", trade_mode=c.get("TRADEMODE") or "",
                          card_no=c.get("CARDNO"), terminal_code=c.get("POSCODE"), stance_no=c.get("STANCE_NO"),
                          start=c.get("START"), end=c.get("END"), cfg=cfg)
    if r.code != kkt.OK:
        refused: Map = [("Result", r.code), ("PayInResult", f"({r.code}){kkt.text(r.code, c.chinese)}")]
        return [refused]
    found: list[Map] = [
        [("stanceNo", x.stance), ("CardNo", x.card_no), ("Amount", yuan(x.amount_cents)), ("Points", f"{x.points}.00"),
         ("TradeTime", x.trade_time.astimezone(kkt.SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")),
         ("TmnNo", x.terminal_code), ("TradeName", x.name(c.chinese))]
        for x in r.records
    ]
    return found


@dataclass(frozen=True, slots=True)
class Operation:
    parts: tuple[str, ...]
    handler: Handler
    doc: str


OPERATIONS: dict[str, Operation] = {
    "soapCardTrade": Operation(
        ("LICENSEKEY", "TRADETYPE", "TRADEMODE", "CARDNO", "CARDPWD", "POSCODE", "AMOUNT", "ITEMCODE", "STANCE_REV"),
        _card_trade, "Every trade of the seed's table (cTRequest)."),
    "soapChangeCardPwd": Operation(
        ("LICENSEKEY", "CARDNO", "OLD_PWD", "NEW_PWD", "COPNO", "POSCODE"), _change_pwd,
        "Change (with OLD_PWD) or reset (without) a card password (rSCardPwd)."),
    "soapActivateCard": Operation(
        ("LICENSEKEY", "CARDNO", "CARDPWD", "COPNO", "POSCODE"), _activate, "Card activation (aCRequest)."),
    "soapTradeStance": Operation(
        ("LICENSEKEY", "CARDNO", "CARDPWD", "TRADETYPE", "TRADEMODE", "POSCODE", "COPNO", "START", "END",
         "STANCE_NO"), _trade_stance, "Transaction history (tSRequest): an array of Maps."),
    "soapCardInfo": Operation(
        ("LICENSEKEY", "CARDNO", "COPNO", *kkt.HOLDER_FIELDS), _card_info, "Cardholder information (cIRequest)."),
    "soapBindCard": Operation(
        ("LICENSEKEY", "CARDNO", "COPNO", "CARDPWD", "IDNUM", "TRADEMODE", "POSCODE"), _bind,
        "Bind (TRADEMODE 1) or unbind (0) a mobile or ID number (bCRequest)."),
}
ALIASES = {"soapCTRequest": "soapCardTrade", "soapChangeCardPwdRequest": "soapChangeCardPwd"}


# --- envelopes -----------------------------------------------------------------------------


class SoapFault(Exception):
    def __init__(self, message: str, *, sender: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.sender = sender


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def parse_envelope(body: bytes) -> tuple[str, Element]:
    """(SOAP envelope namespace, the Body's one operation element) of a request."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise SoapFault(f"malformed XML: {type(exc).__name__}") from None
    version = _namespace(root.tag)
    if _local(root.tag) != "Envelope" or version not in (SOAP11_ENV, SOAP12_ENV):
        raise SoapFault("not a SOAP 1.1 or 1.2 envelope")
    body_el = root.find(f"{{{version}}}Body")
    if body_el is None or len(body_el) != 1:
        raise SoapFault("the SOAP Body must hold exactly one operation element")
    op_el: Element = body_el[0]
    return version, op_el


def arguments(op_el: Element) -> list[tuple[str, str | None]]:
    """[(argument name, text or None)] of an operation element: simple values only."""
    if len(op_el) > MAX_ARGUMENTS:
        raise SoapFault("too many arguments")
    args: list[tuple[str, str | None]] = []
    for arg in op_el:
        if len(arg):
            raise SoapFault(f"argument {_local(arg.tag)!r} must be a simple value")
        nil = arg.get(f"{{{XSI}}}nil") in ("true", "1")
        args.append((_local(arg.tag), None if nil else (arg.text or "")))
    return args


def parse_request(body: bytes) -> tuple[str, str, list[tuple[str, str | None]]]:
    """(SOAP envelope namespace, operation, [(argument name, text or None)]) of a request."""
    version, op_el = parse_envelope(body)
    return version, _local(op_el.tag), arguments(op_el)


def bind_arguments(parts: Sequence[str], args: list[tuple[str, str | None]]) -> dict[str, str | None]:
    """By name when every argument names a part (plus LANG/REQID), else by position."""
    extras = {"LANG", "REQID", "AMOUNT", "USR_MOBILE_NO"}
    if all(name in parts or name in extras for name, _ in args):
        return dict(args)
    if len(args) > len(parts):
        raise SoapFault(f"expected at most {len(parts)} arguments, got {len(args)}")
    return {part: value for part, (_, value) in zip(parts, args, strict=False)}


def _value(value: object) -> str:
    if value is None or value == "":
        return '<value xsi:type="xsd:string"></value>'
    return f'<value xsi:type="xsd:string">{escape(str(value))}</value>'


def _map(fields: Map, tag: str = "return") -> str:
    items = "".join(f'<item><key xsi:type="xsd:string">{escape(k)}</key>{_value(v)}</item>' for k, v in fields)
    return f'<{tag} xsi:type="ns2:Map">{items}</{tag}>'


def _return(reply: Reply, encoding: str) -> str:
    if isinstance(reply, int):
        return f'<return xsi:type="xsd:int">{reply}</return>'
    if reply and isinstance(reply[0], list):
        maps: list[Map] = [m for m in reply if isinstance(m, list)]
        inner = "".join(_map(m, "item") for m in maps)
        enc = "SOAP-ENC" if encoding == SOAP11_ENC else "enc"
        return (f'<return xsi:type="{enc}:Array" {enc}:arrayType="ns2:Map[{len(maps)}]">{inner}</return>')
    return _map(reply)  # type: ignore[arg-type]


def envelope(version: str, operation: str, reply: Reply) -> str:
    if version == SOAP12_ENV:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<env:Envelope xmlns:env="{SOAP12_ENV}" xmlns:ns1="{TNS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
            f' xmlns:xsi="{XSI}" xmlns:ns2="{APACHE}" xmlns:enc="{SOAP12_ENC}">'
            f'<env:Body><ns1:{operation}Response env:encodingStyle="{SOAP12_ENC}">'
            f"{_return(reply, SOAP12_ENC)}</ns1:{operation}Response></env:Body></env:Envelope>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP11_ENV}" xmlns:ns1="{TNS}"'
        f' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="{XSI}" xmlns:ns2="{APACHE}"'
        f' xmlns:SOAP-ENC="{SOAP11_ENC}" SOAP-ENV:encodingStyle="{SOAP11_ENC}">'
        f"<SOAP-ENV:Body><ns1:{operation}Response>{_return(reply, SOAP11_ENC)}</ns1:{operation}Response>"
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>\n"
    )


def fault(version: str, message: str, *, sender: bool = True, status: int | None = None) -> web.Response:
    """A SOAP fault: HTTP 500 (1.1), 400/500 (1.2) by who is at fault, or ``status`` when given."""
    text = escape(message)
    if version == SOAP12_ENV:
        code = "env:Sender" if sender else "env:Receiver"
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope xmlns:env="{SOAP12_ENV}"><env:Body><env:Fault>'
            f"<env:Code><env:Value>{code}</env:Value></env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{text}</env:Text></env:Reason>'
            "</env:Fault></env:Body></env:Envelope>\n"
        )
        return web.Response(text=body, status=status or (400 if sender else 500),
                            content_type="application/soap+xml", charset="utf-8")
    code = "SOAP-ENV:Client" if sender else "SOAP-ENV:Server"
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP11_ENV}"><SOAP-ENV:Body>'
        f"<SOAP-ENV:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring></SOAP-ENV:Fault>"
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>\n"
    )
    return web.Response(text=body, status=status or 500, content_type="text/xml", charset="utf-8")


def _guess_version(request: web.Request) -> str:
    return SOAP12_ENV if request.content_type == "application/soap+xml" else SOAP11_ENV


Decoded = tuple[str, str, Operation, dict[str, str | None]]  # (envelope ns, operation, its entry, arguments)


def decode_rpc(body: bytes) -> Decoded:
    """A request of this (rpc/encoded) port: aliases, by name or by position."""
    version, name, args = parse_request(body)
    name = ALIASES.get(name, name)
    operation = OPERATIONS.get(name)
    if operation is None:
        raise SoapFault(f"unknown operation {name[:64]!r}")
    return version, name, operation, bind_arguments(operation.parts, args)


def counted_fault(
    request: web.Request, version: str, message: str, *, sender: bool = True, status: int | None = None
) -> web.Response:
    """``fault``, counted by whose fault it is: SOAP 1.1 answers a client's fault with HTTP 500
    too (its convention), so ``recharge_soap_faults_total{fault, status}`` tells them apart for
    the 5xx alert (deploy/prometheus/alerts.yml, RechargeHttpErrorRatioHigh)."""
    response = fault(version, message, sender=sender, status=status)
    metrics.SOAP_FAULTS.labels(route_of(request), "client" if sender else "server", str(response.status)).inc()
    return response


def _unstorable(values: dict[str, str | None]) -> str | None:
    """The first argument holding what no database field may hold (``http_api.edge``)."""
    return next((name for name, value in values.items() if value is not None and not edge.storable(value)), None)


async def run_request(request: web.Request, decode: Callable[[bytes], Decoded]) -> tuple[str, str, Reply] | web.Response:
    """(envelope ns, operation, reply) of a POST, or its fault: size limit, ``decode``, license key, handler.

    Shared by both SOAP ports; each writes its own reply envelope. A handler's unexpected
    exception is a Server fault (logged); saturation (``Busy``) is left to the 503 middleware.
    """
    ctx = platform_of(request)
    limit = ctx.settings.http_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return counted_fault(request, _guess_version(request), "request too large")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return counted_fault(request, _guess_version(request), "request too large")
    try:
        version, name, operation, values = decode(body)
        bad = _unstorable(values)
        if bad is not None:
            raise SoapFault(f"argument {bad[:64]!r} holds control characters")
    except SoapFault as exc:
        metrics.KKT_TRADES.labels("soap", "fault").inc()
        return counted_fault(request, _guess_version(request), exc.message)
    try:
        return await _run(request, version, name, operation, values)
    except Busy:
        raise
    except Exception:  # a defect or a lost database: the client gets a Server fault, the log the trace
        log.exception("SOAP %s failed", name)
        return counted_fault(request, version, "internal error", sender=False)


async def _run(request: web.Request, version: str, name: str, operation: Operation,
               values: dict[str, str | None]) -> tuple[str, str, Reply] | web.Response:
    ctx = platform_of(request)
    lang = values.get("LANG") or request.query.get("LANG")
    call = Call(values, chinese=lang is None or kkt.is_chinese(lang), remote=request.remote)
    reply: Reply
    cfg = kkt_config(request)
    try:
        if operation.handler is _card_trade and cfg.lane is not None:  # the group commit's connection only
            reply = await _answer(ctx.acquire, name, operation, call, cfg)
        else:
            async with ctx.acquire() as conn:
                reply = await _answer(conn, name, operation, call, cfg)
    except Busy:
        metrics.KKT_TRADES.labels(name, "busy").inc()
        metrics.BUSY_ANSWERS.labels("http").inc()
        response = counted_fault(request, version, f"({kkt.BUSY}) {kkt.busy_text(False)}", sender=False, status=503)
        response.headers["Retry-After"] = "1"
        return response
    return version, name, reply


async def _answer(db: Any, name: str, operation: Operation, call: Call, cfg: kkt.Config) -> Reply:
    """The license check, then the operation (``db``: a connection, or ``Platform.acquire`` to take
    one only when the reference cache cannot answer)."""
    lic = await kkt.authorize(db, call.get("LICENSEKEY"), call.remote, copno=call.get("COPNO"),
                              terminal_code=call.get("POSCODE"), settings=cfg.settings)
    if lic.code != 0:
        metrics.KKT_TRADES.labels(name, f"license_{lic.code}").inc()
        return lic.code
    return await operation.handler(db, call, lic, cfg)


async def handle_post(request: web.Request) -> web.StreamResponse:
    outcome = await run_request(request, decode_rpc)
    if isinstance(outcome, web.Response):
        return outcome
    version, name, reply = outcome
    content_type = "application/soap+xml" if version == SOAP12_ENV else "text/xml"
    return web.Response(text=envelope(version, name, reply), content_type=content_type, charset="utf-8")


# --- the WSDL ------------------------------------------------------------------------------

LOCATION_PLACEHOLDER = "http://localhost:8080/s/sp.php"


def wsdl(location: str = LOCATION_PLACEHOLDER) -> str:
    """The service description (rpc/encoded, SOAP 1.1 and 1.2 ports), ``location`` filled in."""
    messages: list[str] = []
    port_ops: list[str] = []
    ops11: list[str] = []
    ops12: list[str] = []
    for name, op in OPERATIONS.items():
        parts = "".join(f'<part name="{p}" type="xsd:string"/>' for p in op.parts)
        messages.append(f'  <message name="{name}Request">{parts}</message>\n'
                        f'  <message name="{name}Response"><part name="return" type="xsd:anyType"/></message>\n')
        port_ops.append(f'    <operation name="{name}"><documentation>{escape(op.doc)}</documentation>'
                        f'<input message="tns:{name}Request"/><output message="tns:{name}Response"/></operation>\n')
        for prefix, enc, out in (("soap", SOAP11_ENC, ops11), ("soap12", SOAP12_ENC, ops12)):
            body = f'<{prefix}:body use="encoded" namespace="{TNS}" encodingStyle="{enc}"/>'
            out.append(f'    <operation name="{name}"><{prefix}:operation soapAction="{TNS}#{name}" style="rpc"/>'
                       f"<input>{body}</input><output>{body}</output></operation>\n")
    loc = quoteattr(location)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<definitions name="KaKaTong" targetNamespace="{TNS}" xmlns:tns="{TNS}"\n'
        '  xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"\n'
        '  xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/"\n'
        '  xmlns="http://schemas.xmlsoap.org/wsdl/">\n'
        f'  <types><xsd:schema targetNamespace="{TNS}">'
        '<xsd:import namespace="http://schemas.xmlsoap.org/soap/encoding/"/></xsd:schema></types>\n'
        + "".join(messages)
        + '  <portType name="KaKaTongPortType">\n' + "".join(port_ops) + "  </portType>\n"
        + '  <binding name="KaKaTongBinding" type="tns:KaKaTongPortType">\n'
        '    <soap:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>\n'
        + "".join(ops11) + "  </binding>\n"
        + '  <binding name="KaKaTongSoap12Binding" type="tns:KaKaTongPortType">\n'
        '    <soap12:binding style="rpc" transport="http://schemas.xmlsoap.org/soap/http"/>\n'
        + "".join(ops12) + "  </binding>\n"
        + '  <service name="KaKaTongService">\n'
        f'    <port name="KaKaTongPort" binding="tns:KaKaTongBinding"><soap:address location={loc}/></port>\n'
        f'    <port name="KaKaTongSoap12Port" binding="tns:KaKaTongSoap12Binding"><soap12:address location={loc}/></port>\n'
        "  </service>\n</definitions>\n"
    )


def service_location(request: web.Request, path: str) -> str:
    """The address a WSDL tells clients to call: ``http_public_base_url`` + ``path``; unset, the
    address this connection reached (the listening socket's, ``http://127.0.0.1:8080``). Never
    the request's ``Host`` header: a WSDL fetched through a forged Host would send the client's
    license key and card passwords wherever the forger chose."""
    base = platform_of(request).settings.http_public_base_url
    if base:
        return base.rstrip("/") + path
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if not sockname:
        return f"http://localhost:{platform_of(request).settings.http_port}{path}"
    host = str(sockname[0])
    return f"http://{f'[{host}]' if ':' in host else host}:{sockname[1]}{path}"


def add_port_routes(
    app: web.Application, path: str, wsdl_path: str, post: Callable[[web.Request], Awaitable[web.StreamResponse]],
    describe: Callable[[str], str | bytes],
) -> None:
    """A SOAP port's routes: POST ``path``; its WSDL (``describe(location)``, location =
    ``service_location``) at ``GET path?wsdl`` and ``GET wsdl_path``; any other GET of ``path`` is 405."""

    async def handle_wsdl(request: web.Request) -> web.Response:
        document = describe(service_location(request, path))
        body = document.encode("utf-8") if isinstance(document, str) else document
        return web.Response(body=body, content_type="text/xml", charset="utf-8")

    async def handle_get(request: web.Request) -> web.Response:
        if "wsdl" in {k.lower() for k in request.query}:
            return await handle_wsdl(request)
        raise web.HTTPMethodNotAllowed("GET", ["POST"], text="POST a SOAP envelope, or GET ?wsdl")

    app.router.add_post(path, post)
    app.router.add_get(path, handle_get)
    app.router.add_get(wsdl_path, handle_wsdl)


def setup(app: web.Application) -> None:
    add_port_routes(app, "/s/sp.php", "/s/sp.wsdl", handle_post, wsdl)


if __name__ == "__main__":  # regenerate the shipped http_api/kkt.wsdl
    sys.stdout.write(wsdl())

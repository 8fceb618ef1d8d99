"""KaKaTong REST gateway (SPEC 3.1): ``GET /s/get?method=…`` answering UTF-8 XML.

Parses the seed's parameters, checks the LICENSEKEY first (a bad key answers the bare
license code as ``text/plain``), calls ``recharge.kkt.service`` and renders
``<TradeResult><Record>…</Record></TradeResult>`` shaped exactly like the seed's examples.
Business refusals are HTTP 200 with their return code; only an unknown method is 400 (code
50), and a parameter no field can hold or a POST body that is not its form 400 (code 00). POST
with a form body is accepted as well, for clients that cannot GET.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

from aiohttp import web

from http_api import edge
from http_api.context import kkt_config, platform_of
from recharge import metrics
from recharge.context import Busy
from recharge.kkt import service as kkt

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" ?>\n'
MAX_PARAM_CHARS = 512  # the longest legal parameter (LICENSEKEY); longer values are cut off and fail
_XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}
Fields = Sequence[tuple[str, object]]
Handler = Callable[[object, "Params", kkt.License, kkt.Config], Awaitable[web.Response]]


def render(records: Iterable[Fields]) -> str:
    """``<TradeResult>`` with one ``<Record>`` per field list; empty values as ``<X />``."""
    parts = [XML_DECLARATION, "<TradeResult>\n"]
    for fields in records:
        parts.append("<Record>\n")
        for name, value in fields:
            text = "" if value is None else str(value)
            parts.append(f"<{name}>{escape(text)}</{name}>\n" if text else f"<{name} />\n")
        parts.append("</Record>\n")
    parts.append("</TradeResult>\n")
    return "".join(parts)


def xml_response(records: Iterable[Fields], status: int = 200) -> web.Response:
    # the body as bytes with its header: aiohttp's text= and content_type= parse and rebuild the header per response
    return web.Response(body=render(records).encode("utf-8"), headers=_XML_HEADERS, status=status)


def trade_fields(result: kkt.TradeResult, chinese: bool) -> Fields:
    """The seed's cTRequest record: PayInForm, PayInResult "(11)交易成功！", Stance, balances."""
    return [
        ("PayInForm", result.code),
        ("PayInResult", f"({result.code}){result.text(chinese)}"),
        ("Stance", result.stance),
        ("Integral", result.integral),
        ("Points", result.points),
        ("CardNo", result.card_no),
        ("TradeName", result.trade_name(chinese)),
    ]


class Params:
    """The request's parameters: the query string, else a form body; first value wins."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def get(self, name: str) -> str | None:
        value = self._values.get(name)
        if value is None:
            return None
        return value[: MAX_PARAM_CHARS + 1]  # overlong: still fails validation, bounded work

    def lang_chinese(self) -> bool:
        return kkt.is_chinese(self.get("LANG"))

    def unstorable(self) -> str | None:
        """The first parameter holding NUL or another control character (``http_api.edge``)."""
        if edge.storable("\t".join(self._values.values())):  # tab is storable: one scan when all are
            return None
        return next((name for name, value in self._values.items() if not edge.storable(value)), None)


async def _params(request: web.Request) -> Params | None:
    """None: a POST whose body is not the form its Content-Type names (``edge.read_form``)."""
    if request.method == "POST":
        form = await edge.read_form(request)
        if form is None:
            return None
        merged = dict(form)
        merged.update({k: v for k, v in request.query.items() if k not in merged})
        return Params(merged)
    return Params(request.query)


def license_response(code: int) -> web.Response:
    return web.Response(text=str(code), content_type="text/plain", charset="utf-8")


async def handle_get(request: web.Request) -> web.StreamResponse:
    params = await _params(request)
    if params is None:
        kkt.metrics.KKT_TRADES.labels("unknown", "00").inc()
        return xml_response([[("PayInForm", "00"), ("PayInResult", "(00)" + kkt.text("00", kkt.is_chinese(
            request.query.get("LANG"))))]], status=400)
    method = params.get("method") or ""
    handler = METHODS.get(method)
    if handler is None:
        kkt.metrics.KKT_TRADES.labels("unknown", "50").inc()
        return xml_response([[("PayInForm", "50"),
                              ("PayInResult", "(50)" + kkt.text("50", params.lang_chinese()))]], status=400)
    refusal = _refuse_unstorable(method, params)
    if refusal is not None:
        return refusal
    ctx = platform_of(request)
    cfg = kkt_config(request)
    try:
        if handler is _ct_request and cfg.lane is not None:  # the group commit's connection, none of its own
            return await _answer(ctx.acquire, request, method, handler, params, cfg)
        async with ctx.acquire() as conn:
            return await _answer(conn, request, method, handler, params, cfg)
    except Busy:
        metrics.KKT_TRADES.labels(method, "busy").inc()
        metrics.BUSY_ANSWERS.labels("http").inc()
        return busy_response(params.lang_chinese())


async def _answer(db: object, request: web.Request, method: str, handler: Handler, params: Params,
                  cfg: kkt.Config) -> web.Response:
    """The license check, then the method (``db``: a connection, or ``Platform.acquire`` to take
    one only when the reference cache cannot answer)."""
    license = await kkt.authorize(
        db, params.get("LICENSEKEY"), request.remote, copno=params.get("COPNO"),  # type: ignore[arg-type]
        terminal_code=params.get("POSCODE"), settings=cfg.settings,
    )
    if license.code != 0:
        kkt.metrics.KKT_TRADES.labels(method, f"license_{license.code}").inc()
        return license_response(license.code)
    return await handler(db, params, license, cfg)


def busy_response(chinese: bool) -> web.Response:
    """The card service's busy answer: code 51 with the busy text, HTTP 503, Retry-After."""
    response = xml_response([[("PayInForm", kkt.BUSY), ("PayInResult", f"({kkt.BUSY}){kkt.busy_text(chinese)}")]],
                            status=503)
    response.headers["Retry-After"] = "1"
    return response


def _refuse_unstorable(method: str, params: Params) -> web.Response | None:
    """A parameter no database field can hold, refused before anything is read: the license
    code 1 (malformed) when it is the LICENSEKEY, checked first as always; else HTTP 400 with
    return code 00."""
    bad = params.unstorable()
    if bad is None:
        return None
    if not edge.storable(params.get("LICENSEKEY") or ""):
        kkt.metrics.KKT_TRADES.labels(method, "license_1").inc()
        return license_response(1)
    kkt.metrics.KKT_TRADES.labels(method, "00").inc()
    return xml_response([[("PayInForm", "00"), ("PayInResult", "(00)" + kkt.text("00", params.lang_chinese()))]],
                        status=400)


async def _ct_request(conn: object, p: Params, license: kkt.License, cfg: kkt.Config) -> web.Response:
    req = kkt.TradeRequest(
        trade_type=p.get("TRADETYPE") or "", trade_mode=p.get("TRADEMODE") or "",
        card_no=p.get("CARDNO") or "", terminal_code=p.get("POSCODE") or "", password=p.get("CARDPWD"),
        amount=p.get("AMOUNT"), item_code=p.get("ITEMCODE"), stance_rev=p.get("STANCE_REV"),
        req_id=p.get("REQID"), test_mode=license.test_mode,
    )
    result = await kkt.trade(conn, req, cfg)  # type: ignore[arg-type]
    return xml_response([trade_fields(result, p.lang_chinese())])


async def _ac_request(conn: object, p: Params, license: kkt.License, cfg: kkt.Config) -> web.Response:
    req = kkt.ActivateRequest(
        card_no=p.get("CARDNO") or "", password=p.get("CARDPWD"), terminal_code=p.get("POSCODE") or "",
        license_merchant_id=license.merchant_id, amount=p.get("AMOUNT"), mobile=p.get("USR_MOBILE_NO"),
    )
    result = await kkt.activate(conn, req, cfg)  # type: ignore[arg-type]
    return xml_response([[("Result", result.code), ("CardNo", result.card_no or p.get("CARDNO"))]])


async def _rs_card_pwd(conn: object, p: Params, license: kkt.License, cfg: kkt.Config) -> web.Response:
    req = kkt.PasswordRequest(
        card_no=p.get("CARDNO") or "", new_password=p.get("NEW_PWD"), terminal_code=p.get("POSCODE") or "",
        license_merchant_id=license.merchant_id, old_password=p.get("OLD_PWD"),
    )
    result = await kkt.change_password(conn, req, cfg)  # type: ignore[arg-type]
    chinese = p.lang_chinese()
    return xml_response([[("PayInForm", result.code), ("CardNo", result.card_no or p.get("CARDNO")),
                          ("TradeName", result.trade_name(chinese))]])


async def _bc_request(conn: object, p: Params, license: kkt.License, cfg: kkt.Config) -> web.Response:
    req = kkt.BindRequest(
        card_no=p.get("CARDNO") or "", password=p.get("CARDPWD"), id_num=p.get("IDNUM") or "",
        trade_mode=p.get("TRADEMODE") or "", terminal_code=p.get("POSCODE") or "",
    )
    result = await kkt.bind(conn, req, cfg)  # type: ignore[arg-type]
    return xml_response([[("Result", result.code), ("CardNo", result.card_no or p.get("CARDNO")),
                          ("CopNo", license.merchant_code), ("IDNum", p.get("IDNUM")),
                          ("TmnNo", p.get("POSCODE"))]])


async def _ci_request(conn: object, p: Params, license: kkt.License, cfg: kkt.Config) -> web.Response:
    updates = {name: p.get(name) or "" for name in kkt.HOLDER_FIELDS}
    result = await kkt.card_info(conn, p.get("CARDNO") or "", license, updates, cfg)  # type: ignore[arg-type]
    fields: list[tuple[str, object]] = [
        ("Result", result.code), ("CardNo", result.card_no or p.get("CARDNO")), ("CopNo", license.merchant_code),
    ]
    for _param, (key, element, _max) in kkt.HOLDER_FIELDS.items():
        default = "0000-00-00" if key == "birthday" else ""
        fields.append((element, result.holder.get(key, default) if not result.code else default))
    return xml_response([fields])


async def _ts_request(conn: object, p: Params, license: kkt.License, cfg: kkt.Config) -> web.Response:
    result = await kkt.history(
        conn, license, trade_type=p.get("TRADETYPE") or "", trade_mode=p.get("TRADEMODE") or "",  # type: ignore[arg-type]
        card_no=p.get("CARDNO"), terminal_code=p.get("POSCODE"), stance_no=p.get("STANCE_NO"),
        start=p.get("START"), end=p.get("END"), cfg=cfg,
    )
    chinese = p.lang_chinese()
    if result.code != kkt.OK:
        return xml_response([[("Result", result.code), ("PayInResult", f"({result.code}){kkt.text(result.code, chinese)}")]])
    return xml_response(
        [
            ("stanceNo", r.stance),
            ("CardNo", r.card_no),
            ("Amount", yuan(r.amount_cents)),
            ("Points", f"{r.points}.00"),
            ("TradeTime", r.trade_time.astimezone(kkt.SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")),
            ("TmnNo", r.terminal_code),
            ("TradeName", r.name(chinese)),
        ]
        for r in result.records
    )


def yuan(cents: int) -> str:
    """History amounts are yuan with two decimals, as the seed's tSRequest example shows."""
    return f"{cents // 100}.{cents % 100:02d}"


METHODS = {
    "cTRequest": _ct_request,
    "aCRequest": _ac_request,
    "rSCardPwd": _rs_card_pwd,
    "tSRequest": _ts_request,
    "cIRequest": _ci_request,
    "bCRequest": _bc_request,
}


def setup(app: web.Application) -> None:
    app.router.add_get("/s/get", handle_get)
    app.router.add_post("/s/get", handle_get)

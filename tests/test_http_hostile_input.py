"""Hostile input at every HTTP endpoint never earns a 5xx (issue 14 item 6): a property-based
test (hypothesis) takes a valid request of each endpoint, replaces one field — a clear or an
encrypted order-API field, a KaKaTong parameter or SOAP argument, an SMS parameter or header,
an admin body field, path parameter or header — with a hostile value (NUL, control
characters, lone surrogates, bytes that are not UTF-8, numbers of 400 digits, infinities,
nested JSON, very long texts) and sends it over a raw socket, byte for byte.

Every answer must be below 500, but for the SOAP 1.1 convention: a ``Client`` fault is 500 on
the wire (issue 14 item 7 counts it apart). Examples per endpoint are bounded so the whole
file runs in seconds; hypothesis prints the failing request to reproduce it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.parse
from typing import Any
from xml.sax.saxutils import escape

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import fixtures
from http_api.order_client import build_request, remac
from recharge.kkt import service as kkt
from recharge.orders import platforms as order_platforms
from tests import test_order_api as order_tests
from tests.kkt_world import PASSWORD_MD5, World, make_world

pytestmark = pytest.mark.usefixtures("audited")

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SPECIAL_TEXTS = [
    "\x00", "a\x00b", "9" * 400, "-" + "9" * 400, "1e400", "NaN", "\x1b[31m", "\x7f", "\x85", "\ufffd", "\u202e",
    "\U0001d7d9\U0001d7da", "\u0661\u0662\u0663\u0664", " 1 ", "'; DROP TABLE cards; --", "A" * 5000, "%00", "",
    "0001-01-01", "9999-12-31 23:59:59", "00010101", "99991231", "-1", "0", "\ud800", "\udcff",
]
TEXTS = st.one_of(
    st.sampled_from(SPECIAL_TEXTS),
    st.text(st.one_of(st.characters(), st.characters(categories=["Cc", "Cs"])), max_size=40),
)
HUGE_INTS = st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 2**31, -1, 0])
JSON_VALUES = st.recursive(
    st.one_of(TEXTS, HUGE_INTS, st.integers(), st.floats(), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXTS, inner, max_size=3)),
    max_leaves=6,
)
RAW_BYTES = st.one_of(TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=40))
HEADER_BYTES = RAW_BYTES.map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


async def raw_request(port: int, method: str, target: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                      body: bytes = b"") -> tuple[int, bytes]:
    """One request written byte for byte (no client library cleans anything); (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
                b"Content-Length: %d" % len(body)]
        head += [name + b": " + value for name, value in headers or []]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        answer = await asyncio.wait_for(reader.read(), timeout=15)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


def query(params: dict[str, bytes]) -> bytes:
    return "&".join(f"{k}={urllib.parse.quote_from_bytes(v, safe='')}" for k, v in params.items()).encode()


def assert_not_server_error(status: int, body: bytes, what: Any) -> None:
    assert status < 500, (status, body[:300], what)


# --- the worlds the requests aim at (their own merchant, cards, key, platform) ---------------


@pytest.fixture(scope="module")
async def world(platform: Any, pool: asyncpg.Pool, test_keys: Any) -> World:
    w = await make_world(pool, test_keys[0], platform.http_port)
    w.extra["card"] = await w.new_card(balance=1_000)
    return w


@pytest.fixture(scope="module")
async def order_world(pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    async with pool.acquire() as conn:
        api = await order_tests.register(conn, tmp_path_factory.mktemp("fuzz"), order_tests.fresh_raw(), 100_000)
        card = "1680" + fixtures.random_digits(12)
        await fixtures.register_cpu_cards(conn, [card])
        serial = "1" + fixtures.random_digits(15)
        await conn.execute(
            "INSERT INTO order_api_sessions (serial, platform_id, userid, login_type, detail, expires_at)"
            " VALUES ($1, $2, 'u', 5, '{}', now() + interval '1 hour')", serial, api.platform_id)
    return {"api": api, "card": card, "serial": serial}


# --- the order API ---------------------------------------------------------------------------


def order_request(ow: dict[str, Any], endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encrypted fields, extra clear fields) of a valid request to ``endpoint``."""
    raw = ow["api"].who.platform_raw
    common = {"platform": raw, "userinfo": '{"userid":"u"}', "pki": ""}
    if endpoint == "APPLLogin":
        return {**common, "type": 5, "biz_serial_no": "b", "money": 100, "mobile_imei": "8600", "ip": "10.0.0.1"}, {}
    reqinfo = order_tests.reqinfo_for(ow["card"])
    if endpoint == "AcctQueryLNT":
        return {**common, "serial": ow["serial"], "step": 0, "reqinfo": reqinfo,
                "qrycondition": "username,cardnum,time,orderstep,orderid,payway", "starttime": "20240101",
                "endtime": "20991231", "orderstep": "00", "orderid": "2" * 20, "payway": "00"}, {}
    return ({**common, "chargeamt": 100, "chargetype": 0, "transtype": 1, "serial": "", "step": 0,
             "reqinfo": reqinfo}, {"biz_serial_no": "fz-" + secrets.token_hex(8)})


ORDER_FIELDS = {
    "APPLLogin": ["platform", "userinfo", "userinfo.userid", "type", "biz_serial_no", "money", "mobile_imei", "ip"],
    "AcctQueryLNT": ["platform", "userinfo", "pki", "serial", "step", "reqinfo", "reqinfo[2]", "qrycondition",
                     "starttime", "endtime", "orderstep", "orderid", "payway"],
    "CreateAutoLoadOrder": ["platform", "userinfo", "pki", "chargeamt", "chargetype", "transtype", "serial",
                            "step", "reqinfo", "reqinfo[2]"],
}
CLEAR_FIELDS = ["timestamp", "version", "platformRaw", "crt_version", "data", "Sign", "mac", "biz_serial_no"]


def order_body(ow: dict[str, Any], endpoint: str, field: str, value: Any) -> dict[str, Any]:
    """A request to ``endpoint`` with ``field`` (encrypted, or clear and then re-signed) set to ``value``."""
    who = ow["api"].who
    fields, extra = order_request(ow, endpoint)
    if field == "userinfo.userid":
        fields["userinfo"] = {"userid": value}
    elif field == "reqinfo[2]":
        fields["reqinfo"][2] = value
    elif field not in CLEAR_FIELDS:
        fields[field] = value
    body = build_request(who, fields, extra_clear=extra or None,
                         plaintext=json.dumps(fields, separators=(",", ":")))
    if field not in CLEAR_FIELDS:
        return body
    body[field] = value
    if field in ("timestamp", "version", "platformRaw", "crt_version", "data"):
        signed = order_platforms.sign_message(body["timestamp"], body["version"], body["platformRaw"],
                                              body["crt_version"], str(body["data"]))
        body["Sign"] = order_platforms.sign(who.private_key_pem, signed)
    return body if field == "mac" else remac(body)


@FUZZ
@given(data=st.data())
async def test_order_api_fields_hostile_values_are_refused_never_a_5xx(
    platform: Any, order_world: dict[str, Any], data: st.DataObject
) -> None:
    endpoint = data.draw(st.sampled_from(sorted(ORDER_FIELDS)))
    field = data.draw(st.sampled_from(ORDER_FIELDS[endpoint] + CLEAR_FIELDS[:-1]
                                      + (["biz_serial_no"] if endpoint == "CreateAutoLoadOrder" else [])))
    value = data.draw(JSON_VALUES)
    try:
        body = json.dumps(order_body(order_world, endpoint, field, value), allow_nan=True).encode()
    except (ValueError, TypeError, RecursionError):  # not even the client can send it
        return
    status, answer = await raw_request(platform.http_port, "POST", f"/{endpoint}".encode(),
                                       [(b"Content-Type", b"application/json")], body)
    assert status == 200, (status, answer[:300], endpoint, field, value)
    assert json.loads(answer)["status"] in (0, 1)


@FUZZ
@given(body=st.one_of(RAW_BYTES, JSON_VALUES.map(lambda v: json.dumps(v).encode())))
async def test_order_api_bodies_of_any_bytes_are_refused_never_a_5xx(platform: Any, body: bytes) -> None:
    status, answer = await raw_request(platform.http_port, "POST", b"/CreateAutoLoadOrder",
                                       [(b"Content-Type", b"application/json")], body)
    assert status == 200 and json.loads(answer)["status"] == 0, (status, answer[:300], body)


# --- KaKaTong REST and SOAP ------------------------------------------------------------------


def kkt_params(w: World, method: str) -> dict[str, str]:
    base = {"LICENSEKEY": w.license_key, "POSCODE": w.terminal, "CARDNO": w.extra["card"], "COPNO": w.merchant_code,
            "LANG": "GB2312", "REQID": "r-" + secrets.token_hex(4)}
    per_method = {
        "cTRequest": {"TRADETYPE": "0011", "TRADEMODE": "0", "CARDPWD": PASSWORD_MD5, "AMOUNT": "100",
                      "ITEMCODE": "888", "STANCE_REV": "00000001"},
        "aCRequest": {"CARDPWD": "123456", "AMOUNT": "100", "USR_MOBILE_NO": "13800000000"},
        "rSCardPwd": {"OLD_PWD": PASSWORD_MD5, "NEW_PWD": "111111"},
        "tSRequest": {"TRADETYPE": "0012", "TRADEMODE": "0", "START": "2024-01-01", "END": "2099-12-31 00:00:00",
                      "STANCE_NO": ""},
        "cIRequest": {name: "" for name in kkt.HOLDER_FIELDS},
        "bCRequest": {"CARDPWD": PASSWORD_MD5, "IDNUM": "13800000000", "TRADEMODE": "1"},
    }
    return {**base, **per_method[method]}


KKT_METHODS = ["cTRequest", "aCRequest", "rSCardPwd", "tSRequest", "cIRequest", "bCRequest"]


@FUZZ
@given(data=st.data())
async def test_kkt_rest_parameters_hostile_values_are_refused_never_a_5xx(
    world: World, data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from(KKT_METHODS))
    params = {k: v.encode() for k, v in {"method": method, **kkt_params(world, method)}.items()}
    name = data.draw(st.sampled_from(sorted(params)))
    params[name] = data.draw(RAW_BYTES)
    verb = data.draw(st.sampled_from(["GET", "POST"]))
    if verb == "GET":
        status, answer = await raw_request(world.http_port, "GET", b"/s/get?" + query(params))
    else:
        status, answer = await raw_request(world.http_port, "POST", b"/s/get",
                                           [(b"Content-Type", b"application/x-www-form-urlencoded")], query(params))
    assert_not_server_error(status, answer, (verb, method, name, params[name]))


SOAP_OPERATIONS = {
    "soapCardTrade": "cTRequest", "soapActivateCard": "aCRequest", "soapChangeCardPwd": "rSCardPwd",
    "soapTradeStance": "tSRequest", "soapCardInfo": "cIRequest", "soapBindCard": "bCRequest",
}


SOAP_PORTS = {"/s/sp.php": "urn:KaKaTong", "/s/soap": "urn:KaKaTong:doc"}  # rpc/encoded, document/literal


def soap_envelope(operation: str, args: dict[str, str], raw_arg: tuple[str, bytes] | None, v12: bool,
                  ns: str = "urn:KaKaTong") -> bytes:
    env = "http://www.w3.org/2003/05/soap-envelope" if v12 else "http://schemas.xmlsoap.org/soap/envelope/"
    parts = [f"<{k}>{escape(v)}</{k}>".encode() for k, v in args.items()]
    if raw_arg is not None:  # unescaped bytes: whatever an XML parser makes of them
        parts.append(f"<{raw_arg[0]}>".encode() + raw_arg[1] + f"</{raw_arg[0]}>".encode())
    return (f"<?xml version='1.0' encoding='UTF-8'?><e:Envelope xmlns:e='{env}'><e:Body>"
            f"<ns1:{operation} xmlns:ns1='{ns}'>").encode() + b"".join(parts) + (
            f"</ns1:{operation}></e:Body></e:Envelope>").encode()


@FUZZ
@given(data=st.data())
async def test_kkt_soap_arguments_hostile_values_are_client_faults_never_server_errors(
    world: World, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(sorted(SOAP_PORTS)))
    operation = data.draw(st.sampled_from(sorted(SOAP_OPERATIONS)))
    args = kkt_params(world, SOAP_OPERATIONS[operation])
    name = data.draw(st.sampled_from(sorted(args)))
    v12 = data.draw(st.booleans())
    raw_value = data.draw(st.booleans())
    if raw_value:
        value = data.draw(RAW_BYTES)
        del args[name]
        body = soap_envelope(operation, args, (name, value), v12, SOAP_PORTS[path])
    else:
        args[name] = data.draw(TEXTS)
        try:
            body = soap_envelope(operation, args, None, v12, SOAP_PORTS[path])
        except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form: send it as bytes instead
            return
    content_type = b"application/soap+xml; charset=utf-8" if v12 else b"text/xml; charset=utf-8"
    status, answer = await raw_request(world.http_port, "POST", path.encode(), [(b"Content-Type", content_type)], body)
    if status == 500 and not v12:  # SOAP 1.1: a client's fault is 500 by convention, never a Server fault
        assert b":Client</faultcode>" in answer, (answer[:400], path, operation, name)
    else:
        assert_not_server_error(status, answer, (operation, name, v12))


# --- the SMS hook ----------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
async def test_sms_parameters_and_headers_hostile_values_are_refused_never_a_5xx(
    platform: Any, data: st.DataObject
) -> None:
    secret = platform.ctx.settings.sms_shared_secret.encode()
    params = {"secret": secret, "from": b"13800000000", "to": b"10658888", "text": b"YECX*1680115500000125",
              "id": b"m-" + secrets.token_hex(4).encode()}
    headers: list[tuple[bytes, bytes]] = []
    target = data.draw(st.sampled_from([*params, "X-SMS-Secret", "X-Kannel-From", "body"]))
    value = data.draw(RAW_BYTES if target not in ("X-SMS-Secret", "X-Kannel-From") else HEADER_BYTES)
    body = b""
    if target in ("X-SMS-Secret", "X-Kannel-From"):
        headers.append((target.encode(), value))
        params.pop("secret" if target == "X-SMS-Secret" else "from")
    elif target == "body":
        params.pop("text")
        headers.append((b"Content-Type", b"text/plain; charset=utf-8"))
        body = value
    else:
        params[target] = value
    method = "POST" if body else "GET"
    status, answer = await raw_request(platform.http_port, method, b"/sms/inbound?" + query(params), headers, body)
    assert_not_server_error(status, answer, (target, value))


# --- the admin API ---------------------------------------------------------------------------


def admin_requests(w: World, code: str) -> list[tuple[str, str, dict[str, Any]]]:
    card = w.extra["card"]
    return [
        ("PUT", f"/admin/kkt/merchants/{code}", {"name": "fuzz", "issuing": True, "consuming": True, "closed": False}),
        ("PUT", f"/admin/kkt/terminals/{code}0001", {"merchant": code, "kind": "pos", "msisdn": None,
                                                     "enabled": True, "daily_recharge_limit_cents": 100}),
        ("PUT", "/admin/kkt/license-keys", {"key": "F" + "0" * 20, "merchant": code, "valid_to": "2099-01-01T00:00",
                                            "networks": ["10.0.0.0/8"], "enabled": True, "test_mode": False}),
        ("PUT", f"/admin/kkt/service-codes/{code}/888", {"name": "wash"}),
        ("PUT", f"/admin/kkt/points-rules/{code}", {"cents_per_point": 100}),
        ("POST", "/admin/kkt/card-batches", {"merchant": code, "count": 1, "kind": "sv", "valid_from": "2024-01-01",
                                             "valid_to": "2030-01-01", "per_txn_limit_cents": 100,
                                             "daily_count_limit": 5}),
        ("GET", f"/admin/kkt/cards/{card}", {}),
        ("POST", f"/admin/kkt/cards/{card}/state", {"action": "freeze", "reason": "fuzz"}),
        ("POST", f"/admin/kkt/cards/{card}/reissue", {"reason": "fuzz", "new_card_no": card}),
    ]


@pytest.fixture(scope="module")
async def admin_code(pool: asyncpg.Pool) -> str:
    """A merchant of the admin tests' own (so valid requests would reach the database)."""
    async with pool.acquire() as conn:
        code = await fixtures.fresh_merchant_code(conn)
        await fixtures.funded_merchant(conn, code, 0)
        return code


@FUZZ
@given(data=st.data())
async def test_admin_fields_paths_and_headers_hostile_values_are_refused_never_a_5xx(
    world: World, platform: Any, admin_code: str, data: st.DataObject
) -> None:
    method, path, body = data.draw(st.sampled_from(admin_requests(world, admin_code)))
    token = platform.ctx.settings.admin_token.encode()
    headers = [(b"Authorization", b"Bearer " + token), (b"X-Admin-Actor", b"fuzz"),
               (b"Content-Type", b"application/json")]
    target = data.draw(st.sampled_from(["body", "path", "Authorization", "X-Admin-Token", "X-Admin-Actor"]))
    raw_path = path.encode()
    if target == "body" and body:
        body = {**body, data.draw(st.sampled_from(sorted(body))): data.draw(JSON_VALUES)}
    elif target == "path":
        segments = raw_path.split(b"/")
        index = data.draw(st.sampled_from([i for i, s in enumerate(segments) if s and s not in (b"admin", b"kkt")]))
        segments[index] = urllib.parse.quote_from_bytes(data.draw(RAW_BYTES) or b"%", safe="").encode()
        raw_path = b"/".join(segments)
    else:
        value = data.draw(HEADER_BYTES)
        headers = [h for h in headers if h[0].decode() != target and not (target == "X-Admin-Token" and
                                                                           h[0] == b"Authorization")]
        headers.append((target.encode(), b"Bearer " + value if target == "Authorization" else value))
    try:
        payload = json.dumps(body, allow_nan=True).encode() if body else b""
    except (ValueError, RecursionError):
        return
    status, answer = await raw_request(world.http_port, method, raw_path, headers, payload)
    assert_not_server_error(status, answer, (method, path, target))


# --- the attacks issue 14 names, one by one --------------------------------------------------


@pytest.mark.parametrize("name", ["LICENSEKEY", "POSCODE", "CARDNO", "AMOUNT"])
async def test_a_nul_in_a_kkt_parameter_is_refused_before_anything_is_read(world: World, name: str) -> None:
    params = {k: v.encode() for k, v in {"method": "cTRequest", **kkt_params(world, "cTRequest")}.items()}
    params[name] = params[name][:4] + b"\x00" + params[name][4:]
    status, answer = await raw_request(world.http_port, "GET", b"/s/get?" + query(params))
    if name == "LICENSEKEY":  # checked first, as always: the bare license code 1 (malformed)
        assert (status, answer) == (200, b"1")
    else:
        assert status == 400 and b"<PayInForm>00</PayInForm>" in answer, answer
    assert await world.balance(world.extra["card"]) == (1_000, 0)


async def test_a_history_from_year_1_is_a_refusal_not_an_overflow(world: World) -> None:
    params = {**kkt_params(world, "tSRequest"), "START": "0001-01-01 00:00:00"}
    del params["CARDNO"]
    status, body = await world.get("tSRequest", **params)
    assert status == 200 and "<Result>00</Result>" in body, body


@pytest.mark.parametrize("header", [b"Authorization", b"X-Admin-Token"])
async def test_a_non_utf8_admin_token_is_forbidden(world: World, header: bytes) -> None:
    value = b"Bearer caf\xff" if header == b"Authorization" else b"caf\xff"
    status, answer = await raw_request(world.http_port, "GET", f"/admin/kkt/cards/{world.extra['card']}".encode(),
                                       [(header, value)])
    assert status == 403, answer


async def test_a_non_utf8_sms_secret_is_forbidden(platform: Any) -> None:
    status, answer = await raw_request(platform.http_port, "GET", b"/sms/inbound?from=13800000000&text=YECX",
                                       [(b"X-SMS-Secret", b"\xff\xfe")])
    assert status == 403, answer


@pytest.mark.parametrize(("index", "field", "value"), [
    (1, "daily_recharge_limit_cents", 10**30), (5, "daily_count_limit", 2**31), (5, "per_txn_limit_cents", 10**30),
    (5, "count", 10**30), (5, "per_txn_limit_cents", -1),
])
async def test_admin_numbers_out_of_range_are_refused(
    world: World, platform: Any, admin_code: str, index: int, field: str, value: int
) -> None:
    method, path, body = admin_requests(world, admin_code)[index]
    status, answer = await raw_request(world.http_port, method, path.encode(), [
        (b"Authorization", b"Bearer " + platform.ctx.settings.admin_token.encode()),
        (b"Content-Type", b"application/json")], json.dumps({**body, field: value}).encode())
    assert status == 400 and b"error" in answer, answer


@pytest.mark.parametrize("where", ["name", "path", "actor"])
async def test_admin_nul_bytes_are_refused(world: World, platform: Any, admin_code: str, where: str) -> None:
    path, body = f"/admin/kkt/merchants/{admin_code}", {"name": "fuzz"}
    headers = [(b"Authorization", b"Bearer " + platform.ctx.settings.admin_token.encode())]
    if where == "name":
        body["name"] = "a\x00b"
    elif where == "path":
        path += "%00"
    else:
        headers.append((b"X-Admin-Actor", b"op\xffrator"))  # not UTF-8: a lone surrogate once decoded
    status, answer = await raw_request(world.http_port, "PUT", path.encode(), headers, json.dumps(body).encode())
    assert status == 400 and b"error" in answer, answer

"""KaKaTong SOAP, document/literal port (``http_api.kkt_soap_doc``, ``/s/soap``): zeep against the
doc WSDL over SOAP 1.1 and 1.2 with typed replies, hand-written envelopes (qualified and
unqualified children) whose replies validate against the WSDL's schema, hostile input, the
WSDL itself, metrics, and the rpc/encoded gateway left as it was."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from defusedxml import ElementTree
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from http_api import kkt_soap, kkt_soap_doc
from tests.conftest import settings_changed
from tests.kkt_world import PASSWORD_MD5, World

ROOT = Path(__file__).resolve().parent.parent
DOC = "urn:KaKaTong:doc"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
XSD = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
PORTS = ["KaKaTongDocPort", "KaKaTongDocSoap12Port"]
TRADE_KEYS = ["PayInForm", "PayInResult", "Stance", "Integral", "Points", "CardNo", "TradeName"]


# --- zeep ------------------------------------------------------------------------------------


@functools.cache
def _zeep_service(http_port: int, soap_port: str) -> Any:
    import zeep
    from zeep.transports import Transport

    client = zeep.Client(f"http://127.0.0.1:{http_port}/s/soap?wsdl", transport=Transport(timeout=10))
    return client.bind("KaKaTongDocService", soap_port)


async def zcall(world: World, soap_port: str, operation: str, **elements: str) -> Any:
    def call() -> Any:
        return getattr(_zeep_service(world.http_port, soap_port), operation)(**elements)

    return await asyncio.to_thread(call)


def zeep_records(result: Any) -> list[dict[str, str]]:
    return [{f.key: f.value or "" for f in record.field} for record in result.record]


@pytest.mark.parametrize("soap_port", PORTS)
async def test_zeep_consume_moves_money_and_returns_a_typed_record(world: World, soap_port: str,
                                                                   audited: None) -> None:
    card = await world.new_card(balance=900)
    assert await world.balance(card) == (900, 0)
    result = await zcall(world, soap_port, "soapCardTrade", LICENSEKEY=world.license_key, TRADETYPE="0022",
                         TRADEMODE="1", CARDNO=card, CARDPWD=PASSWORD_MD5, POSCODE=world.terminal, AMOUNT="150")
    assert type(result.licenseCode) is int and result.licenseCode == 0
    [record] = zeep_records(result)
    assert list(record) == TRADE_KEYS
    assert (record["PayInForm"], record["Integral"], record["CardNo"]) == ("11", "750", card)
    assert record["PayInResult"] == "(11)交易成功！" and record["TradeName"] == "储值消费"
    assert len(record["Stance"]) == 8
    assert await world.balance(card) == (750, 0)


@pytest.mark.parametrize("soap_port", PORTS)
async def test_zeep_activate_change_password_bind_and_card_info(world: World, soap_port: str) -> None:
    card = await world.new_card(state="inactive", password=None)
    common = {"LICENSEKEY": world.license_key, "CARDNO": card, "COPNO": world.merchant_code}
    activated = await zcall(world, soap_port, "soapActivateCard", **common, CARDPWD="123456",
                            POSCODE=world.terminal)
    assert activated.licenseCode == 0 and zeep_records(activated) == [{"Result": "11", "CardNo": card}]
    changed = await zcall(world, soap_port, "soapChangeCardPwd", **common, OLD_PWD="123456", NEW_PWD="654321",
                          POSCODE=world.terminal)
    assert zeep_records(changed)[0]["PayInForm"] == "11"
    queried = await zcall(world, soap_port, "soapCardTrade", LICENSEKEY=world.license_key, TRADETYPE="0011",
                          TRADEMODE="0", CARDNO=card, CARDPWD="654321", POSCODE=world.terminal)
    assert zeep_records(queried)[0]["PayInForm"] == "11"  # the new password works
    mobile = f"139{world.merchant_code}4321"
    bound = await zcall(world, soap_port, "soapBindCard", **common, CARDPWD="654321", IDNUM=mobile, TRADEMODE="1",
                        POSCODE=world.terminal)
    assert zeep_records(bound) == [{"Result": "11", "CardNo": card, "CopNo": world.merchant_code, "IDNum": mobile,
                                    "TmnNo": world.terminal}]
    info = await zcall(world, soap_port, "soapCardInfo", **common, USR_EN_NAME="ceraki", USR_CH_NAME="<张三>")
    [record] = zeep_records(info)
    assert (record["CardNo"], record["UsrEnName"], record["UsrChName"]) == (card, "ceraki", "<张三>")
    assert record["UsrBirthday"] == "0000-00-00"


@pytest.mark.parametrize("soap_port", PORTS)
async def test_zeep_trade_stance_gives_one_record_per_trade_a_refusal_record_or_none(world: World,
                                                                                     soap_port: str) -> None:
    card = await world.new_card(balance=5000)
    stances = []
    for amount in ("1234", "100"):
        done = await zcall(world, soap_port, "soapCardTrade", LICENSEKEY=world.license_key, TRADETYPE="0022",
                           TRADEMODE="1", CARDNO=card, CARDPWD=PASSWORD_MD5, POSCODE=world.terminal, AMOUNT=amount)
        stances.append(zeep_records(done)[0]["Stance"])
    query = {"LICENSEKEY": world.license_key, "TRADETYPE": "0012", "TRADEMODE": "0", "COPNO": world.merchant_code,
             "START": "0", "END": "0", "POSCODE": "0"}
    found = await zcall(world, soap_port, "soapTradeStance", **query, CARDNO=card, STANCE_NO="0")
    records = zeep_records(found)
    assert found.licenseCode == 0 and [r["stanceNo"] for r in records] == stances[::-1]  # newest first
    assert [r["Amount"] for r in records] == ["1.00", "12.34"] and records[1]["TmnNo"] == world.terminal
    missing = await zcall(world, soap_port, "soapTradeStance", **query, CARDNO="", STANCE_NO="99999990")
    assert [r["Result"] for r in zeep_records(missing)] == ["61"]
    empty = await zcall(world, soap_port, "soapTradeStance", **{**query, "START": "2001-01-01 00:00:00",
                                                               "END": "2001-12-31 00:00:00"}, CARDNO=card,
                        STANCE_NO="0")
    assert empty.licenseCode == 0 and empty.record == []


@pytest.mark.parametrize("soap_port", PORTS)
async def test_zeep_bad_license_key_returns_its_code_and_no_records(world: World, soap_port: str) -> None:
    card = await world.new_card(balance=300)
    result = await zcall(world, soap_port, "soapCardTrade", LICENSEKEY="no-such-key-anywhere", TRADETYPE="0022",
                         TRADEMODE="1", CARDNO=card, CARDPWD=PASSWORD_MD5, POSCODE=world.terminal, AMOUNT="100")
    assert result.licenseCode == 1 and result.record == []
    assert await world.balance(card) == (300, 0)


@pytest.mark.parametrize("soap_port", PORTS)
async def test_reqid_and_lang_elements_reach_the_card_service(world: World, soap_port: str) -> None:
    card = await world.new_card(balance=1000)
    args = {"LICENSEKEY": world.license_key, "TRADETYPE": "0022", "TRADEMODE": "1", "CARDNO": card,
            "CARDPWD": PASSWORD_MD5, "POSCODE": world.terminal, "AMOUNT": "200", "REQID": f"doc-{card}"}
    first = zeep_records(await zcall(world, soap_port, "soapCardTrade", **args, LANG="EN"))[0]
    again = zeep_records(await zcall(world, soap_port, "soapCardTrade", **args, LANG="EN"))[0]
    assert first["PayInForm"] == "11" and again["Stance"] == first["Stance"]  # the retry got the first answer
    assert "交易成功" not in first["PayInResult"]  # LANG other than GB2312: not Chinese
    assert await world.balance(card) == (800, 0)  # moved once


# --- hand-written envelopes ----------------------------------------------------------------------


def doc_envelope(version: str, operation: str, children: str) -> str:
    env = SOAP11 if version == "1.1" else SOAP12
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope xmlns:s="{env}" xmlns:d="{DOC}"><s:Body>'
            f"<d:{operation}>{children}</d:{operation}></s:Body></s:Envelope>")


def elements(prefix: str = "d:", **values: str) -> str:
    return "".join(f"<{prefix}{k}>{v}</{prefix}{k}>" for k, v in values.items())


CONTENT_TYPES = {"1.1": "text/xml; charset=utf-8",
                 "1.2": 'application/soap+xml; charset=utf-8; action="urn:KaKaTong:doc#soapCardTrade"'}


async def post(world: World, body: str | bytes, version: str = "1.1", path: str = "/s/soap") -> tuple[int, str, str]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    async with aiohttp.ClientSession() as session, session.post(
        f"{world.base}{path}", data=data, headers={"Content-Type": CONTENT_TYPES[version]}
    ) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


async def get_text(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


SAFE = etree.XMLParser(resolve_entities=False, no_network=True)


def compile_schema(wsdl_text: bytes) -> etree.XMLSchema:
    """The XSD of a WSDL's <types>, compiled by lxml (serialized first: lxml then writes the
    prefixes the schema inherits from <definitions>, which its QName attributes use)."""
    schema = etree.fromstring(wsdl_text, SAFE).find(f"{{{WSDL}}}types/{{{XSD}}}schema")
    return etree.XMLSchema(etree.fromstring(etree.tostring(schema), SAFE))


@functools.cache
def wsdl_schema() -> etree.XMLSchema:
    return compile_schema(kkt_soap_doc.wsdl())


def reply_element(body: str, version: str) -> etree._Element:
    """The Body's one element of a reply, after checking it is valid against the WSDL's schema."""
    env = SOAP11 if version == "1.1" else SOAP12
    root = etree.fromstring(body.encode("utf-8"), SAFE)
    assert root.tag == f"{{{env}}}Envelope"
    [element] = root.find(f"{{{env}}}Body")
    schema = wsdl_schema()
    assert schema.validate(element), schema.error_log
    return element


def reply_records(element: etree._Element) -> tuple[int, list[dict[str, str]]]:
    code = int(element.findtext(f"{{{DOC}}}licenseCode"))
    records = [{f.findtext(f"{{{DOC}}}key"): f.findtext(f"{{{DOC}}}value") or ""
                for f in r.findall(f"{{{DOC}}}field")} for r in element.findall(f"{{{DOC}}}record")]
    return code, records


@pytest.mark.parametrize("qualified", [True, False], ids=["qualified", "unqualified"])
@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_raw_envelope_with_qualified_or_unqualified_children_gets_a_schema_valid_reply(
        world: World, version: str, qualified: bool) -> None:
    card = await world.new_card(balance=4321)
    children = elements("d:" if qualified else "", LICENSEKEY=world.license_key, TRADETYPE="0011", TRADEMODE="0",
                        CARDNO=card, CARDPWD="111111", POSCODE=world.terminal)
    status, ctype, body = await post(world, doc_envelope(version, "soapCardTrade", children), version)
    assert status == 200, body
    assert ctype.startswith("text/xml" if version == "1.1" else "application/soap+xml")
    element = reply_element(body, version)
    assert element.tag == f"{{{DOC}}}soapCardTradeResponse"
    code, records = reply_records(element)
    assert code == 0 and len(records) == 1 and list(records[0]) == TRADE_KEYS
    assert (records[0]["PayInForm"], records[0]["Integral"], records[0]["TradeName"]) == ("11", "4321", "储值查询")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_raw_bad_key_reply_is_schema_valid_with_the_code_and_no_record(world: World, version: str) -> None:
    children = elements(LICENSEKEY="nope", TRADETYPE="0011", TRADEMODE="0", CARDNO="1680000000000000")
    status, _, body = await post(world, doc_envelope(version, "soapCardTrade", children), version)
    assert status == 200
    assert reply_records(reply_element(body, version)) == (1, [])


async def test_raw_trade_stance_reply_with_several_records_is_schema_valid(world: World) -> None:
    card = await world.new_card(balance=900)
    for amount in ("100", "200", "300"):
        assert (await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT=amount))["PayInForm"] == "11"
    children = elements(LICENSEKEY=world.license_key, TRADETYPE="0012", TRADEMODE="0", COPNO=world.merchant_code,
                        START="0", END="0", POSCODE="0", CARDNO=card, STANCE_NO="0", LANG="GB2312")
    status, _, body = await post(world, doc_envelope("1.1", "soapTradeStance", children))
    assert status == 200
    code, records = reply_records(reply_element(body, "1.1"))
    assert code == 0 and [r["Amount"] for r in records] == ["3.00", "2.00", "1.00"]


# --- hostile input -------------------------------------------------------------------------------


def _consume(world: World, card: str, prefix: str = "d:") -> str:
    return elements(prefix, LICENSEKEY=world.license_key, TRADETYPE="0022", TRADEMODE="1", CARDNO=card,
                    CARDPWD=PASSWORD_MD5, POSCODE=world.terminal, AMOUNT="100")


def _with_dtd(version: str, doctype: str, payload: str) -> str:
    env = SOAP11 if version == "1.1" else SOAP12
    return (f'<?xml version="1.0"?>\n{doctype}\n<s:Envelope xmlns:s="{env}" xmlns:d="{DOC}"><s:Body>'
            f"<d:soapCardTrade><d:LICENSEKEY>{payload}</d:LICENSEKEY></d:soapCardTrade></s:Body></s:Envelope>")


BOMB_DTD = """<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>"""

HOSTILE: dict[str, Any] = {
    "xml_bomb": lambda w, c, v: _with_dtd(v, BOMB_DTD, "&lol3;"),
    "external_entity": lambda w, c, v: _with_dtd(v, '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
                                                 "&xxe;"),
    "external_dtd": lambda w, c, v: _with_dtd(v, '<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd">', "x"),
    "not_xml": lambda w, c, v: "this is not xml",
    "truncated": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c))[:250],
    "not_soap": lambda w, c, v: f'<d:soapCardTrade xmlns:d="{DOC}">{_consume(w, c)}</d:soapCardTrade>',
    "empty_body": lambda w, c, v: doc_envelope(v, "soapCardTrade", "").replace(
        '<d:soapCardTrade></d:soapCardTrade>', ""),
    "two_operations": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c)).replace(
        "</s:Body>", f"<d:soapCardTrade>{_consume(w, c)}</d:soapCardTrade></s:Body>"),
    "unknown_operation": lambda w, c, v: doc_envelope(v, "dropTables", _consume(w, c)),
    "rpc_alias": lambda w, c, v: doc_envelope(v, "soapCTRequest", _consume(w, c)),
    "response_element_as_request": lambda w, c, v: doc_envelope(v, "soapCardTradeResponse", ""),
    "rpc_namespace_wrapper": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c, "")).replace(
        f'xmlns:d="{DOC}"', 'xmlns:d="urn:KaKaTong"'),
    "unqualified_wrapper": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c, "")).replace(
        "d:soapCardTrade", "soapCardTrade"),
    "unknown_element": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c) + "<d:EVIL>1</d:EVIL>"),
    "element_of_another_operation": lambda w, c, v: doc_envelope(
        v, "soapCardTrade", _consume(w, c) + "<d:NEW_PWD>1</d:NEW_PWD>"),
    "foreign_namespace_element": lambda w, c, v: doc_envelope(
        v, "soapCardTrade", _consume(w, c).replace("<d:AMOUNT>100</d:AMOUNT>",
                                                   '<x:AMOUNT xmlns:x="urn:evil">100</x:AMOUNT>')),
    "positional_params": lambda w, c, v: doc_envelope(v, "soapCardTrade", "".join(
        f"<param{i}>{val}</param{i}>" for i, val in enumerate(
            [w.license_key, "0022", "1", c, PASSWORD_MD5, w.terminal, "100"]))),
    "duplicate_element": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c) + "<d:AMOUNT>1</d:AMOUNT>"),
    "nested_element": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c).replace(
        "<d:AMOUNT>100</d:AMOUNT>", "<d:AMOUNT><d:x>100</d:x></d:AMOUNT>")),
    "too_many_elements": lambda w, c, v: doc_envelope(v, "soapCardTrade", _consume(w, c) + "<d:LANG>x</d:LANG>" * 40),
}


async def _trade_count(pool: Any) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM kkt_trades"))


def assert_fault(version: str, status: int, ctype: str, text: str) -> None:
    root = ElementTree.fromstring(text.encode("utf-8"))
    if version == "1.1":
        assert status == 500 and ctype.startswith("text/xml"), (status, ctype, text)
        assert root.findtext(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault/faultcode") == "SOAP-ENV:Client", text
    else:
        assert status == 400 and ctype.startswith("application/soap+xml"), (status, ctype, text)
        code = root.findtext(f"{{{SOAP12}}}Body/{{{SOAP12}}}Fault/{{{SOAP12}}}Code/{{{SOAP12}}}Value")
        assert code == "env:Sender", text
    assert "root:" not in text and "lollol" not in text


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_input_gets_a_client_or_sender_fault_and_changes_nothing(world: World, pool: Any, name: str,
                                                                               version: str) -> None:
    card = await world.new_card(balance=500)
    before = await _trade_count(pool)
    status, ctype, text = await post(world, HOSTILE[name](world, card, version), version)
    assert_fault(version, status, ctype, text)
    assert await world.balance(card) == (500, 0)
    assert await _trade_count(pool) == before


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i:i + 65536]


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_oversize_body_gets_a_fault_and_changes_nothing(world: World, pool: Any, platform: Any,
                                                              version: str, chunked: bool) -> None:
    card = await world.new_card(balance=500)
    before = await _trade_count(pool)
    padding = "<d:LANG>" + "A" * (platform.ctx.settings.http_max_body_bytes + 10) + "</d:LANG>"
    data = doc_envelope(version, "soapCardTrade", _consume(world, card) + padding).encode("utf-8")
    async with aiohttp.ClientSession() as session, session.post(
        f"{world.base}/s/soap", data=_chunks(data) if chunked else data,
        headers={"Content-Type": CONTENT_TYPES[version]},
    ) as resp:
        status, ctype, text = resp.status, resp.headers["Content-Type"], await resp.text()
    assert_fault(version, status, ctype, text)
    assert "request too large" in text
    assert await world.balance(card) == (500, 0)
    assert await _trade_count(pool) == before


# --- the WSDL ------------------------------------------------------------------------------------


async def test_wsdl_is_well_formed_document_literal_and_its_location_ignores_the_host_header(
    world: World, platform: Any
) -> None:
    forged = {"Host": "attacker.example.test:8443"}
    _, ctype, a = await get_text(f"{world.base}/s/soap?wsdl", forged)
    _, _, b = await get_text(f"{world.base}/s/soap.wsdl", forged)
    _, _, c = await get_text(f"{world.base}/s/soap?WSDL")
    assert ctype.startswith("text/xml") and a == b == c
    root = ElementTree.fromstring(a.encode("utf-8"))  # well-formed
    assert root.tag == f"{{{WSDL}}}definitions" and root.get("targetNamespace") == DOC
    locations = [el.get("location") for el in root.iter() if el.tag.endswith("}address")]
    assert locations == [f"http://127.0.0.1:{world.http_port}/s/soap"] * 2  # the socket it reached
    with settings_changed(platform, http_public_base_url="https://pay.example.com/kkt"):
        _, _, public = await get_text(f"{world.base}/s/soap?wsdl", forged)
    assert a.replace(f"http://127.0.0.1:{world.http_port}", "https://pay.example.com/kkt") == public
    schema = root.find(f"{{{WSDL}}}types/{{{XSD}}}schema")
    assert schema is not None and schema.get("elementFormDefault") == "qualified"
    compile_schema(a.encode("utf-8"))  # a valid XSD (else XMLSchemaParseError)
    bindings = root.findall(f"{{{WSDL}}}binding")
    assert [b.get("name") for b in bindings] == ["KaKaTongDocBinding", "KaKaTongDocSoap12Binding"]
    styles = {el.get("style") for el in root.iter() if el.tag.rsplit("}", 1)[-1] in ("binding", "operation")
              and el.get("style") is not None}
    uses = {el.get("use") for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "body"}
    assert styles == {"document"} and uses == {"literal"}
    service = root.find(f"{{{WSDL}}}service")
    assert service is not None and service.get("name") == "KaKaTongDocService"
    assert [p.get("name") for p in service] == ["KaKaTongDocPort", "KaKaTongDocSoap12Port"]
    declared = {el.get("name") for el in schema.findall(f"{{{XSD}}}element")}
    assert declared == set(kkt_soap.OPERATIONS) | {f"{op}Response" for op in kkt_soap.OPERATIONS}


async def test_get_without_wsdl_is_method_not_allowed(world: World) -> None:
    status, _, _ = await get_text(f"{world.base}/s/soap")
    assert status == 405


# --- metrics and the rpc gateway -----------------------------------------------------------------


async def _kkt_trades_metric(world: World, method: str, code: str) -> float:
    _, _, text = await get_text(f"{world.base}/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "recharge_kkt_trades_total" and sample.labels == {"method": method, "code": code}:
                return float(sample.value)
    return 0.0


async def test_faults_refused_keys_and_trades_are_counted_like_the_rpc_gateway(world: World) -> None:
    card = await world.new_card(balance=500)
    faults = await _kkt_trades_metric(world, "soap", "fault")
    refused = await _kkt_trades_metric(world, "soapCardTrade", "license_1")
    done = await _kkt_trades_metric(world, "cTRequest", "11")
    await post(world, "garbage")
    await post(world, doc_envelope("1.1", "soapCardTrade", elements(LICENSEKEY="nope")))
    await post(world, doc_envelope("1.1", "soapCardTrade", _consume(world, card)))
    assert await _kkt_trades_metric(world, "soap", "fault") == faults + 1
    assert await _kkt_trades_metric(world, "soapCardTrade", "license_1") == refused + 1
    assert await _kkt_trades_metric(world, "cTRequest", "11") == done + 1


async def test_rpc_gateway_wsdl_and_replies_are_unaffected(world: World) -> None:
    _, _, served = await get_text(f"{world.base}/s/sp.wsdl")
    assert served == kkt_soap.wsdl(f"http://127.0.0.1:{world.http_port}/s/sp.php")
    assert (ROOT / "http_api" / "kkt.wsdl").read_text(encoding="utf-8") == kkt_soap.wsdl()
    assert DOC not in served and 'style="document"' not in served
    card = await world.new_card(balance=250)
    args = "".join(f'<{p} xsi:type="xsd:string">{v}</{p}>' for p, v in zip(
        kkt_soap.OPERATIONS["soapCardTrade"].parts,
        [world.license_key, "0011", "0", card, "111111", world.terminal], strict=False))
    rpc = (f'<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP11}" '
           'xmlns:ns1="urn:KaKaTong" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><SOAP-ENV:Body>'
           f"<ns1:soapCardTrade>{args}</ns1:soapCardTrade></SOAP-ENV:Body></SOAP-ENV:Envelope>")
    status, _, body = await post(world, rpc, path="/s/sp.php")
    assert status == 200 and '<return xsi:type="ns2:Map">' in body and "licenseCode" not in body
    ret = next(el for el in ElementTree.fromstring(body.encode("utf-8")).iter() if el.tag == "return")
    items = {str(i.findtext("key")): i.findtext("value") or "" for i in ret.findall("item")}
    assert list(items) == TRADE_KEYS and (items["PayInForm"], items["Integral"]) == ("11", "250")
    assert body == kkt_soap.envelope(SOAP11, "soapCardTrade", list(items.items()))  # the rpc envelope, as before
    status, ctype, text = await post(world, rpc)  # the rpc envelope at the doc port: its namespace is not ours
    assert_fault("1.1", status, ctype, text)

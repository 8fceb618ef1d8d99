"""KaKaTong SOAP (SPEC 3.2): zeep against the WSDL over SOAP 1.1 and 1.2, raw rpc/encoded
envelopes as PHP's SoapClient sends them (with and without a WSDL), the seed's own PHP
example run by PHP, and hostile XML (bombs, external entities, oversize, garbage)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from defusedxml import ElementTree

from http_api import kkt_soap
from recharge.kkt import cards
from tests.kkt_world import PASSWORD_MD5, World

ROOT = Path(__file__).resolve().parent.parent


def zeep_items_to_dict(value: Any) -> dict[str, str]:
    """zeep hands back the Map's <item> elements: turn them into a dict."""
    result = {}
    for item in value:
        key = item.find("key")
        val = item.find("value")
        result[key.text] = (val.text or "") if val is not None else ""
    return result


def _zeep_call(port: int, soap_port: str, operation: str, *args: str) -> Any:
    import zeep
    from zeep.transports import Transport

    client = zeep.Client(f"http://127.0.0.1:{port}/s/sp.wsdl", transport=Transport(timeout=10))
    service = client.bind("KaKaTongService", soap_port)
    return getattr(service, operation)(*args)


@pytest.mark.parametrize("soap_port", ["KaKaTongPort", "KaKaTongSoap12Port"])
async def test_zeep_card_trade_over_soap_1_1_and_1_2(world: World, soap_port: str, audited: None) -> None:
    card = await world.new_card(balance=900)
    args = (world.license_key, "0022", "1", card, PASSWORD_MD5, world.terminal, "150", "", "")
    value = await asyncio.to_thread(_zeep_call, world.http_port, soap_port, "soapCardTrade", *args)
    reply = zeep_items_to_dict(value)
    assert reply["PayInForm"] == "11" and reply["Integral"] == "750"
    assert reply["PayInResult"] == "(11)交易成功！" and reply["TradeName"] == "储值消费"
    assert len(reply["Stance"]) == 8
    assert await world.balance(card) == (750, 0)


@pytest.mark.parametrize("soap_port", ["KaKaTongPort", "KaKaTongSoap12Port"])
async def test_zeep_bad_license_key_is_a_bare_int(world: World, soap_port: str) -> None:
    args = ("no-such-key-anywhere", "0011", "0", "1680000000000000", "111111", world.terminal, "", "", "")
    value = await asyncio.to_thread(_zeep_call, world.http_port, soap_port, "soapCardTrade", *args)
    assert value == 1


@pytest.mark.parametrize("soap_port", ["KaKaTongPort", "KaKaTongSoap12Port"])
async def test_zeep_other_operations(world: World, soap_port: str) -> None:
    card = await world.new_card(state="inactive", password=None)
    activated = await asyncio.to_thread(_zeep_call, world.http_port, soap_port, "soapActivateCard",
                                        world.license_key, card, "123456", world.merchant_code, world.terminal)
    assert zeep_items_to_dict(activated) == {"Result": "11", "CardNo": card}
    changed = await asyncio.to_thread(_zeep_call, world.http_port, soap_port, "soapChangeCardPwd",
                                      world.license_key, card, "123456", "654321", world.merchant_code, world.terminal)
    assert zeep_items_to_dict(changed)["PayInForm"] == "11"


SOAP11_REQUEST = """<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="urn:KaKaTong" \
xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/" \
SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><SOAP-ENV:Body><ns1:soapCardTrade>{args}\
</ns1:soapCardTrade></SOAP-ENV:Body></SOAP-ENV:Envelope>"""

SOAP12_REQUEST = """<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:ns1="urn:KaKaTong" \
xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:enc="http://www.w3.org/2003/05/soap-encoding"><env:Body><ns1:soapCardTrade \
env:encodingStyle="http://www.w3.org/2003/05/soap-encoding">{args}</ns1:soapCardTrade></env:Body></env:Envelope>"""


def php_args(values: list[str | None], *, named: bool) -> str:
    """Arguments as SoapClient writes them: part names with a WSDL, param0… without; null as xsi:nil."""
    parts = kkt_soap.OPERATIONS["soapCardTrade"].parts
    out = []
    for i, value in enumerate(values):
        tag = parts[i] if named else f"param{i}"
        if value is None:
            out.append(f'<{tag} xsi:nil="true"/>')
        else:
            out.append(f'<{tag} xsi:type="xsd:string">{value}</{tag}>')
    return "".join(out)


async def post(world: World, body: str, content_type: str = "text/xml; charset=utf-8") -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{world.base}/s/sp.php", data=body.encode("utf-8"), headers={"Content-Type": content_type}
    ) as resp:
        return resp.status, resp.headers["Content-Type"], await resp.text()


def returned(body: str) -> tuple[str | None, dict[str, str]]:
    """(xsi:type of <return>, its Map as a dict) from a response envelope."""
    root = ElementTree.fromstring(body.encode("utf-8"))
    ret = next(el for el in root.iter() if el.tag == "return")
    xsi_type = ret.get("{http://www.w3.org/2001/XMLSchema-instance}type")
    items = {i.find("key").text: (i.find("value").text or "") for i in ret.findall("item")}
    return xsi_type, items or {"": ret.text or ""}


@pytest.mark.parametrize("named", [True, False], ids=["with_wsdl", "without_wsdl"])
@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_raw_rpc_encoded_envelopes_as_php_sends(world: World, named: bool, version: str) -> None:
    card = await world.new_card(balance=4321)
    args = php_args([world.license_key, "0011", "0", card, "111111", world.terminal, None, None, None], named=named)
    if version == "1.1":
        status, ctype, body = await post(world, SOAP11_REQUEST.format(args=args))
        assert ctype.startswith("text/xml")
        assert 'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"' in body
    else:
        status, ctype, body = await post(world, SOAP12_REQUEST.format(args=args),
                                         'application/soap+xml; charset=utf-8; action="urn:KaKaTong#soapCardTrade"')
        assert ctype.startswith("application/soap+xml")
    assert status == 200
    xsi_type, reply = returned(body)
    assert xsi_type == "ns2:Map" and 'xmlns:ns2="http://xml.apache.org/xml-soap"' in body
    assert list(reply) == ["PayInForm", "PayInResult", "Stance", "Integral", "Points", "CardNo", "TradeName"]
    assert (reply["PayInForm"], reply["Integral"], reply["TradeName"]) == ("11", "4321", "储值查询")


async def test_raw_bad_key_returns_xsd_int(world: World) -> None:
    args = php_args([" M1g0VTFaNldhFTdYNVtm", "0011", "0", "1680107200000232", "111111", "10722001", None, None,
                     None], named=True)
    status, _, body = await post(world, SOAP11_REQUEST.format(args=args))
    assert status == 200
    assert returned(body) == ("xsd:int", {"": "1"})


async def test_wsdl_served_at_both_addresses_and_matches_the_shipped_file(world: World) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{world.base}/s/sp.php?wsdl") as resp:
            a = await resp.text()
        async with session.get(f"{world.base}/s/sp.wsdl") as resp:
            b = await resp.text()
    assert a == b
    assert f'location="http://127.0.0.1:{world.http_port}/s/sp.php"' in a
    assert 'style="rpc"' in a and 'use="encoded"' in a and 'type="xsd:anyType"' in a
    assert "soap12:binding" in a
    shipped = (ROOT / "http_api" / "kkt.wsdl").read_text(encoding="utf-8")
    assert shipped == kkt_soap.wsdl(), "regenerate: python -m http_api.kkt_soap > http_api/kkt.wsdl"


# --- hostile XML ---------------------------------------------------------------------------

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>
<soapCardTrade><LICENSEKEY>&lol3;</LICENSEKEY></soapCardTrade></SOAP-ENV:Body></SOAP-ENV:Envelope>"""

EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>
<soapCardTrade><LICENSEKEY>&xxe;</LICENSEKEY></soapCardTrade></SOAP-ENV:Body></SOAP-ENV:Envelope>"""

NETWORK = """<?xml version="1.0"?>
<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd">
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>
<soapCardTrade/></SOAP-ENV:Body></SOAP-ENV:Envelope>"""


@pytest.mark.parametrize(("name", "body"), [
    ("xml_bomb", BOMB),
    ("external_entity", EXTERNAL),
    ("external_dtd", NETWORK),
    ("not_xml", "this is not xml"),
    ("truncated", SOAP11_REQUEST[:200]),
    ("not_soap", "<a><b/></a>"),
    ("empty_body", '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">'
                   "<SOAP-ENV:Body/></SOAP-ENV:Envelope>"),
    ("unknown_operation", SOAP11_REQUEST.replace("soapCardTrade", "dropTables").format(args="")),
    ("too_many_arguments", SOAP11_REQUEST.format(args="<param0>x</param0>" * 40)),
    ("nested_argument", SOAP11_REQUEST.format(args="<LICENSEKEY><x>1</x></LICENSEKEY>")),
])
async def test_hostile_soap_bodies_get_a_fault_and_change_nothing(world: World, pool: Any, name: str,
                                                                   body: str) -> None:
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM kkt_trades")
    status, _, text = await post(world, body)
    assert status == 500 and "<faultcode>SOAP-ENV:Client</faultcode>" in text, text
    assert "root:" not in text and "lol" not in text
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM kkt_trades") == before


async def test_soap12_fault_is_a_sender_fault(world: World) -> None:
    status, ctype, text = await post(world, "garbage", "application/soap+xml; charset=utf-8")
    assert status == 400 and "env:Sender" in text and ctype.startswith("application/soap+xml")


async def test_oversized_soap_request_is_refused(world: World, platform: Any) -> None:
    big = SOAP11_REQUEST.format(args="<LICENSEKEY>" + "A" * (platform.ctx.settings.http_max_body_bytes + 10)
                                + "</LICENSEKEY>")
    status, _, _ = await post(world, big)
    assert status in (413, 500)


# --- the seed's PHP example, unchanged but for the host -----------------------------------

SEED_PHP = r"""<?php
$trade_code="0011";

$trade_mode="0";

$cd_no="1680107200000232"; //卡号码，须在系统中已存在

$cd_pwd="111111"; //卡密码

$tmn_no="10722001"; //操作终端号码

$trade_amount=""; //交易金额

$client = new SoapClient("http://HOST/s/sp.wsdl",


array('location' => "http://HOST/s/sp.php",



'encoding'=>'GB2312',



'soap_version' => SOAP_1_2,



'trace' => 1 )



);

$lickey=" M1g0VTFaNldhFTdYNVtm";

$res = $client->soapCardTrade($lickey,$trade_code,$trade_mode,$cd_no,$cd_pwd,$tmn_no, $trad_amount,$item_code,$stance_rev);

//返回变量详细参数请参考卡卡通SOAP网关接口规范

if (is_array($res)) {//交易成功返回数组变量


$payInForm = $res['PayInForm'];


if (strlen($payInForm)== 2 and is_numeric($payInForm)){



if ($payInForm == '11') {




echo $res['TradeName'].$res['Integral'];exit;



} else {




echo $res['PayInResult'];exit;



}


}

} else {


echo "授权码错误";//返回为数字时为授权码错误

}
?>
"""


def _php_has_soap() -> bool:
    php = shutil.which("php")
    if php is None:
        return False
    modules = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    return "soap" in modules.lower().split()


async def _seed_php_world(pool: Any, test_keys: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await cards.upsert_merchant(conn, "1072", "PHP example merchant", actor="test")
        await cards.upsert_terminal(conn, "10722001", "1072", "pos", actor="test")
        await cards.upsert_license_key(conn, "M1g0VTFaNldhFTdYNVtm", "1072", actor="test")
        merchant_id = await cards.merchant_id_of(conn, "1072")
        await conn.execute(
            "INSERT INTO cards (card_no, merchant_id, kind, state) VALUES ('1680107200000232', $1, 'both', 'active')"
            " ON CONFLICT DO NOTHING", merchant_id,
        )
        await cards.set_card_password(conn, "1680107200000232", "111111", cards.password_pepper(test_keys[0]), 10)


async def _run_php(script: str) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(
        subprocess.run, ["php", "-d", "display_errors=stderr", "-r", script.removeprefix("<?php").removesuffix("?>\n")],
        capture_output=True, timeout=60,
    )


async def test_seed_php_soap_example_runs_unchanged_but_for_the_host(platform: Any, pool: Any,
                                                                      test_keys: Any) -> None:
    # never skipped: the set-up (scripts/ensure_php_soap.sh, run by `make tools`) installs PHP
    assert _php_has_soap(), "php with the soap extension is missing: run sh scripts/ensure_php_soap.sh"
    await _seed_php_world(pool, test_keys)
    script = SEED_PHP.replace("HOST", f"127.0.0.1:{platform.http_port}")
    done = await _run_php(script)
    out = done.stdout.decode("gb2312")
    assert out == "储值查询0", (out, done.stderr.decode(errors="replace"))
    bad = await _run_php(script.replace(" M1g0VTFaNldhFTdYNVtm", "XXXXXXXXXXXXXXXXXXXX"))
    assert bad.stdout.decode("utf-8") == "授权码错误"  # a literal of the script, not converted

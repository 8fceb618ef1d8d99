"""SOAP faults counted by whose fault they are (issue 14 item 7), and the WSDL's service address
taken from the configuration, never from a forged ``Host`` header (item 9).

SOAP 1.1 answers a client's fault with HTTP 500 (its convention, kept on the wire), so the
5xx alert subtracts ``recharge_soap_faults_total{fault="client"}`` (promtool cases in
deploy/prometheus/alerts_test.yml); these tests check the counters the alert reads."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from http_api import kkt_soap
from tests.conftest import settings_changed

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
TRADE = ("<ns1:soapCardTrade xmlns:ns1='urn:KaKaTong'><LICENSEKEY>k</LICENSEKEY><TRADETYPE>0011</TRADETYPE>"
         "</ns1:soapCardTrade>")


def envelope(ns: str, body: str) -> str:
    return f"<?xml version='1.0'?><e:Envelope xmlns:e='{ns}'><e:Body>{body}</e:Body></e:Envelope>"


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def soap_post(port: int, path: str, body: str, content_type: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{port}{path}", data=body.encode(), headers={"Content-Type": content_type}
    ) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize(("path", "ns", "content_type", "status"), [
    ("/s/sp.php", SOAP11, "text/xml", "500"),
    ("/s/sp.php", SOAP12, "application/soap+xml", "400"),
    ("/s/soap", SOAP11, "text/xml", "500"),
])
async def test_a_malformed_request_is_a_client_fault_whatever_its_http_status(
    platform: Any, path: str, ns: str, content_type: str, status: str
) -> None:
    labels = {"route": path, "fault": "client", "status": status}
    before = counted("recharge_soap_faults_total", **labels)
    server_before = counted("recharge_soap_faults_total", route=path, fault="server", status="500")
    got, text = await soap_post(platform.http_port, path, envelope(ns, "<not-an-operation/>"), content_type)
    assert str(got) == status and ("Client" in text or "Sender" in text)
    assert counted("recharge_soap_faults_total", **labels) == before + 1
    assert counted("recharge_soap_faults_total", route=path, fault="server", status="500") == server_before


async def test_an_argument_holding_a_control_character_is_a_client_fault(platform: Any) -> None:
    before = counted("recharge_soap_faults_total", route="/s/sp.php", fault="client", status="500")
    # XML 1.0 refuses NUL and most C0 controls outright (a parse fault); a C1 control parses.
    trade = TRADE.replace("<TRADETYPE>0011", "<TRADETYPE>00&#x9b;11")
    got, text = await soap_post(platform.http_port, "/s/sp.php", envelope(SOAP11, trade), "text/xml")
    assert got == 500 and "<faultcode>SOAP-ENV:Client</faultcode>" in text and "control characters" in text
    assert counted("recharge_soap_faults_total", route="/s/sp.php", fault="client", status="500") == before + 1


async def test_an_unexpected_error_is_a_server_fault(platform: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object) -> object:
        raise RuntimeError("a defect")

    monkeypatch.setattr(kkt_soap, "_run", broken)
    labels = {"route": "/s/sp.php", "fault": "server", "status": "500"}
    before = counted("recharge_soap_faults_total", **labels)
    got, text = await soap_post(platform.http_port, "/s/sp.php", envelope(SOAP11, TRADE), "text/xml")
    assert got == 500 and "<faultcode>SOAP-ENV:Server</faultcode>" in text and "a defect" not in text
    assert counted("recharge_soap_faults_total", **labels) == before + 1


@pytest.mark.parametrize("path", ["/s/sp.php?wsdl", "/s/sp.wsdl", "/s/soap?wsdl", "/s/soap.wsdl"])
async def test_a_forged_host_header_does_not_move_the_wsdls_service_address(platform: Any, path: str) -> None:
    forged = {"Host": "attacker.example.test", "X-Forwarded-Host": "attacker.example.test"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{platform.http_port}{path}", headers=forged) as resp:
            served = await resp.text()
        with settings_changed(platform, http_public_base_url="https://pay.example.com"):
            async with http.get(f"http://127.0.0.1:{platform.http_port}{path}", headers=forged) as resp:
                public = await resp.text()
    assert "attacker" not in served and "attacker" not in public
    assert f'location="http://127.0.0.1:{platform.http_port}/s/' in served
    assert 'location="https://pay.example.com/s/' in public

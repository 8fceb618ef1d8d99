"""``GET /openapi.json``: one valid OpenAPI 3.1 document of every JSON and form endpoint.

Every route of the running application is in it except those left out on purpose (the SOAP
endpoint and its WSDL, the operator console's HTML, the documents themselves); each
operation's id is unique; real answers of the card service's REST gateway, the SMS hook and
the admin API match their operation's schema (the XML read as ``http_api.kkt_openapi`` says).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from http_api.kkt_openapi import trade_result
from tests.kkt_world import World, make_world

pytestmark = pytest.mark.usefixtures("audited")
LEFT_OUT = re.compile(r"^/console(/|$)|^/s/(soap|sp)|/openapi\.json$")  # SOAP (XML), the console (HTML)


@pytest.fixture
async def doc(platform: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{platform.http_port}/openapi.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        found: dict[str, Any] = await resp.json()
    return found


@pytest.fixture
async def world(pool: Any, platform: Any) -> AsyncIterator[World]:
    yield await make_world(pool, platform.ctx.keys, platform.http_port)


def _routes(platform: Any) -> set[tuple[str, str]]:
    app = platform.http.runner.app
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        if route.method in ("HEAD", "*") or not path or LEFT_OUT.search(path):
            continue
        found.add((route.method.lower(), path))
    return found


async def test_the_document_is_openapi_3_1_and_names_every_route(doc: dict[str, Any], platform: Any) -> None:
    validate_openapi(doc)
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    missing = _routes(platform) - documented
    assert not missing, f"routes with no operation in /openapi.json: {sorted(missing)}"
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for family in ("/APPLLogin", "/s/get", "/sms/inbound", "/admin/kkt/license-keys", "/mpay/v1/me/hf"):
        assert family in doc["paths"], family


def _schema(doc: dict[str, Any], path: str, method: str, status: int, media: str) -> dict[str, Any]:
    schema = doc["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
    return {**schema, "components": doc["components"]}


async def test_card_service_answers_match_the_document(doc: dict[str, Any], world: World) -> None:
    card = await world.new_card(balance=1000)
    cases = [
        ({"method": "cTRequest", "LICENSEKEY": world.license_key, "POSCODE": world.terminal, "CARDNO": card,
          "TRADETYPE": "0", "TRADEMODE": "1", "AMOUNT": "1.00", "CARDPWD": "111111", "REQID": "doc1"}, 200, "text/xml"),
        ({"method": "tSRequest", "LICENSEKEY": world.license_key, "CARDNO": card, "TRADETYPE": "0", "TRADEMODE": "1"},
         200, "text/xml"),
        ({"method": "cTRequest", "LICENSEKEY": "not-a-key"}, 200, "text/plain"),
        ({"method": "nosuch"}, 400, "text/xml"),
        ({"method": "cTRequest", "LICENSEKEY": world.license_key, "CARDNO": "1\x01"}, 400, "text/xml"),
    ]
    async with aiohttp.ClientSession() as http:
        for params, status, media in cases:
            async with http.get(f"{world.base}/s/get", params=params) as resp:
                body = await resp.read()
                assert (resp.status, resp.content_type) == (status, media), (params, body)
            value: Any = trade_result(body) if media == "text/xml" else body.decode()
            jsonschema.validate(value, _schema(doc, "/s/get", "get", status, media))


async def test_sms_hook_and_admin_answers_match_the_document(doc: dict[str, Any], platform: Any) -> None:
    base = f"http://127.0.0.1:{platform.http_port}"
    async with aiohttp.ClientSession() as http:
        for params, status in (({"secret": "test-sms-secret", "from": "13800000000", "text": "HELP"}, 200),
                               ({"secret": "test-sms-secret", "from": "x"}, 400), ({"from": "13800000000"}, 403)):
            async with http.get(f"{base}/sms/inbound", params=params) as resp:
                assert resp.status == status and resp.content_type == "text/plain"
                jsonschema.validate(await resp.text(), _schema(doc, "/sms/inbound", "get", status, "text/plain"))
        admin = {"Authorization": "Bearer test-admin-token"}
        for path, headers, body, status in (
            ("/admin/kkt/cards/1680000000000000", admin, None, 404),
            ("/admin/kkt/cards/1680000000000000", {}, None, 403),
        ):
            async with http.get(base + path, headers=headers, data=body) as resp:
                found = await resp.json()
                assert resp.status == status, found
                jsonschema.validate(found, _schema(doc, "/admin/kkt/cards/{card_no}", "get", resp.status,
                                                   "application/json"))

"""XML attacks on both SOAP ports, beyond the basic ones of test_kkt_soap: each is refused with a
SOAP fault, reads no file, changes nothing, and hundreds of them leave the process's memory flat.

Parameter-entity XXE, XInclude, an external DTD in UTF-16, a quadratic blow-up (one large entity
referenced many times), elements nested as deep as the body limit allows, a body of attributes
up to the limit, and a body over the limit sent chunked (no Content-Length to refuse it by).
The file they try to read holds a canary that must never come back.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from chaos.server import ROOT
from tests.kkt_world import World

PORTS = ("/s/sp.php", "/s/soap")
ENV = '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>'
END = "</SOAP-ENV:Body></SOAP-ENV:Envelope>"
LIMIT = 64 * 1024  # http_max_body_bytes of the test settings (the default)


@pytest.fixture(scope="module")
def canary() -> Iterator[tuple[Path, str]]:
    token = "CANARY" + secrets.token_hex(8)
    path = ROOT / "var" / f"xml-canary-{token}.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(token)
    try:
        yield path, token
    finally:
        path.unlink()


def attacks(canary: Path) -> dict[str, bytes]:
    big = "A" * 20_000
    deep = 7_000
    return {
        "parameter_entity_xxe": (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY % p SYSTEM "file://{canary}"> %p;]>'
                                 f"{ENV}<soapCardTrade><LICENSEKEY>x</LICENSEKEY></soapCardTrade>{END}").encode(),
        "xinclude": (f'{ENV}<soapCardTrade><LICENSEKEY><xi:include xmlns:xi="http://www.w3.org/2001/XInclude"'
                     f' href="file://{canary}" parse="text"/></LICENSEKEY></soapCardTrade>{END}').encode(),
        "utf16_external_dtd": (f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "file://{canary}">'
                               f"{ENV}<soapCardTrade/>{END}").encode("utf-16"),
        "quadratic_blowup": (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "{big}">]>{ENV}<soapCardTrade>'
                             f"<LICENSEKEY>{'&a;' * 5000}</LICENSEKEY></soapCardTrade>{END}").encode()[:LIMIT - 1],
        "deep_nesting": (ENV + "<soapCardTrade>" + "<a>" * deep + "</a>" * deep + "</soapCardTrade>" + END).encode(),
        "attribute_flood": (ENV.replace("<SOAP-ENV:Body>", "") [:-1] + "".join(
            f' a{i}="{i}"' for i in range(6_000)) + "><SOAP-ENV:Body><soapCardTrade/>" + END).encode()[:LIMIT - 1],
    }


async def _post(world: World, path: str, body: bytes, *, chunked: bool = False) -> tuple[int, str]:
    async def chunks() -> Any:
        for at in range(0, len(body), 8192):
            yield body[at:at + 8192]

    async with aiohttp.ClientSession() as session, session.post(
        f"{world.base}{path}", data=chunks() if chunked else body,
        headers={"Content-Type": "text/xml; charset=utf-8"},
    ) as resp:
        return resp.status, await resp.text(errors="replace")


async def _trades(pool: Any) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM kkt_trades"))


@pytest.mark.parametrize("port", PORTS)
async def test_each_xml_attack_gets_a_fault_reads_no_file_and_changes_nothing(
    world: World, pool: Any, canary: tuple[Path, str], port: str
) -> None:
    before = await _trades(pool)
    for name, body in attacks(canary[0]).items():
        status, text = await _post(world, port, body)
        assert status in (400, 500) and "Fault" in text, (name, status, text[:300])
        assert canary[1] not in text, name
    assert await _trades(pool) == before


@pytest.mark.parametrize("port", PORTS)
async def test_a_body_over_the_limit_sent_chunked_is_refused(world: World, port: str) -> None:
    body = (ENV + "<soapCardTrade><LICENSEKEY>" + "A" * (LIMIT * 4) + "</LICENSEKEY></soapCardTrade>" + END).encode()
    status, text = await _post(world, port, body, chunked=True)
    assert status in (400, 413, 500), status
    assert status == 413 or "request too large" in text, text[:300]


async def test_hundreds_of_attacks_leave_memory_flat(world: World, canary: tuple[Path, str]) -> None:
    bodies = list(attacks(canary[0]).values())
    process = psutil.Process()
    for body in bodies * 10:  # warm up: caches, pools, code paths
        await _post(world, PORTS[0], body)
    before = process.memory_info().rss
    for i in range(400):
        await _post(world, PORTS[i % 2], bodies[i % len(bodies)])
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 10, f"RSS grew by {grown:.1f} MB over 400 hostile bodies"

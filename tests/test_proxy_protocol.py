"""PROXY protocol v2 on the DD port and X-Forwarded-For on HTTP: believed from trusted proxies only.

The parser is tested sans-IO; then the real DD server is started twice — trusting loopback
(as it would trust HAProxy) and trusting nobody — and spoken to as HAProxy and as an
attacker would speak to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from core_ext import Frame, frame_encode
from http_api.forwarded import forwarded_client, real_client_middleware
from recharge.config import Settings
from recharge.network import is_trusted, parse_networks
from server import proxy_protocol
from server.proxy_protocol import ProxyHeaderError
from server.stages import NO_PKI
from tests.conftest import eventually, platform_of_its_own

DD01 = frame_encode(Frame(stage=0x01, user_id=b"11552001", pki=NO_PKI, info=b"", step=0))

# --- the header, sans-IO ----------------------------------------------------------------------


def test_an_ipv4_header_as_haproxy_sends_it_names_the_client() -> None:
    header = proxy_protocol.build(("203.0.113.7", 40001), ("10.0.0.5", 9000))
    assert len(header) == 16 + 12  # ENVIRONMENT.md: 16 bytes, then !4s4sHH
    parsed = proxy_protocol.parse(header + DD01)
    assert parsed == proxy_protocol.ProxyHeader(("203.0.113.7", 40001), len(header))


def test_an_ipv6_header_names_the_client() -> None:
    header = proxy_protocol.build(("2001:db8::7", 5), ("2001:db8::1", 9000))
    parsed = proxy_protocol.parse(header)
    assert parsed is not None and parsed.source == ("2001:db8::7", 5)


def test_a_local_header_keeps_the_peer_address() -> None:
    local = proxy_protocol.SIGNATURE + bytes([0x20, 0x00, 0, 0])
    assert proxy_protocol.parse(local) == proxy_protocol.ProxyHeader(None, 16)


def test_tlvs_after_the_addresses_are_skipped() -> None:
    header = bytearray(proxy_protocol.build(("192.0.2.1", 1), ("192.0.2.2", 2)))
    tlv = b"\x05\x00\x03abc"  # PP2_TYPE_UNIQUE_ID
    header[14:16] = (12 + len(tlv)).to_bytes(2, "big")
    parsed = proxy_protocol.parse(bytes(header) + tlv + DD01)
    assert parsed is not None and parsed.consumed == len(header) + len(tlv)


@pytest.mark.parametrize("cut", range(0, 28))
def test_a_header_cut_anywhere_asks_for_more(cut: int) -> None:
    header = proxy_protocol.build(("203.0.113.7", 40001), ("10.0.0.5", 9000))
    assert proxy_protocol.parse(header[:cut]) is None


@pytest.mark.parametrize(
    "bad",
    [
        DD01,  # a DD frame where the header should be
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",  # version 1 (text) is not accepted
        proxy_protocol.SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12),  # version 1 in a v2 header
        proxy_protocol.SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12),  # command 2
        proxy_protocol.SIGNATURE + bytes([0x21, 0x31, 0, 12]) + bytes(12),  # UNIX sockets
        proxy_protocol.SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4),  # block too short
        proxy_protocol.SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]),  # block over the limit
    ],
)
def test_anything_else_is_refused(bad: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        proxy_protocol.parse(bad)


@given(st.binary(max_size=64))
def test_random_bytes_are_refused_or_incomplete_never_a_crash(data: bytes) -> None:
    try:
        proxy_protocol.parse(data)
    except ProxyHeaderError:
        pass


def test_trusted_proxies_are_addresses_or_networks() -> None:
    nets = parse_networks("127.0.0.1, 10.1.0.0/16,::1")
    assert is_trusted("10.1.200.3", nets) and is_trusted("127.0.0.1", nets) and is_trusted("::1", nets)
    assert is_trusted("::ffff:127.0.0.1", nets)  # a dual-stack socket's view of IPv4 loopback
    assert not is_trusted("10.2.0.1", nets) and not is_trusted(None, nets) and not is_trusted("nonsense", nets)
    assert not is_trusted("127.0.0.1", parse_networks(""))


# --- the DD server ----------------------------------------------------------------------------


@pytest.fixture
async def trusting_platform(settings: Settings) -> AsyncIterator[Any]:
    """A platform of its own that trusts loopback as HAProxy."""
    async with platform_of_its_own(settings.replace(trusted_proxies="127.0.0.1")) as running:
        yield running


async def _exchange(port: int, *chunks: bytes) -> bytes:
    """Send the chunks (pausing between them), then read until the server answers or closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.02)
        return await asyncio.wait_for(reader.read(4096), 3.0)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def _peers(running: Any) -> list[str | None]:
    return [protocol.peer for protocol in running.dd.connections]


async def test_behind_a_trusted_proxy_the_terminal_is_served_and_known_by_its_real_address(
    trusting_platform: Any,
) -> None:
    header = proxy_protocol.build(("203.0.113.7", 40001), ("127.0.0.1", trusting_platform.dd_port))
    reader, writer = await asyncio.open_connection("127.0.0.1", trusting_platform.dd_port)
    try:
        writer.write(header[:10])  # the header may arrive in pieces
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(header[10:] + DD01[:5])
        await writer.drain()
        # known before the first frame is whole
        await eventually(lambda: "203.0.113.7" in _peers(trusting_platform), "the real address known")
        writer.write(DD01[5:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 3.0)
        assert answer[:2] == b"\xdd\x02"  # DD02 answers DD01
    finally:
        writer.close()


async def test_a_trusted_proxys_health_check_local_header_is_accepted(trusting_platform: Any) -> None:
    local = proxy_protocol.SIGNATURE + bytes([0x20, 0x00, 0, 0])
    answer = await _exchange(trusting_platform.dd_port, local + DD01)
    assert answer[:2] == b"\xdd\x02"


async def test_a_trusted_peer_without_a_header_is_refused(trusting_platform: Any) -> None:
    """Behind HAProxy every connection carries the header; a bare frame is someone else."""
    assert await _exchange(trusting_platform.dd_port, DD01) == b""


async def test_a_proxy_header_from_an_untrusted_peer_is_refused(platform: Any) -> None:
    """The shared platform trusts nobody: an attacker cannot claim another address."""
    from recharge import metrics

    before = metrics.DD_PROTOCOL_ERRORS.labels("proxy_untrusted")._value.get()
    header = proxy_protocol.build(("10.9.8.7", 1234), ("127.0.0.1", platform.dd_port))
    assert await _exchange(platform.dd_port, header + DD01) == b""
    assert metrics.DD_PROTOCOL_ERRORS.labels("proxy_untrusted")._value.get() == before + 1
    assert "10.9.8.7" not in _peers(platform)


async def test_without_a_proxy_the_peer_is_the_tcp_source(platform: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.dd_port)
    try:
        writer.write(DD01[:5])
        await writer.drain()
        await eventually(lambda: "127.0.0.1" in _peers(platform), "the TCP source known")
        writer.write(DD01[5:])
        assert (await asyncio.wait_for(reader.read(4096), 3.0))[:2] == b"\xdd\x02"
    finally:
        writer.close()


# --- HTTP: X-Forwarded-For --------------------------------------------------------------------


async def _echo_remote(request: web.Request) -> web.Response:
    return web.Response(text=request.remote or "")


@pytest.fixture
async def http_echo() -> AsyncIterator[Any]:
    """Two tiny apps behind the middleware: one trusting loopback, one trusting nobody."""
    runners = []
    ports = {}
    for name, trusted in (("trusting", "127.0.0.1"), ("distrusting", "")):
        app = web.Application(middlewares=[real_client_middleware(parse_networks(trusted))])
        app.router.add_get("/", _echo_remote)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports[name] = runner.addresses[0][1]
        runners.append(runner)
    try:
        yield ports
    finally:
        for runner in runners:
            await runner.cleanup()


async def _remote_seen(port: int, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/", headers=headers) as r:
        return r.status, await r.text()


async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(http_echo: Any) -> None:
    spoofed = {"X-Forwarded-For": "1.2.3.4, 198.51.100.9"}  # the client wrote 1.2.3.4; HAProxy saw .9
    assert await _remote_seen(http_echo["trusting"], spoofed) == (200, "198.51.100.9")
    assert await _remote_seen(http_echo["distrusting"], spoofed) == (200, "127.0.0.1")
    assert await _remote_seen(http_echo["trusting"], {}) == (200, "127.0.0.1")
    assert (await _remote_seen(http_echo["trusting"], {"X-Forwarded-For": "evil"}))[0] == 400


def test_the_platforms_app_reads_x_forwarded_for_only_when_a_proxy_is_trusted(settings: Any, test_keys: Any) -> None:
    from http_api.app import build_app
    from recharge.context import Platform

    def forwarding(trusted: str) -> bool:  # with no trusted proxy the middleware would pass every request on
        ctx = Platform(settings=settings.replace(trusted_proxies=trusted), pool=None, keys=test_keys[0])
        return any(getattr(m, "__name__", "") == "real_client" for m in build_app(ctx).middlewares)

    assert forwarding("127.0.0.1") and not forwarding("")


def test_only_the_right_most_forwarded_entry_counts() -> None:
    assert forwarded_client("10.0.0.1,  203.0.113.5 ") == "203.0.113.5"
    assert forwarded_client("203.0.113.5, unknown") is None
    assert forwarded_client("") is None

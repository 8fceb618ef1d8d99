"""The HTTP listener under a slowloris and a connection flood (issue 14 item 4), against a
platform of this module's own with small limits so each attack takes a second or two: 8
connections, headers due in 0.5 s, bodies in 1.5 s, keep-alive 2.5 s. And the descriptor
budget DD and HTTP share: one listener's flood cannot take the other's connections."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from recharge.config import Settings

LIMITS = {"http_max_connections": 8, "http_header_timeout_s": 0.5, "http_body_timeout_s": 1.5,
          "http_keepalive_timeout_s": 2.5, "pool_min_size": 1, "pool_max_size": 4}
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def start(settings: Settings) -> Any:
    from app.runtime import RunningPlatform

    running = RunningPlatform(settings, settings.database_url or "")
    await running.start()
    return running


@pytest.fixture(scope="module")
async def guarded(settings: Settings) -> AsyncIterator[Any]:
    running = await start(settings.replace(**LIMITS))
    try:
        yield running
    finally:
        await running.stop()


def closed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("recharge_http_connections_closed_total", {"reason": reason}) or 0.0


async def connect(port: int) -> Conn:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(conn: Conn, timeout_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it does not)."""
    return await asyncio.wait_for(conn[0].read(), timeout=timeout_s)


async def healthz(port: int) -> bytes:
    conn = await connect(port)
    conn[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return await until_closed(conn)


def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


async def test_a_slowloris_is_answered_408_and_closed_once_its_headers_are_late(guarded: Any) -> None:
    before = closed_count("header_timeout")
    conns = [await connect(guarded.http_port) for _ in range(6)]
    for _, writer in conns:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def dribble(writer: asyncio.StreamWriter) -> None:
        for _ in range(30):  # a header byte every 0.1 s, never the blank line that ends them
            await asyncio.sleep(0.1)
            if writer.is_closing():
                return
            writer.write(b"X")

    dribblers = [asyncio.create_task(dribble(w)) for _, w in conns]
    try:
        answers = await asyncio.gather(*(until_closed(c) for c in conns))
    finally:
        for task in dribblers:
            task.cancel()
        close_all(conns)
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    assert closed_count("header_timeout") >= before + 6


async def test_a_connection_that_never_sends_is_closed_by_the_header_timeout(guarded: Any) -> None:
    conn = await connect(guarded.http_port)
    try:
        assert (await until_closed(conn)).startswith(b"HTTP/1.1 408")
    finally:
        close_all([conn])


async def test_a_flood_of_connections_is_capped_and_a_real_client_still_gets_in(guarded: Any) -> None:
    before = closed_count("evicted")
    flood = [await connect(guarded.http_port) for _ in range(40)]
    try:
        for _, writer in flood:  # half-sent requests
            writer.write(b"GET /healthz HTTP/1.1\r\n")
        assert (await healthz(guarded.http_port)).startswith(b"HTTP/1.1 200")
        assert len(guarded.http.gate.connections) <= LIMITS["http_max_connections"]
        # the oldest stalled connections made room: closed at once, long before their header timeout
        evicted = await asyncio.gather(*(until_closed(c, 0.4) for c in flood[:30]))
        assert evicted == [b""] * 30
        assert closed_count("evicted") >= before + 30
    finally:
        close_all(flood)


async def test_when_every_connection_has_a_request_in_progress_a_new_one_is_answered_503(guarded: Any) -> None:
    refused_before, body_before = closed_count("refused"), closed_count("body_timeout")
    busy = [await connect(guarded.http_port) for _ in range(LIMITS["http_max_connections"])]
    try:
        for _, writer in busy:  # headers complete, the body promised and never sent in full
            writer.write(b"POST /APPLLogin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
        await asyncio.sleep(0.3)
        assert (await until_closed(await connect(guarded.http_port))).startswith(b"HTTP/1.1 503")
        assert closed_count("refused") == refused_before + 1
        answers = await asyncio.gather(*(until_closed(c) for c in busy))  # then their bodies are late
    finally:
        close_all(busy)
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    assert closed_count("body_timeout") >= body_before + len(busy)
    assert (await healthz(guarded.http_port)).startswith(b"HTTP/1.1 200")


async def test_a_body_that_arrives_in_pieces_within_the_timeout_is_served(guarded: Any) -> None:
    conn = await connect(guarded.http_port)
    body = b'{"not": "a signed request"}'
    conn[1].write(b"POST /APPLLogin HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
    for i in range(0, len(body), 9):
        await asyncio.sleep(0.1)
        conn[1].write(body[i:i + 9])
    answer = await until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 200") and b'"status": 0' in answer  # read, and refused by the gate


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(guarded: Any) -> None:
    conn = await connect(guarded.http_port)
    try:
        conn[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(conn[0].readuntil(b"\r\n\r\n"), timeout=5)
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                     .split(b":")[1])
        await conn[0].readexactly(length)
        started = time.monotonic()
        assert await until_closed(conn, 10) == b""  # closed without a word, as aiohttp does
        assert time.monotonic() - started >= LIMITS["http_header_timeout_s"]  # not by the header timer
    finally:
        close_all([conn])


async def test_dd_and_http_share_one_connection_budget_below_the_descriptor_limit(settings: Settings) -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    budget = 6
    running = await start(settings.replace(**LIMITS, fd_reserve=soft - LIMITS["pool_max_size"] - budget))
    dd: list[Conn] = []
    try:
        assert running.ctx.connections.limit == budget
        dd = [await connect(running.dd_port) for _ in range(budget)]
        await asyncio.sleep(0.1)
        assert running.ctx.connections.open == budget
        dd.append(await connect(running.dd_port))  # the budget is spent: the DD connection quiet longest makes room
        try:
            assert await until_closed(dd[0], 2) == b""
        except ConnectionResetError:
            pass
        await asyncio.sleep(0.1)
        assert running.ctx.connections.open == budget
        assert (await healthz(running.http_port)).startswith(b"HTTP/1.1 503")  # no idle HTTP connection to evict
        close_all(dd[1:2])
        await asyncio.sleep(0.1)
        assert (await healthz(running.http_port)).startswith(b"HTTP/1.1 200")
    finally:
        close_all(dd)
        await running.stop()


def test_serve_raises_the_soft_descriptor_limit_as_far_as_the_limits_need() -> None:
    """In a child process: the test process's own limit stays as it is."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import resource\nfrom app.runtime import raise_descriptor_limit, wanted_descriptors\n"
        "from recharge.config import Settings\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "s = Settings(dd_max_connections=300, http_max_connections=100, pool_max_size=20, fd_reserve=80)\n"
        "raise_descriptor_limit(s)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], min(wanted_descriptors(s), hard))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    got, expected = done.stdout.split()
    assert got == expected == "500", done.stdout + done.stderr

"""Hostile and broken input at the socket: garbage, truncated and oversize frames, a bad CRC, a
stage out of order, frames split across writes, idle connections, the connection limit (the connection quiet
longest between flows makes room), and
draining on stop. Untrustworthy bytes close the connection with no answer (SPEC 1.2).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.fixtures import SimTerminal
from core_ext import FrameDecoder
from recharge.context import Platform
from server.service import DDService
from server.terminal_client import TerminalMessages
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("audited")


def exchange(port: int, chunks: list[bytes], wait_s: float = 2.0) -> tuple[bytes, bool]:
    """Send chunks; everything received until the server closes (or ``wait_s``), and whether it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        received = b""
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    return received, True
                received += data
        except ConnectionResetError:
            return received, True
        except TimeoutError:
            return received, False


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\n\r\n", b"\x00" * 64, b"\xdd\x02\x01\x00\x16" + b"\x00" * 30, b"\xdd\x11\x02\x00\x16"],
    ids=["http", "zeros", "platform_stage", "bad_version"],
)
async def test_garbage_bytes_close_the_connection_without_answer(platform: Any, garbage: bytes) -> None:
    received, closed = await asyncio.to_thread(exchange, platform.dd_port, [garbage])
    assert received == b"" and closed


async def test_oversize_length_field_closes_without_answer(platform: Any) -> None:
    received, closed = await asyncio.to_thread(exchange, platform.dd_port,
                                               [b"\xdd\x11\x01\x01\x17" + b"\x00" * 300])
    assert received == b"" and closed


async def test_bad_crc_answers_A2_and_closes(signed_in: SimTerminal) -> None:
    data = bytearray(signed_in.client().messages.dd21("1" * 20))
    data[-1] ^= 0xFF
    received, closed = await asyncio.to_thread(exchange, signed_in.port, [bytes(data)])
    [answer] = FrameDecoder(False).feed(received)
    assert (answer.stage, answer.flow, answer.result) == (0x22, 0xFF, 0xA2) and closed


async def test_stage_out_of_order_answers_A0_and_closes(signed_in: SimTerminal) -> None:
    m = signed_in.client().messages
    received, closed = await asyncio.to_thread(exchange, signed_in.port, [m.dd19("1" * 20)])
    [answer] = FrameDecoder(False).feed(received)
    assert (answer.stage, answer.result) == (0x20, 0xA0) and closed


async def test_frame_split_into_single_bytes_is_answered(signed_in: SimTerminal) -> None:
    data = signed_in.client().messages.dd01()
    received, _ = await asyncio.to_thread(exchange, signed_in.port, [bytes([b]) for b in data], 1.0)
    [answer] = FrameDecoder(False).feed(received)
    assert (answer.stage, answer.flow, answer.result) == (0x02, 0x00, 0x00)


async def test_second_frame_before_the_answer_is_out_of_order(signed_in: SimTerminal) -> None:
    m = signed_in.client().messages
    received, closed = await asyncio.to_thread(exchange, signed_in.port, [m.dd21("1" * 20) + m.dd21("1" * 20)])
    answers = FrameDecoder(False).feed(received)
    assert answers[-1].result == 0xA0 and closed


async def _side(platform: Any, pool: asyncpg.Pool, **changes: Any) -> tuple[DDService, int]:
    ctx = platform.ctx
    service = DDService(Platform(settings=ctx.settings.replace(**changes), pool=pool, keys=ctx.keys, dsn=ctx.dsn))
    return service, await service.start()


@pytest.fixture
async def quick_idle(platform: Any, pool: asyncpg.Pool) -> AsyncIterator[int]:
    service, port = await _side(platform, pool, dd_idle_timeout_s=0.3)
    yield port
    await service.stop(0.5)


async def test_idle_connection_is_closed_without_answer(quick_idle: int) -> None:
    received, closed = await asyncio.to_thread(exchange, quick_idle, [], 2.0)
    assert received == b"" and closed


async def test_truncated_frame_is_closed_at_idle_timeout_without_answer(quick_idle: int, signed_in: SimTerminal) -> None:
    data = signed_in.client().messages.dd21("1" * 20)
    received, closed = await asyncio.to_thread(exchange, quick_idle, [data[:-3]], 2.0)
    assert received == b"" and closed


async def test_idle_timeout_restarts_after_each_answer(quick_idle: int, signed_in: SimTerminal) -> None:
    def talk() -> bool:
        client = signed_in.client()
        client.port = quick_idle
        with client.connect():
            answer = client.dd01()  # answered; the terminal then waits longer than the idle timeout
            assert answer.result == 0
            return client.closed_by_peer(wait_s=2.0)

    assert await asyncio.to_thread(talk)


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(1.0)
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_at_the_limit_the_connection_quiet_longest_makes_room(platform: Any, pool: asyncpg.Pool) -> None:
    """Idle connections cannot lock the terminals out (found by the chaos harness's idle DD connections up to the
    limit): the one quiet longest between flows is closed, the newcomer is answered, the others stay."""
    service, port = await _side(platform, pool, dd_max_connections=2)
    try:
        oldest = socket.create_connection(("127.0.0.1", port))
        await asyncio.sleep(0.05)
        newer = socket.create_connection(("127.0.0.1", port))
        await asyncio.sleep(0.05)
        dd01 = TerminalMessages("99999999", "99999999").dd01()  # a terminal nobody registered: 0xA1, answered
        received, _ = await asyncio.to_thread(exchange, port, [dd01], 1.0)
        assert received[:1] == b"\xdd", received
        assert await asyncio.to_thread(_closed, oldest)
        assert not await asyncio.to_thread(_closed, newer)
        assert len(service.connections) <= 2
        oldest.close()
        newer.close()
    finally:
        await service.stop(0.5)


async def test_at_the_limit_a_connection_in_a_flow_is_kept_and_the_new_one_closed_at_once(
    platform: Any, pool: asyncpg.Pool, signed_in: SimTerminal
) -> None:
    service, port = await _side(platform, pool, dd_max_connections=1)
    client = signed_in.client()
    client.port = port
    try:
        await asyncio.to_thread(client.connect)
        assert (await asyncio.to_thread(client.dd01)).result == 0  # mid-flow: DD03 expected next
        received, closed = await asyncio.to_thread(exchange, port, [], 1.0)
        assert received == b"" and closed
        assert len(service.connections) == 1
        module = signed_in.module()
        dd04 = await asyncio.to_thread(client.dd03, module.r_init())
        dd06 = await asyncio.to_thread(client.dd05, module.ac_login1(dd04.info))
        assert (await asyncio.to_thread(client.dd07, module.ac_login2(dd06.info))).result == 0
    finally:
        client.close()
        await service.stop(0.5)


async def test_stop_lets_a_flow_in_progress_finish_and_closes_idle_connections(
    platform: Any, pool: asyncpg.Pool, signed_in: SimTerminal
) -> None:
    service, port = await _side(platform, pool)
    client = signed_in.client()
    client.port = port
    await asyncio.to_thread(client.connect)
    assert (await asyncio.to_thread(client.dd01)).result == 0  # mid-flow: DD03 expected next
    idle = socket.create_connection(("127.0.0.1", port))
    await eventually(lambda: len(service.connections) == 2, "the idle connection accepted")
    stopping = asyncio.create_task(service.stop(5.0))
    await asyncio.sleep(0.2)
    assert not stopping.done()
    module = signed_in.module()
    dd04 = await asyncio.to_thread(client.dd03, module.r_init())
    dd06 = await asyncio.to_thread(client.dd05, module.ac_login1(dd04.info))
    dd08 = await asyncio.to_thread(client.dd07, module.ac_login2(dd06.info))
    assert dd08.result == 0
    await asyncio.wait_for(stopping, 3.0)
    idle.settimeout(1.0)
    assert idle.recv(10) == b""
    idle.close()
    client.close()

"""A DD terminal client (SPEC 1): one method per request stage, returning the decoded answer.

``TerminalClient`` uses a plain blocking socket, so Locust (gevent) and threads can drive it;
``AsyncTerminalClient`` is the same on asyncio streams, for the simulator and the benchmark.
Both build frames with the ``core_ext`` codec through ``TerminalMessages`` and never hold a
master key: the sign-in cryptograms come from a ``VirtualSAM``, the card's replies from a
``VirtualCard`` (or a real reader). ``sign_in``/``recharge`` run whole flows on top.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from core_ext import (
    Frame,
    FrameDecoder,
    bcd_encode,
    be_encode,
    frame_encode,
)
from server.stages import FLOW_END, INFO_OK, NO_PKI


class ScriptRunner(Protocol):
    """What a terminal needs from a card: run a platform script, give the reply list."""

    def run_script(self, script: bytes) -> bytes: ...


class Module(Protocol):
    """What a terminal needs from its security module (``core_ext.virtual_sam.VirtualSAM``)."""

    def r_init(self) -> bytes: ...
    def ac_login1(self, info: bytes) -> bytes: ...
    def ac_login2(self, info: bytes) -> bytes: ...


class FlowFailed(Exception):
    """A flow ended with a non-zero result (the info code is ``result``)."""

    def __init__(self, stage: int, result: int) -> None:
        super().__init__(f"DD{stage:02X} answered 0x{result:02X}")
        self.stage = stage
        self.result = result


class ConnectionClosed(Exception):
    """The platform closed the connection without answering."""


@dataclass
class TerminalMessages:
    """The request frames of one terminal (user id, PKI), built with the core_ext codec."""

    user_id: str
    pki: str  # 8 digits

    @property
    def pki_bytes(self) -> bytes:
        return bcd_encode(self.pki, 4)

    def frame(self, stage: int, info: bytes = b"", *, step: int = 0, pki: bytes | None = None) -> bytes:
        return frame_encode(
            Frame(stage=stage, user_id=self.user_id.encode("ascii"), pki=self.pki_bytes if pki is None else pki,
                  info=info, step=step)
        )

    def dd01(self) -> bytes:
        return self.frame(0x01, pki=NO_PKI)

    def dd03(self, r_init: bytes) -> bytes:
        return self.frame(0x03, r_init, step=1, pki=NO_PKI)

    def dd05(self, cryptogram: bytes) -> bytes:
        return self.frame(0x05, cryptogram, step=1)

    def dd07(self, proof: bytes) -> bytes:
        return self.frame(0x07, proof, step=1)

    def dd11(self, amount_cents: int, order_no: str, app_type: int = 0) -> bytes:
        return self.frame(0x11, bytes((app_type,)) + be_encode(amount_cents, 4) + bcd_encode(order_no, 10))

    def dd13(self, replies: bytes) -> bytes:
        return self.frame(0x13, replies, step=1)

    def dd15(self, replies: bytes) -> bytes:
        return self.frame(0x15, replies, step=1)

    def dd17(self, replies: bytes) -> bytes:
        return self.frame(0x17, replies, step=1)

    def dd19(self, order_no: str) -> bytes:
        return self.frame(0x19, bcd_encode(order_no, 10), step=1)

    def dd21(self, order_no: str) -> bytes:
        return self.frame(0x21, bcd_encode(order_no, 10))

    def dd21_reply(self, order_no: str, replies: bytes) -> bytes:
        return self.frame(0x21, bcd_encode(order_no, 10) + replies, step=1)

    def dd73(self, operation: int, card_no: str, amount_cents: int, challenge: bytes) -> bytes:
        info = bytes((operation,)) + bcd_encode(card_no, 8) + be_encode(amount_cents, 4) + challenge
        return self.frame(0x73, info)


@dataclass
class StageTimings:
    """Seconds per request stage, appended by the clients (for percentiles)."""

    by_stage: dict[int, list[float]] = field(default_factory=dict)

    def add(self, stage: int, seconds: float) -> None:
        self.by_stage.setdefault(stage, []).append(seconds)


def _check(frame: Frame, *, want_end: bool = False) -> Frame:
    if frame.result != INFO_OK:
        raise FlowFailed(frame.stage, frame.result)
    if want_end and frame.flow != FLOW_END:
        raise FlowFailed(frame.stage, frame.result)
    return frame


class TerminalClient:
    """A blocking-socket terminal: ``dd01()`` … ``dd73()`` each send one frame, return the answer."""

    def __init__(self, host: str, port: int, user_id: str, pki: str, *, timeout_s: float = 10.0,
                 timings: StageTimings | None = None) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.messages = TerminalMessages(user_id, pki)
        self.timings = timings
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(False)
        self._pending: list[Frame] = []

    # --- connection

    def connect(self) -> TerminalClient:
        self.close()
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder(False)
        self._pending = []
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> TerminalClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(data)

    def receive(self) -> Frame:
        """The next answer frame; ``ConnectionClosed`` if the platform closed instead."""
        assert self._sock is not None
        while not self._pending:
            try:
                data = self._sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                raise ConnectionClosed("the platform closed the connection")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def closed_by_peer(self, wait_s: float = 1.0) -> bool:
        """True when the platform closes the connection (EOF/reset) within ``wait_s``."""
        assert self._sock is not None
        self._sock.settimeout(wait_s)
        try:
            return self._sock.recv(4096) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self._sock.settimeout(self.timeout_s)

    def call(self, data: bytes) -> Frame:
        started = time.perf_counter()
        self.send_raw(data)
        answer = self.receive()
        if self.timings is not None:
            self.timings.add(data[1], time.perf_counter() - started)
        return answer

    # --- one method per request stage

    def dd01(self) -> Frame:
        return self.call(self.messages.dd01())

    def dd03(self, r_init: bytes) -> Frame:
        return self.call(self.messages.dd03(r_init))

    def dd05(self, cryptogram: bytes) -> Frame:
        return self.call(self.messages.dd05(cryptogram))

    def dd07(self, proof: bytes) -> Frame:
        return self.call(self.messages.dd07(proof))

    def dd11(self, amount_cents: int, order_no: str, app_type: int = 0) -> Frame:
        return self.call(self.messages.dd11(amount_cents, order_no, app_type))

    def dd13(self, replies: bytes) -> Frame:
        return self.call(self.messages.dd13(replies))

    def dd15(self, replies: bytes) -> Frame:
        return self.call(self.messages.dd15(replies))

    def dd17(self, replies: bytes) -> Frame:
        return self.call(self.messages.dd17(replies))

    def dd19(self, order_no: str) -> Frame:
        return self.call(self.messages.dd19(order_no))

    def dd21(self, order_no: str) -> Frame:
        return self.call(self.messages.dd21(order_no))

    def dd21_reply(self, order_no: str, replies: bytes) -> Frame:
        return self.call(self.messages.dd21_reply(order_no, replies))

    def dd73(self, operation: int, card_no: str, amount_cents: int, challenge: bytes) -> Frame:
        return self.call(self.messages.dd73(operation, card_no, amount_cents, challenge))

    # --- whole flows

    def sign_in(self, module: Module) -> Frame:
        """DD01–DD08 on a fresh connection; the DD08 answer. ``FlowFailed`` on a refusal."""
        self.connect()
        try:
            _check(self.dd01())
            dd04 = _check(self.dd03(module.r_init()))
            dd06 = _check(self.dd05(module.ac_login1(dd04.info)))
            return _check(self.dd07(module.ac_login2(dd06.info)), want_end=True)
        finally:
            self.close()

    def recharge(self, card: ScriptRunner, order_no: str, amount_cents: int, *, receipt: bool = True) -> Frame:
        """DD11–DD18 (and DD19/DD20 with ``receipt``) on a fresh connection; the last answer."""
        self.connect()
        try:
            dd12 = _check(self.dd11(amount_cents, order_no))
            dd14 = _check(self.dd13(card.run_script(dd12.info)))
            dd16 = _check(self.dd15(card.run_script(dd14.info)))
            dd18 = _check(self.dd17(card.run_script(dd16.info)), want_end=True)
            return _check(self.dd19(order_no), want_end=True) if receipt else dd18
        finally:
            self.close()


class AsyncTerminalClient:
    """The same terminal on asyncio streams: ``await client.dd11(...)`` etc."""

    def __init__(self, host: str, port: int, user_id: str, pki: str, *, timeout_s: float = 10.0,
                 timings: StageTimings | None = None) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.messages = TerminalMessages(user_id, pki)
        self.timings = timings
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = FrameDecoder(False)
        self._pending: list[Frame] = []

    async def connect(self) -> None:
        await self.close()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s
        )
        self._decoder = FrameDecoder(False)
        self._pending = []

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = self._reader = None

    async def call(self, data: bytes) -> Frame:
        assert self._writer is not None and self._reader is not None
        started = time.perf_counter()
        self._writer.write(data)
        while not self._pending:
            chunk = await asyncio.wait_for(self._reader.read(4096), self.timeout_s)
            if not chunk:
                raise ConnectionClosed("the platform closed the connection")
            self._pending.extend(self._decoder.feed(chunk))
        if self.timings is not None:
            self.timings.add(data[1], time.perf_counter() - started)
        return self._pending.pop(0)

    async def sign_in(self, module: Module) -> Frame:
        m = self.messages
        await self.connect()
        try:
            _check(await self.call(m.dd01()))
            dd04 = _check(await self.call(m.dd03(module.r_init())))
            dd06 = _check(await self.call(m.dd05(module.ac_login1(dd04.info))))
            return _check(await self.call(m.dd07(module.ac_login2(dd06.info))), want_end=True)
        finally:
            await self.close()

    async def recharge(self, card: ScriptRunner, order_no: str, amount_cents: int, *, receipt: bool = True) -> Frame:
        m = self.messages
        await self.connect()
        try:
            dd12 = _check(await self.call(m.dd11(amount_cents, order_no)))
            dd14 = _check(await self.call(m.dd13(card.run_script(dd12.info))))
            dd16 = _check(await self.call(m.dd15(card.run_script(dd14.info))))
            dd18 = _check(await self.call(m.dd17(card.run_script(dd16.info))), want_end=True)
            return _check(await self.call(m.dd19(order_no)), want_end=True) if receipt else dd18
        finally:
            await self.close()


CardFactory = Callable[[str, int], ScriptRunner]

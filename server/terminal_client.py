"""A DD terminal client (SPEC 1): the flows written once, sans-IO, and two drivers for them.

A flow is a generator (the sans-IO shape of h11, client side): it yields the bytes of its next
request and is sent the answer frame; it returns the last answer, or raises ``FlowFailed`` on
a non-zero result (or a continue where the flow must end). It never touches a socket, a
clock or an event loop: ``FlowRunner`` steps it and times each request (from sending the
frame to its answer; the card's work in between is not counted). ``TerminalClient`` drives
flows over a blocking socket (Locust with gevent, threads, tests); ``AsyncTerminalClient``
over an asyncio Protocol, straight from ``data_received`` — no task, stream or timer per
request (the simulator and the benchmark). Frames come from the ``core_ext`` codec through
``TerminalMessages``; no client holds a master key: the sign-in cryptograms come from a
``VirtualSAM``, the card's replies from a ``VirtualCard`` (or a real reader).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Protocol, cast

from core_ext import Frame, FrameDecoder, bcd_encode, be_encode, frame_encode
from server.stages import FLOW_CONTINUE, FLOW_END, INFO_OK, NO_PKI

# Yields request bytes, is sent each answer, returns the last answer.
TerminalFlow = Generator[bytes, Frame, Frame]
# Called once per request: its bytes, the answer (None when none came), seconds, the error that ended the flow.
Observer = Callable[[bytes, Frame | None, float, BaseException | None], None]
ANSWER_OVERHEAD = 32  # bytes of a response frame around its info: header 5, fixed fields 23, CRC 4


class ScriptRunner(Protocol):
    """What a terminal needs from a card: run a platform script, give the reply list."""

    def run_script(self, script: bytes) -> bytes: ...


class Module(Protocol):
    """What a terminal needs from its security module (``core_ext.virtual_sam.VirtualSAM``)."""

    def r_init(self) -> bytes: ...
    def ac_login1(self, info: bytes) -> bytes: ...
    def ac_login2(self, info: bytes) -> bytes: ...


class FlowFailed(Exception):
    """A flow ended with a non-zero result (``result``), or went on where it had to end."""

    def __init__(self, answer: Frame, *, expected_end: bool = False) -> None:
        what = f"flow 0x{answer.flow:02X}, expected the end" if expected_end else f"answered 0x{answer.result:02X}"
        super().__init__(f"DD{answer.stage:02X} {what}")
        self.stage = answer.stage
        self.result = answer.result
        self.flow = answer.flow
        self.expected_end = expected_end


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


# --- the flows, sans-IO ------------------------------------------------------------------------


def check(answer: Frame, *, end: bool = False) -> Frame:
    """The answer, if its result is 0x00 (and it ends the flow when ``end``); else ``FlowFailed``."""
    if answer.result != INFO_OK:
        raise FlowFailed(answer)
    if end and answer.flow != FLOW_END:
        raise FlowFailed(answer, expected_end=True)
    return answer


def exchange(request: bytes) -> TerminalFlow:
    """One request and its answer, whatever the answer says."""
    return (yield request)


def checked(request: bytes, *, end: bool = False) -> TerminalFlow:
    """One request whose answer must be a success (that ends the flow when ``end``)."""
    return check((yield request), end=end)


def sign_in(m: TerminalMessages, module: Module) -> TerminalFlow:
    """DD01–DD08: the module answers the platform's challenges; the DD08 answer."""
    yield from checked(m.dd01())
    dd04 = yield from checked(m.dd03(module.r_init()))
    dd06 = yield from checked(m.dd05(module.ac_login1(dd04.info)))
    return (yield from checked(m.dd07(module.ac_login2(dd06.info)), end=True))


def load_until_credit(m: TerminalMessages, card: ScriptRunner, order_no: str, amount_cents: int) -> TerminalFlow:
    """DD11–DD15: the DD16 answer, whose script (CREDIT FOR LOAD) the card has not run yet."""
    dd12 = yield from checked(m.dd11(amount_cents, order_no))
    dd14 = yield from checked(m.dd13(card.run_script(dd12.info)))
    return (yield from checked(m.dd15(card.run_script(dd14.info))))


def recharge(
    m: TerminalMessages, card: ScriptRunner, order_no: str, amount_cents: int, *, receipt: bool = True
) -> TerminalFlow:
    """DD11–DD18, and DD19/DD20 with ``receipt``: the last answer."""
    dd16 = yield from load_until_credit(m, card, order_no, amount_cents)
    dd18 = yield from checked(m.dd17(card.run_script(dd16.info)), end=True)
    return (yield from checked(m.dd19(order_no), end=True)) if receipt else dd18


def query(m: TerminalMessages, order_no: str, card: ScriptRunner | None = None) -> TerminalFlow:
    """DD21: the order's outcome; a load still *loading* is proven with ``card`` (DD21 step 0x01)."""
    dd22 = yield from checked(m.dd21(order_no))
    if dd22.flow != FLOW_CONTINUE or card is None:
        return check(dd22, end=True)
    return (yield from checked(m.dd21_reply(order_no, card.run_script(dd22.info)), end=True))


class FlowRunner:
    """Steps one flow for a driver: ``start`` gives the first request, ``answer`` the next one
    (None once the flow returned: ``result``); each request is reported to ``observer``."""

    def __init__(self, flow: TerminalFlow, observer: Observer | None = None) -> None:
        self.flow, self.observer = flow, observer
        self.request, self.sent_at = b"", 0.0
        self.result: Frame | None = None

    def start(self) -> bytes:
        return self._sending(next(self.flow))

    def _sending(self, request: bytes) -> bytes:
        self.request, self.sent_at = request, time.perf_counter()
        return request

    def answer(self, frame: Frame) -> bytes | None:
        """Feed the flow its answer: the next request's bytes, or None when it is over."""
        seconds = time.perf_counter() - self.sent_at
        try:
            request = self.flow.send(frame)
        except StopIteration as stop:
            self._observe(frame, seconds, None)
            self.result = cast(Frame, stop.value)
            return None
        except FlowFailed as failed:
            self._observe(frame, seconds, failed)
            raise
        self._observe(frame, seconds, None)
        return self._sending(request)

    def lost(self, error: BaseException) -> None:
        """The request got no answer (closed, timed out, reset)."""
        self.flow.close()
        self._observe(None, time.perf_counter() - self.sent_at, error)

    def _observe(self, frame: Frame | None, seconds: float, error: BaseException | None) -> None:
        if self.observer is not None:
            self.observer(self.request, frame, seconds, error)


@dataclass
class StageTimings:
    """Seconds per request stage (an ``Observer``: pass it to a client), for percentiles."""

    by_stage: dict[int, list[float]] = field(default_factory=dict)

    def add(self, stage: int, seconds: float) -> None:
        self.by_stage.setdefault(stage, []).append(seconds)

    def __call__(self, request: bytes, answer: Frame | None, seconds: float, error: BaseException | None) -> None:
        if answer is not None:
            self.add(request[1], seconds)


# --- the blocking driver -------------------------------------------------------------------------


class TerminalClient:
    """A blocking-socket terminal: ``run(flow)``, the whole flows, and ``dd01()`` … ``dd73()``,
    each one request on the open connection, returning the answer whatever it says. ``source``:
    the local address to connect from (a terminal elsewhere on the network, in tests)."""

    def __init__(self, host: str, port: int, user_id: str, pki: str, *, timeout_s: float = 10.0,
                 timings: Observer | None = None, source: str | None = None) -> None:
        self.host, self.port, self.timeout_s, self.source = host, port, timeout_s, source
        self.messages = TerminalMessages(user_id, pki)
        self.observer = timings
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(False)
        self._pending: list[Frame] = []

    # --- connection

    def connect(self) -> TerminalClient:
        self.close()
        self._sock = socket.create_connection(
            (self.host, self.port), timeout=self.timeout_s, source_address=(self.source, 0) if self.source else None
        )
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

    # --- flows

    def run(self, flow: TerminalFlow) -> Frame:
        """Drive ``flow`` on the open connection (opened if none); its last answer."""
        runner = FlowRunner(flow, self.observer)
        request: bytes | None = runner.start()
        while request is not None:
            try:
                self.send_raw(request)
                answer = self.receive()
            except (OSError, ConnectionClosed) as exc:
                runner.lost(exc)
                raise
            request = runner.answer(answer)
        assert runner.result is not None
        return runner.result

    def call(self, data: bytes) -> Frame:
        return self.run(exchange(data))

    def run_alone(self, flow: TerminalFlow) -> Frame:
        """``flow`` on a connection of its own (one flow per connection, SPEC 1.2)."""
        self.connect()
        try:
            return self.run(flow)
        finally:
            self.close()

    def sign_in(self, module: Module) -> Frame:
        """DD01–DD08 on a fresh connection; the DD08 answer. ``FlowFailed`` on a refusal."""
        return self.run_alone(sign_in(self.messages, module))

    def recharge(self, card: ScriptRunner, order_no: str, amount_cents: int, *, receipt: bool = True) -> Frame:
        """DD11–DD18 (and DD19/DD20 with ``receipt``) on a fresh connection; the last answer."""
        return self.run_alone(recharge(self.messages, card, order_no, amount_cents, receipt=receipt))

    # --- one request each, on the open connection

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


# --- the asyncio driver --------------------------------------------------------------------------


class _FlowProtocol(asyncio.Protocol):
    """One connection of an ``AsyncTerminalClient``: each answer is fed to the running flow from
    ``data_received``, and its next request written at once."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = FrameDecoder(False)
        self.pending: list[Frame] = []  # answers that came while no flow ran
        self.runner: FlowRunner | None = None
        self.done: asyncio.Future[Frame] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def start(self, runner: FlowRunner, done: asyncio.Future[Frame]) -> None:
        self.runner, self.done = runner, done
        assert self.transport is not None
        self.transport.write(runner.start())
        while self.pending and self.runner is not None:
            self._answer(self.pending.pop(0))

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if self.runner is None:
                self.pending.append(frame)
            else:
                self._answer(frame)

    def _answer(self, frame: Frame) -> None:
        runner, done = self.runner, self.done
        assert runner is not None and done is not None and self.transport is not None
        try:
            request = runner.answer(frame)
        except FlowFailed as failed:
            self._finish(failed)
            return
        if request is None:
            self._finish(runner.result)
        else:
            self.transport.write(request)

    def _finish(self, outcome: Frame | BaseException | None) -> None:
        done, self.runner, self.done = self.done, None, None
        if done is None or done.done():
            return
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            assert outcome is not None
            done.set_result(outcome)

    def stop(self, error: BaseException) -> None:
        """The running flow gets no answer (``error``: closed or timed out)."""
        if self.runner is not None:
            self.runner.lost(error)
        self._finish(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stop(ConnectionClosed("the platform closed the connection"))


class AsyncTerminalClient:
    """The same terminal on asyncio: ``await client.run(flow)``, ``await client.call(bytes)``,
    ``sign_in`` and ``recharge``. ``timeout_s`` bounds each call or flow (``TimeoutError``)."""

    def __init__(self, host: str, port: int, user_id: str, pki: str, *, timeout_s: float = 10.0,
                 timings: Observer | None = None) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.messages = TerminalMessages(user_id, pki)
        self.observer = timings
        self._protocol: _FlowProtocol | None = None

    async def connect(self) -> None:
        await self.close()
        loop = asyncio.get_running_loop()
        _, self._protocol = await asyncio.wait_for(
            loop.create_connection(_FlowProtocol, self.host, self.port), self.timeout_s
        )

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    async def run(self, flow: TerminalFlow) -> Frame:
        """Drive ``flow`` on the open connection; its last answer."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            flow.close()
            raise ConnectionClosed("not connected")
        done: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        protocol.start(FlowRunner(flow, self.observer), done)
        try:
            return await asyncio.wait_for(done, self.timeout_s)
        except TimeoutError as exc:
            protocol.stop(exc)
            raise

    async def call(self, data: bytes) -> Frame:
        return await self.run(exchange(data))

    async def run_alone(self, flow: TerminalFlow) -> Frame:
        """``flow`` on a connection of its own (one flow per connection, SPEC 1.2)."""
        try:
            await self.connect()
        except BaseException:
            flow.close()
            raise
        try:
            return await self.run(flow)
        finally:
            await self.close()

    async def sign_in(self, module: Module) -> Frame:
        return await self.run_alone(sign_in(self.messages, module))

    async def recharge(self, card: ScriptRunner, order_no: str, amount_cents: int, *, receipt: bool = True) -> Frame:
        return await self.run_alone(recharge(self.messages, card, order_no, amount_cents, receipt=receipt))

"""The asyncio glue of one DD connection: bytes to the sans-IO session, requests to the flows.

``data_received`` parses synchronously (the uvloop model); only database work becomes a
task, bounded by the service (``dd_max_inflight_db_tasks``: beyond it the request is
answered ``0xDD`` at once). The idle timeout counts while the platform waits for the
terminal, never while the terminal waits for the platform. ``pause_writing`` stops reading
until the peer drains what we wrote. A connection lost mid-step lets its step finish: the
database work of a step is one transaction and is never cut in half by a disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol, cast

from recharge import metrics
from recharge.config import Settings
from recharge.network import Network, is_trusted
from server import dispatch, proxy_protocol
from server.dd_context import DDContext
from server.flow_state import FlowState
from server.frame_metrics import FrameMetrics
from server.idle import IdleWheel
from server.session import ProtocolError, Request, Response, TerminalSession
from server.stages import INFO_BUSY, INFO_INTERNAL

log = logging.getLogger(__name__)

_STAGE_LABELS = {stage: f"{stage:02X}" for stage in range(256)}


class ConnectionHost(Protocol):
    """What a connection needs from the service that accepted it (``server.service.DDService``)."""

    settings: Settings
    dd: DDContext
    trusted_proxies: tuple[Network, ...]

    @property
    def idle(self) -> IdleWheel: ...
    @property
    def frame_metrics(self) -> FrameMetrics: ...

    def admit(self, protocol: DDProtocol) -> bool: ...
    def forget(self, protocol: DDProtocol) -> None: ...
    def answered(self, protocol: DDProtocol) -> None: ...
    def take_slot(self) -> bool: ...
    def release_slot(self) -> None: ...
    def task_done(self, protocol: DDProtocol) -> None: ...


class DDProtocol(asyncio.Protocol):
    """One terminal connection; at most one request in progress. Slotted, and without a timer of
    its own (the service's ``IdleWheel`` watches its deadline): an idle terminal costs little."""

    __slots__ = ("service", "session", "state", "transport", "task", "_loop", "_idle_s", "_deadline",
                 "idle_slot", "_started", "_stage", "_proxy_pending", "_first_data")

    def __init__(self, service: ConnectionHost) -> None:
        self.service = service
        self.session = TerminalSession(dispatch.STAGES, service.settings.dd_max_frame_length)
        self.state = FlowState()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._idle_s = service.settings.dd_idle_timeout_s
        self._deadline = 0.0
        self.idle_slot = -1  # the service's idle wheel files it here
        self._started = 0.0
        self._stage = 0
        self._proxy_pending: bytes | None = None  # header bytes so far, from a trusted proxy
        self._first_data = True

    @property
    def peer(self) -> str | None:
        """The terminal's address: the TCP peer, or what a trusted proxy's PROXY v2 header says.
        One value, kept in the flow state, where the steps read it (sign-in binding, records)."""
        return self.state.peer

    @peer.setter
    def peer(self, address: str | None) -> None:
        self.state.peer = address

    # --- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        if not self.service.admit(self):
            metrics.DD_CONNECTIONS_REFUSED.inc()
            tcp.abort()
            return
        self.transport = tcp
        peername = tcp.get_extra_info("peername")
        self.peer = peername[0] if isinstance(peername, tuple) else None
        if self.service.trusted_proxies and is_trusted(self.peer, self.service.trusted_proxies):
            self._proxy_pending = b""
        self.service.frame_metrics.connected()
        self._deadline = self._loop.time() + self._idle_s
        self.service.idle.watch(self, self._deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        self.service.frame_metrics.disconnected()
        self.service.idle.forget(self)
        self.service.forget(self)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._proxy_pending is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        elif self._first_data:
            self._first_data = False
            if data[:1] == proxy_protocol.SIGNATURE[:1]:  # a DD frame starts with 0xDD, never \r
                self._refuse_proxy_header("untrusted")
                return
        try:
            requests = self.session.receive_data(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        for request in requests:
            self._dispatch(request)

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Bytes after a trusted proxy's header (b"" while it is incomplete or was refused)."""
        buffered = (self._proxy_pending or b"") + data
        try:
            header = proxy_protocol.parse(buffered)
        except proxy_protocol.ProxyHeaderError:
            self._refuse_proxy_header("malformed")
            return b""
        if header is None:
            self._proxy_pending = buffered
            return b""
        self._proxy_pending = None
        self._first_data = False
        if header.source is not None:
            self.peer = header.source[0]
        return buffered[header.consumed:]

    def _refuse_proxy_header(self, reason: str) -> None:
        """A PROXY header from an untrusted peer, or a trusted proxy's malformed one: close."""
        metrics.DD_PROTOCOL_ERRORS.labels(f"proxy_{reason}").inc()
        log.warning("DD connection from %s: %s PROXY header refused", self.peer, reason)
        self._proxy_pending = None
        if self.transport is not None:
            self.transport.abort()

    # --- requests

    def _dispatch(self, request: Request) -> None:
        self._started = time.perf_counter()
        self._stage = request.frame.stage
        answer = dispatch.handle_sync(self.service.dd, self.state, request)
        if answer is not None:
            self._answer(answer)
        elif not self.service.take_slot():
            metrics.BUSY_ANSWERS.labels("dd").inc()
            self._answer(Response.refuse(INFO_BUSY))
        else:
            self.task = self._loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            answer = await dispatch.handle(self.service.dd, self.state, request)
        except Exception:  # a defect: answer 0xEE, never leak details to the terminal
            log.exception("stage 0x%02X: unexpected error", request.frame.stage)
            answer = Response.refuse(INFO_INTERNAL)
        finally:
            self.service.release_slot()
            self.task = None
        if self.transport is not None and not self.transport.is_closing():
            self._answer(answer)
        self.service.task_done(self)

    def _answer(self, response: Response) -> None:
        assert self.transport is not None
        self.transport.write(self.session.send(response))
        self.service.frame_metrics.answered(self._stage, response.result, time.perf_counter() - self._started)
        if self.session.closed:
            self.transport.close()
        else:
            self._deadline = self._loop.time() + self._idle_s
            self.service.answered(self)

    def _protocol_error(self, exc: ProtocolError) -> None:
        reason = "silent" if exc.info_code is None else _STAGE_LABELS[exc.info_code]
        metrics.DD_PROTOCOL_ERRORS.labels(reason).inc()
        if self.transport is None:
            return
        if exc.answer is not None:
            self.transport.write(exc.answer)
            self.transport.close()
        else:
            self.transport.abort()

    # --- idle timeout and shutdown

    def idle_check(self, now: float) -> float | None:
        """Asked by the idle wheel at or after the deadline: close an idle connection (None), or
        name the deadline to be asked again at (one moved by an answer since, or a step running)."""
        if self.transport is None:
            return None
        if self.task is not None:  # the terminal is waiting for us, not the other way round
            self._deadline = now + self._idle_s
        elif now >= self._deadline:
            metrics.DD_PROTOCOL_ERRORS.labels("idle").inc()
            self.transport.abort()
            return None
        return self._deadline

    @property
    def between_flows(self) -> bool:
        """No flow step in progress and none begun, or only the optional DD19 left."""
        return self.task is None and (self.session.frames_seen == 0 or self.session.optional_next)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

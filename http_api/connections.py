"""The HTTP listener's connection limits: a cap, the shared descriptor budget, and timeouts
for a request's headers, its body and an idle keep-alive connection.

aiohttp closes an idle keep-alive connection (``keepalive_timeout``) but bounds neither how
long a client may take to send its headers (a slowloris holds a connection forever, a byte
at a time) nor how many connections it holds (a flood of half-sent requests runs the process
out of file descriptors, and ``/healthz`` and the DD listener fail with it). So the listener
is ours: ``ConnectionGate.protocol`` is the protocol factory handed to ``create_server``;
each admitted connection is a ``GuardedConnection`` wrapped around aiohttp's own handler.

- **Cap and budget.** At most ``http_max_connections`` per worker, each also taking a slot of
  the process's ``ConnectionBudget`` (shared with DD). When either is spent, the connection
  idle longest — no request in progress: never sent one, stalled in its headers, or kept
  alive between requests — is closed to make room; when every connection has a request in
  progress, the new one is answered 503 and closed. A flood therefore pushes out its own
  stalled connections, and a real client gets in.
- **Header timeout.** A connection completes its first request's headers within
  ``http_header_timeout_s`` of connecting, and each later request's within as long of its
  first byte; otherwise 408 and closed.
- **Body timeout.** A request's body arrives in full within ``http_body_timeout_s`` of its
  headers while its handler runs (``guard_requests`` keeps the time; nothing is buffered
  beyond what aiohttp buffers anyway); otherwise 408 and closed.
- **Keep-alive.** aiohttp closes a connection idle for ``http_keepalive_timeout_s``.

Each closing is counted in ``recharge_http_connections_closed_total{reason}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from http_api.server_log import safe_answers
from recharge import metrics
from recharge.context import Platform

_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_BUSY_503 = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"


class GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the gate's bookkeeping and header timer."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.active = 0  # requests in progress (between headers and response)
        self.counted = True  # holds a slot of the cap and of the budget
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio callbacks, passed on to aiohttp's handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inner.connection_made(transport)
        self._arm()  # the first request's headers are due

    def data_received(self, data: bytes) -> None:
        if self.active == 0 and self._timer is None:
            self._arm()  # the first byte of a new request: its headers are due
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.gate.lost(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # --- requests (told by ``guard_requests``) and timers

    def request_started(self) -> None:
        self._disarm()
        self.active += 1
        self.gate.busy(self)

    def request_finished(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.gate.idle(self)

    def close_with(self, answer: bytes, reason: str) -> None:
        """Answer ``answer`` (a complete response, or nothing) and close; counted by ``reason``."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        metrics.HTTP_CONNECTIONS_CLOSED.labels(reason).inc()
        if answer:
            transport.write(answer)
        transport.close()

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.gate.ctx.settings.http_header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        if self.active == 0:
            self.close_with(_TIMEOUT_408, "header_timeout")


class _Refused(asyncio.Protocol):
    """A connection over the limits with nothing to make room: 503, closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        metrics.HTTP_CONNECTIONS_CLOSED.labels("refused").inc()
        tcp.write(_BUSY_503)
        tcp.close()


class ConnectionGate:
    """Admits, tracks and sheds the HTTP listener's connections (see the module docstring)."""

    def __init__(self, ctx: Platform) -> None:
        self.ctx = ctx
        self.server: Callable[[], asyncio.Protocol] | None = None  # aiohttp's protocol factory
        self.connections: dict[GuardedConnection, None] = {}
        self._idle: dict[GuardedConnection, None] = {}  # no request in progress, longest idle first
        self._by_handler: dict[object, GuardedConnection] = {}

    def protocol(self) -> asyncio.Protocol:
        """The protocol factory for ``loop.create_server``: one call per accepted connection."""
        assert self.server is not None, "attach aiohttp's server first"
        if not self._room():
            return _Refused()
        inner = safe_answers(self.server())
        guard = GuardedConnection(self, inner)
        self.connections[guard] = None
        self._idle[guard] = None
        self._by_handler[inner] = guard
        metrics.HTTP_CONNECTIONS.inc()
        metrics.HTTP_CONNECTIONS_ACTIVE.inc()
        return guard

    def _room(self) -> bool:
        """A slot of the cap and of the budget for a new connection, freed from the longest-idle
        connection when needed; False when every connection has a request in progress."""
        while len(self.connections) >= self.ctx.settings.http_max_connections or not self.ctx.connections.take():
            if not self._idle:
                return False
            victim = next(iter(self._idle))
            self.forget(victim)
            victim.close_with(b"", "evicted")
        return True

    def forget(self, guard: GuardedConnection) -> None:
        """Give back the connection's slots (once: when evicted, or when it is lost)."""
        if not guard.counted:
            return
        guard.counted = False
        self.connections.pop(guard, None)
        self._idle.pop(guard, None)
        self.ctx.connections.give()
        metrics.HTTP_CONNECTIONS_ACTIVE.dec()

    def busy(self, guard: GuardedConnection) -> None:
        self._idle.pop(guard, None)

    def idle(self, guard: GuardedConnection) -> None:
        if guard.counted:
            self._idle.pop(guard, None)
            self._idle[guard] = None  # the longest idle stay first

    def lost(self, guard: GuardedConnection) -> None:
        self.forget(guard)
        self._by_handler.pop(guard.inner, None)

    def guard_of(self, request: web.BaseRequest) -> GuardedConnection | None:
        return self._by_handler.get(request.protocol)


GATE_KEY: web.AppKey[ConnectionGate] = web.AppKey("connection_gate", ConnectionGate)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection a request is in progress; and if its body has not arrived in full
    ``http_body_timeout_s`` after the headers while the handler still runs, answer 408 and
    close (the handler's read then fails: the reply counted is that 408)."""
    gate = request.app.get(GATE_KEY)
    guard = gate.guard_of(request) if gate is not None else None
    if gate is None or guard is None:  # a listener the gate does not run (a benchmark's own runner)
        return await handler(request)
    guard.request_started()
    late: list[bool] = []
    timer = None
    if request.body_exists and not request.content.is_eof():
        timer = asyncio.get_running_loop().call_later(
            gate.ctx.settings.http_body_timeout_s, _body_late, guard, request, late)
    try:
        return await handler(request)
    except Exception:
        if late:
            return web.Response(status=408)  # the connection is gone: aiohttp drops this reply
        raise
    finally:
        if timer is not None:
            timer.cancel()
        guard.request_finished()


def _body_late(guard: GuardedConnection, request: web.Request, late: list[bool]) -> None:
    if not request.content.is_eof():
        late.append(True)
        guard.close_with(_TIMEOUT_408, "body_timeout")


def runner_options(ctx: Platform) -> dict[str, Any]:
    """aiohttp server options the limits need: its keep-alive timeout."""
    return {"keepalive_timeout": ctx.settings.http_keepalive_timeout_s}

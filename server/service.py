"""``DDService``: the DD TCP listener of one worker — connection limit, task bound, drain.

At the connection limit (``dd_max_connections``, or the process's descriptor budget shared with HTTP) the
connection quiet longest between flows (no step running, no flow begun, or only the optional DD19 left) is
closed to make room, as the HTTP listener does: idle connections cannot lock the terminals out. Only when
none of the ``EVICT_SCAN`` quiet longest is between flows is the new connection closed at once.

``start`` binds ``dd_host:dd_port`` (``SO_REUSEPORT`` when several workers share the port)
and returns the bound port. ``stop(grace_s)`` stops accepting, closes connections that are
between flows, lets flows in progress finish within the grace period, then closes what is
left and waits briefly for database steps already running (they are single transactions;
cancelling one would only roll it back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from recharge import metrics
from recharge.context import Platform
from recharge.loads.lanes import LoadLanes
from recharge.network import parse_networks
from server.dd_context import DDContext
from server.frame_metrics import FrameMetrics
from server.idle import IdleWheel
from server.protocol import DDProtocol

log = logging.getLogger(__name__)

_DRAIN_POLL_S = 0.05
_STEP_FINISH_S = 2.0  # after the grace period, how long running database steps may still take
# The idle wheel's tick: an idle connection closes at most this long (or a quarter of
# dd_idle_timeout_s, if less) after its deadline, never before.
_IDLE_TICK_S = 0.5
_SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
EVICT_SCAN = 64  # at the limit, how many of the connections quiet longest are looked at for one between flows


def _warn_if_backlog_capped(backlog: int) -> None:
    """The kernel silently caps a listen backlog at ``net.core.somaxconn`` (Linux): say so."""
    try:
        cap = int(_SOMAXCONN.read_text())
    except (OSError, ValueError):
        return
    if cap < backlog:
        log.warning("dd_listen_backlog %d is capped by the kernel at net.core.somaxconn = %d;"
                    " raise the sysctl for bursts of reconnecting terminals", backlog, cap)


class DDService:
    """The DD server of one worker process, on the running event loop."""

    def __init__(self, ctx: Platform, lanes: LoadLanes | None = None) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.dd = DDContext.create(ctx, lanes)  # lanes: shared with the HTTP side's wallet loads
        self.trusted_proxies = parse_networks(ctx.settings.trusted_proxies)
        self.connections: dict[DDProtocol, None] = {}  # by their last answer: the one quiet longest first
        self.inflight = 0
        self._server: asyncio.AbstractServer | None = None
        self._idle: IdleWheel | None = None
        self.frame_metrics = FrameMetrics()
        self._flusher: asyncio.TimerHandle | None = None
        self._unhook: Callable[[], None] | None = None

    @property
    def idle(self) -> IdleWheel:
        """The one timer watching every connection's idle deadline (made by ``start``)."""
        if self._idle is None:
            raise RuntimeError("the DD service has not started")
        return self._idle

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._idle = IdleWheel(min(_IDLE_TICK_S, self.settings.dd_idle_timeout_s / 4))
        self._unhook = metrics.before_render(self.frame_metrics.flush)
        self._flush()
        backlog = self.settings.dd_listen_backlog
        self._server = await loop.create_server(
            lambda: DDProtocol(self),
            self.settings.dd_host,
            self.settings.dd_port,
            reuse_port=True if self.settings.workers > 1 else None,
            backlog=backlog,
        )
        port = int(self._server.sockets[0].getsockname()[1])
        log.info("DD server listening on %s:%d", self.settings.dd_host, port)
        _warn_if_backlog_capped(backlog)
        return port

    def _flush(self) -> None:
        """Write the DD metrics counted since the last flush; again in ``dd_metrics_flush_s``."""
        self.frame_metrics.flush()
        self._flusher = asyncio.get_running_loop().call_later(self.settings.dd_metrics_flush_s, self._flush)

    # --- bookkeeping called by the protocols

    def admit(self, protocol: DDProtocol) -> bool:
        """Count a new connection in, making room at the limit or when the process's connection budget (its
        file descriptors, shared with HTTP) is spent; False when there is no room or we are draining."""
        if self.ctx.draining:
            return False
        while len(self.connections) >= self.settings.dd_max_connections or not self.ctx.connections.take():
            if not self._make_room():
                return False
        self.connections[protocol] = None
        return True

    def _make_room(self) -> bool:
        """Close the connection quiet longest that is between flows (among the ``EVICT_SCAN`` first)."""
        for n, protocol in enumerate(self.connections):
            if n >= EVICT_SCAN:
                break
            if protocol.between_flows:
                self.forget(protocol)  # its slots are free now; connection_lost comes later
                protocol.close()
                metrics.DD_CONNECTIONS_EVICTED.inc()
                return True
        return False

    def answered(self, protocol: DDProtocol) -> None:
        """``protocol`` answered a request: it is the one quiet shortest now."""
        if protocol in self.connections:
            del self.connections[protocol]
            self.connections[protocol] = None

    def forget(self, protocol: DDProtocol) -> None:
        if protocol in self.connections:
            del self.connections[protocol]
            self.ctx.connections.give()

    def take_slot(self) -> bool:
        if self.inflight >= self.settings.dd_max_inflight_db_tasks:
            return False
        self.inflight += 1
        return True

    def release_slot(self) -> None:
        self.inflight -= 1

    def task_done(self, protocol: DDProtocol) -> None:
        if self.ctx.draining and protocol.between_flows:
            protocol.close()

    # --- shutdown

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; flows in progress get ``grace_s`` to finish; then close the rest."""
        if self._server is None:
            return
        self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while True:
            for protocol in list(self.connections):
                if protocol.between_flows:
                    protocol.close()
            if not self.connections or loop.time() >= deadline:
                break
            await asyncio.sleep(_DRAIN_POLL_S)
        if self.connections:
            log.warning("closing %d DD connections still in a flow after the grace period", len(self.connections))
        running = [p.task for p in list(self.connections) if p.task is not None]
        for protocol in list(self.connections):
            protocol.close()
        if running:
            await asyncio.wait(running, timeout=_STEP_FINISH_S)
        # Batches finish and commit; kept connections go back to the pool before it closes.
        await self.dd.wait_idle()
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        except TimeoutError:
            log.warning("DD listener did not close within 1 s")
        self._server = None
        if self._idle is not None:
            self._idle.close()
        if self._flusher is not None:
            self._flusher.cancel()
        if self._unhook is not None:
            self._unhook()
        self.frame_metrics.flush()

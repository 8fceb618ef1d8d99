"""The aiohttp application and its service wrapper on the shared event loop.

aiohttp's ``AppRunner`` runs inside a loop we own and, unlike ``uvicorn.Server.serve()``,
leaves SIGINT/SIGTERM to us, so one signal handler drains both the DD server and HTTP (see
docs/ARCHITECTURE.md); the listening socket is ours, behind the connection gate
(``http_api.connections``). Feature modules listed in
``ROUTE_MODULES`` each expose ``setup(app)`` to add their routes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from http_api import admin, console, kkt_rest, kkt_soap, kkt_soap_doc, mpay_api, openapi, order_api, sms
from http_api.connections import GATE_KEY, ConnectionGate, guard_requests, runner_options
from http_api.context import KKT_LANE_KEY, LANES_KEY, PLATFORM_KEY, platform_of, route_of
from http_api.forwarded import real_client_middleware
from http_api.server_log import server_logger
from recharge import metrics, observability
from recharge.context import Busy, Platform
from recharge.db import unavailable
from recharge.kkt.transaction import trade_lane
from recharge.loads.lanes import LoadLanes
from recharge.network import parse_networks

log = logging.getLogger(__name__)

# Each module has ``setup(app: web.Application) -> None``. One line per feature.
ROUTE_MODULES = (order_api, kkt_rest, kkt_soap, kkt_soap_doc, admin, sms, mpay_api, console, openapi)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its route template (never the raw path)."""
    started = time.perf_counter()
    route = route_of(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception as exc:
        if not isinstance(exc, Busy) and not unavailable(exc):
            raise
        status = 503
        metrics.BUSY_ANSWERS.labels("http").inc()
        # Routes with their own reply format (order API, SMS) answer busy themselves; this is
        # the plain fallback for the rest (admin, a route meeting an unreachable database
        # outside ``Platform.acquire``): nothing was done.
        return web.Response(status=503, text="system busy, retry later\n", headers={"Retry-After": "1"})
    finally:
        metrics.child(metrics.HTTP_REQUESTS, route, request.method, str(status)).inc()
        metrics.child(metrics.HTTP_SECONDS, route).observe(time.perf_counter() - started)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process and its loop answer."""
    return web.json_response({"status": "ok"})


def _not_serving(request: web.Request) -> web.Response | None:
    ctx = platform_of(request)
    if not ctx.ready or ctx.draining:
        return web.json_response({"status": "draining" if ctx.draining else "starting"}, status=503)
    return None


async def readyz_node(request: web.Request) -> web.Response:
    """A load balancer's check: this node takes new connections (started, not draining).

    The database's state is left out on purpose: every node shares it, so while it is down
    taking every node out would only turn quick busy answers into refused connections.
    """
    return _not_serving(request) or web.json_response({"status": "ready"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: serving, not draining, and the database answers."""
    ctx = platform_of(request)
    not_serving = _not_serving(request)
    if not_serving is not None:
        return not_serving
    try:
        async with ctx.acquire(1.0) as conn:
            await conn.fetchval("SELECT 1", timeout=1.0)
    except (Busy, OSError) as exc:  # DatabaseUnavailable is a Busy; TimeoutError an OSError
        return web.json_response({"status": "database unavailable", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ready"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus exposition; the pool gauges are refreshed first so they are never stale."""
    observability.sample_pool(platform_of(request).pool)
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


_PUBLIC_BASE_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


def build_app(ctx: Platform, lanes: LoadLanes | None = None) -> web.Application:
    base = ctx.settings.http_public_base_url
    if base and not _PUBLIC_BASE_URL.fullmatch(base):
        raise ValueError("http_public_base_url must be http(s)://host[:port][/path]")
    middlewares: list[Middleware] = [observe]
    trusted = parse_networks(ctx.settings.trusted_proxies)
    if trusted:  # with no trusted proxy it would only pass every request on (a call per request)
        middlewares.append(real_client_middleware(trusted))
    middlewares.append(guard_requests)  # innermost: a handler runs once its body has arrived
    app = web.Application(middlewares=middlewares, client_max_size=ctx.settings.http_max_body_bytes)
    app[PLATFORM_KEY] = ctx
    app[LANES_KEY] = lanes or LoadLanes.create(ctx)
    app[GATE_KEY] = ConnectionGate(ctx)
    app[KKT_LANE_KEY] = trade_lane(ctx) if ctx.settings.kkt_group_commit else None
    app.on_cleanup.append(_trades_done)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/readyz/node", readyz_node)
    app.router.add_get("/metrics", metrics_endpoint)
    for module in ROUTE_MODULES:
        module.setup(app)
    return app


async def _trades_done(app: web.Application) -> None:
    """At cleanup (requests in flight have finished): the trade lane's batches are done, its connections back."""
    lane = app[KKT_LANE_KEY]
    if lane is not None:
        await lane.wait_idle()


class HttpService:
    """The HTTP listener: started and drained by the runtime beside the DD server."""

    def __init__(self, ctx: Platform, lanes: LoadLanes | None = None) -> None:
        self.ctx = ctx
        app = build_app(ctx, lanes)
        self.gate = app[GATE_KEY]
        self.runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=ctx.settings.shutdown_grace_s,
            logger=server_logger(),  # a malformed request is logged without its bytes (issue 14 item 8)
            **runner_options(ctx),
        )
        self.port = 0
        self._listener: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen through the connection gate (``http_api.connections``) rather than aiohttp's
        ``TCPSite``, which would hand every accepted connection to aiohttp unchecked."""
        s = self.ctx.settings
        await self.runner.setup()
        assert self.runner.server is not None
        self.gate.server = self.runner.server
        self._listener = await asyncio.get_running_loop().create_server(
            self.gate.protocol, s.http_host, s.http_port, reuse_port=s.workers > 1 or None, backlog=1024
        )
        self.port = int(self._listener.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the grace period), close."""
        if self._listener is not None:
            self._listener.close()
        await self.runner.cleanup()
        if self._listener is not None:
            try:
                await asyncio.wait_for(self._listener.wait_closed(), timeout=1.0)
            except TimeoutError:
                log.warning("HTTP listener did not close within 1 s")
            self._listener = None

"""The mobile payment API under ``/mpay/v1`` (SPEC 6.12, 6.13): one aiohttp sub-application.

It gathers the website's (``mpay_customer``), the partners' (``mpay_partners``) and the
staff's (``mpay_staff``) routes, the SIM wallet's STK and POS (``wallet_api``) and counter steps
(``wallet_counter``), the website's wallet views (``wallet_views``), the OpenAPI
3.1 document (``/mpay/v1/openapi.json``,
generated from its own routing table and the route declarations), Kannel's delivery reports (``/sms/dlr``), and
answers an unknown path (404) or method (405) with the JSON envelope's ``1001``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from http_api import (
    edge,
    mpay_customer,
    mpay_openapi,
    mpay_partners,
    mpay_staff,
    wallet_api,
    wallet_counter,
    wallet_views,
    wallet_web,
)
from http_api.context import PLATFORM_KEY
from http_api.mpay_gate import PREFIX, envelope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404 and 405 inside ``/mpay/v1`` answer the envelope (``1001``), not aiohttp's text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return envelope("1001", status=404)
    except web.HTTPMethodNotAllowed as exc:  # RFC 9110: a 405 names the methods the resource has
        return envelope("1001", status=405, headers={"Allow": ",".join(sorted(exc.allowed_methods))})
    except web.HTTPRequestEntityTooLarge:
        return envelope("1001", status=413)


async def openapi(request: web.Request) -> web.Response:
    """The document of this sub-application's own routing table (``request.app`` is ``/mpay/v1``)."""
    return web.json_response(mpay_openapi.document(request.app.router.routes()), dumps=mpay_openapi.dumps)


async def dlr(request: web.Request) -> web.Response:
    """Kannel's delivery report for an outbox message (3.3's secret); recorded, never resent."""
    ctx = request.config_dict[PLATFORM_KEY]
    given = request.headers.get("X-SMS-Secret") or request.query.get("secret")
    if not edge.secret_matches(given, ctx.settings.sms_shared_secret):
        return envelope("1002", status=403)
    message_id, status = request.query.get("id", ""), request.query.get("status", "")
    if not status.isdigit() or len(status) > 4 or len(message_id) != 36:
        return envelope("1001")
    async with ctx.acquire() as conn:
        try:
            await conn.execute("UPDATE mpay_outbox SET dlr_status = $2, dlr_at = now() WHERE id = $1::text::uuid",
                               message_id, int(status))
        except ValueError:
            return envelope("1001")
    return envelope("0000", {})


def build() -> web.Application:
    sub = web.Application(middlewares=[json_errors])
    mpay_customer.setup(sub)
    mpay_partners.setup(sub)
    mpay_staff.setup(sub)
    wallet_api.setup(sub)  # the SIM wallet's STK and POS (SPEC 7.2, 7.4)
    wallet_counter.setup(sub)  # the SIM wallet's counter steps (SPEC 7.6, 7.7)
    wallet_views.setup(sub)  # the website's wallet views (SPEC 6.13, 7.5)
    wallet_web.setup(sub)  # the website's wallet loads (SPEC 7.3: 网络侧转存, cancel)
    sub.router.add_get("/openapi.json", openapi)
    sub.router.add_get("/sms/dlr", dlr)
    return sub


def setup(app: web.Application) -> None:
    app.add_subapp(PREFIX, build())

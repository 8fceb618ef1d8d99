"""The operator console: the platform's back office, server-rendered under /console/ (issue 17)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from http_api.console import (
    auth,
    cards_pages,
    dashboard,
    hall_pages,
    kkt_pages,
    ledger_pages,
    loads,
    operators_pages,
    orders_pages,
    terminals_pages,
)
from http_api.console.formatting import FILTERS
from http_api.console.web import PREFIX, SECURITY_HEADERS, see_other
from http_api.context import PLATFORM_KEY

PAGE_MODULES = (auth, dashboard, loads, terminals_pages, kkt_pages, cards_pages, orders_pages, ledger_pages,
                operators_pages, hall_pages)


async def _secure_every_console_response(request: web.Request, response: web.StreamResponse) -> None:
    """Static files and the router's own 404s under /console/ carry the headers too."""
    if request.path.startswith(PREFIX):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


async def _home(request: web.Request) -> web.StreamResponse:
    return see_other(f"{PREFIX}/")


def setup(app: web.Application) -> None:
    if not app[PLATFORM_KEY].settings.console_enabled:
        return
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("http_api.console", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    app.on_response_prepare.append(_secure_every_console_response)
    app.router.add_get(PREFIX, _home)
    app.router.add_static(f"{PREFIX}/static/", Path(__file__).parent / "static")
    for module in PAGE_MODULES:
        module.setup(app)

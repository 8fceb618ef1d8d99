"""Where a request handler finds the platform (pool, settings, keys) it serves, and the route
template metrics label a request with."""

from __future__ import annotations

from aiohttp import web

from recharge.context import Platform
from recharge.loads.lanes import LoadLanes

PLATFORM_KEY: web.AppKey[Platform] = web.AppKey("platform", Platform)
# The process's load lanes (recharge/loads/lanes.py), shared with the DD server: the wallet's load steps.
LANES_KEY: web.AppKey[LoadLanes] = web.AppKey("load_lanes", LoadLanes)


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


def route_of(request: web.Request) -> str:
    """The request's route template (``/admin/kkt/cards/{card_no}``), never the raw path;
    ``unmatched`` for a path no route serves."""
    resource = request.match_info.route.resource
    return resource.canonical if resource else "unmatched"

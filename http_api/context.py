"""Where a request handler finds the platform (pool, settings, keys) it serves, the card
service's configuration with the process's group commit of trades, and the route template
metrics label a request with."""

from __future__ import annotations

from aiohttp import web

from recharge.context import Platform
from recharge.kkt.messages import Config
from recharge.ledger.group_commit import GroupCommit
from recharge.loads.lanes import LoadLanes

PLATFORM_KEY: web.AppKey[Platform] = web.AppKey("platform", Platform)
# The process's load lanes (recharge/loads/lanes.py), shared with the DD server: the wallet's load steps.
LANES_KEY: web.AppKey[LoadLanes] = web.AppKey("load_lanes", LoadLanes)
KKT_LANE_KEY: web.AppKey[GroupCommit | None] = web.AppKey("kkt_lane", GroupCommit)


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


def kkt_config(request: web.Request) -> Config:
    """The card service's Config of a request: settings, pepper and the app's trade lane (if any)."""
    ctx = request.app[PLATFORM_KEY]
    return Config.of(ctx.settings, ctx.keys, request.app.get(KKT_LANE_KEY))


def route_of(request: web.Request) -> str:
    """The request's route template (``/admin/kkt/cards/{card_no}``), never the raw path;
    ``unmatched`` for a path no route serves."""
    resource = request.match_info.route.resource
    return resource.canonical if resource else "unmatched"

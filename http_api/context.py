"""Where a request handler finds the platform (pool, settings, keys) it serves, the card
service's configuration with the process's group commit of trades (built once while they stay
the same), and the route template metrics label a request with."""

from __future__ import annotations

from aiohttp import web

from recharge.config import Settings
from recharge.context import Platform
from recharge.keys import MasterKeys
from recharge.kkt.messages import Config
from recharge.ledger.group_commit import GroupCommit
from recharge.loads.lanes import LoadLanes

PLATFORM_KEY: web.AppKey[Platform] = web.AppKey("platform", Platform)
# The process's load lanes (recharge/loads/lanes.py), shared with the DD server: the wallet's load steps.
LANES_KEY: web.AppKey[LoadLanes] = web.AppKey("load_lanes", LoadLanes)
KKT_LANE_KEY: web.AppKey[GroupCommit | None] = web.AppKey("kkt_lane", GroupCommit)


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


# The last Config built, with what it was built of (held, so none of them can be another object's id).
_LAST_CONFIG: list[tuple[Settings, MasterKeys, GroupCommit | None, Config]] = []


def kkt_config(request: web.Request) -> Config:
    """The card service's Config of a request: settings, pepper and the app's trade lane (if any).
    The last one built is answered again while the platform's settings and keys and the app's lane
    are the same objects (a new Config per request cost a dataclass and the pepper's lookup)."""
    ctx = request.app[PLATFORM_KEY]
    lane = request.app.get(KKT_LANE_KEY)
    if _LAST_CONFIG:
        settings, keys, last_lane, cfg = _LAST_CONFIG[0]
        if settings is ctx.settings and keys is ctx.keys and last_lane is lane:
            return cfg
    cfg = Config.of(ctx.settings, ctx.keys, lane)
    _LAST_CONFIG[:] = [(ctx.settings, ctx.keys, lane, cfg)]
    return cfg


def route_of(request: web.Request) -> str:
    """The request's route template (``/admin/kkt/cards/{card_no}``), never the raw path;
    ``unmatched`` for a path no route serves."""
    resource = request.match_info.route.resource
    return resource.canonical if resource else "unmatched"

"""Where the mobile payment handlers find their ``Env`` (settings, derived keys, hasher).

Built once per platform and settings object (tests swap settings on a running platform).
"""

from __future__ import annotations

from aiohttp import web

from http_api.context import platform_of
from recharge.context import Platform
from recharge.mpay.env import Env

_CACHE: dict[int, tuple[object, object, Env]] = {}


def env_of_platform(ctx: Platform) -> Env:
    cached = _CACHE.get(id(ctx))
    if cached is not None and cached[0] is ctx.settings and cached[1] is ctx.keys:
        return cached[2]
    env = Env.of(ctx.settings, ctx.keys)
    _CACHE[id(ctx)] = (ctx.settings, ctx.keys, env)
    return env


def env_of(request: web.Request) -> Env:
    return env_of_platform(platform_of(request))

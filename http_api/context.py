"""Where a request handler finds the platform (pool, settings, keys) it serves."""

from __future__ import annotations

from aiohttp import web

from recharge.context import Platform

PLATFORM_KEY: web.AppKey[Platform] = web.AppKey("platform", Platform)


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]

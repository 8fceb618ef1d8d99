"""SIGTERM behind a load balancer: not ready at once, still serving for ``drain_delay_s``, then draining."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from recharge.config import Settings
from tests.conftest import eventually


async def _readyz(port: int, path: str = "/readyz") -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status


async def test_a_stopping_node_reports_not_ready_before_it_refuses_connections(settings: Settings) -> None:
    from app.runtime import RunningPlatform

    # a drain delay far longer than the checks below take, however loaded the machine
    running: Any = RunningPlatform(settings.replace(drain_delay_s=3.0), settings.database_url or "")
    await running.start()
    assert await _readyz(running.http_port, "/readyz/node") == 200
    stopping = asyncio.create_task(running.stop())
    try:
        await eventually(lambda: not running.ctx.ready, "the stop begun")
        assert await _readyz(running.http_port, "/readyz/node") == 503  # the balancer's check fails at once
        assert await _readyz(running.http_port) == 503
        reader, writer = await asyncio.open_connection("127.0.0.1", running.dd_port)
        # …while a connection it already routed is still served
        await eventually(lambda: len(running.dd.connections) == 1, "the routed connection accepted")
        writer.close()
        assert not stopping.done()
    finally:
        await stopping
    assert running.ctx.draining

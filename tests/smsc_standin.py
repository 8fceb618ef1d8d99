"""A stand-in SMSC that speaks Kannel's ``sendsms`` HTTP interface (POST, text/plain body,
``X-Kannel-*`` headers) on a free port, records what it was sent, and answers as told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Sent:
    to: str
    text: str
    headers: dict[str, str]


@dataclass
class StandInSmsc:
    status: int = 202
    answer: str = "0: Accepted for delivery"
    received: list[Sent] = field(default_factory=list)
    url: str = ""

    async def sendsms(self, request: web.Request) -> web.Response:
        text = (await request.read()).decode("utf-8")
        self.received.append(Sent(request.headers.get("X-Kannel-To", ""), text, dict(request.headers)))
        return web.Response(status=self.status, text=self.answer)

    def to(self, msisdn: str) -> list[Sent]:
        return [s for s in self.received if s.to == msisdn]


@asynccontextmanager
async def running_smsc() -> AsyncIterator[StandInSmsc]:
    smsc = StandInSmsc()
    app = web.Application()
    app.router.add_post("/cgi-bin/sendsms", smsc.sendsms)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    smsc.url = f"http://127.0.0.1:{port}/cgi-bin/sendsms"
    try:
        yield smsc
    finally:
        await runner.cleanup()

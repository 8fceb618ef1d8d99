"""The DD servers the benchmarks start, each in a process of its own: the platform's ``DDService``
(answering the parent's questions about it over a queue) and raw uvloop servers that do nothing
but the bytes, the baselines and floors the platform is compared with.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import astuple
from typing import Any

STATS = "stats"  # the group commit's counts: [commits, steps, retries, lookup statements, lookups]
CONNECTIONS = "connections"  # how many connections the service holds now


def dd_server_main(settings: Any, dsn: str, asks: Any, answers: Any, ports: Any) -> None:
    """``DDService`` on ``settings.dd_host:dd_port`` (0: any free port) until terminated."""
    import uvloop

    async def main() -> None:
        from recharge import db
        from recharge.context import Platform
        from recharge.keys import load_keys
        from server.service import DDService

        pool = await db.create_pool(dsn, settings)
        ctx = Platform(settings=settings, pool=pool, keys=load_keys(settings.resolved_key_file), dsn=dsn)
        service = DDService(ctx)
        ports.put(await service.start())
        loop = asyncio.get_running_loop()
        while True:  # until the parent terminates us: answer its questions
            question = await loop.run_in_executor(None, asks.get)
            answers.put(_stats(service) if question == STATS else len(service.connections))

    uvloop.run(main())


def _stats(service: Any) -> list[int]:
    """The DD server's counts, both group-commit lanes summed, then its read gate's."""
    dd = service.dd
    lane, fund, reads = dd.writer.stats, dd.fund_writer.stats, dd.reads.stats
    return [a + b for a, b in zip(astuple(lane), astuple(fund), strict=True)] + list(astuple(reads))


def ask(asks: Any, answers: Any, question: str) -> Any:
    asks.put(question)
    return answers.get(timeout=30)


class HoldOnly(asyncio.Protocol):
    """The floor of an idle connection: a protocol that keeps its transport and nothing else."""

    held = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        HoldOnly.held += 1

    def connection_lost(self, exc: Exception | None) -> None:
        HoldOnly.held -= 1


def hold_server_main(host: str, port: int, backlog: int, asks: Any, answers: Any, ports: Any) -> None:
    """A raw uvloop server that holds every connection and does nothing else (``SO_REUSEPORT``)."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(HoldOnly, host, port, backlog=backlog, reuse_port=True)
        sock = server.sockets[0]
        ports.put(sock.getsockname()[1])
        assert sock.family == socket.AF_INET
        while True:
            await loop.run_in_executor(None, asks.get)
            answers.put(HoldOnly.held)

    uvloop.run(main())

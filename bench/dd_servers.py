"""The DD servers the benchmarks start, each in a process of its own: the platform's ``DDService``
(answering the parent's questions about it over a queue) and raw uvloop servers that do nothing
but the bytes, the baselines and floors the platform is compared with.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import astuple
from typing import Any

from server.frame_metrics import FrameMetrics

STATS = "stats"  # the group commit's counts: [commits, steps, retries, lookup statements, lookups]
CONNECTIONS = "connections"  # how many connections the service holds now
STAGE_SECONDS = "stage_seconds"  # (dd_stage_server_main) each answer's seconds by stage, since the last ask


def dd_server_main(settings: Any, dsn: str, asks: Any, answers: Any, ports: Any) -> None:
    """``DDService`` on ``settings.dd_host:dd_port`` (0: any free port) until terminated."""
    _serve(settings, dsn, asks, answers, ports, record=False)


def dd_stage_server_main(settings: Any, dsn: str, asks: Any, answers: Any, ports: Any) -> None:
    """``dd_server_main`` that also keeps the seconds of every answer by stage (``STAGE_SECONDS``):
    the same measure as its ``recharge_dd_stage_duration_seconds`` histogram, unbucketed."""
    _serve(settings, dsn, asks, answers, ports, record=True)


def _serve(settings: Any, dsn: str, asks: Any, answers: Any, ports: Any, *, record: bool) -> None:
    import uvloop

    async def main() -> None:
        from app.runtime import settle_heap
        from recharge import db
        from recharge.context import Platform
        from recharge.keys import load_keys
        from server.service import DDService

        pool = await db.create_pool(dsn, settings)
        ctx = Platform(settings=settings, pool=pool, keys=load_keys(settings.resolved_key_file), dsn=dsn)
        service = DDService(ctx)
        recorder = RecordingFrameMetrics() if record else None
        if recorder is not None:
            service.frame_metrics = recorder
        port = await service.start()
        settle_heap()  # as a worker does after its start-up (app/runtime.py)
        ports.put(port)
        loop = asyncio.get_running_loop()
        while True:  # until the parent terminates us: answer its questions
            question = await loop.run_in_executor(None, asks.get)
            if question == STATS:
                answers.put(_stats(service))
            elif question == STAGE_SECONDS and recorder is not None:
                answers.put(recorder.take())
            else:
                answers.put(len(service.connections))

    uvloop.run(main())


class RecordingFrameMetrics(FrameMetrics):
    """``FrameMetrics`` that also keeps each answer's seconds by stage: from the request frame
    parsed to its answer written (``DDProtocol``'s measure, the server's view of a stage)."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[int, list[float]] = {}

    def answered(self, stage: int, result: int, seconds: float) -> None:
        super().answered(stage, result, seconds)
        self.seconds.setdefault(stage, []).append(seconds)

    def take(self) -> dict[int, list[float]]:
        """The seconds kept since the last ``take``."""
        taken, self.seconds = self.seconds, {}
        return taken


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

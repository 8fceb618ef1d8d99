"""A seeded, fault-injecting TCP proxy between the chaos clients and the platform.

``python -m chaos.proxy --seed S --route LISTEN:TARGET:dd --route LISTEN:TARGET:http …``. Each
accepted connection ``n`` of a route draws its fault from ``Random(f"{seed}:{route}:{n}")`` —
the same connection number gets the same fault in a replay:

- ``none`` (most connections) — bytes pass untouched;
- ``delay`` — every chunk waits 10–300 ms, both directions;
- ``stall`` — one direction stops for 0.5–4 s after N bytes, then goes on;
- ``cut_bytes`` — the connection is cut (RST) after N bytes in one direction;
- ``cut_stage`` (DD routes) — cut after the k-th whole DD frame in one direction, i.e. after a
  given stage: a request that never arrives, or an answer the terminal never sees.

The counts of faults injected are written as JSON to ``--stats`` every second and at exit; with ``--log``,
each fault as one JSON line (its time, the client's address, route, kind and direction), from which the
harness measures how long each client took to get a definite answer again (chaos/report.py).

The proxy holds each connection's task until it ends (asyncio holds tasks only weakly: a relay whose client
had gone while the platform's side stayed open was garbage-collected mid-run, "Task was destroyed but it is
pending!"), and ``close`` cuts and awaits every one of them, so a run leaves nothing pending.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULTS = ("none", "delay", "stall", "cut_bytes", "cut_stage")
DIRECTIONS = ("up", "down")  # up: client → platform, down: platform → client
DD_OVERHEAD = 9  # header 2, version 1, length 2 … checksum 4 around the length field's bytes


@dataclass(frozen=True)
class Fault:
    kind: str
    direction: str = "up"
    at: int = 0  # bytes (stall, cut_bytes) or whole frames (cut_stage)
    seconds: float = 0.0  # stall length, or delay per chunk

    @classmethod
    def draw(cls, rng: random.Random, dd: bool, rate: float) -> Fault:
        if rng.random() >= rate:
            return cls("none")
        kinds = ["delay", "stall", "cut_bytes"] + (["cut_stage", "cut_stage"] if dd else [])
        kind, direction = rng.choice(kinds), rng.choice(DIRECTIONS)
        if kind == "delay":
            return cls(kind, direction, seconds=rng.uniform(0.01, 0.3))
        if kind == "stall":
            return cls(kind, direction, at=rng.randrange(0, 200), seconds=rng.uniform(0.5, 4.0))
        if kind == "cut_bytes":
            return cls(kind, direction, at=rng.randrange(1, 300))
        return cls(kind, direction, at=rng.randrange(1, 6))


class FrameCounter:
    """Where whole DD frames end in a byte stream (by their length field)."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.remaining: int | None = None  # bytes left of the frame under way, once its length is known
        self.frames = 0

    def feed(self, data: bytes, want: int) -> int | None:
        """How many bytes of ``data`` end the ``want``-th whole frame, or None when it does not end here."""
        i = 0
        while i < len(data):
            if self.remaining is None:
                take = min(5 - len(self.head), len(data) - i)
                self.head += data[i:i + take]
                i += take
                if len(self.head) == 5:
                    self.remaining = DD_OVERHEAD - 5 + int.from_bytes(self.head[3:5], "big")
                continue
            take = min(self.remaining, len(data) - i)
            self.remaining -= take
            i += take
            if self.remaining == 0:
                self.frames, self.remaining = self.frames + 1, None
                self.head.clear()
                if self.frames >= want:
                    return i
        return None


class Proxy:
    def __init__(self, seed: int, rate: float, log: Path | None = None) -> None:
        self.seed, self.rate = seed, rate
        self.log = log.open("a", encoding="utf-8") if log is not None else None
        self.counts: Counter[str] = Counter()
        self.connections: Counter[str] = Counter()
        self.servers: list[asyncio.Server] = []
        self.tasks: set[asyncio.Task[Any]] = set()  # one per connection relayed now (strong references)
        self.closing = False

    async def serve(self, listen: int, target: int, name: str) -> asyncio.Server:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.closing:  # accepted as the listener closed
                _abort(writer)
                return
            n = self.connections[name]
            self.connections[name] += 1
            fault = Fault.draw(random.Random(f"{self.seed}:{name}:{n}"), name == "dd", self.rate)
            await self.relay(reader, writer, target, fault, name)

        server = await asyncio.start_server(accept, "127.0.0.1", listen, reuse_address=True, backlog=1024)
        self.servers.append(server)
        return server

    async def close(self) -> None:
        """Stop listening, cut every connection still relayed and wait until each one's task has ended."""
        self.closing = True
        for server in self.servers:
            server.close()
        for _ in range(10):  # a connection accepted as the listener closed starts its task a few turns later
            while self.tasks:
                tasks = list(self.tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int, fault: Fault,
                    name: str) -> None:
        """Pass bytes both ways between the client and the platform, doing ``fault`` to them."""
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._relay(reader, writer, target, fault, name)
        except asyncio.CancelledError:
            if not self.closing:  # cut by anything but ``close``: a cancellation as usual
                raise
            # cut by ``close``: ends quietly (asyncio reports a cancelled client_connected_cb as an error)
        finally:
            self.tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int, fault: Fault,
                     name: str) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            _abort(writer)  # the platform is down: the client sees its connection reset
            return
        except asyncio.CancelledError:
            _abort(writer)
            raise
        if fault.kind != "none":
            self.counts[f"{name}:{fault.kind}:{fault.direction}"] += 1
            self._log(writer, name, fault)
        cut = asyncio.Event()

        def sever() -> None:
            """Both sides at once (RST): a cut, or a side gone — the other direction must not wait for a timeout."""
            cut.set()
            for w in (writer, up_writer):
                _abort(w)

        try:
            await asyncio.gather(self.pump(reader, up_writer, fault, "up", cut, sever),
                                 self.pump(up_reader, writer, fault, "down", cut, sever), return_exceptions=True)
        except asyncio.CancelledError:  # the proxy closing: both sides cut
            sever()
            raise
        if not cut.is_set():
            for w in (writer, up_writer):
                w.close()

    async def pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, fault: Fault, direction: str,
                   cut: asyncio.Event, sever: Callable[[], None]) -> None:
        mine = fault.direction == direction
        sent, stalled, frames = 0, False, FrameCounter()
        try:
            while not cut.is_set():
                data = await src.read(4096)
                if not data or cut.is_set():
                    break
                if fault.kind == "delay":
                    await asyncio.sleep(fault.seconds)
                if mine and fault.kind == "stall" and not stalled and sent + len(data) > fault.at:
                    stalled = True
                    await asyncio.sleep(fault.seconds)
                keep: int | None = None  # where to cut this chunk, if here
                if mine and fault.kind == "cut_bytes" and sent + len(data) >= fault.at:
                    keep = fault.at - sent
                elif mine and fault.kind == "cut_stage":
                    keep = frames.feed(data, fault.at)
                dst.write(data if keep is None else data[:keep])
                await dst.drain()
                sent += len(data)
                if keep is not None:
                    sever()
            if not cut.is_set() and dst.can_write_eof():
                dst.write_eof()
        except OSError:
            sever()

    def _log(self, writer: asyncio.StreamWriter, name: str, fault: Fault) -> None:
        if self.log is None:
            return
        peer = writer.get_extra_info("peername")
        self.log.write(json.dumps({"t": round(time.time(), 3), "peer": peer[0] if isinstance(peer, tuple) else "",
                                   "route": name, "kind": fault.kind, "dir": fault.direction}) + "\n")
        self.log.flush()

    def stats(self) -> dict[str, object]:
        return {"connections": dict(self.connections), "faults": dict(self.counts)}


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:  # RST, not FIN: a cut cable, not a polite close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
    writer.transport.abort()


async def run(routes: list[tuple[int, int, str]], seed: int, rate: float, stats: Path, log: Path | None) -> None:
    proxy = Proxy(seed, rate, log)
    for listen, target, name in routes:
        await proxy.serve(listen, target, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("PROXY READY", flush=True)
    while not stop.is_set():
        _save(stats, proxy.stats())
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    await proxy.close()
    _save(stats, proxy.stats())


def _save(path: Path, stats: dict[str, object]) -> None:
    path.write_text(json.dumps(stats))  # a few hundred bytes once a second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.3, help="share of connections that get a fault")
    parser.add_argument("--route", action="append", required=True, help="LISTEN_PORT:TARGET_PORT:dd|http")
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--log", type=Path, help="one JSON line per fault injected")
    a = parser.parse_args(argv)
    routes = [(int(p), int(t), n) for p, t, n in (r.split(":") for r in a.route)]
    asyncio.run(run(routes, a.seed, a.rate, a.stats, a.log))
    return 0


if __name__ == "__main__":
    sys.exit(main())

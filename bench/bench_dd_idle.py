"""Benchmark of idle DD connections: what each costs the server in memory, and that new recharges
are still served while they are held. Every figure is the median of ``RUNS`` paired runs
(the floor and the platform alternating, each run with fresh server processes).

- ``dd_idle_connections_kib_each``: ``CONNECTIONS`` (50,000) DD connections that connect and send
  nothing — terminals waiting to start a flow — held by the DD server (``DDService``, the
  platform's default settings but ``dd_idle_timeout_s``, raised so that none times out during the
  run, and ``dd_max_connections``); the growth of the server processes' resident memory (VmRSS,
  summed) from before the first connection to when the server holds them all, divided by the
  connections. The connections come from ``SOURCES_PER_RUN`` loopback source addresses
  (127.0.r.2, 127.0.r.3, …: a different set each run, so that no run waits for another's ports),
  at most ``PORTS_PER_SOURCE`` from each, ``CONNECT_CONCURRENCY`` connects in flight, from client
  processes of their own.
- ``dd_idle_floor_kib_each``: the same connections held by a raw uvloop server whose protocol keeps
  its transport and nothing else: what the event loop and the kernel's socket bookkeeping in the
  process cost per connection, the floor of the figure above.
- ``dd_idle_recharges_ok``: while the platform holds them, ``SERVED_TERMINALS`` terminals sign in
  and recharge ``SERVED_RECHARGES`` orders each on new connections; the share that succeeded
  (the run fails unless it is 1).

A process may hold at most its ``RLIMIT_NOFILE`` descriptors; the benchmark raises its soft limit to
the hard one (its server processes inherit it). Where the hard limit is below
the connections wanted (an unprivileged container cannot raise it), the connections are spread
over ``dd_idle_workers`` server processes sharing the port with ``SO_REUSEPORT`` — what
``rechargectl serve --workers N`` does in production — and their growth is summed: the
per-connection figure is the same, and the report says how many processes held them.

With ``DATABASE_URL`` set it uses that server, else an embedded PostgreSQL in ``var/bench-pgdata``.
``python -m bench.bench_dd_idle`` prints the figures. About three minutes.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from bench.dd_servers import CONNECTIONS as COUNT_CONNECTIONS
from bench.dd_servers import ask, dd_server_main, hold_server_main
from bench.measure import PAIRED_RUNS, paired, rss_bytes, sized, spread
from bench.world import bench_world, run_client

CONNECTIONS = sized(50_000, 600)
RUNS = PAIRED_RUNS
SOURCES_PER_RUN = 8  # 127.0.r.2 … 127.0.r.9
PORTS_PER_SOURCE = 20_000  # of the ~28,000 ephemeral ports per (source, destination) pair
CONNECT_CONCURRENCY = 256  # connects in flight per client process: within the listen backlog
NOFILE_RESERVE = 1_000  # descriptors a server process keeps for its pool, files and listener
SERVED_TERMINALS = sized(8, 2)
SERVED_RECHARGES = sized(3, 1)
SETTLE_S = 1.0  # after the last connection is counted in, before RSS is read

GOALS = {"dd_idle_connections_kib_each": "<= 10", "dd_idle_recharges_ok": ">= 1"}
NOTES = {"dd_idle_floor_kib_each": "raw uvloop server holding the same connections"}


def _raise_nofile() -> int:
    """Soft ``RLIMIT_NOFILE`` up to the hard one (children inherit it); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def _sources(run: int, floor: bool) -> list[str]:
    """This phase's own loopback source addresses (127.0.<phase>.2 …)."""
    phase = 1 + 2 * run + (0 if floor else 1)
    return [f"127.0.{phase}.{2 + i}" for i in range(SOURCES_PER_RUN)]


# --- the client: open, report, hold, close -------------------------------------------------------


def _holder_main(port: int, sources: list[str], count: int, opened: Any, release: Any, results: Any) -> None:
    """Open ``count`` connections to ``port`` from ``sources`` (round robin), say how many opened,
    hold them until ``release``, then close them."""

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        held: list[socket.socket] = []
        failures = 0
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(source: str) -> None:
            nonlocal failures
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((source, 0))
                async with gate:
                    await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 30)
                held.append(sock)
            except (OSError, TimeoutError):
                failures += 1
                sock.close()

        await asyncio.gather(*(one(sources[i % len(sources)]) for i in range(count)))
        opened.put((len(held), failures))
        await loop.run_in_executor(None, release.get)
        for sock in held:
            sock.close()
        return len(held), failures

    results.put(asyncio.run(main()))


def _served_main(plan: Any, results: Any) -> None:
    """Terminals sign in and recharge on new connections; the outcomes."""
    import uvloop

    from server.terminal_client import AsyncTerminalClient, ConnectionClosed, FlowFailed

    async def terminal(index: int) -> list[str]:
        term = plan.terminals[index]
        client = AsyncTerminalClient(plan.host, plan.port, term.code, term.pki, timeout_s=30.0)
        outcomes = []
        try:
            await client.sign_in(term.module())
            card = term.card(plan.cards[index], 0)
            for order_no in plan.orders[index]:
                await client.recharge(card, order_no, plan.amount_cents)
                outcomes.append("00")
        except FlowFailed as exc:
            outcomes.append(f"{exc.result:02X}")
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            outcomes.append(type(exc).__name__)
        return outcomes

    async def main() -> list[str]:
        done = await asyncio.gather(*(terminal(i) for i in range(len(plan.terminals))))
        return [o for outcomes in done for o in outcomes]

    results.put(uvloop.run(main()))


# --- one run ----------------------------------------------------------------------------------------


class _Servers:
    """``workers`` server processes sharing one port, and a way to ask each how many it holds."""

    def __init__(self, ctx: Any, workers: int, target: Any, args: Callable[[int], tuple[Any, ...]]) -> None:
        """``target(*args(port), asks, answers, ports)`` per worker; the first binds port 0."""
        self.procs: list[Any] = []
        self.queues: list[tuple[Any, Any]] = []
        self.port = 0
        for _ in range(workers):
            asks, answers, ports = ctx.Queue(), ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=target, args=(*args(self.port), asks, answers, ports), daemon=True)
            proc.start()
            self.port = int(ports.get(timeout=120))
            self.procs.append(proc)
            self.queues.append((asks, answers))

    def held(self) -> int:
        return sum(int(ask(asks, answers, COUNT_CONNECTIONS)) for asks, answers in self.queues)

    def rss(self) -> int:
        return sum(rss_bytes(p.pid) for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join(10)


def _hold(ctx: Any, servers: _Servers, sources: list[str], per_process: int) -> tuple[float, Any]:
    """Open ``CONNECTIONS`` to ``servers``; (RSS growth per connection in KiB, the holders to release)."""
    before = servers.rss()
    processes = math.ceil(CONNECTIONS / per_process)
    holders = []
    for k in range(processes):
        count = CONNECTIONS // processes + (1 if k < CONNECTIONS % processes else 0)
        opened, release, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
        proc = ctx.Process(target=_holder_main, daemon=True,
                           args=(servers.port, sources[k::processes], count, opened, release, results))
        proc.start()
        holders.append((proc, opened, release, results))
    failures = sum(opened.get(timeout=600)[1] for _, opened, _, _ in holders)
    if failures:
        _release(holders)
        raise RuntimeError(f"{failures} of {CONNECTIONS} connects failed")
    deadline = time.monotonic() + 60
    while servers.held() < CONNECTIONS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server holds {servers.held()} of {CONNECTIONS} connections after 60 s")
        time.sleep(0.2)
    time.sleep(SETTLE_S)
    return (servers.rss() - before) / 1024 / CONNECTIONS, holders


def _release(holders: list[Any]) -> None:
    for proc, _, release, results in holders:
        release.put(True)
        results.get(timeout=120)
        proc.join(10)


def run() -> dict[str, Any]:
    from recharge.config import load_settings

    ctx = mp.get_context("spawn")
    nofile = _raise_nofile()
    per_process = min(nofile - NOFILE_RESERVE, SOURCES_PER_RUN * PORTS_PER_SOURCE)
    workers = math.ceil(CONNECTIONS / per_process)
    if SOURCES_PER_RUN * PORTS_PER_SOURCE < CONNECTIONS or workers > SOURCES_PER_RUN:
        raise RuntimeError("too few source addresses or descriptors for the connections wanted")
    with bench_world("recharge_bench_idle") as world:
        settings = load_settings(None).replace(
            database_url=world.dsn, data_dir=world.data_dir, key_file=world.key_file, dd_host="127.0.0.1",
            dd_idle_timeout_s=3600.0, dd_max_connections=per_process, workers=workers,
            pool_min_size=1, pool_max_size=4,
        )
        plans = asyncio.run(_provision(world.dsn, world.keys))

        def floor(i: int) -> float:
            servers = _Servers(ctx, workers, hold_server_main, lambda port: ("127.0.0.1", port, 4096))
            try:
                kib, holders = _hold(ctx, servers, _sources(i, True), per_process)
                _release(holders)
                return kib
            finally:
                servers.stop()

        def platform(i: int) -> tuple[float, float]:
            servers = _Servers(ctx, workers, dd_server_main, lambda port: (settings.replace(dd_port=port), world.dsn))
            try:
                kib, holders = _hold(ctx, servers, _sources(i, False), per_process)
                plan = plans[i]
                plan.port = servers.port
                for term in plan.terminals:
                    term.port = servers.port
                outcomes = run_client(ctx, _served_main, plan)
                _release(holders)
            finally:
                servers.stop()
            if set(outcomes) != {"00"}:
                raise RuntimeError(f"recharges failed while {CONNECTIONS} idle connections were held: {outcomes}")
            return kib, outcomes.count("00") / (len(plan.terminals) * SERVED_RECHARGES)

        runs = paired(RUNS, floor, platform)
    return {
        "dd_idle_connections_kib_each": spread(kib for _, (kib, _) in runs),
        "dd_idle_floor_kib_each": spread(kib for kib, _ in runs),
        "dd_idle_recharges_ok": spread(ok for _, (_, ok) in runs),
        "dd_idle_connections": float(CONNECTIONS),
        "dd_idle_workers": float(workers),
        "dd_idle_nofile_hard": float(nofile),
    }


async def _provision(dsn: str, keys: Any) -> list[Any]:
    import asyncpg

    from app import simulator
    from recharge import db

    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        return [await simulator.provision(conn, "127.0.0.1", 0, keys, terminals=SERVED_TERMINALS,
                                          recharges=SERVED_RECHARGES, amount_cents=100) for _ in range(RUNS)]
    finally:
        await conn.close()


if __name__ == "__main__":
    for figure, value in run().items():
        print(f"{figure}: {value['median'] if isinstance(value, dict) else value:.3f}")

"""Benchmark of DD latency at a production-like rate: ``TERMINALS`` (1,000) terminals, each
recharging once every ``INTERVAL_S`` (10 s). Every figure is the median of ``RUNS`` runs, each with
a fresh DD server process and fresh terminals, cards and paid orders (provisioned before the first).

- ``dd_stage_p99_ms`` (**the terminals' view**): the slowest stage's 99th-percentile latency, as the
  terminals saw it (from sending a request to its whole answer): the goal holds for every stage.
  It includes the client's own delays (its event loop and garbage collector, its share of the
  shared cores) and the server's before it reads the request.
- ``dd_stage_server_p99_ms`` (**the server's view**): the same, as the DD server measures it for its
  ``recharge_dd_stage_duration_seconds`` histogram (from the request frame parsed to its answer
  written), every answer's seconds kept unbucketed (``bench.dd_servers.dd_stage_server_main``).
- ``dd_stage_DD<nn>_p99_ms`` / ``dd_stage_DD<nn>_server_p99_ms``: each request stage's own, both
  views — the sign-in stages (DD01–DD07: each terminal signs in once, the sign-ins spread evenly
  over the first interval, as terminals come online through the day) and the recharge stages
  (DD11–DD19: each terminal's recharges spread evenly over every later interval; a recharge whose
  turn comes while the previous one is still running starts at once, so an overloaded server
  shows as latency, not as a lower rate).
- ``dd_stage_recharges_per_s``: the rate the terminals achieved (TERMINALS ÷ INTERVAL_S offered).
- ``dd_stage_client_cpu_s``: the client processes' CPU seconds over a run (reported, not charged);
  ``dd_stage_checkpoints``: PostgreSQL checkpoints started during a run.

The terminals are the terminal client's own flows (``AsyncTerminalClient``) spread over
``CLIENT_PROCESSES`` client processes (one process of 1,000 terminals queued every answer behind
the others' work and paused them all for its garbage collections), each with the plan's objects
frozen (``gc.freeze``) and started together once all are ready; they share the cores with the
server's DD process and PostgreSQL. The DD server settles its heap after start-up as a worker
does (``app.runtime.settle_heap``). Before each run the previous run's dead rows are vacuumed and
a ``CHECKPOINT`` writes the provisioning's dirty pages, as on a server that has been quiet a
while. With ``DATABASE_URL`` set it uses that server, else an embedded PostgreSQL in
``var/bench-pgdata``. ``python -m bench.bench_dd_stages`` prints the figures. About four minutes
(most of it provisioning 3,000 terminals and 9,000 orders).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.dd_servers import STAGE_SECONDS, ask, dd_stage_server_main
from bench.measure import PAIRED_RUNS, sized, spread
from bench.world import bench_world, start_server

TERMINALS = sized(1_000, 20)
INTERVAL_S = sized(10, 2)
RECHARGES_PER_TERMINAL = sized(3, 2)  # the run lasts (RECHARGES_PER_TERMINAL + 1) intervals
RUNS = PAIRED_RUNS
CLIENT_PROCESSES = sized(4, 2)  # the terminals are spread over this many client processes
CLIENT_START_S = 0.5  # from every client process ready to the first sign-in's turn

GOALS = {"dd_stage_p99_ms": "<= 20", "dd_stage_server_p99_ms": "<= 20"}
NOTES = {
    "dd_stage_p99_ms": "the slowest stage; terminals' view, clients on the same cores",
    "dd_stage_server_p99_ms": "the slowest stage; server's view (request parsed to answer written)",
}


def _paced_main(plan: Any, indices: list[int], ready: Any, go: Any, results: Any) -> None:
    """The terminals ``indices`` of ``plan``: once every client process is ready, each signs in
    at its offset in the first interval (from the start ``go`` gives, a ``time.perf_counter``
    value: CLOCK_MONOTONIC, the same in every process), then recharges at the same offset of every
    later interval; latency per request stage, outcomes, and this process's CPU seconds."""
    import uvloop

    from server.terminal_client import AsyncTerminalClient, ConnectionClosed, FlowFailed

    by_stage: dict[int, list[float]] = {}
    outcomes: dict[str, int] = {}

    def observe(request: bytes, answer: Any, seconds: float, error: BaseException | None) -> None:
        if answer is not None:
            by_stage.setdefault(request[1], []).append(seconds)

    async def terminal(index: int, start: float) -> None:
        loop = asyncio.get_running_loop()
        term = plan.terminals[index]
        offset = INTERVAL_S * index / len(plan.terminals)
        client = AsyncTerminalClient(plan.host, plan.port, term.code, term.pki, timeout_s=30.0, timings=observe)
        await asyncio.sleep(max(0.0, start + offset - loop.time()))
        try:
            await client.sign_in(term.module())
            card = term.card(plan.cards[index], 0)
            for k, order_no in enumerate(plan.orders[index]):
                await asyncio.sleep(max(0.0, start + offset + (k + 1) * INTERVAL_S - loop.time()))
                await client.recharge(card, order_no, plan.amount_cents)
                outcomes["00"] = outcomes.get("00", 0) + 1
        except FlowFailed as exc:
            outcomes[f"{exc.result:02X}"] = outcomes.get(f"{exc.result:02X}", 0) + 1
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gc.collect()
        gc.freeze()  # the plan's objects, made before the run, are never garbage: no collection walks them
        ready.put(True)
        start_at = await loop.run_in_executor(None, go.get)
        start = loop.time() + (start_at - time.perf_counter())  # the loop's clock may have another origin
        await asyncio.gather(*(terminal(i, start) for i in indices))

    cpu = time.process_time()
    uvloop.run(main())
    results.put((by_stage, outcomes, time.perf_counter(), time.process_time() - cpu))


def _p99_ms(values: list[float]) -> float:
    if len(values) < 2:
        return 1000 * values[0] if values else 0.0
    return 1000 * statistics.quantiles(values, n=100, method="inclusive")[98]


async def _provision(dsn: str, keys: Any) -> list[Any]:
    import asyncpg

    from app import simulator
    from recharge import db

    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        plans = [await simulator.provision(conn, "127.0.0.1", 0, keys, terminals=TERMINALS,
                                           recharges=RECHARGES_PER_TERMINAL, amount_cents=100) for _ in range(RUNS)]
        await conn.execute("VACUUM ANALYZE")
        return plans
    finally:
        await conn.close()


def _run_terminals(ctx: Any, plan: Any) -> tuple[dict[int, list[float]], dict[str, int], float, float]:
    """The plan's terminals spread over ``CLIENT_PROCESSES`` client processes, all paced from one
    start: (seconds by stage, outcomes, recharges per second, the clients' CPU seconds)."""
    ready, go, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_paced_main, args=(plan, list(range(p, len(plan.terminals), CLIENT_PROCESSES)),
                                                   ready, go, results), daemon=True)
             for p in range(CLIENT_PROCESSES)]
    for proc in procs:
        proc.start()
    for _ in procs:  # spawned and imported: on a loaded machine that takes seconds, and differs between them
        ready.get(timeout=300)
    start_at = time.perf_counter() + CLIENT_START_S
    for _ in procs:
        go.put(start_at)
    parts = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(10)
    by_stage: dict[int, list[float]] = {}
    outcomes: dict[str, int] = {}
    for part_stages, part_outcomes, _, _ in parts:
        for stage, values in part_stages.items():
            by_stage.setdefault(stage, []).extend(values)
        for code, count in part_outcomes.items():
            outcomes[code] = outcomes.get(code, 0) + count
    began = start_at + INTERVAL_S  # the first recharges' interval
    ended = max(part[2] for part in parts)
    rate = outcomes.get("00", 0) / max(ended - began, 1e-9)
    return by_stage, outcomes, rate, sum(part[3] for part in parts)


async def _settle(dsn: str) -> int:
    """Before a timed run: the previous run's dead rows vacuumed and every dirty page written
    (``CHECKPOINT``), as on a server that has been quiet a while; the checkpoints so far."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        return await _checkpoints(conn)
    finally:
        await conn.close()


async def _checkpoints(conn: Any) -> int:
    """Checkpoints the server has started (timed or requested) since its statistics were reset."""
    import asyncpg

    try:  # PostgreSQL 17 and later
        return int(await conn.fetchval("SELECT num_timed + num_requested FROM pg_stat_checkpointer"))
    except asyncpg.UndefinedTableError:
        return int(await conn.fetchval("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"))


async def _checkpoints_now(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return await _checkpoints(conn)
    finally:
        await conn.close()


def run() -> dict[str, Any]:
    from recharge.config import load_settings

    ctx = mp.get_context("spawn")
    runs = []
    with bench_world("recharge_bench_stages") as world:
        settings = load_settings(None).replace(
            database_url=world.dsn, data_dir=world.data_dir, key_file=world.key_file, dd_host="127.0.0.1", dd_port=0,
        )
        plans = asyncio.run(_provision(world.dsn, world.keys))
        for plan in plans:
            checkpoints = asyncio.run(_settle(world.dsn))
            asks, answers = ctx.Queue(), ctx.Queue()
            server, port = start_server(ctx, dd_stage_server_main, settings, world.dsn, asks, answers)
            try:
                plan.port = port
                for term in plan.terminals:
                    term.port = port
                by_stage, outcomes, rate, client_cpu_s = _run_terminals(ctx, plan)
                server_by_stage = ask(asks, answers, STAGE_SECONDS)
            finally:
                server.terminate()
            if set(outcomes) != {"00"}:
                raise RuntimeError(f"recharges failed during the benchmark: {outcomes}")
            runs.append(_Run({stage: _p99_ms(values) for stage, values in by_stage.items()},
                             {stage: _p99_ms(values) for stage, values in server_by_stage.items()},
                             rate, client_cpu_s, asyncio.run(_checkpoints_now(world.dsn)) - checkpoints))
    return _figures(runs)


@dataclass
class _Run:
    p99s: dict[int, float]  # the terminals' view, by stage
    server_p99s: dict[int, float]  # the server's view, by stage
    rate: float
    client_cpu_s: float
    checkpoints: int  # started during the run


def _figures(runs: list[_Run]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "dd_stage_p99_ms": spread(max(r.p99s.values()) for r in runs),
        "dd_stage_server_p99_ms": spread(max(r.server_p99s.values()) for r in runs),
        "dd_stage_recharges_per_s": spread(r.rate for r in runs),
        "dd_stage_client_cpu_s": spread(r.client_cpu_s for r in runs),
        "dd_stage_checkpoints": spread(r.checkpoints for r in runs),
    }
    for stage in sorted({stage for r in runs for stage in r.p99s}):
        figures[f"dd_stage_DD{stage:02X}_p99_ms"] = spread(r.p99s.get(stage, 0.0) for r in runs)
        figures[f"dd_stage_DD{stage:02X}_server_p99_ms"] = spread(r.server_p99s.get(stage, 0.0) for r in runs)
    return figures


if __name__ == "__main__":
    for figure, value in run().items():
        print(f"{figure}: {value['median']:.3f} [{value['min']:.3f} … {value['max']:.3f}]")

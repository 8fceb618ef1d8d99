"""Benchmark of DD latency at a production-like rate: ``TERMINALS`` (1,000) terminals, each
recharging once every ``INTERVAL_S`` (10 s). Every figure is the median of ``RUNS`` runs, each with
a fresh DD server process and fresh terminals, cards and paid orders (provisioned before the first).

- ``dd_stage_p99_ms``: the slowest stage's 99th-percentile latency, as the terminals saw it (from
  sending a request to its whole answer): the goal holds for every stage.
- ``dd_stage_DD<nn>_p99_ms``: each request stage's own — the sign-in stages (DD01–DD07: each
  terminal signs in once, the sign-ins spread evenly over the first interval, as terminals come
  online through the day) and the recharge stages (DD11–DD19: each terminal's recharges spread
  evenly over every later interval; a recharge whose turn comes while the previous one is still
  running starts at once, so an overloaded server shows as latency, not as a lower rate).
- ``dd_stage_recharges_per_s``: the rate the terminals achieved (TERMINALS ÷ INTERVAL_S offered).

The terminals are the terminal client's own flows (``AsyncTerminalClient``) in one process of
their own, with the server's DD process and PostgreSQL on the same cores: the latencies include
the client's share of the machine. With ``DATABASE_URL`` set it uses that server, else an
embedded PostgreSQL in ``var/bench-pgdata``. ``python -m bench.bench_dd_stages`` prints the
figures. About four minutes (most of it provisioning 3,000 terminals and 9,000 orders).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from typing import Any

from bench.dd_servers import dd_server_main
from bench.measure import PAIRED_RUNS, sized, spread
from bench.world import bench_world, run_client, start_server

TERMINALS = sized(1_000, 20)
INTERVAL_S = sized(10, 2)
RECHARGES_PER_TERMINAL = sized(3, 2)  # the run lasts (RECHARGES_PER_TERMINAL + 1) intervals
RUNS = PAIRED_RUNS

GOALS = {"dd_stage_p99_ms": "<= 20"}
NOTES = {"dd_stage_p99_ms": "the slowest stage; terminals' view, client on the same cores"}


def _paced_main(plan: Any, results: Any) -> None:
    """Every terminal signs in at its offset in the first interval, then recharges at the same
    offset of every later interval; latency per request stage, outcomes, recharges per second."""
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

    async def main() -> float:
        start = asyncio.get_running_loop().time() + 0.5
        await asyncio.gather(*(terminal(i, start) for i in range(len(plan.terminals))))
        return time.perf_counter()

    began = time.perf_counter() + 0.5 + INTERVAL_S  # the first recharges' interval
    ended = uvloop.run(main())
    results.put((by_stage, outcomes, outcomes.get("00", 0) / max(ended - began, 1e-9)))


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
            server, port = start_server(ctx, dd_server_main, settings, world.dsn, ctx.Queue(), ctx.Queue())
            try:
                plan.port = port
                for term in plan.terminals:
                    term.port = port
                by_stage, outcomes, rate = run_client(ctx, _paced_main, plan)
            finally:
                server.terminate()
            if set(outcomes) != {"00"}:
                raise RuntimeError(f"recharges failed during the benchmark: {outcomes}")
            runs.append(({stage: _p99_ms(values) for stage, values in by_stage.items()}, rate))
    stages = sorted({stage for p99s, _ in runs for stage in p99s})
    figures: dict[str, Any] = {
        "dd_stage_p99_ms": spread(max(p99s.values()) for p99s, _ in runs),
        "dd_stage_recharges_per_s": spread(rate for _, rate in runs),
    }
    for stage in stages:
        figures[f"dd_stage_DD{stage:02X}_p99_ms"] = spread(p99s.get(stage, 0.0) for p99s, _ in runs)
    return figures


if __name__ == "__main__":
    for figure, value in run().items():
        print(f"{figure}: {value['median'] if isinstance(value, dict) else value:.3f}")

"""Benchmark of the KaKaTong REST service; every figure is the median of ``RUNS`` paired runs
(baseline and platform alternating), reported with its min and max. Both sides of every HTTP
ratio are driven by the same compiled load generator, Debian's ``wrk`` (``scripts/ensure_wrk.sh``),
with ``bench/wrk_urls.lua``: each request is the next line of a file of request paths made here
(license key, terminal, card number, password MD5, a fresh amount), and an answer counts as bad
unless it is 2xx with the expected body — the run fails on any bad answer or socket error.

- ``kkt_consume_cpu_ratio_vs_pgbench`` (**CPU efficiency**): stored-value consumes (``cTRequest``
  0022/1, each a durable transaction: card lock, password check, limits, ledger transfer,
  Stance, journal) ÷ CPU-seconds of the HTTP server process and every PostgreSQL process over
  exactly the wrk run, divided by pgbench's TPC-B-like transactions ÷ CPU-seconds of every
  PostgreSQL process over its run (its set-up taken off, as in ``bench_dd``). CPU from ``/proc``
  (``bench.measure``); wrk's and pgbench's own CPU is reported, charged to neither side.
  ``kkt_consume_cpu_ratio_ceiling_vs_pgbench``: the same ratio if the HTTP server cost per consume
  only what a hello-world request costs it (the same connections and HTTP parsing with the card
  service replaced by nothing) and PostgreSQL what it cost in the run: the measured floor.
- ``kkt_consume_ratio_vs_pgbench`` (**wall clock**, including each side's client on the shared
  cores — both C): consumes per second with ``CONCURRENCY`` keep-alive connections divided by
  pgbench's TPS with as many clients on the same PostgreSQL (``fsync`` and ``synchronous_commit``
  on, checked; scale = the client count, as pgbench asks). Each merchant has its own terminal and
  license key (as many merchants trade at once in production) and ``CARDS_PER_CLIENT`` cards;
  each run's requests take every card ``CONSUMES_PER_CARD`` times with amounts no earlier request
  used, so neither the duplicate rule (12) nor the default daily count (67) triggers.
- ``kkt_query_ratio_vs_hello`` (wall clock): balance queries (0011/0; they also get a Stance and
  are journalled, as the seed shows) per second divided by a hello-world route mounted on the
  same aiohttp application (same middleware), same connections, same wrk script.
- The floors, with the card service replaced by nothing but the database round trip a request
  needs: a bare route on the same application (same middleware) that takes a pool connection and
  runs one statement (``SELECT 1``) per request, timed beside the hello route.
  ``kkt_query_ratio_ceiling_vs_hello`` is its rate over the hello route's (the most
  ``kkt_query_ratio_vs_hello`` could be if a query cost only one round trip);
  ``kkt_consume_cpu_ratio_db_ceiling_vs_pgbench`` is the CPU ratio if the HTTP server cost per
  consume what that bare route costs per request, and PostgreSQL what it cost in the run.

``kkt_consumes_per_batch`` and ``kkt_queries_per_batch`` (diagnostics, no goal): the trades per
committed batch of the server's trade lane over each run (from its ``/metrics``): the lane's
statements and commit are shared by that many trades.

Before the timed runs every card answers one balance query, so the figures are the steady
state: the server memoises a verified (stored hash, password) pair, and only a card's first
trade in a process pays the PBKDF2 (``kkt_password_hash_iterations``).

The server (the real HTTP app) runs in its own process. With ``DATABASE_URL`` set it uses that
server (then "every PostgreSQL process" includes other users of it), else an embedded PostgreSQL
in ``var/bench-pgdata``. ``python -m bench.bench_kkt`` prints the figures. About two minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing as mp
import secrets
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.measure import (
    PAIRED_RUNS,
    PgbenchRun,
    WrkRun,
    paired,
    pgbench,
    pgbench_init,
    pgbench_probe_cpu_s,
    sized,
    spread,
    write_url_file,
    wrk,
)
from bench.world import bench_world, start_server

CONCURRENCY = 16
WRK_THREADS = 2
CARDS_PER_CLIENT = sized(100, 10)
CONSUMES_PER_CARD = 30  # per run: RUNS × this (+ nothing else) stays under the daily count (100)
RUNS = PAIRED_RUNS
SECONDS = sized(5, 1)
PASSWORD_MD5 = hashlib.md5(b"111111").hexdigest()
PAID = "<PayInForm>11</PayInForm>"

GOALS = {
    "kkt_consume_cpu_ratio_vs_pgbench": ">= 1.0",
    "kkt_consume_ratio_vs_pgbench": ">= 1.0",
    "kkt_query_ratio_vs_hello": ">= 0.5",
}
NOTES = {
    "kkt_consume_cpu_ratio_vs_pgbench": "CPU efficiency: server process + PostgreSQL only",
    "kkt_consume_ratio_vs_pgbench": "wall clock (wrk vs pgbench): includes each side's client",
    "kkt_consume_cpu_ratio_ceiling_vs_pgbench": "if the HTTP server cost only a hello-world request",
    "kkt_consume_cpu_ratio_db_ceiling_vs_pgbench": "if the HTTP server cost only a bare route's DB round trip",
    "kkt_query_ratio_ceiling_vs_hello": "wall clock: a bare route with one DB round trip, over hello",
    "kkt_query_ratio_vs_hello": "wall clock, wrk on both sides",
    "kkt_wrk_cpu_ms_per_consume": "reported, charged to neither side",
    "kkt_consumes_per_batch": "trades per committed batch of the server's trade lane (its /metrics)",
}


def _server_main(settings: Any, dsn: str, ports: Any) -> None:
    import uvloop
    from aiohttp import web

    async def main() -> None:
        from http_api.app import build_app
        from recharge import db
        from recharge.context import Platform
        from recharge.keys import load_keys

        pool = await db.create_pool(dsn, settings)
        ctx = Platform(settings=settings, pool=pool, keys=load_keys(settings.resolved_key_file), dsn=dsn)
        app = build_app(ctx)

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        async def db_round_trip(request: web.Request) -> web.Response:
            async with pool.acquire() as conn:
                return web.Response(text=f"db {await conn.fetchval('SELECT 1')}")

        app.router.add_get("/bench/hello", hello)
        app.router.add_get("/bench/db", db_round_trip)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    uvloop.run(main())


async def _prepare(dsn: str, keys: Any) -> list[dict[str, str]]:
    import asyncpg

    from app.demo import fund_recharge_fund
    from recharge import db
    from recharge.kkt import cards
    from recharge.ledger import transfers as ledger

    conn = await asyncpg.connect(dsn)
    clients = []
    try:
        await db.migrate(conn)
        pepper = cards.password_pepper(keys)
        for i in range(CONCURRENCY):
            code = f"{7000 + i}"
            async with conn.transaction():
                await cards.upsert_merchant(conn, code, f"bench {i}", actor="bench")
                terminal = f"{code}0001"
                await cards.upsert_terminal(conn, terminal, code, "pos", actor="bench")
                key = f"BENCHKEY{code}{secrets.token_hex(8)}"
                await cards.upsert_license_key(conn, key, code, actor="bench")
                merchant_id = await cards.merchant_id_of(conn, code)
                fund = await fund_recharge_fund(conn, merchant_id, 10**12, f"bench:fund:{code}")
                card_list = []
                for seq in range(1, CARDS_PER_CLIENT + 1):
                    card = cards.card_no_for(code, seq)
                    await conn.execute(
                        "INSERT INTO cards (card_no, merchant_id, kind, state, password_hash)"
                        " VALUES ($1,$2,'both','active',$3)",
                        card, merchant_id, cards.hash_password(PASSWORD_MD5, pepper, 1000),
                    )
                    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE,
                                                        card_no=card)
                    load = ledger.NewTransfer(f"bench:load:{card}", fund, purse, 10**10)
                    (await ledger.create_transfers(conn, [load]))[0].check("load")
                    card_list.append(card)
            clients.append({"key": key, "terminal": terminal, "cards": ",".join(card_list)})
    finally:
        await conn.close()
    return clients



def _trade_path(who: dict[str, str], trade: str, card: str, amount: int) -> str:
    return (f"/s/get?method=cTRequest&{trade}&LICENSEKEY={who['key']}&POSCODE={who['terminal']}"
            f"&CARDNO={card}&CARDPWD={PASSWORD_MD5}&AMOUNT={amount}")


def _consume_paths(clients: list[dict[str, str]], run: int) -> list[str]:
    """Run ``run``'s consumes: every card ``CONSUMES_PER_CARD`` times, amounts unused before,
    interleaved over merchants so that concurrent requests are different merchants' trades."""
    paths = []
    for round_no in range(CONSUMES_PER_CARD):
        amount = 100 + run * CONSUMES_PER_CARD + round_no
        for card_index in range(CARDS_PER_CLIENT):
            for who in clients:
                paths.append(_trade_path(who, "TRADETYPE=0022&TRADEMODE=1", who["cards"].split(",")[card_index], amount))
    return paths


def _query_paths(clients: list[dict[str, str]]) -> list[str]:
    return [_trade_path(who, "TRADETYPE=0011&TRADEMODE=0", who["cards"].split(",")[card_index], 0)
            for card_index in range(CARDS_PER_CLIENT) for who in clients]


async def _warm(base_url: str, paths: list[str]) -> None:
    """One balance query per card: the server's memoised password checks are warm."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for path in paths:
            async with session.get(base_url + path) as resp:
                if PAID not in await resp.text():
                    raise RuntimeError(f"warm-up query refused: {path.split('&CARDNO=')[1][:20]}")


def _checked(run: WrkRun, what: str, sent: int | None = None) -> WrkRun:
    if run.bad or run.errors:
        raise RuntimeError(f"{what}: {run.bad} bad answers and {run.errors} socket errors of {run.requests}")
    if sent is not None and run.requests > sent:
        raise RuntimeError(f"{what}: wrk sent {run.requests} requests, more than the {sent} distinct ones made")
    return run


def _ceiling(pg: PgbenchRun, c: WrkRun, floor: WrkRun) -> float:
    """The consume CPU ratio if the HTTP server cost per consume what it cost per ``floor`` request."""
    return (c.requests / (floor.cpu.platform_s / floor.requests * c.requests + c.cpu.postgres_s)) / pg.per_server_cpu_s


def _figures(queries: list[tuple[tuple[WrkRun, WrkRun], WrkRun]],
             consumes: list[tuple[PgbenchRun, WrkRun]]) -> dict[str, Any]:
    floors = list(zip(consumes, (f for f, _ in queries), strict=True))
    return {
        "kkt_consume_cpu_ratio_vs_pgbench": spread(c.per_server_cpu_s / pg.per_server_cpu_s for pg, c in consumes),
        "kkt_consume_cpu_ratio_ceiling_vs_pgbench": spread(_ceiling(pg, c, hello) for (pg, c), (hello, _) in floors),
        "kkt_consume_cpu_ratio_db_ceiling_vs_pgbench": spread(_ceiling(pg, c, db) for (pg, c), (_, db) in floors),
        "kkt_consume_ratio_vs_pgbench": spread(c.rate / pg.tps for pg, c in consumes),
        "kkt_query_ratio_vs_hello": spread(q.rate / h.rate for (h, _), q in queries),
        "kkt_query_ratio_ceiling_vs_hello": spread(d.rate / h.rate for (h, d), _ in queries),
        "kkt_consumes_per_s": spread(c.rate for _, c in consumes),
        "kkt_queries_per_s": spread(q.rate for _, q in queries),
        "kkt_hello_per_s": spread(h.rate for (h, _), _ in queries),
        "kkt_db_route_per_s": spread(d.rate for (_, d), _ in queries),
        "kkt_pgbench_tpcb_tps": spread(pg.tps for pg, _ in consumes),
        "kkt_cpu_ms_per_consume_server": spread(1000 * c.cpu.platform_s / c.requests for _, c in consumes),
        "kkt_cpu_ms_per_consume_postgres": spread(1000 * c.cpu.postgres_s / c.requests for _, c in consumes),
        "kkt_cpu_ms_per_query_server": spread(1000 * q.cpu.platform_s / q.requests for _, q in queries),
        "kkt_cpu_ms_per_query_postgres": spread(1000 * q.cpu.postgres_s / q.requests for _, q in queries),
        "kkt_cpu_ms_per_hello_server": spread(1000 * h.cpu.platform_s / h.requests for (h, _), _ in queries),
        "kkt_cpu_ms_per_db_route_server": spread(1000 * d.cpu.platform_s / d.requests for (_, d), _ in queries),
        "kkt_pgbench_cpu_ms_per_tx_postgres": spread(1000 / pg.per_server_cpu_s for pg, _ in consumes),
        "kkt_wrk_cpu_ms_per_consume": spread(1000 * c.client_cpu_s / c.requests for _, c in consumes),
    }


def run() -> dict[str, Any]:
    from recharge.config import load_settings

    ctx = mp.get_context("spawn")
    with bench_world("recharge_bench_kkt") as world:
        settings = load_settings(None).replace(
            database_url=world.dsn, data_dir=world.data_dir, key_file=world.key_file,
            pool_min_size=CONCURRENCY, pool_max_size=CONCURRENCY + 4, kkt_per_txn_limit_cents=10**9,
        )
        clients = asyncio.run(_prepare(world.dsn, world.keys))
        pgbench_init(world.bin_dir, world.pgbench_url, CONCURRENCY)
        probe = pgbench_probe_cpu_s(world.bin_dir, world.pgbench_url, CONCURRENCY, world.postmaster)
        folder = Path(world.data_dir)
        hello = write_url_file(folder / "hello.txt", ["/bench/hello"] * WRK_THREADS)
        bare_db = write_url_file(folder / "db.txt", ["/bench/db"] * WRK_THREADS)
        query_paths = _query_paths(clients)
        queries_file = write_url_file(folder / "queries.txt", query_paths)
        consume_paths = [_consume_paths(clients, i) for i in range(RUNS)]
        consume_files = [write_url_file(folder / f"consumes{i}.txt", p) for i, p in enumerate(consume_paths)]
        server, port = start_server(ctx, _server_main, settings, world.dsn)
        base = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(_warm(base, query_paths))

            def load(urls: Path, expect: str) -> WrkRun:
                return wrk(base, urls, expect, connections=CONCURRENCY, threads=WRK_THREADS, seconds=SECONDS,
                           pids=[server.pid], postmaster=world.postmaster)

            query_batches: list[float] = []
            consume_batches: list[float] = []
            queries = paired(RUNS, lambda _: (_checked(load(hello, "hello"), "hello"), _checked(load(bare_db, "db 1"), "db")),
                             lambda _: _batched(base, query_batches, lambda: _checked(load(queries_file, PAID), "queries")))
            consumes = paired(
                RUNS,
                lambda _: pgbench(world.bin_dir, world.pgbench_url, CONCURRENCY, SECONDS, world.postmaster, probe),
                lambda i: _batched(base, consume_batches, lambda: _checked(load(consume_files[i], PAID), "consumes",
                                                                           len(consume_paths[i]))),
            )
        finally:
            server.terminate()
    figures = _figures(queries, consumes)
    figures["kkt_consumes_per_batch"] = spread(consume_batches)
    figures["kkt_queries_per_batch"] = spread(query_batches)
    figures["kkt_pgbench_probe_cpu_ms"] = 1000 * probe
    return figures


def lane_totals(base_url: str) -> tuple[float, float]:
    """(trades, batches) the server's trade lane has committed so far, read from its ``/metrics``."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = {sample.name: sample.value for family in text_string_to_metric_families(text)
             for sample in family.samples if sample.name.startswith("recharge_kkt_batch_size_")}
    return found.get("recharge_kkt_batch_size_sum", 0.0), found.get("recharge_kkt_batch_size_count", 0.0)


def _batched(base_url: str, per_batch: list[float], run_load: Callable[[], WrkRun]) -> WrkRun:
    """``run_load()``'s run; the trades per committed batch of the lane over it go to ``per_batch``."""
    trades, batches = lane_totals(base_url)
    run = run_load()
    trades_after, batches_after = lane_totals(base_url)
    per_batch.append((trades_after - trades) / max(batches_after - batches, 1.0))
    return run


if __name__ == "__main__":
    for figure, value in run().items():
        print(f"{figure}: {value['median'] if isinstance(value, dict) else value:.3f}")

"""Profile of the KaKaTong HTTP server under ``bench_kkt``'s consume load, with py-spy (pinned in
pyproject): which functions the server process spends its CPU in, to decide what to make leaner.

``python -m bench.profile_kkt [--seconds 15] [--top 25] [--native]`` provisions the merchants,
terminals, license keys and cards as ``bench_kkt`` does, starts the real HTTP app in its own
process (``bench_kkt._server_main``), warms every card with one balance query, then has ``wrk``
send the same stored-value consumes (``cTRequest`` 0022/1) with ``bench_kkt.CONCURRENCY``
keep-alive connections while ``py-spy record`` samples the server (``--gil``: only where Python
ran; ``--native`` adds the C and Cython frames of uvloop, asyncpg, aiohttp's parser). It prints
the two tables of ``bench.profile_dd`` (self and total shares of the samples), and the trades per
committed batch of the server's trade lane over the run. Not part of
``make bench`` (a profiler slows what it watches): run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
from pathlib import Path

from bench.profile_dd import _profile, render, summarize


def main(argv: list[str] | None = None) -> int:
    from bench import bench_kkt
    from bench.measure import write_url_file, wrk
    from bench.world import bench_world, start_server
    from recharge.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.profile_kkt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="how long py-spy samples (and wrk runs)")
    parser.add_argument("--top", type=int, default=25, help="rows of each table")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks in this file")
    parser.add_argument("--native", action="store_true", help="C and Cython frames too (uvloop, asyncpg)")
    parser.add_argument("--queries", action="store_true", help="balance queries (0011/0) instead of consumes")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    with bench_world("recharge_profile_kkt") as world, tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None).replace(
            database_url=world.dsn, data_dir=world.data_dir, key_file=world.key_file,
            pool_min_size=bench_kkt.CONCURRENCY, pool_max_size=bench_kkt.CONCURRENCY + 4,
            kkt_per_txn_limit_cents=10**9,
        )
        clients = asyncio.run(bench_kkt._prepare(world.dsn, world.keys))
        query_paths = bench_kkt._query_paths(clients)
        paths = query_paths if args.queries else bench_kkt._consume_paths(clients, 0)
        urls = write_url_file(Path(world.data_dir) / "profile.txt", paths)
        server, port = start_server(ctx, bench_kkt._server_main, settings, world.dsn)
        base = f"http://127.0.0.1:{port}"
        raw = Path(tmp) / "raw.txt"
        try:
            asyncio.run(bench_kkt._warm(base, query_paths))
            trades, batches = bench_kkt.lane_totals(base)
            spy = _profile(server.pid, args.seconds, raw, args.native)
            run = wrk(base, urls, bench_kkt.PAID, connections=bench_kkt.CONCURRENCY, threads=bench_kkt.WRK_THREADS,
                      seconds=args.seconds, pids=[server.pid], postmaster=world.postmaster)
            trades_after, batches_after = bench_kkt.lane_totals(base)
            _, err = spy.communicate()
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
        finally:
            server.terminate()
        if args.raw:
            args.raw.write_text(raw.read_text())
        print(f"{run.requests} requests, {run.bad} bad, {run.errors} errors;"
              f" server {1000 * run.cpu.platform_s / max(run.requests, 1):.3f} ms CPU each (profiled);"
              f" {(trades_after - trades) / max(batches_after - batches, 1):.2f} trades per batch")
        print(render(*summarize(raw.read_text()), args.top).replace("of the DD server process", "of the HTTP server"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Profile of the DD server under the recharge benchmark's load, with py-spy (pinned in pyproject):
which functions the server process spends its CPU in, to decide what to make leaner.

``python -m bench.profile_dd [--seconds 20] [--top 25]`` provisions terminals and paid orders as
``bench_dd`` does, starts ``DDService`` in its own process, has the terminals recharge in another
and samples the server with ``py-spy record --format raw`` (``--nolineno``; ``--gil``: only the
thread holding the GIL, so the samples are where Python ran, not where a thread waited) while they
do; ``--native`` adds the C and Cython frames (uvloop, asyncpg, core_ext), which are otherwise
counted in the Python function that called them. It prints two tables in Markdown: the functions
the samples were *in* (self) and the functions *on the stack* (total), each as a share of all
samples — the form docs/BENCHMARKS.md records before and after a change. Not part of ``make bench``
(a profiler slows what it watches): run it by hand, on a quiet machine for figures that mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def _where(frame: str) -> str:
    """``func (path/to/file.py)`` → ``func (file.py)``: one name per function."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['func']} ({Path(match['file']).name})"


def summarize(raw: str) -> tuple[int, Counter[str], Counter[str]]:
    """py-spy's collapsed stacks (``a;b;c count`` a line) → (samples, self counts, total counts)."""
    total_samples = 0
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_where(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total_samples += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    return total_samples, self_counts, total_counts


def render(samples: int, self_counts: Counter[str], total_counts: Counter[str], top: int) -> str:
    lines = [f"{samples} samples of the DD server process.", "",
             "| self | function (in) | | total | function (on the stack) |", "|---:|---|---|---:|---|"]
    mine, ours = self_counts.most_common(top), total_counts.most_common(top)
    for i in range(max(len(mine), len(ours))):
        left = f"{100 * mine[i][1] / samples:.1f}% | `{mine[i][0]}`" if i < len(mine) else " | "
        right = f"{100 * ours[i][1] / samples:.1f}% | `{ours[i][0]}`" if i < len(ours) else " | "
        lines.append(f"| {left} | | {right} |")
    return "\n".join(lines) + "\n"


def _profile(pid: int, seconds: float, out: Path, native: bool) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
                             "--format", "raw", "--nolineno", "--gil", *(["--native"] if native else []),
                             "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    from bench import bench_dd
    from bench.dd_servers import dd_server_main
    from bench.world import bench_world, start_server
    from recharge.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.profile_dd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long py-spy samples")
    parser.add_argument("--top", type=int, default=25, help="rows of each table")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks in this file")
    parser.add_argument("--native", action="store_true", help="C and Cython frames too (uvloop, asyncpg, core_ext)")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    with bench_world("recharge_profile") as world, tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None).replace(database_url=world.dsn, data_dir=world.data_dir,
                                               key_file=world.key_file, dd_host="127.0.0.1", dd_port=0)
        plans: list[Any] = asyncio.run(bench_dd._prepare(world.dsn, world.keys, "11110000", "22220000"))
        server, port = start_server(ctx, dd_server_main, settings, world.dsn, ctx.Queue(), ctx.Queue())
        raw = Path(tmp) / "raw.txt"
        try:
            for plan in plans:
                plan.port = port
                for term in plan.terminals:
                    term.port = port
            ready, go, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
            clients = [ctx.Process(target=bench_dd._lean_client_main, args=(p, ready, go, out), daemon=True)
                       for p in plans]
            for client in clients:
                client.start()
            for _ in clients:
                ready.get(timeout=300)
            spy = _profile(server.pid, args.seconds, raw, args.native)
            for _ in clients:
                go.put(True)
            _, err = spy.communicate()
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
            for _ in clients:
                out.get(timeout=600)
        finally:
            server.terminate()
        if args.raw:
            args.raw.write_text(raw.read_text())
        print(render(*summarize(raw.read_text()), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

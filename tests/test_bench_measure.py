"""``make bench``'s measuring tools (bench/measure.py, bench/wrk_urls.lua): CPU charged to exactly
the named processes (reaped children included), figures as median/min/max of paired runs that
alternate, load generators' own CPU, and wrk's script counting wrong answers. No speed is asserted:
only that work done shows up where it belongs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

from bench import measure

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _burn(seconds: float) -> None:
    exec(BURN.format(s=seconds))


def test_a_figure_is_the_median_of_its_runs_with_min_and_max() -> None:
    assert measure.spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}


def test_paired_runs_alternate_baseline_and_platform() -> None:
    calls: list[str] = []
    pairs = measure.paired(3, lambda i: calls.append(f"b{i}") or i, lambda i: calls.append(f"p{i}") or -i)
    assert calls == ["b0", "p0", "b1", "p1", "b2", "p2"]
    assert pairs == [(0, 0), (1, -1), (2, -2)]


def test_a_cpu_window_charges_the_named_process_with_the_cpu_it_spent_inside() -> None:
    with measure.CpuWindow([os.getpid()], 0) as window:
        _burn(0.3)
    assert window.use.platform_s >= 0.25
    assert window.use.postgres_s == 0.0
    with measure.CpuWindow([], 0) as idle:  # a process not named is not charged
        _burn(0.1)
    assert idle.use.platform_s == 0.0


def test_a_servers_cpu_includes_children_alive_and_children_already_reaped(tmp_path: Path) -> None:
    """A stand-in postmaster: on SIGUSR1 it forks a child that burns CPU and exits, and reaps it;
    the child's CPU must count for the server (backends that exit during the window)."""
    go = tmp_path / "go"
    script = (
        "import os, signal, time\n"
        "def burst(*_):\n    pid = os.fork()\n    if pid == 0:\n"
        + "".join("        " + line + "\n" for line in BURN.format(s=0.4).splitlines())
        + "        os._exit(0)\n    os.waitpid(pid, 0)\n"
        f"    open({str(go)!r}, 'w').close()\n"
        "signal.signal(signal.SIGUSR1, burst)\n"
        "while True: time.sleep(0.05)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script])
    try:
        time.sleep(0.5)
        with measure.CpuWindow([], server.pid) as window:
            server.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        assert go.exists()
        assert window.use.postgres_s >= 0.35
    finally:
        server.kill()
        server.wait()


def test_a_load_generators_own_cpu_comes_from_its_rusage() -> None:
    out, cpu_s = measure.run_child([sys.executable, "-c", BURN.format(s=0.3) + "print('done')"])
    assert out.strip() == "done"
    assert cpu_s >= 0.25


def test_wrks_summary_line_is_read_with_bad_answers_and_errors() -> None:
    out = ('Running 1s test\nWRK_SUMMARY {"requests": 90, "duration_us": 2000000, "bad": 2, "status": 1, '
           '"connect": 0, "read": 1, "write": 0, "timeout": 3, "p99_us": 1500}\n')
    run = measure.parse_wrk(out, 0.5, measure.CpuUse(1.0, 2.0, 2.0))
    assert (run.requests, run.bad, run.errors, run.rate) == (90, 3, 4, 45.0)
    assert run.per_server_cpu_s == 30.0


async def _site() -> tuple[web.AppRunner, int]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"<ok>{request.query.get('v', '')}</ok>")

    app = web.Application()
    app.router.add_get("/e", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_the_wrk_script_sends_every_listed_path_and_counts_wrong_bodies(tmp_path: Path) -> None:
    import asyncio

    runner, port = await _site()
    try:
        good = measure.write_url_file(tmp_path / "good.txt", [f"/e?v=good{i}" for i in range(50)])
        mixed = measure.write_url_file(tmp_path / "mixed.txt", ["/e?v=good", "/e?v=other", "/e?v=good", "/e?v=x"])

        def load(urls: Path) -> measure.WrkRun:
            return measure.wrk(f"http://127.0.0.1:{port}", urls, "good", connections=2, threads=2, seconds=1,
                               pids=[os.getpid()], postmaster=0)

        clean = await asyncio.to_thread(load, good)
        assert clean.requests > 0 and clean.bad == 0 and clean.errors == 0
        dirty = await asyncio.to_thread(load, mixed)
        assert dirty.requests > 0 and dirty.bad > 0  # half the paths answer without "good"
        assert dirty.client_cpu_s > 0
    finally:
        await runner.cleanup()

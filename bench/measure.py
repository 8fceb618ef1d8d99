"""What every benchmark measures with: CPU and memory of exact processes read from ``/proc``,
paired runs summarised as median / min / max, pgbench and wrk runs with their client's CPU.

CPU is charged per process, never per machine: ``CpuWindow`` reads user + system time of the
named processes (the platform's server processes) and of one PostgreSQL server (its postmaster,
every child alive now, and — through the postmaster's ``cutime``/``cstime`` — every child that
exited and was reaped meanwhile, such as pgbench's backends) at the start and at the end of the
timed window; the difference is what those processes did in exactly that window. A load
generator's CPU comes from its own rusage (``os.wait4``) or ``time.process_time`` and is
reported beside the figures, charged to neither side. Linux only; elsewhere the CPU figures are 0.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# How many paired runs a figure is the median of, unless a module asks for more. BENCH_QUICK
# (``python -m bench.run_all --quick``) shrinks every size, for trying the tooling only.
PAIRED_RUNS = 3
QUICK = os.environ.get("BENCH_QUICK") == "1"


def sized(full: int, quick: int) -> int:
    """A size: ``full`` in a real run, ``quick`` under ``--quick``."""
    return quick if QUICK else full


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 is index 0)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far; 0.0 when gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds of a whole PostgreSQL server so far: the postmaster, its children alive now,
    and its reaped children (``cutime`` + ``cstime``: backends that exited)."""
    fields = _stat_fields(postmaster)
    if fields is None:
        return 0.0
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != postmaster:
            child = _stat_fields(int(entry.name))
            if child is not None and int(child[1]) == postmaster:
                total += (int(child[11]) + int(child[12])) / CLOCK_TICKS
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of one process now (``VmRSS``); 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def parent_pid(pid: int) -> int:
    fields = _stat_fields(pid)
    return 0 if fields is None else int(fields[1])


@dataclass
class CpuUse:
    """CPU seconds spent in one window by the platform's processes and by PostgreSQL."""

    platform_s: float
    postgres_s: float
    seconds: float  # the window's wall-clock length

    @property
    def server_s(self) -> float:
        return self.platform_s + self.postgres_s


class CpuWindow:
    """``with CpuWindow(pids, postmaster) as w: …`` then ``w.use``: CPU of exactly those processes
    between entering and leaving (``pids``: the platform's processes; empty for a baseline)."""

    def __init__(self, pids: Sequence[int], postmaster: int) -> None:
        self.pids, self.postmaster = list(pids), postmaster
        self.use = CpuUse(0.0, 0.0, 0.0)

    def _read(self) -> tuple[float, float, float]:
        return (sum(process_cpu_s(p) for p in self.pids), postgres_cpu_s(self.postmaster) if self.postmaster else 0.0,
                time.perf_counter())

    def __enter__(self) -> CpuWindow:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        self.use = CpuUse(*(b - a for a, b in zip(self._start, end, strict=True)))


# --- figures from paired runs ---------------------------------------------------------------------


def spread(values: Iterable[float]) -> dict[str, Any]:
    """A figure from several runs: its median, min, max and the runs themselves."""
    runs = [float(v) for v in values]
    if not runs:
        raise ValueError("a figure needs at least one run")
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def paired(runs: int, baseline: Callable[[int], Any], platform: Callable[[int], Any]) -> list[tuple[Any, Any]]:
    """``runs`` pairs, baseline and platform alternating (baseline first, then platform, …), so
    a neighbour's load on a shared machine weighs on both sides alike."""
    return [(baseline(i), platform(i)) for i in range(runs)]


def load_average() -> float:
    """The machine's 1-minute load average (0.0 where unknown)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


# --- pgbench --------------------------------------------------------------------------------------


@dataclass
class PgbenchRun:
    """One timed pgbench run: its transactions, TPS, the PostgreSQL CPU it caused and its own CPU."""

    transactions: int
    clients: int
    tps: float  # pgbench's own figure (without its connection set-up)
    cpu: CpuUse  # postgres_s: the whole server over the pgbench process's life
    client_cpu_s: float
    probe_cpu_s: float = 0.0  # PostgreSQL's CPU for pgbench's set-up, measured by ``pgbench_probe_cpu_s``

    @property
    def per_server_cpu_s(self) -> float:
        """Transactions per CPU-second of PostgreSQL, pgbench's set-up taken off: pgbench's side of
        a CPU-efficiency ratio. The probe did the set-up and one transaction per client."""
        work_s = self.cpu.postgres_s - self.probe_cpu_s
        if work_s <= 0.1 * self.cpu.postgres_s:  # a probe that big is noise: keep the whole window
            work_s = self.cpu.postgres_s
        return max(self.transactions - self.clients, 1) / max(work_s, 1e-9)


def run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a load generator to its end: (its standard output, its own user + system CPU seconds).
    Its output goes to files, so that nothing reaps it before ``os.wait4`` reads its rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited {proc.returncode}: {(stderr or stdout)[-500:]}")
    return stdout, usage.ru_utime + usage.ru_stime


def _pgbench_argv(bin_dir: Path, url: str, clients: int, length: list[str]) -> list[str]:
    return [str(bin_dir / "pgbench"), "-c", str(clients), "-j", "2", *length, "-b", "tpcb-like", url]


def pgbench(bin_dir: Path, url: str, clients: int, seconds: float, postmaster: int,
            probe_cpu_s: float = 0.0) -> PgbenchRun:
    """A TPC-B-like pgbench run with ``clients`` clients for ``seconds``; PostgreSQL's CPU over its life."""
    env = {**os.environ, "PGOPTIONS": ""}
    with CpuWindow([], postmaster) as window:
        out, client_cpu = run_child(_pgbench_argv(bin_dir, url, clients, ["-T", str(max(1, round(seconds)))]), env)
    tps = re.search(r"tps = ([0-9.]+)", out)
    done = re.search(r"number of transactions actually processed: ([0-9]+)", out)
    if tps is None or done is None:
        raise RuntimeError(f"pgbench printed no tps: {out[-500:]}")
    return PgbenchRun(int(done.group(1)), clients, float(tps.group(1)), window.use, client_cpu, probe_cpu_s)


def pgbench_probe_cpu_s(bin_dir: Path, url: str, clients: int, postmaster: int, runs: int = 3) -> float:
    """PostgreSQL's CPU for what every pgbench run does besides its timed transactions (connect
    ``clients`` backends, vacuum and truncate its tables, disconnect) plus one transaction per
    client: the median of ``runs`` runs of ``-t 1``."""
    env = {**os.environ, "PGOPTIONS": ""}
    used = []
    for _ in range(runs):
        with CpuWindow([], postmaster) as window:
            run_child(_pgbench_argv(bin_dir, url, clients, ["-t", "1"]), env)
        used.append(window.use.postgres_s)
    return statistics.median(used)


def pgbench_init(bin_dir: Path, url: str, clients: int, min_scale: int = 10) -> None:
    """pgbench's tables at a scale of at least the client count (its documentation's rule)."""
    env = {**os.environ, "PGOPTIONS": ""}
    scale = max(min_scale, clients)
    subprocess.run([str(bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), url],  # -i vacuums its tables
                   check=True, capture_output=True, env=env)


# --- wrk ------------------------------------------------------------------------------------------

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_urls.lua"


@dataclass
class WrkRun:
    """One wrk run: requests completed, the timed seconds, non-2xx and wrong-body answers, socket
    errors, wrk's own CPU and the CPU of the platform and PostgreSQL over its life."""

    requests: int
    seconds: float
    bad: int
    errors: int
    client_cpu_s: float
    cpu: CpuUse

    @property
    def rate(self) -> float:
        return self.requests / max(self.seconds, 1e-9)

    @property
    def per_server_cpu_s(self) -> float:
        """Requests per CPU-second of the platform's processes and PostgreSQL."""
        return self.requests / max(self.cpu.server_s, 1e-9)


def wrk(base_url: str, url_file: Path, expect: str, *, connections: int, threads: int, seconds: float,
        pids: Sequence[int], postmaster: int) -> WrkRun:
    """wrk with ``bench/wrk_urls.lua``: each thread cycles over its share of the request paths in
    ``url_file`` (one per line) and counts answers whose body lacks ``expect`` as bad."""
    argv = ["wrk", "-c", str(connections), "-t", str(threads), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(WRK_SCRIPT), base_url, "--", str(url_file), str(threads), expect]
    with CpuWindow(pids, postmaster) as window:
        out, client_cpu = run_child(argv)
    return parse_wrk(out, client_cpu, window.use)


def parse_wrk(out: str, client_cpu_s: float, cpu: CpuUse) -> WrkRun:
    """The summary line the Lua script's ``done`` prints (``WRK_SUMMARY {json}``)."""
    match = re.search(r"^WRK_SUMMARY (\{.*\})$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    summary = json.loads(match.group(1))
    errors = sum(int(summary[k]) for k in ("connect", "read", "write", "timeout"))
    return WrkRun(int(summary["requests"]), summary["duration_us"] / 1e6, int(summary["bad"]) + int(summary["status"]),
                  errors, client_cpu_s, cpu)


def write_url_file(path: Path, paths: Iterable[str]) -> Path:
    """One request path a line, for ``wrk``."""
    path.write_text("".join(p + "\n" for p in paths), encoding="ascii")
    return path

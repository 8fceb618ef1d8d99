"""``make bench``: run every ``bench/bench_*.py``, write ``bench/results.json`` and ``docs/BENCHMARKS.md``.

Each benchmark module exposes ``run()`` returning its figures — each a number, or the spread of
several paired runs (``bench.measure.spread``: median, min, max, runs) — and may set ``GOALS``
(figure → ``">= 20"`` / ``"<= 0.25"``, or a bare number meaning at least that) and ``NOTES``
(figure → what it includes, shown beside it); goals a module does not state come from
``DEFAULT_GOALS`` below, which copies them from the issues. Its docstring says how it measures
and is copied into the report. Modules run one after another, each in its own Python process
(so one module's event loop, database or crash cannot disturb the next), with a time limit.
The machine's load average before and after each module is recorded: a figure measured while
other work was running on the machine is labelled so in the report. ``--quick`` runs every
module at tiny sizes (``BENCH_QUICK=1``), to try the tooling; its figures mean nothing and the
report says so.

Exit status: 0 when every module ran, 1 when one failed (its error is in the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
CARRIED_OVER = ("cluster", "cluster_throughput_ratio_2_vs_1_node")  # written by `make cluster-test`
REPORT = ROOT / "docs" / "BENCHMARKS.md"
NOTES_FILE = ROOT / "bench" / "notes.md"
MODULE_TIMEOUT_S = 1800.0
SETTLE_S = 90.0

# Goals stated in the issues, for modules that do not carry their own ``GOALS``.
DEFAULT_GOALS: dict[str, str] = {
    "codec_speedup_vs_reference": ">= 20",
    "crc32_ratio_vs_zlib": ">= 0.9",
    "mac_speedup_vs_pycryptodome": ">= 5",
    "dd_roundtrip_ratio_vs_echo": ">= 0.6",
    "recharge_ratio_vs_pgbench": ">= 1.0",
}
# A module is "measured under load" when the 1-minute load average just before it starts (after
# waiting up to ``SETTLE_S`` for the previous module's load to fade) is at least this many runnable
# tasks per core: other work was keeping the machine busy. The value after a module includes the
# module's own work (a recharge run alone lifts it to 4 or 5 on 2 cores), so it is shown, not judged.
BUSY_LOAD_PER_CORE = 1.0


def bench_modules() -> list[str]:
    """Names of the ``bench_*`` modules present, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "commit": commit.stdout.strip() or None,
    }


def goal_met(value: float, goal: str | None) -> bool | None:
    if not goal:
        return None
    text = goal.strip()
    op, _, number = text.partition(" ") if text[:2] in (">=", "<=") else (">=", "", text)
    target = float(number)
    return value >= target if op == ">=" else value <= target


def goals_of(module_name: str) -> dict[str, str]:
    module = importlib.import_module(f"bench.{module_name}")
    declared = getattr(module, "GOALS", {})
    return {**DEFAULT_GOALS, **{k: v if isinstance(v, str) else f">= {v}" for k, v in declared.items()}}


def notes_of(module_name: str) -> dict[str, str]:
    return dict(getattr(importlib.import_module(f"bench.{module_name}"), "NOTES", {}))


def how_of(module_name: str) -> str:
    module = importlib.import_module(f"bench.{module_name}")
    return (module.__doc__ or "").strip()


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


def run_module(name: str, timeout_s: float, *, quick: bool = False) -> dict[str, Any]:
    """Run ``bench.<name>.run()`` in a child process; its figures and their spreads, or the error,
    and the machine's load average before and after."""
    env = {**os.environ, "BENCH_QUICK": "1" if quick else "0"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        started, load_before = time.monotonic(), load_average()
        outcome: dict[str, Any] = {"figures": {}, "spread": {}, "error": None, "load_average": [load_before]}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.run_all", "--one", name, "--out", str(out)],
                cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env,
            )
        except subprocess.TimeoutExpired:
            done = None
        outcome["seconds"] = round(time.monotonic() - started, 1)
        outcome["load_average"].append(load_average())
        if done is None:
            outcome["error"] = f"timed out after {timeout_s:.0f}s"
        elif done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            outcome["error"] = " | ".join(tail) or f"exit {done.returncode}"
        else:
            figures = json.loads(out.read_text())
            outcome["figures"] = {k: v["median"] if isinstance(v, dict) else v for k, v in figures.items()}
            outcome["spread"] = {k: {"min": v["min"], "max": v["max"], "runs": v["runs"]}
                                 for k, v in figures.items() if isinstance(v, dict)}
    return outcome


def _is_figure(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(value.get(k), int | float) for k in ("median", "min", "max")) and isinstance(
            value.get("runs"), list)
    return isinstance(value, int | float)


def _one(name: str, out: Path) -> int:
    """Child side: import, run, check the shape, write the figures."""
    figures = importlib.import_module(f"bench.{name}").run()
    if not isinstance(figures, dict) or not all(isinstance(k, str) and _is_figure(v) for k, v in figures.items()):
        raise TypeError(f"bench.{name}.run() must return dict[str, float | spread]")
    out.write_text(json.dumps({k: v if isinstance(v, dict) else float(v) for k, v in figures.items()}))
    return 0


def under_load(module: dict[str, Any], cores: int | None) -> bool:
    """Whether the machine was busy with other work when a module started."""
    return (module.get("load_average") or [0.0])[0] >= BUSY_LOAD_PER_CORE * (cores or 1)


def fmt(value: float) -> str:
    """Three significant digits, without exponents for the rates (1,550 rather than 1.55e+03)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _figure_row(name: str, value: float, module: dict[str, Any], busy: bool) -> str:
    goal = module["goals"].get(name)
    met = goal_met(value, goal)
    extent = module.get("spread", {}).get(name)
    low, high, runs = (fmt(extent["min"]), fmt(extent["max"]), str(len(extent["runs"]))) if extent else ("", "", "1")
    note = "; ".join(n for n in (module.get("notes", {}).get(name), "under load" if busy else None) if n)
    met_text = "" if met is None else "yes" if met else "**no**"
    return f"| `{name}` | {fmt(value)} | {low} | {high} | {runs} | {goal or '—'} | {met_text} | {note} |"


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run_all`) — do not edit by hand; the figures and",
        "the machine are also in `bench/results.json`; the analysis at the end comes from `bench/notes.md`.",
        "Every ratio compares two kinds of work measured in the same run on the same machine (the platform",
        "against a baseline such as the pure-Python reference, zlib, a raw uvloop echo server, pgbench or a",
        "hello-world route), so it says how well the code uses the machine rather than how fast the machine",
        "is. Each figure of a paired benchmark is the **median** of its runs (baseline and platform",
        "alternating), with the **min** and **max** beside it. *CPU* ratios charge each side only its",
        "server processes' CPU (read from `/proc` over the timed window); *wall-clock* ratios include",
        "each side's load generator sharing the machine's cores.",
        "",
        f"Measured {results['date']} on:",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']} |",
        f"| cores | {m['cores']} |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} ({m['implementation']}) |",
        f"| commit | {m['commit']} |",
        *(["| sizes | **quick** (`--quick`): tiny runs that try the tooling; these figures mean nothing |"]
          if results.get("quick") else []),
    ]


def render_report(results: dict[str, Any], notes: str = "") -> str:
    cores = results["machine"].get("cores")
    lines = _header(results)
    busy_modules = [name for name, module in results["modules"].items() if under_load(module, cores)]
    if busy_modules:
        lines += ["", f"**Measured under load**: other work kept the machine busy when {', '.join(busy_modules)}"
                  f" started (1-minute load average at least {BUSY_LOAD_PER_CORE * (cores or 1):g} on {cores} cores:"
                  " see each module's section); those figures, marked *under load*, are noise, not a measure of",
                  "the code."]
    else:
        lines += ["", f"Every module started on a machine whose 1-minute load average was below {cores} (its cores);",
                  "the value after each module (in its section) includes the module's own work. Other users of",
                  "the machine during a module would still show in its spread."]
    lines += ["", "## Figures", "", "| figure | median | min | max | runs | goal | met | note |",
              "|---|---:|---:|---:|---:|---|---|---|"]
    for name, module in results["modules"].items():
        busy = name in busy_modules
        lines += [_figure_row(figure, value, module, busy) for figure, value in module["figures"].items()]
    for name, module in results["modules"].items():
        load = " → ".join(f"{v:g}" for v in module.get("load_average", []))
        lines += ["", f"## {name}", "", f"Ran in {module['seconds']} s; 1-minute load average before → after: {load}."]
        if module["error"]:
            lines += ["", f"**Failed:** `{module['error']}`"]
        if module["how"]:
            lines += ["", "How it is measured (from `bench/" + name + ".py`):", "", module["how"]]
    if notes.strip():
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def _notes() -> str:
    return NOTES_FILE.read_text(encoding="utf-8") if NOTES_FILE.exists() else ""


def _settle(limit_s: float, cores: int | None) -> None:
    """Wait (at most ``limit_s``) until the previous module's load has faded from the load average."""
    deadline = time.monotonic() + limit_s
    while load_average() >= (cores or 1) and time.monotonic() < deadline:
        time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated module names (default: every bench_* module)")
    parser.add_argument("--timeout-s", type=float, default=MODULE_TIMEOUT_S, help="time limit per module")
    parser.add_argument("--settle-s", type=float, default=SETTLE_S,
                        help="before each module, wait at most this long for the load average to fall below the cores")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: try the tooling (figures mean nothing)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from the existing results file, running nothing")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return _one(args.one, args.out)
    if args.report_only:
        stored = json.loads(args.results.read_text(encoding="utf-8"))
        args.report.write_text(render_report(stored, _notes()), encoding="utf-8")
        return 0

    available = bench_modules()
    names = [n.strip() for n in args.only.split(",")] if args.only else available
    unknown = set(names) - set(available)
    if unknown:
        parser.error(f"no such benchmark module: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "modules": {},
        "figures": {},
    }
    for name in names:
        _settle(0 if args.quick else args.settle_s, results["machine"]["cores"])
        print(f"{name} …", flush=True)
        outcome = run_module(name, args.timeout_s, quick=args.quick)
        outcome["goals"] = {k: v for k, v in goals_of(name).items() if k in outcome["figures"]}
        outcome["notes"] = {k: v for k, v in notes_of(name).items() if k in outcome["figures"]}
        outcome["how"] = how_of(name)
        results["modules"][name] = outcome
        results["figures"].update(outcome["figures"])
        for figure, value in outcome["figures"].items():
            goal = outcome["goals"].get(figure)
            extent = outcome["spread"].get(figure)
            span = f" [{fmt(extent['min'])} … {fmt(extent['max'])}]" if extent else ""
            print(f"  {figure}: {fmt(value)}{span}" + (f" (goal {goal})" if goal else ""), flush=True)
        if outcome["error"]:
            print(f"  FAILED: {outcome['error']}", flush=True)
    if args.results.exists():  # figures other commands write there (make cluster-test's) stay
        kept = json.loads(args.results.read_text(encoding="utf-8"))
        results.update({k: kept[k] for k in CARRIED_OVER if k in kept})
    args.results.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(render_report(results, _notes()), encoding="utf-8")
    print(f"wrote {args.results} and {args.report}")
    return 1 if any(m["error"] for m in results["modules"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

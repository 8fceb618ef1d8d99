"""``make bench``: run every ``bench/bench_*.py``, write ``bench/results.json`` and ``docs/BENCHMARKS.md``.

Each benchmark module exposes ``run() -> dict[str, float]`` and may set ``GOALS`` (figure →
``">= 20"`` / ``"<= 0.25"``, or a bare number meaning at least that); goals a module does
not state come from ``DEFAULT_GOALS`` below, which copies them from the issues. Its
docstring says how it measures and is copied into the report. Modules run one after
another, each in its own Python process (so one module's event loop, database or crash
cannot disturb the next), with a time limit. Every figure is a ratio of two timings taken
in the same run on the same machine, so the numbers compare across machines better than
absolute rates do; the machine is recorded beside them anyway.

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
REPORT = ROOT / "docs" / "BENCHMARKS.md"
# Paired before/after runs of a change, written by hand (a change's own measurement, not this run's).
COMPARISONS = ROOT / "bench" / "comparisons.md"
MODULE_TIMEOUT_S = 1800.0

# Goals stated in the issues, for modules that do not carry their own ``GOALS``.
DEFAULT_GOALS: dict[str, str] = {
    "codec_speedup_vs_reference": ">= 20",
    "crc32_ratio_vs_zlib": ">= 0.9",
    "mac_speedup_vs_pycryptodome": ">= 5",
    "dd_roundtrip_ratio_vs_echo": ">= 0.6",
    "recharge_ratio_vs_pgbench": ">= 1.0",
}


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


def how_of(module_name: str) -> str:
    module = importlib.import_module(f"bench.{module_name}")
    return (module.__doc__ or "").strip()


def run_module(name: str, timeout_s: float) -> dict[str, Any]:
    """Run ``bench.<name>.run()`` in a child process; its figures, or the error."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.run_all", "--one", name, "--out", str(out)],
                cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return {"seconds": round(time.monotonic() - started, 1), "figures": {},
                    "error": f"timed out after {timeout_s:.0f}s"}
        seconds = round(time.monotonic() - started, 1)
        if done.returncode != 0 or not out.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return {"seconds": seconds, "figures": {}, "error": " | ".join(tail) or f"exit {done.returncode}"}
        figures = json.loads(out.read_text())
    return {"seconds": seconds, "figures": figures, "error": None}


def _one(name: str, out: Path) -> int:
    """Child side: import, run, check the shape, write the figures."""
    figures = importlib.import_module(f"bench.{name}").run()
    if not isinstance(figures, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) for k, v in figures.items()
    ):
        raise TypeError(f"bench.{name}.run() must return dict[str, float]")
    out.write_text(json.dumps({k: float(v) for k, v in figures.items()}))
    return 0


def fmt(value: float) -> str:
    """Three significant digits, without exponents for the rates (1,550 rather than 1.55e+03)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def render_report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run_all`) — do not edit by hand; the figures and",
        "the machine are also in `bench/results.json`. Every figure is a ratio of two timings taken",
        "in the same run on the same machine (the platform against a baseline such as the pure-Python",
        "reference, zlib, a raw uvloop echo server or pgbench), so it says how well the code uses the",
        "machine rather than how fast the machine is. Absolute rates drift between machines and",
        "between runs on a shared machine; compare ratios.",
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
        "",
        "## Figures",
        "",
        "| figure | value | goal | met |",
        "|---|---:|---|---|",
    ]
    for module in results["modules"].values():
        for name, value in module["figures"].items():
            goal = module["goals"].get(name)
            met = goal_met(value, goal)
            lines.append(f"| `{name}` | {fmt(value)} | {goal or '—'} | {'' if met is None else 'yes' if met else '**no**'} |")
    if COMPARISONS.exists():
        lines += ["", COMPARISONS.read_text(encoding="utf-8").rstrip()]
    for name, module in results["modules"].items():
        lines += ["", f"## {name}", "", f"Ran in {module['seconds']} s."]
        if module["error"]:
            lines += ["", f"**Failed:** `{module['error']}`"]
        if module["how"]:
            lines += ["", "How it is measured (from `bench/" + name + ".py`):", "", module["how"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated module names (default: every bench_* module)")
    parser.add_argument("--timeout-s", type=float, default=MODULE_TIMEOUT_S, help="time limit per module")
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
        args.report.write_text(render_report(json.loads(args.results.read_text(encoding="utf-8"))), encoding="utf-8")
        return 0

    available = bench_modules()
    names = [n.strip() for n in args.only.split(",")] if args.only else available
    unknown = set(names) - set(available)
    if unknown:
        parser.error(f"no such benchmark module: {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "modules": {},
        "figures": {},
    }
    for name in names:
        print(f"{name} …", flush=True)
        outcome = run_module(name, args.timeout_s)
        outcome["goals"] = {k: v for k, v in goals_of(name).items() if k in outcome["figures"]}
        outcome["how"] = how_of(name)
        results["modules"][name] = outcome
        results["figures"].update(outcome["figures"])
        for figure, value in outcome["figures"].items():
            goal = outcome["goals"].get(figure)
            print(f"  {figure}: {fmt(value)}" + (f" (goal {goal})" if goal else ""), flush=True)
        if outcome["error"]:
            print(f"  FAILED: {outcome['error']}", flush=True)
    args.results.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(render_report(results), encoding="utf-8")
    print(f"wrote {args.results} and {args.report}")
    return 1 if any(m["error"] for m in results["modules"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

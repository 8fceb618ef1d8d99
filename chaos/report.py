"""The figures of a chaos run: results.json, a one-screen summary, and docs/RELIABILITY.md's section.

The section between ``<!-- chaos:begin -->`` and ``<!-- chaos:end -->`` of the report file is
replaced by the run's figures; the rest of the file (how to read them) is written by hand.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos import checks
from chaos.journal import read

if TYPE_CHECKING:
    from chaos.harness import Config, Harness

LATE_S = 0.5  # a client's deadline and a little
UNRECOVERED, DURING_KILL = "proxy unrecovered", "proxy during a kill"  # proxy faults not in the recovery figures
BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50": round(statistics.median(ordered), 3), "p99": round(pick(0.99), 3),
            "max": round(ordered[-1], 3)}


def liveness(directory: Path, windows: list[tuple[float, float]], deadline_s: float = 10.0) -> dict[str, Any]:
    """Per channel: outcomes and latencies of every request; violations: a direct request (not
    through the proxy) lost or answered late outside the spans the server was down."""
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    violations, examples, failed = 0, list[dict[str, Any]](), 0
    for path in sorted(directory.glob("journal-*.jsonl")):
        for r in read(path):
            if r["type"] != "req":
                continue
            outcomes[r["ch"]][r["st"]] += 1
            if r["st"] != "lost":
                latencies[r["ch"]].append(r["s"])
            failed += r["st"] == "failed" and not r["px"]
            late = r["st"] == "lost" or r["s"] > deadline_s + LATE_S
            down = any(start - deadline_s - LATE_S <= r["t"] <= end + 2 for start, end in windows)
            if late and not r["px"] and not down:
                violations += 1
                examples = (examples + [r])[:5]
    return {"violations": violations, "examples": examples, "failed_direct": failed,
            "channels": {ch: {**dict(outcomes[ch]), "latency_s": _quantiles(latencies[ch])} for ch in outcomes}}


def proxy_recovery(directory: Path, sources: dict[str, str],
                   windows: list[tuple[float, float]]) -> dict[str, list[float]]:
    """Per proxy fault kind (``route:kind``): for each fault, the seconds from its connection's opening until the
    client it hit next got a definite answer (ok or refused, on any of its channels). A fault after which its
    client got none (the end of the run) is counted under ``unrecovered``; one whose span until that answer met
    a span the server was down (a kill until READY again) under ``during a kill``: the kill's recovery is its."""
    path = directory / "proxy-faults.jsonl"
    if not path.exists():
        return {}
    answers: dict[str, list[float]] = {}  # journal name → the times definite answers arrived, in order
    for name in set(sources.values()):
        journal = directory / name
        answers[name] = sorted(r["t"] + r["s"] for r in read(journal) if r["type"] == "req"
                               and r["st"] in ("ok", "refused")) if journal.exists() else []
    found: dict[str, list[float]] = defaultdict(list)
    for fault in read(path):
        times = answers.get(sources.get(fault["peer"], ""), [])
        after = times[bisect.bisect_left(times, fault["t"])] if times and times[-1] >= fault["t"] else None
        if after is None:
            found[UNRECOVERED].append(0.0)
        elif any(start <= after and fault["t"] <= end for start, end in windows):
            found[DURING_KILL].append(after - fault["t"])
        else:
            found[f"proxy {fault['route']}:{fault['kind']}"].append(after - fault["t"])
    return found


def results(cfg: Config, harness: Harness, journals: checks.Journals, verdicts: list[checks.Check],
            proxy: dict[str, Any], fuzzed: dict[str, Any], live: dict[str, Any], seconds: float,
            api: dict[str, Any] | None = None) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for fault in harness.measured.faults:
        by_kind[fault["kind"]].append(fault["recovery_s"])
    restarts = [f["restart_s"] for f in harness.measured.faults if "restart_s" in f]
    proxied = proxy_recovery(harness.dir, harness.sources, harness.measured.windows)
    unrecovered, during_kills = len(proxied.pop(UNRECOVERED, [])), len(proxied.pop(DURING_KILL, []))
    return {
        "seed": cfg.seed,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()},
        "database": "DATABASE_URL" if harness.external_url else "embedded PostgreSQL",
        "seconds": round(seconds, 1),
        "acknowledged": dict(Counter(a["ch"] for a in journals.acks)),
        "kills_survived": len(by_kind.get("kill", [])),
        "db_restarts_survived": len(by_kind.get("db_restart", [])) + len(by_kind.get("db_connections_cut", [])),
        "proxy": proxy,
        "proxy_faults_injected": sum(proxy.get("faults", {}).values()),
        "recovery_s": {kind: _quantiles(values) for kind, values in {**by_kind, **proxied}.items()},
        "proxy_faults_unrecovered": unrecovered,
        "proxy_faults_during_kills": during_kills,
        "restart_to_ready_s": _quantiles(restarts),
        "faults": harness.measured.faults,
        "requests": live["channels"],
        "slow_connections_opened": dict(sum((Counter(e.get("opened", {})) for e in journals.ends), Counter())),
        "fuzz": fuzzed,
        "api_fuzz": api or {"cases": 0},
        "schemathesis_cases": (api or {}).get("cases", 0),
        "checks": [dataclasses.asdict(v) for v in verdicts],
        "ok": all(v.ok for v in verdicts),
    }


def summary(r: dict[str, Any]) -> str:
    lines = [f"chaos: seed {r['seed']}, {r['seconds']} s, {r['database']}",
             f"  acknowledged: {r['acknowledged']}",
             f"  kills survived: {r['kills_survived']}, database restarts survived: {r['db_restarts_survived']},"
             f" proxy faults injected: {r['proxy_faults_injected']}",
             f"  recovery (s): {json.dumps(r['recovery_s'])}",
             f"  fuzz: {r['fuzz'].get('frames', 0)} frames, schemathesis: {r.get('schemathesis_cases', 0)} cases"]
    lines += [f"  [{'ok' if c['ok'] else 'FAILED'}] {c['name']}" + ("" if c["ok"] else f": {c['detail']}")
              for c in r["checks"]]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def section(r: dict[str, Any]) -> str:
    c = r["config"]
    fz = r["fuzz"]
    out = [BEGIN, "", f"Seed **{r['seed']}** (`python -m chaos.run --seed {r['seed']}` replays the schedule), "
           f"finished {r['finished']}, {r['seconds']} s in all, {c['duration_s']:g} s of traffic under faults, "
           f"{c['workers']} worker(s), {r['database']}, deadlines "
           f"{'as promised' if c.get('slack', 1) == 1 else 'x ' + str(c['slack'])}. **Result: {'all checks passed' if r['ok'] else 'FAILED'}.**", ""]
    out += _table([(ch, str(n)) for ch, n in sorted(r["acknowledged"].items())], ("channel", "operations acknowledged"))
    out += ["", f"Faults survived: **{r['kills_survived']}** kills (`kill -9` of every serve process), "
            f"**{r['db_restarts_survived']}** database restarts, **{r['proxy_faults_injected']}** proxy faults "
            f"({', '.join(f'{k} {v}' for k, v in sorted(r['proxy'].get('faults', {}).items()))}).", ""]
    out += _table([(kind, str(q.get("n")), str(q.get("p50")), str(q.get("p99")), str(q.get("max")))
                   for kind, q in sorted(r["recovery_s"].items())],
                  ("recovery after", "n", "p50 s", "p99 s", "max s"))
    rr = r["restart_to_ready_s"]
    out += ["", "Recovery after a kill or a database restart: until every channel answers a probe definitely again; "
            "after a proxy fault (`proxy route:kind`): from the faulted connection's opening until the client it hit "
            f"next got a definite answer; {r.get('proxy_faults_during_kills', 0)} faults whose span until then met a "
            f"kill are left to the kill's figure, {r.get('proxy_faults_unrecovered', 0)} hit a client that got no "
            "answer after them (the end of its traffic)."]
    out += ["", f"A restart of `serve` until every worker is READY: p50 {rr.get('p50')} s, max {rr.get('max')} s.", ""]
    out += _table([(ch, str(v.get("ok", 0)), str(v.get("refused", 0)), str(v.get("busy", 0)), str(v.get("failed", 0)),
                    str(v.get("lost", 0)), str(v["latency_s"].get("p50")), str(v["latency_s"].get("p99")),
                    str(v["latency_s"].get("max"))) for ch, v in sorted(r["requests"].items())],
                  ("requests", "ok", "refused", "busy", "failed", "lost", "p50 s", "p99 s", "max s"))
    slow = r.get("slow_connections_opened", {})
    out += ["", "Slow and stuck connections opened (and opened again once the platform closed them): "
            + ", ".join(f"{k} {v}" for k, v in sorted(slow.items())) + "."]
    out += ["", f"DD port fuzzing: **{fz.get('frames', 0)}** frames over {fz.get('connections', 0)} connections "
            f"({fz.get('legal_frames', 0)} legal, {fz.get('unanswered_legal', 0)} unanswered), RSS "
            f"{fz.get('rss_before_mb')} → {fz.get('rss_after_mb')} MB.", ""]
    out += [_api_line(r.get("api_fuzz", {})), ""]
    out += _table([("✓" if ch["ok"] else "✗", ch["name"], " ".join(ch["detail"].replace("|", "/").split())[:160]) for ch in r["checks"]],
                  ("", "check", "detail"))
    return "\n".join([*out, "", END])


def _api_line(api: dict[str, Any]) -> str:
    if not api.get("cases"):
        return "HTTP fuzzing (schemathesis): not run."
    passes = api["passes"]
    return (f"HTTP fuzzing (schemathesis, every check it offers and the platform's own): **{api['cases']}** cases "
            f"over {api['operations']} operations of `/openapi.json` — signed {passes['signed']['cases']} "
            f"({passes['signed']['refused']} refused, each leaving the money tables as they were), unsigned "
            f"{passes['unsigned']['cases']} ({passes['unsigned']['refused']} refused); failures: "
            f"{sum(len(p['failures']) for p in passes.values())}.")


def write_section(path: Path, r: dict[str, Any]) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    path.write_text(head + section(r) + tail, encoding="utf-8")

"""``make chaos`` (``python -m chaos.run``): the real platform under a seeded schedule of faults.

Prints the seed and the fault schedule first (``--seed`` replays both, and the proxy's per-
connection faults), runs the clients while killing the server and restarting its database,
lets every client recover what it left unknown, fuzzes the DD port, then checks the journals
against the database (chaos/checks.py) and writes ``chaos/results.json`` and, with
``--report``, the figures into docs/RELIABILITY.md. Exit status 1 (with the seed) when any
check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from chaos import api_fuzz, checks, faults, report
from chaos.fuzz import ANSWER_WAIT_S, fuzz
from chaos.harness import Config, Harness
from chaos.journal import read
from chaos.server import RECHARGECTL, ROOT
from recharge import db

RESULTS = ROOT / "chaos" / "results.json"
RSS_SLACK_MB = 10.0
DB_BACK_WITHIN_S = 5.0


def parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seed", type=int, help="replay this run's schedule (default: a new seed)")
    p.add_argument("--duration", type=float, default=1500.0, help="seconds of traffic under faults")
    p.add_argument("--kills", type=int, default=100, help="kill -9 of the server during the run")
    p.add_argument("--db-restarts", type=int, default=5, help="database immediate stops and starts")
    p.add_argument("--frames", type=int, default=1_000_000, help="DD frames fuzzed after the run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dd-clients", type=int, default=3)
    p.add_argument("--kkt-clients", type=int, default=2)
    p.add_argument("--sms-clients", type=int, default=1)
    p.add_argument("--order-clients", type=int, default=1)
    p.add_argument("--mpay-clients", type=int, default=1, help="mobile payment accounts (JSON API and STK)")
    p.add_argument("--wallet-clients", type=int, default=1, help="SIM wallet clients (STK, hall and merchant POS)")
    p.add_argument("--slow-clients", type=int, default=1)
    p.add_argument("--proxy-rate", type=float, default=0.3, help="share of proxied connections with a fault")
    p.add_argument("--api-examples", type=int, default=0,
                   help="schemathesis examples per operation and mode in each HTTP fuzzing pass (0: none; make chaos: 25)")
    p.add_argument("--api-phases", default="coverage,fuzzing", help="schemathesis phases of the HTTP fuzzing")
    p.add_argument("--slack", type=float, default=1.0,
                   help="multiply every deadline (answers, recovery, fuzz answers) on a loaded machine; 1: as promised")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--report", type=Path, help="write the figures into this markdown file (docs/RELIABILITY.md)")
    p.add_argument("--keep", action="store_true", help="keep the run's data folder even when every check passed")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    return Config(seed=seed, duration_s=a.duration, kills=a.kills, db_restarts=a.db_restarts, frames=a.frames,
                  dd_clients=a.dd_clients, kkt_clients=a.kkt_clients, sms_clients=a.sms_clients,
                  order_clients=a.order_clients, mpay_clients=a.mpay_clients,
                  wallet_clients=a.wallet_clients, slow_clients=a.slow_clients, workers=a.workers,
                  proxy_rate=a.proxy_rate, slack=max(1.0, a.slack), api_examples=a.api_examples,
                  api_phases=a.api_phases), a


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(argv)
    events = faults.schedule(cfg.seed, cfg.duration_s, cfg.kills, cfg.db_restarts)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--seed" in given:
        del given[given.index("--seed"):given.index("--seed") + 2]
    print(f"chaos: seed {cfg.seed} — replay with: python -m chaos.run --seed {cfg.seed} {' '.join(given)}")
    print("chaos: fault schedule (seconds after the clients start):")
    for event in events:
        print("   " + event.describe())
    sys.stdout.flush()
    harness = Harness(cfg)
    try:
        results = run(harness, events)
    finally:
        harness.close()
    args.results.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    if args.report:
        report.write_section(args.report, results)
    print(report.summary(results))
    if not results["ok"]:
        print(f"chaos: FAILED with seed {cfg.seed} (data in {harness.dir})", file=sys.stderr)
        return 1
    if not args.keep:
        shutil.rmtree(harness.dir, ignore_errors=True)
    return 0


def run(harness: Harness, events: list[faults.Event]) -> dict[str, Any]:
    cfg = harness.cfg
    world = harness.start()
    started = time.time()
    harness.start_clients(until=started + cfg.duration_s)
    harness.run_schedule(events, started)
    time.sleep(max(0.0, started + cfg.duration_s - time.time()))
    client_exits = harness.wait_clients()
    proxy = harness.proxy_stats()
    fuzzed = fuzz_phase(harness, cfg.frames, cfg.seed, ANSWER_WAIT_S * cfg.slack)
    journals = load_journals(harness.dir)
    verdicts = asyncio.run(run_checks(world.database_url, journals, world))
    verdicts.append(audit_cli(world.database_url))
    verdicts += fuzzed.pop("checks")
    live = report.liveness(harness.dir, harness.measured.windows, harness.deadline_s)
    verdicts.append(checks.Check(f"liveness: every direct request answered (or busy) within {harness.deadline_s:g} s"
                                 " outside the server's down time", live["violations"] == 0,
                                 json.dumps(live["examples"])))
    verdicts.append(checks.Check("no direct request answered 0xEE, a 5xx other than busy, or garbage",
                                 live["failed_direct"] == 0, str(live["failed_direct"])))
    verdicts.append(checks.Check("clients: every client process exited cleanly", set(client_exits) <= {0},
                                 str(client_exits)))
    verdicts += database_checks(harness.measured.faults, DB_BACK_WITHIN_S * cfg.slack)
    api = api_fuzz_phase(harness, cfg.api_examples, cfg.api_phases, cfg.seed)
    verdicts += api.pop("checks")
    return report.results(cfg, harness, journals, verdicts, proxy, fuzzed, live, time.time() - started, api)


def api_fuzz_phase(harness: Harness, examples: int, phases: str, seed: int) -> dict[str, Any]:
    """Schemathesis against every JSON and form endpoint of a platform of its own (chaos/api_fuzz.py):
    on the embedded PostgreSQL of its own folder, or a database of its own on the DATABASE_URL server."""
    if examples <= 0:
        return {"cases": 0, "checks": []}
    url = None
    if harness.external_url:
        name = f"api_fuzz_{seed}_{secrets.token_hex(3)}"
        asyncio.run(db.execute_once(harness.external_url, f'CREATE DATABASE "{name}"'))
        url = db.with_database(harness.external_url, name)
    try:
        found = api_fuzz.fuzz(harness.dir / "api-fuzz", database_url=url, examples=examples, seed=seed, phases=phases,
                              timeout_s=7200.0)
    finally:
        if url is not None:
            asyncio.run(db.execute_once(harness.external_url or "", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    signed, unsigned = found["passes"]["signed"], found["passes"]["unsigned"]

    def detail(one: dict[str, Any]) -> str:
        return (f"{one['cases']} cases, {one['refused']} refused, exit {one['exit']}, failures "
                f"{json.dumps(one['failures'])[:300]}, errors {json.dumps(one['errors'])[:200]} ({one['log']})")

    found["checks"] = [
        checks.Check("http fuzz, signed: no 5xx, every answer as documented, a refused request changes no money table",
                     signed["exit"] == 0 and not signed["failures"] and not signed["errors"], detail(signed)),
        checks.Check("http fuzz, unsigned: every operation that needs credentials refused as documented",
                     unsigned["exit"] == 0 and not unsigned["failures"] and not unsigned["errors"], detail(unsigned)),
        checks.Check("http fuzz, unsigned: the books unchanged across the pass", found["unsigned_books_unchanged"],
                     json.dumps(found["books"])),
    ]
    return found


def database_checks(done: list[dict[str, Any]], back_within_s: float) -> list[checks.Check]:
    """What the database faults must show: busy while it is down (the embedded server, stopped), or
    definite answers while its connections are cut (a shared server), and every channel back in time."""
    found = []
    down = [f for f in done if "busy_while_down" in f]
    cut = [f for f in done if "answered_while_cut" in f]
    if down:
        found.append(checks.Check("database down: every channel answered busy quickly, /readyz 503",
                                  all(f["busy_while_down"] for f in down),
                                  json.dumps([f["while_down"] for f in down])[:400]))
    if cut:
        found.append(checks.Check("database connections cut: every channel answered (or busy), none failed or hung",
                                  all(f["answered_while_cut"] for f in cut),
                                  json.dumps([f["while_down"] for f in cut])[:400]))
    if down or cut:
        found.append(checks.Check(f"database back: every channel works within {back_within_s:g} s, no restart",
                                  all(f["recovery_s"] <= back_within_s for f in down + cut),
                                  str([f["recovery_s"] for f in down + cut])))
    return found


def load_journals(directory: Path) -> checks.Journals:
    j = checks.Journals()
    for path in sorted(directory.glob("journal-*.jsonl")):
        for record in read(path):
            {"ack": j.acks, "end": j.ends}.get(record["type"], j.notes).append(record)
    return j


async def run_checks(dsn: str, j: checks.Journals, world: Any) -> list[checks.Check]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await checks.dd_checks(conn, j)
        if world.kkt_cards:
            found += await checks.trade_checks(conn, j, "kkt", world.merchant_code, [world.kkt_terminal],
                                               [c for r in world.kkt_cards for c in r])
        if world.sms_cards:
            found += await checks.trade_checks(conn, j, "sms", world.merchant_code, world.sms_terminals,
                                               [c for r in world.sms_cards for c in r])
        found += await checks.order_checks(conn, j)
        if world.mpay_accounts:
            found += await checks.mpay_checks(conn, j, [a["account_id"] for a in world.mpay_accounts])
        if world.wallet_clients:
            found += await checks.wallet_checks(conn, j, [s["account_id"] for c in world.wallet_clients
                                                          for s in c["sims"]])
        found += await checks.bank_checks(conn)
        return [*found, checks.definite_answers(j)]
    finally:
        await conn.close()


def audit_cli(dsn: str) -> checks.Check:
    import subprocess

    done = subprocess.run([RECHARGECTL, "audit", "--database-url", dsn], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    return checks.Check("rechargectl audit exits 0", done.returncode == 0, done.stdout.strip()[-300:])


def fuzz_phase(harness: Harness, frames: int, seed: int, answer_wait_s: float) -> dict[str, Any]:
    """DD port fuzzing with no other client running: legal frames answered, memory flat, ledger still."""
    if frames <= 0:
        return {"frames": 0, "checks": []}
    pids = harness.served.pids
    dsn = harness.world.database_url
    books_before = asyncio.run(_books(dsn))
    rss_before = sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20
    result = asyncio.run(fuzz("127.0.0.1", harness.served.dd_port, frames, seed, answer_wait_s=answer_wait_s))
    time.sleep(2.0)  # connections closed, buffers freed
    rss_after = sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20
    books_after = asyncio.run(_books(dsn))
    return {
        "frames": result.frames, "connections": result.connections, "legal_frames": result.legal,
        "unanswered_legal": len(result.unanswered_legal), "seconds": round(result.seconds, 1),
        "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
        "checks": [
            checks.Check(f"fuzz: every legal frame answered within {answer_wait_s:g} s", not result.unanswered_legal,
                         "; ".join(result.unanswered_legal[:3])),
            checks.Check(f"fuzz: memory flat (RSS after <= before + {RSS_SLACK_MB:g} MB)",
                         rss_after <= rss_before + RSS_SLACK_MB, f"{rss_before:.1f} -> {rss_after:.1f} MB"),
            checks.Check("fuzz: the ledger did not move", books_before == books_after,
                         f"{books_before} -> {books_after}"),
            checks.Check("fuzz: the platform kept serving", all(psutil.pid_exists(p) for p in pids),
                         str(pids)),
        ],
    }


async def _books(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT (SELECT count(*) FROM transfers) AS n,"
                                  " (SELECT coalesce(sum(abs(credits_posted - debits_posted)), 0) FROM accounts) AS s")
        return int(row["n"]), int(row["s"])
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())

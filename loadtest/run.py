"""``make loadtest``: provision, start the platform if none answers, run Locust headless, report.

``python -m loadtest.run --users U --spawn-rate R --duration D``:

1. If nothing answers ``http://HOST:HTTP_PORT/healthz``, the platform is started here
   (``rechargectl serve --demo`` as a subprocess, its log beside the reports) on the same
   database; otherwise the running one is used — it must share this run's database and key
   file (``DATABASE_URL`` / ``--database-url``, ``--data-dir``, ``RECHARGE_KEY_FILE``).
2. The database is migrated and the demo data seeded (both idempotent), then
   ``loadtest.provision`` registers the terminals and orders the users need.
3. Locust runs headless for ``--duration`` with ``--users`` users of the chosen classes
   (default: every class, weighted; ``--user-classes TerminalUser`` for terminals only), and
   writes ``<reports>/<stamp>_stats.csv`` (and the other CSVs), ``<stamp>.html`` and
   ``<stamp>_summary.json`` (requests, failures, per-stage percentiles, platform counters).
4. The ledger audit runs on the database afterwards (``ledger_audit`` in the summary).

Exit status 0 only when no request failed except deliberate ones and the books balance.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from recharge.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_REPORTS = Path(__file__).resolve().parent / "reports"
USER_CLASSES = ("TerminalUser", "OrderApiUser", "KktRestUser", "KktSoapUser", "SmsUser", "MpaySmsUser",
                "MpayWebUser", "MpayMerchantUser", "WalletPosUser", "WalletStkUser")
SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_TIMEOUT_S = 30.0
PLATFORM_COUNTERS = ("recharge_recharges_total", "recharge_busy_answers_total", "recharge_dd_frames_total",
                     "recharge_dd_protocol_errors_total", "recharge_signin_failures_total")


def parse_duration_s(text: str) -> int:
    """Locust's run-time syntax: ``90``, ``90s``, ``2m``, ``1h30m``."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text.strip())
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 60s, 2m, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def answers(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (our own platform)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100, help="simulated users (terminals and HTTP clients)")
    p.add_argument("--spawn-rate", type=float, default=50, help="users started per second")
    p.add_argument("--duration", type=parse_duration_s, default=60, help="run time: 60s, 2m, 1h30m")
    p.add_argument("--host", default="127.0.0.1", help="where the platform listens")
    p.add_argument("--dd-port", type=int, help="DD port (default: settings, 9000)")
    p.add_argument("--http-port", type=int, help="HTTP port (default: settings, 8080)")
    p.add_argument("--workers", type=int, default=1, help="platform worker processes, when started here")
    p.add_argument("--database-url", help="PostgreSQL URL (default: DATABASE_URL, else embedded in --data-dir)")
    p.add_argument("--data-dir", type=Path, default=Path("var/loadtest"), help="data folder of the platform")
    p.add_argument("--user-classes", default=",".join(USER_CLASSES),
                   help=f"comma-separated Locust user classes (default: all of {', '.join(USER_CLASSES)})")
    p.add_argument("--pacing-s", type=float, default=10.0, help="seconds per user iteration (one recharge)")
    p.add_argument("--amount-cents", type=int, default=100, help="amount of each recharge order")
    p.add_argument("--deliberate-failure-rate", type=float, default=0.0,
                   help="share of terminal iterations that use an unknown order on purpose (0x99)")
    p.add_argument("--processes", type=int, default=1, help="Locust processes (one core each)")
    p.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="folder for CSV, HTML and summary")
    return p


class Platform:
    """The platform under test: found running, or started here and stopped at the end."""

    def __init__(self, settings: Settings, host: str, dsn: str, log_path: Path) -> None:
        self.settings, self.host, self.dsn, self.log_path = settings, host, dsn, log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.settings.http_port}"

    def start_if_needed(self) -> None:
        if answers(self.base_url + "/healthz"):
            print(f"using the platform already answering at {self.base_url}", flush=True)
            return
        s = self.settings
        command = [sys.executable, "-m", "app.cli", "serve", "--demo", "--data-dir", str(s.data_dir),
                   "--dd-port", str(s.dd_port), "--http-port", str(s.http_port), "--workers", str(s.workers)]
        env = {**os.environ, "DATABASE_URL": self.dsn, "RECHARGE_KEY_FILE": str(s.resolved_key_file),
               "RECHARGE_SMS_SHARED_SECRET": s.sms_shared_secret or ""}
        print(f"starting the platform: {' '.join(command[2:])} (log: {self.log_path})", flush=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not answers(self.base_url + "/readyz"):
            if self.process.poll() is not None:
                raise SystemExit(f"the platform exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the platform did not become ready in {SERVER_START_TIMEOUT_S:.0f}s")
            time.sleep(0.2)

    def scrape(self) -> dict[str, dict[str, float]]:
        """Counters of interest from /metrics, by label set (``stage=11,result=00``)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.base_url + "/metrics", timeout=10) as response:  # noqa: S310
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        found: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in PLATFORM_COUNTERS:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) or "total"
                    found.setdefault(sample.name, {})[labels] = sample.value
        return found

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _prepare(dsn: str, settings: Settings, args: argparse.Namespace, terminals: int,
                   orders_per_terminal: int, work_dir: Path) -> Any:
    from app.runtime import prepare_database
    from loadtest.provision import provision

    await prepare_database(dsn, settings, demo=True)
    return await provision(
        dsn, settings, terminals=terminals, orders_per_terminal=orders_per_terminal,
        amount_cents=args.amount_cents, dd_host=args.host, dd_port=settings.dd_port, work_dir=work_dir,
    )


async def _audit(dsn: str) -> str:
    """The ledger audit after the run: ``ok``, or the differences it found."""
    import asyncpg

    from recharge.ledger.audit import audit

    conn = await asyncpg.connect(dsn)
    try:
        report = await audit(conn)
    finally:
        await conn.close()
    return "ok" if report.ok else report.render()


def run_locust(args: argparse.Namespace, base_url: str, prefix: Path, env: dict[str, str]) -> int:
    classes = [c.strip() for c in args.user_classes.split(",") if c.strip()]
    unknown = set(classes) - set(USER_CLASSES)
    if unknown:
        raise SystemExit(f"unknown user classes: {', '.join(sorted(unknown))}")
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", base_url,
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.duration}s",
        "--stop-timeout", "30", "--csv", str(prefix), "--html", f"{prefix}.html",
        "--only-summary", "--loglevel", "WARNING", *classes,
    ]
    if args.processes > 1:
        command += ["--processes", str(args.processes)]
    print(f"locust: {args.users} users ({', '.join(classes)}), spawn rate {args.spawn_rate}/s, "
          f"{args.duration}s, pacing {args.pacing_s}s", flush=True)
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def summarize(args: argparse.Namespace, prefix: Path, locust_status: int,
              platform_counters: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The run's settings, Locust's final figures (``LOADTEST_RESULT``) and the platform's counters."""
    result_path = Path(f"{prefix}_result.json")
    if not result_path.exists():
        raise SystemExit(f"Locust exited with {locust_status} and wrote no result")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result_path.unlink()
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "users": args.users, "spawn_rate": args.spawn_rate, "duration_s": args.duration,
        "pacing_s": args.pacing_s, "user_classes": args.user_classes, "processes": args.processes,
        **result, "platform": platform_counters, "locust_exit_status": locust_status,
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{'request':<34} {'count':>8} {'fail':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for name, r in summary["by_request"].items():
        print(f"{name:<34} {r['requests']:>8} {r['failures']:>6} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} "
              f"{r['rps']:>8.1f}")
    print(f"\n{summary['requests']} requests, {summary['rps']} req/s, {summary['failures']} failures "
          f"({summary['deliberate_failures']} deliberate, {summary['unexpected_failures']} unexpected)")
    for kind in summary["failure_kinds"]:
        print(f"  {kind['occurrences']:>6} × {kind['name']}: {kind['error']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from recharge import db

    settings = load_settings(
        None, data_dir=args.data_dir, database_url=args.database_url, dd_port=args.dd_port,
        http_port=args.http_port, workers=args.workers,
    )
    if not settings.sms_shared_secret:  # a platform started here gets a fresh one for the SMS user
        settings = settings.replace(sms_shared_secret=secrets.token_urlsafe(24))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    args.reports.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    prefix = args.reports / stamp
    work_dir = settings.data_dir / "loadtest"
    work_dir.mkdir(parents=True, exist_ok=True)

    dsn, embedded = db.resolve_database_url(settings)
    platform = Platform(settings, args.host, dsn, Path(f"{prefix}_server.log"))
    try:
        orders_per_terminal = math.ceil(args.duration / max(args.pacing_s, 0.1)) + 2
        started = time.monotonic()
        plan = asyncio.run(_prepare(dsn, settings, args, args.users, orders_per_terminal, work_dir))
        plan_path = work_dir / "plan.json"
        plan.write(plan_path)
        print(f"provisioned {len(plan.terminals)} terminals × {orders_per_terminal} orders "
              f"in {time.monotonic() - started:.1f}s", flush=True)
        platform.start_if_needed()
        claims = work_dir / f"claims-{stamp}"
        env = {**os.environ, "LOADTEST_PLAN": str(plan_path.resolve()), "LOADTEST_CLAIMS": str(claims.resolve()),
               "LOADTEST_PACING_S": str(args.pacing_s), "LOADTEST_SMS_SECRET": settings.sms_shared_secret or "",
               "LOADTEST_DELIBERATE_FAILURE_RATE": str(args.deliberate_failure_rate),
               "LOADTEST_RESULT": str(Path(f"{prefix}_result.json").resolve()),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        status = run_locust(args, platform.base_url, prefix, env)
        counters = platform.scrape()
        ledger_audit = asyncio.run(_audit(dsn))
        shutil.rmtree(claims, ignore_errors=True)
    finally:
        platform.stop()
        if embedded is not None:
            embedded.cleanup()
    summary = summarize(args, prefix, status, counters)
    summary["ledger_audit"] = ledger_audit
    Path(f"{prefix}_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print_summary(summary)
    print(f"\nreports: {prefix}_stats.csv, {prefix}.html, {prefix}_summary.json")
    print(f"ledger audit after the run: {ledger_audit}")
    ok = summary["unexpected_failures"] == 0 and summary["requests"] > 0 and ledger_audit == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

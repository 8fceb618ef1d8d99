"""``rechargectl``: run, migrate, seed, audit and operate the platform.

Core commands live here; the feature modules (order_cli, kkt_cli, dd_cli, operator_cli) each expose
``register(subparsers)`` to add theirs (one line per feature). Every command that touches
the database takes ``--database-url`` and ``--data-dir`` and, like ``serve``, starts the
embedded PostgreSQL when no URL is configured.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

import asyncpg

from app.commands import add_common, run_with_db, settings_from
from recharge.config import Settings


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from app.runtime import serve

    return serve(settings, demo=args.demo)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from recharge import db

    async def work(conn: asyncpg.Connection) -> int:
        applied = await db.migrate(conn)  # already applied by run_with_db; reports the state
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        print(f"schema at {versions[-1] if versions else 'empty'} ({len(versions)} migrations; {len(applied)} new)")
        return 0

    return run_with_db(settings, work)


def cmd_seed_demo(settings: Settings, args: argparse.Namespace) -> int:
    from app import demo
    from recharge.keys import load_keys

    async def work(conn: asyncpg.Connection) -> int:
        keys = load_keys(settings.resolved_key_file, create_demo=True)
        await demo.seed(conn, keys, settings.data_dir)
        print(f"demo data present (merchant {demo.DEMO_MERCHANT}, terminal {demo.DEMO_TERMINAL});"
              f" demo-only keys in {settings.resolved_key_file}")
        return 0

    return run_with_db(settings, work)


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from recharge.ledger.audit import audit, record_run

    async def work(conn: asyncpg.Connection) -> int:
        report = await audit(conn)
        await record_run(conn, report, actor=getpass.getuser())
        print(report.render())
        return 0 if report.ok else 1

    return run_with_db(settings, work)


def build_parser(*, feature_commands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rechargectl",
        description="Recharge and stored-value card platform: DD terminal server, order API, "
        "KaKaTong card service.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the DD server and the HTTP API on one event loop",
                       description="Run the DD TCP server and the HTTP side-app until SIGTERM/SIGINT, "
                       "which drains and exits 0. Starts an embedded PostgreSQL when no database is set.")
    add_common(p)
    p.add_argument("--dd-port", type=int, help="DD TCP port (default 9000; 0 = any free port)")
    p.add_argument("--http-port", type=int, help="HTTP port (default 8080; 0 = any free port)")
    p.add_argument("--workers", type=int, help="processes sharing the ports via SO_REUSEPORT (default 1)")
    p.add_argument("--demo", action="store_true", help="seed the demo data (idempotent) before serving")
    p.set_defaults(func=cmd_serve, extra=("dd_port", "http_port", "workers"))

    p = sub.add_parser("migrate", help="apply database migrations (re-running is a no-op)")
    add_common(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("seed-demo", help="create the demo merchant, terminal, cards and keys (idempotent)")
    add_common(p)
    p.set_defaults(func=cmd_seed_demo)

    p = sub.add_parser("audit", help="check that the ledger balances; exit 1 on any difference")
    add_common(p)
    p.set_defaults(func=cmd_audit)

    if feature_commands:
        # Each module has ``register(subparsers) -> None``; its commands set ``func`` via
        # ``set_defaults(func=...)`` taking (settings, args) and returning an exit status.
        from app import dd_cli, kkt_cli, mpay_cli, operator_cli, order_cli, wallet_cli

        for module in (order_cli, kkt_cli, dd_cli, wallet_cli, mpay_cli, operator_cli):
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # `serve` must choose Prometheus's multiprocess mode before anything imports
    # prometheus_client, so it is parsed without importing the feature modules.
    parser = build_parser(feature_commands=arguments[:1] != ["serve"])
    args = parser.parse_args(arguments)
    extra = {name: getattr(args, name) for name in getattr(args, "extra", ()) if getattr(args, name, None) is not None}
    try:
        settings = settings_from(args, **extra)
    except (ValueError, OSError) as exc:
        print(f"rechargectl: bad configuration: {exc}", file=sys.stderr)
        return 2
    if arguments[:1] != ["serve"]:  # serve connects them itself, after choosing Prometheus's mode
        from app import rooms

        rooms.connect()
    try:
        status: int = args.func(settings, args)
    except Exception as exc:
        # Imported here, not at the top: `serve` sets Prometheus's multiprocess mode up before
        # anything imports prometheus_client, and recharge.db imports the metrics.
        from recharge.db import DatabaseNotReady

        if not isinstance(exc, DatabaseNotReady):
            raise
        print(f"rechargectl: {exc}", file=sys.stderr)
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())

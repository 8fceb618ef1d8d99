"""What every rechargectl command shares: common options, settings, a migrated connection."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from recharge.config import Settings, load_settings


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every database command accepts."""
    parser.add_argument("--config", help="TOML settings file (also RECHARGE_CONFIG)")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: DATABASE_URL, else embedded)")
    parser.add_argument("--data-dir", type=Path, help="data folder (default: ./var)")


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        database_url=getattr(args, "database_url", None),
        data_dir=getattr(args, "data_dir", None),
        **extra,
    )


def run_with_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Connect (starting the embedded server if needed), migrate, run ``work``; its status."""
    from recharge import db

    dsn, embedded = db.resolve_database_url(settings)

    async def main() -> int:
        conn = await asyncpg.connect(dsn)
        await db.init_connection(conn)  # the same codecs as the pool's connections
        try:
            await db.migrate(conn)
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    finally:
        if embedded is not None:
            embedded.cleanup()

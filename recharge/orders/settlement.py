"""Running a day's settlement and finding its reconciliation files afterwards.

``run_settlement`` is what ``rechargectl settle`` and the operator console call: settle the
day (``lifecycle.settle_day``), write one CSV per platform (``lifecycle.write_statements``)
and record who ran it and why. ``statement_file`` turns a file name asked for by a client
into a path inside the settlement folder, or None (no path ever leaves the folder).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import asyncpg

from recharge.operators.actions import record_action
from recharge.orders.lifecycle import Statement, settle_day, write_statements

_FILE_RE = re.compile(r"[0-9]{8}_[0-9A-Za-z_-]{1,64}\.csv")


async def run_settlement(
    conn: asyncpg.Connection, day: dt.date, directory: Path, *, actor: str, reason: str
) -> list[tuple[Statement, Path]]:
    """Settle ``day`` and write its files; each statement with its file. Idempotent."""
    statements = await settle_day(conn, day)
    paths = write_statements(statements, directory)
    await record_action(conn, actor, "settle_day", day.isoformat(), reason,
                        files=[p.name for p in paths], settled=sum(len(s.settled) for s in statements))
    return list(zip(statements, paths, strict=True))


def statement_files(directory: Path) -> list[Path]:
    """The reconciliation files in the folder, newest day first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _FILE_RE.fullmatch(p.name) and p.is_file()),
                  key=lambda p: (p.name[:8], p.name), reverse=True)


def statement_file(directory: Path, name: str) -> Path | None:
    if not _FILE_RE.fullmatch(name):
        return None
    path = directory / name
    return path if path.is_file() else None

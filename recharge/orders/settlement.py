"""Daily settlement (SPEC 2): the day's loaded orders become 05, one CSV statement per platform, and
finding those reconciliation files afterwards.

``run_settlement`` is what ``rechargectl settle`` and the operator console call: settle the day
(``settle_day``), write one CSV per platform (``write_statements``) and record who ran it and
why. ``statement_file`` turns a file name asked for by a client into a path inside the
settlement folder, or None (no path ever leaves the folder).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from recharge.operators.actions import record_action
from recharge.orders.model import COLUMNS, CONFIRMED, LOADED, LOCAL_TZ, SETTLED, Order, sql
from recharge.orders.queries import day_start

CSV_HEADER = (
    "section", "biz_serial_no", "order_no", "card_no", "amount_cents", "state",
    "loaded_at", "terminal_code",
)


@dataclass(frozen=True, slots=True)
class Statement:
    """One platform's reconciliation for one day: settled orders, and loads left loading."""

    day: dt.date
    platform_raw: str  # "operator" for orders created without a platform
    settled: list[Order]
    loading: list[Order]

    @property
    def file_name(self) -> str:
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in self.platform_raw)
        return f"{self.day:%Y%m%d}_{safe}.csv"

    def render_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for section, orders in (("settled", self.settled), ("loading", self.loading)):
            for o in orders:
                writer.writerow((
                    section, o.biz_serial_no or "", o.order_no, o.card_no or "", o.amount_cents, o.state,
                    o.loaded_at.astimezone(LOCAL_TZ).isoformat() if o.loaded_at else "",
                    o.terminal_code or "",
                ))
        return out.getvalue()


async def settle_day(conn: asyncpg.Connection, day: dt.date) -> list[Statement]:
    """Move the day's loaded/confirmed orders (by local load date) to 05; build statements.

    Idempotent: a second run moves nothing and builds the same statements, since the
    statement lists every order loaded that day that is now settled. Orders still loading
    (since before the day's end) are listed apart. One statement per enabled platform, plus
    one per other platform (or "operator") that has orders in it.
    """
    start, end = day_start(day), day_start(day + dt.timedelta(days=1))
    async with conn.transaction():
        await conn.execute(
            f"UPDATE orders SET state = {sql(SETTLED)}, settled_at = now(), updated_at = now()"
            f" WHERE state IN {sql(LOADED, CONFIRMED)} AND loaded_at >= $1 AND loaded_at < $2",
            start,
            end,
        )
        settled = await conn.fetch(
            f"SELECT {COLUMNS} FROM orders WHERE state = {sql(SETTLED)} AND loaded_at >= $1 AND loaded_at < $2"
            " ORDER BY loaded_at, order_no",
            start,
            end,
        )
        loading = await conn.fetch(
            f"SELECT {COLUMNS} FROM orders WHERE loading AND loading_since < $1 ORDER BY loading_since, order_no",
            end,
        )
        platforms = {
            int(r["id"]): (r["platform_raw"], bool(r["enabled"]))
            for r in await conn.fetch("SELECT id, platform_raw, enabled FROM platforms")
        }
    by_key: dict[str, tuple[list[Order], list[Order]]] = {
        raw: ([], []) for raw, enabled in platforms.values() if enabled
    }
    for rows, index in ((settled, 0), (loading, 1)):
        for row in rows:
            order = Order.from_row(row)
            key = platforms[order.platform_id][0] if order.platform_id is not None else "operator"
            by_key.setdefault(key, ([], []))[index].append(order)
    return [Statement(day, key, s, ld) for key, (s, ld) in sorted(by_key.items())]


def write_statements(statements: Sequence[Statement], directory: Path) -> list[Path]:
    """Write each statement's CSV (atomically; an identical file is left untouched)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for st in statements:
        path = directory / st.file_name
        text = st.render_csv()
        if not (path.exists() and path.read_text(encoding="utf-8") == text):
            tmp = path.with_suffix(".csv.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        written.append(path)
    return written


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

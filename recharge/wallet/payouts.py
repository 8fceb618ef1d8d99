"""The SIM wallet merchants' daily settlement through the payout batch (SPEC 7.4 clearing, 6.6: a merchant's
available balance is paid out each working day, ``MER → PAYOUT``).

``settle_day(conn, day)`` takes every merchant with a wallet POS terminal, in id order, and for each: the day's
statement — purchase records uploaded that Shanghai day (count, amount), their commission, the voids, the
returns paid that day — and the payout of ``MER/<merchant>``'s whole available balance (earlier days' unpaid
balance included) as one transfer ``wallet:merpayout:<merchant>:<day>`` (code ``wallet_merchant_payout``). A
day is settled once: a re-run answers the statements stored the first time and moves nothing; a merchant with
nothing to pay and nothing that day gets no statement. A merchant that is also a mobile payment merchant
shares its ``MER`` account: whichever payout batch runs first pays the balance, the other finds nothing.
``render_csv`` is the day's file (``<data_dir>/settlement/wallet_YYYYMMDD.csv``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

import asyncpg

from recharge.mpay import postings
from recharge.mpay.text import day_start

CSV_HEADER = ("day", "merchant", "sales", "sales_cents", "commission_cents", "voids", "void_cents",
              "returned_cents", "payout_cents", "transfer_id")


@dataclass(frozen=True, slots=True)
class Statement:
    day: dt.date
    merchant: str
    sales: int
    sales_cents: int
    commission_cents: int
    voids: int
    void_cents: int
    returned_cents: int
    payout_cents: int
    transfer_id: str | None

    def row(self) -> tuple[object, ...]:
        return (self.day.isoformat(), self.merchant, self.sales, self.sales_cents, self.commission_cents, self.voids,
                self.void_cents, self.returned_cents, self.payout_cents, self.transfer_id or "")


def file_name(day: dt.date) -> str:
    return f"wallet_{day:%Y%m%d}.csv"


def render_csv(statements: list[Statement]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for s in statements:
        writer.writerow(s.row())
    return out.getvalue()


_FIGURES = """
SELECT count(*) FILTER (WHERE NOT void) AS sales, coalesce(sum(amount) FILTER (WHERE NOT void), 0) AS sales_cents,
       coalesce(sum(commission), 0) AS commission_cents, count(*) FILTER (WHERE void) AS voids,
       coalesce(sum(amount) FILTER (WHERE void), 0) AS void_cents
FROM wallet_purchases WHERE merchant = $1 AND kind = 'sale' AND created_at >= $2 AND created_at < $3
"""
_RETURNED = """
SELECT coalesce(sum(t.amount), 0) FROM transfers t JOIN accounts a ON a.id = t.debit_account_id
WHERE a.kind = 'mpay' AND a.card_no = 'MER/' || $1 AND t.code = 'wallet_return' AND t.created_at >= $2
  AND t.created_at < $3
"""


async def stored(conn: asyncpg.Connection, day: dt.date) -> list[Statement]:
    rows = await conn.fetch("SELECT * FROM wallet_settlements WHERE day = $1 ORDER BY merchant", day)
    return [Statement(r["day"], r["merchant"], r["sales"], r["sales_cents"], r["commission_cents"], r["voids"],
                      r["void_cents"], r["returned_cents"], r["payout_cents"], r["transfer_id"]) for r in rows]


async def _statement(conn: asyncpg.Connection, day: dt.date, merchant: str, payout_account: int) -> Statement:
    start, end = day_start(day), day_start(day + dt.timedelta(days=1))
    figures = await conn.fetchrow(_FIGURES, merchant, start, end)
    returned = int(await conn.fetchval(_RETURNED, merchant, start, end))
    account = await postings.account_id(conn, f"MER/{merchant}")
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account)
    available = (await postings.buckets(conn, account))[account].available
    transfer_id = None
    if available > 0:
        transfer_id = f"wallet:merpayout:{merchant}:{day.isoformat()}"
        await postings.must(conn, [postings.Move(transfer_id, account, payout_account, available,
                                                 "wallet_merchant_payout", day.isoformat())])
    return Statement(day, merchant, int(figures["sales"]), int(figures["sales_cents"]),
                     int(figures["commission_cents"]), int(figures["voids"]), int(figures["void_cents"]), returned,
                     max(available, 0), transfer_id)


async def settle_day(conn: asyncpg.Connection, day: dt.date) -> tuple[list[Statement], bool]:
    """Settle ``day`` (in the caller's transaction): its statements and whether this call settled it (False: it
    was settled before, and these are the stored statements)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wallet_settlement'), $1)", day.toordinal())
    if await conn.fetchval("SELECT 1 FROM wallet_settlement_days WHERE day = $1", day):
        return await stored(conn, day), False
    payout = await postings.account_id(conn, "PAYOUT")
    statements = []
    for merchant in await conn.fetch("SELECT DISTINCT merchant FROM wallet_terminals WHERE merchant IS NOT NULL"
                                     " ORDER BY merchant"):
        s = await _statement(conn, day, merchant["merchant"], payout)
        if s.sales or s.voids or s.returned_cents or s.payout_cents:
            statements.append(s)
    await conn.executemany(
        "INSERT INTO wallet_settlements (day, merchant, sales, sales_cents, commission_cents, voids, void_cents,"
        " returned_cents, payout_cents, transfer_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [(s.day, s.merchant, s.sales, s.sales_cents, s.commission_cents, s.voids, s.void_cents, s.returned_cents,
          s.payout_cents, s.transfer_id) for s in statements])
    await conn.execute("INSERT INTO wallet_settlement_days (day) VALUES ($1)", day)
    return statements, True

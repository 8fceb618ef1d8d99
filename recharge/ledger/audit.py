"""The ledger audit: every balance equals the sum of its transfers, and everything sums to zero.

Used by ``rechargectl audit`` and by the end-to-end tests after their traffic. Each
difference found is reported; an empty list means the books balance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

_RECOMPUTE_SQL = """
WITH moves AS (
    SELECT debit_account_id AS account_id,
           CASE WHEN kind IN ('single', 'post') THEN amount ELSE 0 END AS debits_posted,
           CASE WHEN kind = 'pending' AND status = 'pending' THEN amount ELSE 0 END AS debits_pending,
           0::bigint AS credits_posted, 0::bigint AS credits_pending
      FROM transfers
    UNION ALL
    SELECT credit_account_id,
           0, 0,
           CASE WHEN kind IN ('single', 'post') THEN amount ELSE 0 END,
           CASE WHEN kind = 'pending' AND status = 'pending' THEN amount ELSE 0 END
      FROM transfers
), sums AS (
    SELECT account_id, sum(debits_posted) AS dpo, sum(debits_pending) AS dpe,
           sum(credits_posted) AS cpo, sum(credits_pending) AS cpe
      FROM moves GROUP BY account_id
)
SELECT a.id, a.ledger, a.kind, a.debits_posted, a.debits_pending, a.credits_posted, a.credits_pending,
       coalesce(s.dpo, 0) AS dpo, coalesce(s.dpe, 0) AS dpe,
       coalesce(s.cpo, 0) AS cpo, coalesce(s.cpe, 0) AS cpe
  FROM accounts a LEFT JOIN sums s ON s.account_id = a.id
 WHERE a.debits_posted <> coalesce(s.dpo, 0) OR a.debits_pending <> coalesce(s.dpe, 0)
    OR a.credits_posted <> coalesce(s.cpo, 0) OR a.credits_pending <> coalesce(s.cpe, 0)
 ORDER BY a.id
"""

_TOTALS_SQL = """
SELECT ledger, count(*) AS accounts,
       sum(credits_posted - debits_posted) AS posted_sum,
       sum(credits_pending - debits_pending) AS pending_sum
  FROM accounts GROUP BY ledger ORDER BY ledger
"""

_RESOLUTION_SQL = """
SELECT p.id, p.status, count(r.id) AS resolutions
  FROM transfers p LEFT JOIN transfers r ON r.pending_id = p.id
 WHERE p.kind = 'pending'
 GROUP BY p.id, p.status
HAVING (p.status = 'pending' AND count(r.id) <> 0) OR (p.status <> 'pending' AND count(r.id) <> 1)
"""


@dataclass
class AuditReport:
    accounts: int = 0
    transfers: int = 0
    ledgers: dict[str, tuple[int, int]] = field(default_factory=dict)  # ledger -> posted, pending sums
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"accounts: {self.accounts}", f"transfers: {self.transfers}"]
        for ledger, (posted, pending) in sorted(self.ledgers.items()):
            lines.append(f"ledger {ledger}: posted balances sum to {posted}, pending to {pending}")
        if self.ok:
            lines.append("OK: every balance equals its transfers and all balances sum to zero")
        else:
            lines.append(f"FAILED: {len(self.problems)} difference(s)")
            lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)


async def audit(conn: asyncpg.Connection) -> AuditReport:
    """Check the whole ledger in one repeatable-read snapshot (or the caller's transaction)."""
    if conn.is_in_transaction():
        return await _audit(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _audit(conn)


async def _audit(conn: asyncpg.Connection) -> AuditReport:
    report = AuditReport()
    report.accounts = await conn.fetchval("SELECT count(*) FROM accounts")
    report.transfers = await conn.fetchval("SELECT count(*) FROM transfers")
    for r in await conn.fetch(_RECOMPUTE_SQL):
        report.problems.append(
            f"account {r['id']} ({r['ledger']} {r['kind']}): stored debits posted/pending "
            f"{r['debits_posted']}/{r['debits_pending']}, credits posted/pending "
            f"{r['credits_posted']}/{r['credits_pending']}; transfers say "
            f"{r['dpo']}/{r['dpe']}, {r['cpo']}/{r['cpe']}"
        )
    for r in await conn.fetch(_TOTALS_SQL):
        posted, pending = int(r["posted_sum"] or 0), int(r["pending_sum"] or 0)
        report.ledgers[r["ledger"]] = (posted, pending)
        if posted != 0 or pending != 0:
            report.problems.append(
                f"ledger {r['ledger']}: balances sum to {posted} posted, {pending} pending (must be 0)"
            )
    for r in await conn.fetch(_RESOLUTION_SQL):
        report.problems.append(
            f"pending transfer {r['id']} is {r['status']} with {r['resolutions']} post/void record(s)"
        )
    return report


async def record_run(conn: asyncpg.Connection, report: AuditReport, *, actor: str) -> None:
    """Keep an audit's result (the console's dashboard shows the last one)."""
    await conn.execute("INSERT INTO ledger_audit_runs (ok, report, actor) VALUES ($1, $2, $3)",
                       report.ok, report.render(), actor)


async def last_run(conn: asyncpg.Connection) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT ok, report, actor, created_at FROM ledger_audit_runs ORDER BY id DESC LIMIT 1"
    )

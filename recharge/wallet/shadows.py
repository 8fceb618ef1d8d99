"""The wallet shadows ``W/<acct>`` (SPEC 7.3, 7.4): loads posted minus purchases uploaded. A TAC-proven purchase
may take one below zero, but only while a load of that account is unresolved; the audit lists every negative
shadow and flags those with no load pending (a card spent value the platform never loaded)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Shadow:
    account_id: int
    balance: int  # posted, cents; negative here
    unresolved_loads: int  # pending transfers into the shadow

    @property
    def explained(self) -> bool:
        return self.unresolved_loads > 0


async def negative(conn: asyncpg.Connection) -> list[Shadow]:
    """Every wallet shadow below zero, with its unresolved loads, by account."""
    rows = await conn.fetch(
        "SELECT substr(a.card_no, 3)::bigint AS account_id, a.credits_posted - a.debits_posted AS balance,"
        " (SELECT count(*) FROM transfers t WHERE t.credit_account_id = a.id AND t.kind = 'pending'"
        "  AND t.status = 'pending') AS unresolved"
        " FROM accounts a WHERE a.kind = 'mpay' AND a.card_no LIKE 'W/%'"
        " AND a.credits_posted - a.debits_posted < 0 ORDER BY 1"
    )
    return [Shadow(int(r["account_id"]), int(r["balance"]), int(r["unresolved"])) for r in rows]

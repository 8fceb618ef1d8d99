"""The value on lost cards (SPEC 7.6): when a wallet reopens on a new card, the old card's shadow balance posts to
``RETIRED`` (``wretire:<acct>:<card>``), and that card's late purchase records debit ``RETIRED`` from then on.
``mpay wallet writeoff`` moves what is left of a card's retired value to ``FEE`` once nothing has moved it for
``wallet_writeoff_idle_months`` (24) calendar months: per card, what was retired minus what its late records took
minus what earlier write-offs took; a card with nothing left is skipped; each write-off is a transfer
``wwriteoff:<card>:<n>`` (code ``wallet_writeoff``) and a row of ``wallet_writeoffs``, in one transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from recharge.mpay.text import SHANGHAI, day_start
from recharge.wallet.clearing import Books, Posting, must_post

_CARDS = """
WITH moves AS (
    SELECT substring(t.id FROM '^wretire:[0-9]+:([0-9]{16})$') AS card_no, t.amount, t.created_at
      FROM transfers t WHERE t.code = 'wallet_retired' AND t.id LIKE 'wretire:%'
    UNION ALL
    SELECT p.card_no, -t.amount, t.created_at FROM wallet_purchases p JOIN transfers t ON t.id = p.transfer_id
      JOIN accounts a ON a.id = t.debit_account_id WHERE a.kind = 'mpay' AND a.card_no = 'RETIRED'
    UNION ALL
    SELECT w.card_no, -w.amount, w.created_at FROM wallet_writeoffs w
)
SELECT card_no, sum(amount) AS remaining, max(created_at) AS last_moved,
       (SELECT count(*) FROM wallet_writeoffs w WHERE w.card_no = moves.card_no) AS done
  FROM moves WHERE card_no IS NOT NULL GROUP BY card_no ORDER BY card_no
"""


@dataclass(frozen=True, slots=True)
class WriteOff:
    card_no: str
    amount: int
    last_moved: dt.datetime
    transfer_id: str


def months_before(day: dt.date, months: int) -> dt.date:
    """The same calendar day ``months`` earlier (the month's last day when it has no such day)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    month += 1
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


async def write_off(conn: asyncpg.Connection, books: Books, *, idle_months: int, now: dt.datetime) -> list[WriteOff]:
    """Write off every card whose retired value has been idle since before ``idle_months`` before today."""
    await conn.execute("LOCK TABLE wallet_writeoffs IN SHARE ROW EXCLUSIVE MODE")
    cutoff = day_start(months_before(now.astimezone(SHANGHAI).date(), idle_months))
    done = []
    for row in await conn.fetch(_CARDS):
        if row["remaining"] <= 0 or row["last_moved"] >= cutoff:
            continue
        item = WriteOff(row["card_no"], int(row["remaining"]), row["last_moved"],
                        f"wwriteoff:{row['card_no']}:{int(row['done']) + 1}")
        await must_post(books, conn, [Posting(item.transfer_id, "RETIRED", "FEE", item.amount, "wallet_writeoff")])
        await conn.execute("INSERT INTO wallet_writeoffs (card_no, amount, last_moved, transfer_id)"
                           " VALUES ($1, $2, $3, $4)", item.card_no, item.amount, item.last_moved, item.transfer_id)
        done.append(item)
    return done

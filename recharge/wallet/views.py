"""The website's views of the wallet (SPEC 6.13 ``GET /me/wallet``, ``GET /me/wallet/history``; 7.3, 7.5): what the
platform knows, never the card itself (STK and POS read the card's balance, state file and last-ten log).

- ``summary``: the wallet's state, card, single-purchase limit, the shadow ``W`` (posted: loads posted minus
  purchases uploaded — 参考余额, above or equal to the card's balance until every purchase is uploaded) and
  ``waiting`` (cents of loads not yet driven onto the card).
- ``history``: the shadow's movements created in a range of Shanghai calendar days (every day a trading day),
  ``to`` at most yesterday (``4001``, as a reversed range or one longer than ``wallet_history_max_days``),
  newest first: loads (``load``: waiting, posted or voided), purchases (``purchase``), voids (``void``), hall
  buy-outs (``buy_out``), the lost card's balance written off (``retired``); a load's state is the load's
  own (``waiting``, ``loading``, ``posted``, ``voided``); ``amount`` signed as the shadow
  moved (+ into the wallet); ``id`` the ledger transfer's, ``:`` spelled ``-`` (6.12 ids).
- ``card_log``: the wallet card's last-ten log (SFI ``0x18``, SPEC 7.1) as the platform knows it — the website
  never reads the card, so it rebuilds the records the card wrote from what the card proved: every load posted
  onto that card (type ``02``: its online serial before the increment, terminal, CREDIT's date and time) and
  every purchase record of that card the platform accepted (type ``06``: merchant sales uploaded, a void-flagged
  one included — the card was debited all the same — and hall buy-outs); the ten newest by the card's own date
  and time. A purchase not yet uploaded is missing until its batch arrives (the lag of 参考余额).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from recharge.mpay.codes import Refused
from recharge.mpay.text import day_start, today
from recharge.wallet import loads

CARD_LOG_RECORDS = 10  # the card's cyclic log file holds ten records (SPEC 7.1): a property of the card, not a knob
TYPES = {"wallet_load": "load", "wallet_purchase": "purchase", "wallet_void": "void", "wallet_buyout": "buy_out",
         "wallet_retired": "retired"}
@dataclass(frozen=True, slots=True)
class Item:
    id: str
    created_at: dt.datetime
    type: str
    amount: int
    state: str


async def waiting(conn: asyncpg.Connection, account_id: int) -> int:
    """Cents of the account's loads waiting to be driven (a swap's earmark included)."""
    return sum(load.amount for load in await loads.waiting(conn, account_id))


async def summary(conn: asyncpg.Connection, account_id: int) -> dict[str, object] | None:
    """``{state, card_no, shadow, limit, waiting}``, or None when the account never had a wallet."""
    row = await conn.fetchrow(
        "SELECT w.state, w.card_no, w.limit_cents, coalesce(a.credits_posted - a.debits_posted, 0) AS shadow"
        " FROM wallets w LEFT JOIN accounts a ON a.kind = 'mpay' AND a.card_no = 'W/' || w.account_id"
        " WHERE w.account_id = $1", account_id,
    )
    if row is None:
        return None
    return {"state": row["state"], "card_no": row["card_no"], "shadow": int(row["shadow"]),
            "limit": int(row["limit_cents"]), "waiting": await waiting(conn, account_id)}


def check_range(since: dt.date, until: dt.date, now: dt.datetime, max_days: int) -> None:
    """``to`` ≤ yesterday, ``from`` ≤ ``to``, at most ``max_days`` days: else ``4001``."""
    if until >= today(now) or since > until or (until - since).days + 1 > max_days:
        raise Refused("4001")


def _state(kind: str, status: str, load_state: str | None) -> str:
    if load_state is not None:
        return load_state
    if kind == "pending":
        return {"pending": "waiting", "posted": "posted", "voided": "voided"}[status]
    return "posted"


async def history(conn: asyncpg.Connection, account_id: int, since: dt.date, until: dt.date) -> list[Item]:
    """The shadow's movements created from ``since`` to ``until`` (Shanghai days, both included), newest first."""
    rows = await conn.fetch(
        "SELECT t.id, t.created_at, t.code, t.kind, t.status, l.state AS load_state, CASE WHEN t.credit_account_id"
        " = a.id THEN t.amount ELSE -t.amount END AS amount FROM accounts a JOIN transfers t ON a.id IN"
        " (t.debit_account_id, t.credit_account_id) LEFT JOIN wallet_loads l ON l.pay_transfer_id = t.id WHERE a.kind = 'mpay' AND a.card_no = $1 AND t.kind IN ('single', 'pending')"
        " AND t.created_at >= $2 AND t.created_at < $3 ORDER BY t.created_at DESC, t.id DESC",
        f"W/{account_id}", day_start(since), day_start(until + dt.timedelta(days=1)),
    )
    return [Item(r["id"].replace(":", "-"), r["created_at"], TYPES.get(r["code"], r["code"]), int(r["amount"]),
                 _state(r["kind"], r["status"], r["load_state"])) for r in rows]


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of the card's log as the platform rebuilt it (SPEC 7.1's fields but the overdraft, always 0)."""

    serial: int
    type: str  # ``load`` (02) or ``purchase`` (06)
    amount: int
    terminal_id: str
    date: str  # YYYYMMDD, Shanghai, as the card logged it
    time: str  # hhmmss


async def card_log(conn: asyncpg.Connection, account_id: int, card_no: str) -> list[LogRecord]:
    """The ten newest records the account's card ``card_no`` logged that the platform knows of, newest first
    (the card's record 1 first)."""
    rows = await conn.fetch(
        "SELECT * FROM ("
        " SELECT online_serial AS serial, 'load' AS type, amount, terminal_id, load_date AS date, load_time AS time,"
        " posted_at AS known_at FROM wallet_loads WHERE account_id = $3 AND card_no = $1"
        " AND state = 'posted'"
        " UNION ALL SELECT offline_serial, 'purchase', amount, terminal_id, trade_date, trade_time, created_at"
        " FROM wallet_purchases WHERE card_no = $1"
        ") r ORDER BY date DESC, time DESC, known_at DESC, serial DESC LIMIT $2", card_no, CARD_LOG_RECORDS, account_id,
    )
    return [LogRecord(int(r["serial"]), r["type"], int(r["amount"]), r["terminal_id"], r["date"], r["time"])
            for r in rows]

"""Withdrawals to the bound bank card (SPEC 6.6): submit, the payout cycle, operator void.

Submit (web, SMS TX; pay password) reserves ``C → PAYOUT`` (a pending transfer without a
timeout): ``submitted``. Checks: the status matrix, real-name (``2009``), a bound card
(``4005``), the consecutive rule (``4004``: two withdrawals submitted, exported or paid
since the last posted remote payment), 1.00 ≤ amount (``4001``) ≤ available cash (``4002``).
``export`` writes each submitted one once, in the batch of the first working day whose
17:00 cut-off follows it (``exported``); ``import_results`` posts (``S``,
``paid``) or voids (``F``, ``failed``) all rows or none; an operator may void one before
export (``voided``).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

import asyncpg

from recharge.mpay import accounts, calendar, matrix, outbox, postings
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import yuan

MIN_CENTS = 100
ASK_AMOUNT = "请回复提现金额(元),款项将提至尾号{last4}的银行卡,仅现金账户余额可提现。"
ASK_PASSWORD = "请回复6位支付密码,确认提现{amt}元。"
SUBMITTED = "提现申请已受理,{amt}元已冻结,款项汇出后一般3-7个工作日到账。"
PAID_SMS = "您的提现{amt}元已汇至尾号{last4}的银行卡,请注意查收。详询10086。"
FAILED_SMS = "您的提现{amt}元未能汇出,冻结款项已退回现金账户。详询10086。"
CONSECUTIVE_LIMIT = 2


def card_of(account: asyncpg.Record) -> dict[str, Any] | None:
    card = account["bank_card"]
    if isinstance(card, str):
        return dict(json.loads(card))
    return dict(card) if card else None


async def check(conn: asyncpg.Connection, account: asyncpg.Record, channel: str) -> dict[str, Any]:
    """The row's codes: status, ``2009``, ``4005``, ``4004``; returns the bound card."""
    matrix.require(account, "withdrawal", channel)
    if account["kind"] != "real_name":
        raise Refused("2009")
    card = card_of(account)
    if card is None:
        raise Refused("4005")
    since = await conn.fetchval(
        "SELECT max(paid_at) FROM mpay_payments WHERE account_id = $1 AND state = 'paid'", account["id"]
    )
    recent = await conn.fetchval(
        "SELECT count(*) FROM mpay_withdrawals WHERE account_id = $1 AND state IN ('submitted', 'exported', 'paid')"
        " AND ($2::timestamptz IS NULL OR created_at > $2)",
        account["id"], since,
    )
    if recent >= CONSECUTIVE_LIMIT:
        raise Refused("4004")
    return card


async def check_amount(conn: asyncpg.Connection, account: asyncpg.Record, amount: int | None) -> int:
    if amount is None or amount < MIN_CENTS:
        raise Refused("4001")
    if amount > (await accounts.balances(conn, account)).cash_available:
        raise Refused("4002")
    return amount


async def submit(
    conn: asyncpg.Connection, env: Env, account: asyncpg.Record, card: dict[str, Any], amount: int, channel: str
) -> tuple[str, str]:
    """Reserve and record (all checks and the password done by the caller): (id, reply text)."""
    withdrawal_id = "w" + secrets.token_hex(12)
    transfer_id = f"mpay:wd:{withdrawal_id}"
    await postings.must(conn, [postings.Move(transfer_id, account["cash_account"],
                                             await postings.account_id(conn, "PAYOUT"), amount, "mpay_withdrawal",
                                             withdrawal_id, pending=True)])
    await conn.execute(
        "INSERT INTO mpay_withdrawals (id, account_id, amount, card, transfer_id) VALUES ($1, $2, $3, $4, $5)",
        withdrawal_id, account["id"], amount, json.dumps(card), transfer_id,
    )
    reply = SUBMITTED.format(amt=yuan(amount))
    if channel != "sms":
        await outbox.notify(conn, env.keys, account, reply)
    return withdrawal_id, reply


async def settle(conn: asyncpg.Connection, env: Env, row: asyncpg.Record, state: str, *, reference: str | None = None,
                 reason: str | None = None) -> None:
    """Post (``paid``) or void (``failed``, ``voided``) one withdrawal and tell its holder."""
    post = state == "paid"
    await postings.must_settle(conn, [postings.Settle(f"{row['transfer_id']}:{state}", row["transfer_id"], post)])
    await conn.execute(
        "UPDATE mpay_withdrawals SET state = $2, reference = $3, reason = $4, settled_at = now() WHERE id = $1",
        row["id"], state, reference, reason,
    )
    account = await accounts.by_id(conn, row["account_id"])
    assert account is not None
    card = json.loads(row["card"]) if isinstance(row["card"], str) else row["card"]
    text = PAID_SMS if post else FAILED_SMS
    await outbox.notify(conn, env.keys, account, text.format(amt=yuan(row["amount"]), last4=card["number"][-4:]))
    await accounts.close_if_settled(conn, env.keys, account["id"])


async def void_unexported(conn: asyncpg.Connection, env: Env, account: asyncpg.Record) -> None:
    """A registry change unbound the card: its submitted withdrawals are voided (failure SMS)."""
    rows = await conn.fetch(
        "SELECT * FROM mpay_withdrawals WHERE account_id = $1 AND state = 'submitted' FOR UPDATE", account["id"]
    )
    for row in rows:
        await settle(conn, env, row, "failed", reason="card unbound")


EXPORT_HEADER = ["id", "bank", "province", "city", "branch", "account", "name", "yuan"]
IMPORT_HEADER = ["id", "result", "reference", "reason"]


class PayoutRefused(Exception):
    """A payout result file was refused whole (the text says which row and why)."""


async def export_submitted(conn: asyncpg.Connection, until: dt.datetime) -> list[list[str]]:
    """Every ``submitted`` withdrawal made before ``until`` (a working day's cut-off: its batch)
    once, now ``exported``: the rows of the payout file."""
    rows = await conn.fetch("UPDATE mpay_withdrawals SET state = 'exported', exported_at = now()"
                            " WHERE state = 'submitted' AND created_at < $1 RETURNING id, card, amount, created_at",
                            until)
    out = []
    for row in sorted(rows, key=lambda r: (r["created_at"], r["id"])):
        card = json.loads(row["card"]) if isinstance(row["card"], str) else row["card"]
        out.append([row["id"], card["bank"], card["province"], card["city"], card["branch"], card["number"],
                    card["holder"], f"{row['amount'] // 100}.{row['amount'] % 100:02d}"])
    return out


async def overdue_seconds(conn: asyncpg.Connection, env: Env, now: dt.datetime) -> float:
    """How long ago the oldest ``submitted`` withdrawal fell due for export (0: none is late).
    It is due at the cut-off ``mpay_withdrawal_export_days`` working days after its batch day;
    the oldest one falls due first."""
    oldest = await conn.fetchval("SELECT min(created_at) FROM mpay_withdrawals WHERE state = 'submitted'")
    if oldest is None:
        return 0.0
    s = env.settings
    deadline = await calendar.due(conn, oldest, calendar.cutoff_time(s.mpay_cutoff), s.mpay_withdrawal_export_days)
    return max((now - deadline).total_seconds(), 0.0)


async def import_results(conn: asyncpg.Connection, env: Env, rows: list[list[str]]) -> tuple[int, int]:
    """Post (``S``) or void (``F``) every row, or none: an unknown or unexported id, a bad result,
    or a contradiction of a stored result refuses the file. A repeated row is a no-op.
    Returns (paid, failed) newly settled."""
    plan: dict[str, tuple[str, str, str]] = {}
    for number, fields in enumerate(rows, start=2):
        if len(fields) != 4 or fields[1] not in ("S", "F"):
            raise PayoutRefused(f"row {number}: id,result(S|F),reference,reason expected")
        wid, result, reference, reason = fields
        if plan.get(wid, (result,))[0] != result:
            raise PayoutRefused(f"row {number}: {wid} contradicts an earlier row")
        plan[wid] = (result, reference, reason)
    found = {r["id"]: r for r in await conn.fetch("SELECT * FROM mpay_withdrawals WHERE id = ANY($1::text[])"
                                                  " FOR UPDATE", list(plan))}
    todo = []
    for wid, (result, reference, reason) in plan.items():
        row = found.get(wid)
        wanted = "paid" if result == "S" else "failed"
        if row is None or row["state"] in ("submitted", "voided"):
            raise PayoutRefused(f"{wid}: unknown or not exported")
        if row["state"] in ("paid", "failed"):
            if row["state"] != wanted:
                raise PayoutRefused(f"{wid}: contradicts its stored result {row['state']}")
            continue
        todo.append((row, wanted, reference, reason))
    for row, wanted, reference, reason in todo:
        await settle(conn, env, row, wanted, reference=reference or None, reason=reason or None)
    return sum(1 for t in todo if t[1] == "paid"), sum(1 for t in todo if t[1] == "failed")

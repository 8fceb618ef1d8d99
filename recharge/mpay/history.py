"""An account's transactions (SPEC 6.5 CXLS, 6.13 history) read from its ledger transfers.

An entry is a transfer on the account's C or K that is posted, or pending (a withdrawal in
progress); voided ones never show. Its type comes from the other side's ledger account
(BANK→C 网银充值, PPC→K 充值卡充值, HALL→C 现金充值, C/K→MER 消费, MER→C/K 退款,
C→PAYOUT 提现, C/K→BILL 缴话费, C→W 钱包转存, W→C 钱包退款); its amount is signed
(+ credit, − debit).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from recharge.mpay.text import SHANGHAI, signed_yuan

CXLS_MAX_CHARS = 70


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    created_at: dt.datetime
    type: str
    amount: int  # signed cents
    bucket: str  # cash | card
    state: str  # posted | pending


def _type(debit: bool, other: str, code: str) -> str:
    if debit:
        for prefix, name in (("MER/", "消费"), ("PAYOUT", "提现"), ("BILL", "缴话费"), ("W/", "钱包转存")):
            if other.startswith(prefix):
                return name
        return "转出"
    if other.startswith("MER/"):
        return "钱包退款" if code.startswith("wallet") else "退款"
    for prefix, name in (("BANK/", "网银充值"), ("PPC/", "充值卡充值"), ("HALL/", "现金充值"), ("W/", "钱包退款")):
        if other.startswith(prefix):
            return name
    return "转入"


_ENTRIES_SQL = """
SELECT t.id, t.created_at, t.amount, t.code, t.status, t.debit_account_id = ANY($1::bigint[]) AS debit,
       CASE WHEN t.debit_account_id = ANY($1::bigint[]) THEN t.debit_account_id ELSE t.credit_account_id END AS mine,
       o.card_no AS other
FROM transfers t
JOIN accounts o ON o.id = CASE WHEN t.debit_account_id = ANY($1::bigint[]) THEN t.credit_account_id
                               ELSE t.debit_account_id END
WHERE (t.debit_account_id = ANY($1::bigint[]) OR t.credit_account_id = ANY($1::bigint[]))
  AND t.kind IN ('single', 'pending') AND t.status <> 'voided'
  AND t.created_at >= $2 AND t.created_at < $3 AND (t.created_at, t.id) < ($4, $5)
ORDER BY t.created_at DESC, t.id DESC
LIMIT $6
"""


async def entries(
    conn: asyncpg.Connection, account: asyncpg.Record, since: dt.datetime, until: dt.datetime, *, limit: int,
    before: tuple[dt.datetime, str] | None = None,
) -> list[Entry]:
    """Newest first; ``before`` = (created_at, id) of the last entry already shown (a cursor)."""
    mine = [account["cash_account"], account["card_account"]]
    cursor = before or (dt.datetime.max.replace(tzinfo=dt.UTC), "")
    rows = await conn.fetch(_ENTRIES_SQL, mine, since, until, cursor[0], cursor[1] or "\uffff", limit)
    return [
        Entry(
            r["id"], r["created_at"], _type(r["debit"], r["other"] or "", r["code"]),
            -r["amount"] if r["debit"] else r["amount"],
            "cash" if r["mine"] == account["cash_account"] else "card",
            "pending" if r["status"] == "pending" else "posted",
        )
        for r in rows
    ]


def cxls_reply(items: list[Entry], date_text: str) -> str:
    """``最近交易:11-02消费-0.1元;11-01充值卡充值+20元。``: up to 3, the oldest dropped while
    over 70 code points; none: ``{date}以来无交易记录。``."""
    shown = items[:3]
    while shown:
        parts = [f"{e.created_at.astimezone(SHANGHAI):%m-%d}{e.type}{signed_yuan(e.amount)}元" for e in shown]
        text = "最近交易:" + ";".join(parts) + "。"
        if len(text) <= CXLS_MAX_CHARS or len(shown) == 1:
            return text
        shown = shown[:-1]
    return f"{date_text}以来无交易记录。"

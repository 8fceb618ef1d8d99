"""The merchant POS routes of SPEC 7.4, in the caller's transaction: batch upload (批上送) and return (退货).
Each answers a SPEC 6.10 code and, on success, the route's ``data``; the channel adds ``pos_seq`` and texts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from recharge import metrics
from recharge.mpay import accounts, outbox
from recharge.mpay.env import Env
from recharge.mpay.text import yuan
from recharge.wallet import clearing
from recharge.wallet.clearing import Books, Posting
from recharge.wallet.crypto import WalletCrypto
from recharge.wallet.terminals import Terminal

NOT_PERMITTED = "1004"
CLOSED = "2007"
ORDER_STATE = "4011"
REFUND_TOO_LARGE = "4016"
MERCHANT_SHORT = "4017"
USE_VOID = "5010"


@dataclass(frozen=True, slots=True)
class Answer:
    code: str
    data: dict[str, Any] | None = None
    n: int | None = None  # tries left of 3002/3009


async def batch(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, books: Books, terminal: Terminal,
                fields: dict[str, Any]) -> Answer:
    """批上送: a repeated ``batch_no`` of this terminal gets its first reply's data; else clear every record."""
    if terminal.merchant is None:
        return Answer(NOT_PERMITTED)
    first = await clearing.previous_batch(conn, terminal.terminal_id, fields["batch_no"])
    if first is not None:
        return Answer(clearing.OK, first)
    results = await clearing.upload_batch(conn, env, crypto, books, terminal_id=terminal.terminal_id,
                                          merchant=terminal.merchant, batch_no=fields["batch_no"],
                                          records=fields["records"])
    for r in results:
        metrics.WALLET_RECORDS.labels(r.code).inc()
    return Answer(clearing.OK, {"batch_no": fields["batch_no"], "results": [r.wire() for r in results]})


async def refund(conn: asyncpg.Connection, env: Env, books: Books, terminal: Terminal,
                 fields: dict[str, Any]) -> Answer:
    """退货 of an uploaded purchase at a terminal of its merchant: ``MER → C``, the commission kept, the holder
    told by SMS; a closed account's purchase cannot be returned (``2007``)."""
    if terminal.merchant is None:
        return Answer(NOT_PERMITTED)
    row = await conn.fetchrow(
        "SELECT id, merchant, account_id, amount, refunded, void FROM wallet_purchases"
        " WHERE card_no = $1 AND offline_serial = $2 FOR UPDATE",
        fields["card"], fields["offline_serial"],
    )
    if row is None or row["void"]:
        return Answer(USE_VOID)
    if row["merchant"] != terminal.merchant:
        return Answer(ORDER_STATE)
    account = await accounts.by_id(conn, row["account_id"])
    if account is None or account["status"] == "closed":
        return Answer(CLOSED)
    amount = fields["amount"]
    if amount > row["amount"] - row["refunded"]:
        return Answer(REFUND_TOO_LARGE)
    posting = Posting(f"wr:{row['id']}:{row['refunded']}", f"MER/{row['merchant']}", f"C/{row['account_id']}",
                      amount, "wallet_return")
    if not all(await books.post(conn, [posting])):
        return Answer(MERCHANT_SHORT)
    refunded = row["refunded"] + amount
    await conn.execute("UPDATE wallet_purchases SET refunded = $2 WHERE id = $1", row["id"], refunded)
    await outbox.notify(conn, env.keys, account, clearing.REFUND_SMS.format(amt=yuan(amount)))
    return Answer(clearing.OK, {"refunded": refunded})

"""Hall buy-outs (SPEC 7.6 换卡登记, 7.7 退订): the hall POS buys a wallet card's whole balance with an ordinary
purchase and sends its record online. Shared by ``/pos/swaps`` and ``/pos/wallet-cancels``.

Checks, the first failure answering (before anything is written): the terminal a hall's (``1004``); the
record not flagged void (``1001``: a buy-out is never voided); the record seen before — by (card, offline
serial) or (card, terminal, TTS) — with a TAC that verifies under this terminal's id (``5011``: a buy-out sent
again after its reply was lost is told it is done; checked before the card, which the first buy-out retired
or cancelled, so it is not ``5007``); the card the active card of an open or paused wallet (``5007``); the
account live (``2006`` pending closure, ``2007`` closed, ``2005`` frozen); the route's own check (the
counter's permit); a load of the account *loading* (``5006``); the TAC verifying under the hall terminal's id
and ``balance_after`` 0 (``5008``); the record not seen before, again, now under the wallet's lock (``5011``).
Then the record is kept (kind ``swap`` or ``cancel``, no merchant) and its amount moves ``W → C``, in the
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from recharge.mpay import accounts
from recharge.mpay.codes import Refused
from recharge.wallet import clearing, loads, wire
from recharge.wallet.clearing import Books, Posting
from recharge.wallet.crypto import PurchaseProof, WalletCrypto
from recharge.wallet.terminals import Terminal


@dataclass(frozen=True, slots=True)
class BuyOut:
    """A buy-out that passed its checks: the record, the wallet row (locked) and the account (locked)."""

    record: wire.Record
    wallet: asyncpg.Record
    account: asyncpg.Record
    terminal: Terminal


async def active_wallet(conn: asyncpg.Connection, card_no: str) -> asyncpg.Record | None:
    """The open or paused wallet whose active card ``card_no`` is (locked), else None."""
    return await conn.fetchrow(
        "SELECT w.* FROM wallets w JOIN wallet_cards c ON c.card_no = w.card_no AND c.status = 'bound'"
        " WHERE w.card_no = $1 AND w.state IN ('open', 'paused') FOR UPDATE OF w", card_no,
    )


def _account_status(account: asyncpg.Record | None) -> None:
    if account is None or account["status"] == "closed":
        raise Refused("2007")
    if account["status"] == "pending_closure":
        raise Refused("2006")
    if account["status"] == "frozen":
        raise Refused("2005")


async def check(conn: asyncpg.Connection, crypto: WalletCrypto, terminal: Terminal, record: wire.Record,
                route_check: Callable[[asyncpg.Record], Awaitable[None]] | None = None) -> BuyOut:
    """A buy-out's checks in the order of the module docstring; ``Refused`` on the first failure."""
    if terminal.hall is None:
        raise Refused("1004")
    if record.void:
        raise Refused("1001")
    proof = PurchaseProof(record.card, record.amount, terminal.terminal_id, record.tts, record.date, record.time,
                          record.tac)
    if await _seen(conn, terminal, record) and crypto.tac_ok(proof):
        raise Refused("5011")
    wallet = await active_wallet(conn, record.card)
    if wallet is None:
        raise Refused("5007")
    account = await accounts.by_id(conn, wallet["account_id"], lock=True)
    _account_status(account)
    assert account is not None
    if route_check is not None:
        await route_check(account)
    if await loads.any_loading(conn, account["id"]):
        raise Refused("5006")
    if record.balance_after != 0 or not crypto.tac_ok(proof):
        raise Refused("5008")
    if await _seen(conn, terminal, record):  # one that came in while this request waited for the wallet's lock
        raise Refused("5011")
    return BuyOut(record, wallet, account, terminal)


async def _seen(conn: asyncpg.Connection, terminal: Terminal, record: wire.Record) -> bool:
    """Whether the platform holds a purchase record of the card with this offline serial, or this terminal's TTS."""
    return bool(await conn.fetchval(
        "SELECT 1 FROM wallet_purchases WHERE card_no = $1 AND (offline_serial = $2 OR (terminal_id = $3 AND tts = $4))",
        record.card, record.offline_serial, terminal.terminal_id, record.tts,
    ))


async def take(conn: asyncpg.Connection, books: Books, bo: BuyOut, kind: str) -> int:
    """Keep the buy-out's record and move its amount ``W → C`` (transfer ``wb:<purchase>:out``, code
    ``wallet_buyout``); the purchase id."""
    r, account_id = bo.record, bo.account["id"]
    purchase_id = int(await conn.fetchval(
        "INSERT INTO wallet_purchases (card_no, offline_serial, terminal_id, tts, merchant, account_id, amount,"
        " balance_after, trade_date, trade_time, void, kind) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9,"
        " false, $10) RETURNING id",
        r.card, r.offline_serial, bo.terminal.terminal_id, r.tts, account_id, r.amount, r.balance_after, r.date,
        r.time, kind,
    ))
    posting = Posting(f"wb:{purchase_id}:out", f"W/{account_id}", f"C/{account_id}", r.amount, "wallet_buyout")
    await clearing.must_post(books, conn, [posting])
    await conn.execute("UPDATE wallet_purchases SET transfer_id = $2 WHERE id = $1", purchase_id, posting.id)
    return purchase_id

"""Clearing of uploaded purchases (批上送, SPEC 7.4): one batch in, one result per record out, in order.

Per record, the first failure answering: malformed ``1001``; unknown card ``5007``; TAC not verifying
``5008``; a void of a record already uploaded ``5009``; (card, offline serial) or (card, terminal, TTS) seen
before ``5011``. Otherwise a purchase moves ``W → MER`` and its commission ``MER → FEE`` (the merchant's rate,
default 0.60 %, half-up to the fen); a void moves ``W → C`` with no commission and tells the holder by SMS
(a closed account's void goes to ``SUSPENSE``, counted for the alert). The batch itself is ``0000``
unless refused whole; a repeated ``batch_no`` of a terminal gets its first reply. Everything runs in the
caller's transaction; the ledger is reached only through ``Books``. A wallet left pending closure by 销号
whose shadow the batch brought to 0 is cancelled then (``recharge.wallet.closing.after_upload``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from recharge import metrics
from recharge.mpay import accounts, outbox
from recharge.mpay.env import Env
from recharge.mpay.text import yuan
from recharge.wallet import closing, wire
from recharge.wallet.crypto import PurchaseProof, WalletCrypto

OK = "0000"
MALFORMED = "1001"
UNKNOWN_CARD = "5007"
BAD_TAC = "5008"
USE_RETURN = "5009"
DUPLICATE = "5011"
DEFAULT_COMMISSION_BP = 60  # 0.60 %
REFUND_SMS = "钱包交易退款{amt}元已存入您的手机支付现金账户。"


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger transfer by SPEC 6.2 account names (``W/<acct>``, ``MER/<merchant>``, ``FEE``, ``C/<acct>``)."""

    id: str
    debit: str
    credit: str
    amount: int
    code: str


class Books(Protocol):
    """The ledger as the wallet sees it: transfers between named accounts, one ``ok`` per posting (created, or
    created before with the same fields); a refused posting changed nothing. The postings of one call are
    judged as one batch: none may rely on another's credit."""

    async def post(self, conn: asyncpg.Connection, postings: Sequence[Posting]) -> list[bool]: ...


async def must_post(books: Books, conn: asyncpg.Connection, postings: Sequence[Posting]) -> None:
    """Postings the rules guarantee (a TAC-proven purchase may overdraw W): a refusal is a platform fault."""
    if postings and not all(await books.post(conn, postings)):
        raise RuntimeError(f"ledger refused {', '.join(p.id for p in postings)}")


@dataclass(frozen=True, slots=True)
class RecordResult:
    card: str | None
    offline_serial: int | None
    code: str
    commission: int = 0

    def wire(self) -> dict[str, Any]:
        return {"card": self.card, "offline_serial": self.offline_serial, "code": self.code,
                "commission": self.commission}


def commission(amount: int, rate_bp: int) -> int:
    """``amount × rate``, half-up to the fen (``rate_bp`` in hundredths of a per cent)."""
    return (amount * rate_bp * 2 + 10_000) // 20_000


def postings_for(record: wire.Record, account_id: int, merchant: str, rate_bp: int, purchase_id: int, *,
                 closed: bool = False, retired: bool = False) -> tuple[list[Posting], int]:
    """The transfers that clear one accepted record, and its commission (a void of a closed account's
    purchase has no cash bucket to go to: ``SUSPENSE``; a lost card's late records debit ``RETIRED``)."""
    ref = f"wp:{purchase_id}"
    source = "RETIRED" if retired else f"W/{account_id}"
    if record.void:
        to = "SUSPENSE" if closed else f"C/{account_id}"
        return [Posting(f"{ref}:void", source, to, record.amount, "wallet_void")], 0
    fee = commission(record.amount, rate_bp)
    moves = [Posting(f"{ref}:sale", source, f"MER/{merchant}", record.amount, "wallet_purchase")]
    if fee:
        moves.append(Posting(f"{ref}:fee", f"MER/{merchant}", "FEE", fee, "wallet_commission"))
    return moves, fee


async def _card_account(conn: asyncpg.Connection, card_no: str) -> tuple[int, bool] | None:
    """The wallet account a card's purchases belong to (its own, also once retired) and whether they debit
    ``RETIRED`` (a lost card after its wallet reopened elsewhere); None for a card that served no wallet."""
    row = await conn.fetchrow(
        "SELECT account_id, debits_retired FROM wallet_cards WHERE card_no = $1 AND account_id IS NOT NULL", card_no
    )
    return (int(row["account_id"]), bool(row["debits_retired"])) if row is not None else None


async def _seen(conn: asyncpg.Connection, record: wire.Record, terminal_id: str) -> str | None:
    row = await conn.fetchrow(
        "SELECT void FROM wallet_purchases WHERE card_no = $1 AND (offline_serial = $2"
        " OR (terminal_id = $3 AND tts = $4)) ORDER BY void LIMIT 1",
        record.card, record.offline_serial, terminal_id, record.tts,
    )
    if row is None:
        return None
    return USE_RETURN if record.void and not row["void"] else DUPLICATE


@dataclass
class _Waves:
    """A batch's transfers in two waves: purchases and voids (from W), then commissions (from the MER the first
    wave credited); each wave is one ledger call, its transfers independent of one another."""

    first: list[Posting]
    second: list[Posting]
    cleared: list[tuple[int, int, str]]  # purchase id, commission, clearing transfer id
    accounts: set[int]


async def _clear_one(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, waves: _Waves, terminal_id: str,
                     merchant: str, rate_bp: int, batch_no: str, raw: object) -> RecordResult:
    try:
        record = wire.record(raw)
    except wire.WireError:
        card = raw.get("card") if isinstance(raw, dict) else None
        serial = raw.get("offline_serial") if isinstance(raw, dict) else None
        return RecordResult(card if isinstance(card, str) else None,
                            serial if isinstance(serial, int) and not isinstance(serial, bool) else None, MALFORMED)
    owner = await _card_account(conn, record.card)
    if owner is None:
        return RecordResult(record.card, record.offline_serial, UNKNOWN_CARD)
    account_id, retired = owner
    proof = PurchaseProof(record.card, record.amount, terminal_id, record.tts, record.date, record.time, record.tac)
    if not crypto.tac_ok(proof):
        return RecordResult(record.card, record.offline_serial, BAD_TAC)
    refusal = await _seen(conn, record, terminal_id)
    if refusal is not None:
        return RecordResult(record.card, record.offline_serial, refusal)
    purchase_id = await conn.fetchval(
        "INSERT INTO wallet_purchases (card_no, offline_serial, terminal_id, tts, merchant, account_id, amount,"
        " balance_after, trade_date, trade_time, void, batch_no) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        " $11, $12) RETURNING id",
        record.card, record.offline_serial, terminal_id, record.tts, merchant, account_id, record.amount,
        record.balance_after, record.date, record.time, record.void, batch_no,
    )
    account = await accounts.by_id(conn, account_id) if record.void else None
    closed = account is not None and account["status"] == "closed"
    moves, fee = postings_for(record, account_id, merchant, rate_bp, purchase_id, closed=closed, retired=retired)
    waves.first.append(moves[0])
    waves.second.extend(moves[1:])
    waves.cleared.append((purchase_id, fee, moves[0].id))
    waves.accounts.add(account_id)
    if closed:
        metrics.WALLET_SUSPENSE.inc()
    elif account is not None:
        await outbox.notify(conn, env.keys, account, REFUND_SMS.format(amt=yuan(record.amount)))
    return RecordResult(record.card, record.offline_serial, OK, fee)


async def merchant_rate(conn: asyncpg.Connection, merchant: str) -> int:
    value = await conn.fetchval("SELECT commission_bp FROM wallet_merchant_rates WHERE merchant = $1", merchant)
    return DEFAULT_COMMISSION_BP if value is None else int(value)


async def previous_batch(conn: asyncpg.Connection, terminal_id: str, batch_no: str) -> dict[str, Any] | None:
    """The first reply's ``data`` to a repeated batch number of this terminal, if any."""
    row = await conn.fetchrow(
        "SELECT reply FROM wallet_batches WHERE terminal_id = $1 AND batch_no = $2", terminal_id, batch_no
    )
    return dict(row["reply"]) if row is not None else None


async def upload_batch(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, books: Books, *, terminal_id: str,
                       merchant: str, batch_no: str, records: list[object]) -> list[RecordResult]:
    """Clear a new batch (the caller checked ``previous_batch``): one result per record, in order."""
    rate = await merchant_rate(conn, merchant)
    waves = _Waves([], [], [], set())
    results = []
    for raw in records:
        results.append(await _clear_one(conn, env, crypto, waves, terminal_id, merchant, rate, batch_no, raw))
    await must_post(books, conn, waves.first)
    await must_post(books, conn, waves.second)
    await conn.executemany("UPDATE wallet_purchases SET commission = $2, transfer_id = $3 WHERE id = $1",
                           waves.cleared)
    await closing.after_upload(conn, env, waves.accounts)
    data = {"batch_no": batch_no, "results": [r.wire() for r in results]}
    await conn.execute(
        "INSERT INTO wallet_batches (terminal_id, batch_no, records, reply) VALUES ($1, $2, $3, $4::jsonb)",
        terminal_id, batch_no, len(records), data,
    )
    return results

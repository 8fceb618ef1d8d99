"""What the card service records of a trade: the journal row with its Stance (``finish``),
and the first answer to a client's idempotency key REQID (``replay`` / ``remember``).

Only a successful trade is journalled and gets a Stance: the consuming (terminal's)
merchant's next 8-digit serial, wrapping after 99999999, taken last so that the merchant row
stays locked as briefly as possible.
"""

from __future__ import annotations

import json
import re

import asyncpg

from recharge.kkt import passwords
from recharge.kkt.codes import OK
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import Refused, TradeRequest, TradeResult
from recharge.kkt.table import REVERSAL, TradeKind
from recharge.kkt.transaction import Retry

REQID_RE = re.compile(r"[0-9A-Za-z_.:-]{1,64}")

# The end of every trade in one round trip: the card's balances after it, the merchant's next
# Stance, the journal row, and a cancelled original's cancelled_by. With a password guard
# ($13, from passwords.check_unlocked) it writes nothing unless the card still has that
# password hash, no failure and no lock: the right password takes effect only so.
_JOURNAL_SQL = """
WITH guard AS (
    SELECT WHERE $13::text IS NULL OR EXISTS (
        SELECT FROM cards WHERE card_no = $3::text AND password_hash = $13::text AND password_failures = 0
        AND locked_until IS NULL)
), balances AS (
    SELECT coalesce(sum(credits_posted - debits_posted) FILTER (WHERE kind = 'card_purse'), 0)::bigint AS purse,
           coalesce(sum(credits_posted - debits_posted) FILTER (WHERE kind = 'card_points'), 0)::bigint AS points
    FROM accounts WHERE card_no = $3::text AND kind IN ('card_purse', 'card_points')
), serial AS (
    UPDATE merchants SET stance_seq = CASE WHEN stance_seq >= 99999999 THEN 1 ELSE stance_seq + 1 END
    WHERE id = $1::bigint AND EXISTS (SELECT FROM guard) RETURNING stance_seq
), journal AS (
    INSERT INTO kkt_trades (merchant_id, stance, card_no, terminal_code, trade_type, trade_mode, kind,
                            amount_cents, points, item_code, trade_name, transfer_id, original_id,
                            purse_after_cents, points_after)
    SELECT $1::bigint, lpad(serial.stance_seq::text, 8, '0'), $3::text, $4::text, $5::text, $6::text, $7::text,
           $8::bigint, $9::bigint, $10::text, $11::text, $12::text, $2::bigint, balances.purse, balances.points
    FROM serial, balances
    RETURNING id, stance, purse_after_cents, points_after
), cancelled AS (
    UPDATE kkt_trades o SET cancelled_by = journal.id FROM journal WHERE o.id = $2::bigint
)
SELECT id, stance, purse_after_cents, points_after FROM journal
"""


async def finish(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, terminal: Terminal, card_no: str,
    amount: int, points: int, item_code: str | None, names: tuple[str, str], transfer_id: str | None,
    original_id: int | None, *, code: str = OK, guard: str | None = None,
) -> TradeResult:
    """Journal a successful trade and answer it: its Stance and the card's balances after it.
    With ``guard``, ``passwords.Contended`` when the card's password state changed."""
    row = await conn.fetchrow(
        _JOURNAL_SQL, terminal.merchant_id, original_id, card_no, terminal.code, req.trade_type,
        req.trade_mode if kind is not REVERSAL else "", kind.kind, amount, points, item_code, names[0],
        transfer_id, guard,
    )
    if row is None:
        if guard is not None:
            raise passwords.Contended()
        raise LookupError(f"merchant {terminal.merchant_id} does not exist")
    if guard is not None:
        passwords.counted_right()
    sv = kind.family == "sv"
    purse, points_after = int(row["purse_after_cents"]), int(row["points_after"])
    return TradeResult(
        code, card_no, row["stance"], purse, None if sv else points_after, purse if sv else points_after,
        amount, points, names[0], names[1],
    )


async def replay(conn: asyncpg.Connection, req: TradeRequest, terminal: Terminal) -> TradeResult | None:
    """The first answer to this REQID of the terminal, None when there is none (00 malformed,
    or the same REQID for a different request: refused, never run again)."""
    if not req.req_id:
        return None
    if not REQID_RE.fullmatch(req.req_id):
        raise Refused("00")
    row = await conn.fetchrow(
        "SELECT digest, reply::text AS reply FROM kkt_requests WHERE terminal_code = $1 AND req_id = $2",
        terminal.code, req.req_id,
    )
    if row is None:
        return None
    if row["digest"] != req.digest():
        return TradeResult("00")
    return TradeResult.from_json(json.loads(row["reply"]))


async def remember(conn: asyncpg.Connection, req: TradeRequest, result: TradeResult) -> None:
    """Store the answer to a REQID, in the trade's transaction."""
    if not req.req_id or not REQID_RE.fullmatch(req.req_id):
        return
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO kkt_requests (terminal_code, req_id, digest, reply) VALUES ($1,$2,$3,$4::text::jsonb)",
                req.terminal_code, req.req_id, req.digest(), json.dumps(result.to_json(), ensure_ascii=False),
            )
    except asyncpg.UniqueViolationError:
        raise Retry() from None  # a concurrent twin committed first: start over and replay it

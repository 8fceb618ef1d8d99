"""What the card service records of a trade: the journal row with its Stance (``finish``),
and the first answer to a client's idempotency key REQID (``replay`` / ``remember``).

Only a successful trade is journalled and gets a Stance: the consuming (terminal's)
merchant's next 8-digit serial, wrapping after 99999999, taken last so that the merchant row
stays locked as briefly as possible. ``finish_all`` journals the trades of a group-commit batch
(one per card) in one statement, each merchant's Stances in the trades' order; ``finish`` is its
one-trade form.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import asyncpg

from recharge.kkt import passwords
from recharge.kkt.codes import OK
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import Refused, TradeRequest, TradeResult
from recharge.kkt.table import REVERSAL, TradeKind
from recharge.kkt.transaction import Retry

REQID_RE = re.compile(r"[0-9A-Za-z_.:-]{1,64}")

# The end of every trade in one round trip — of every trade of a batch (one card each at most):
# the cards' balances after them, each merchant's next Stances (in the entries' order), the
# journal rows, and cancelled originals' cancelled_by. An entry with a password guard (from
# passwords.check_unlocked) is written only if its card still has that password hash, no failure
# and no lock: the right password takes effect only so.
_JOURNAL_SQL = """
WITH items AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[])
        WITH ORDINALITY AS i(merchant_id, original_id, card_no, terminal_code, trade_type, trade_mode, kind,
                             amount_cents, points, item_code, trade_name, transfer_id, guard, idx)
), kept AS (
    SELECT i.*, row_number() OVER (PARTITION BY i.merchant_id ORDER BY i.idx) AS nth,
           count(*) OVER (PARTITION BY i.merchant_id) AS n
    FROM items i
    WHERE i.guard IS NULL OR coalesce((  -- a scalar subquery: an index probe per guarded entry, never a scan
        SELECT c.password_hash = i.guard AND c.password_failures = 0 AND c.locked_until IS NULL
        FROM cards c WHERE c.card_no = i.card_no), false)
), counts AS (
    SELECT merchant_id, max(n) AS n FROM kept GROUP BY merchant_id
), locked AS MATERIALIZED (  -- the merchants' rows in id order, as every batch takes them
    SELECT m.id FROM merchants m WHERE m.id = ANY($1::bigint[]) ORDER BY m.id FOR UPDATE
), serial AS (
    UPDATE merchants m SET stance_seq = (m.stance_seq - 1 + c.n) % 99999999 + 1
    FROM counts c JOIN locked l ON l.id = c.merchant_id
    WHERE m.id = c.merchant_id AND m.id = ANY($1::bigint[])
    RETURNING m.id, m.stance_seq AS last, c.n
), balances AS (
    SELECT card_no,
           coalesce(sum(credits_posted - debits_posted) FILTER (WHERE kind = 'card_purse'), 0)::bigint AS purse,
           coalesce(sum(credits_posted - debits_posted) FILTER (WHERE kind = 'card_points'), 0)::bigint AS points
    FROM accounts WHERE card_no = ANY($3::text[]) AND kind IN ('card_purse', 'card_points')
    GROUP BY card_no
), journal AS (
    INSERT INTO kkt_trades (merchant_id, stance, card_no, terminal_code, trade_type, trade_mode, kind,
                            amount_cents, points, item_code, trade_name, transfer_id, original_id,
                            purse_after_cents, points_after)
    SELECT k.merchant_id, lpad(((((s.last - 1 - s.n + k.nth) % 99999999) + 99999999) % 99999999 + 1)::text, 8, '0'),
           k.card_no, k.terminal_code, k.trade_type, k.trade_mode, k.kind, k.amount_cents, k.points, k.item_code,
           k.trade_name, k.transfer_id, k.original_id, coalesce(b.purse, 0), coalesce(b.points, 0)
    FROM kept k JOIN serial s ON s.id = k.merchant_id LEFT JOIN balances b ON b.card_no = k.card_no
    ORDER BY k.idx
    RETURNING id, card_no, stance, purse_after_cents, points_after, original_id
), cancelled AS (  -- by the originals' ids (an index probe each), never a join over the whole journal
    UPDATE kkt_trades o SET cancelled_by = (SELECT j.id FROM journal j WHERE j.original_id = o.id)
    WHERE o.id = ANY($2::bigint[]) AND EXISTS (SELECT FROM journal j WHERE j.original_id = o.id)
)
SELECT card_no, stance, purse_after_cents, points_after FROM journal
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """A successful trade to journal (``finish_all``) and how its answer reads."""

    merchant_id: int
    terminal_code: str
    card_no: str
    trade_type: str
    trade_mode: str
    kind: TradeKind
    amount: int
    points: int
    item_code: str | None
    names: tuple[str, str]
    transfer_id: str | None
    original_id: int | None
    code: str = OK
    guard: str | None = None


def entry(
    req: TradeRequest, kind: TradeKind, terminal: Terminal, card_no: str, amount: int, points: int,
    item_code: str | None, names: tuple[str, str], transfer_id: str | None, original_id: int | None, *,
    code: str = OK, guard: str | None = None,
) -> Entry:
    """The journal entry of a trade that passed every check (and moved what it moves)."""
    return Entry(terminal.merchant_id, terminal.code, card_no, req.trade_type,
                 req.trade_mode if kind is not REVERSAL else "", kind, amount, points, item_code, names,
                 transfer_id, original_id, code, guard)


async def finish_all(conn: asyncpg.Connection, entries: list[Entry]) -> list[TradeResult | None]:
    """Journal successful trades of distinct cards in one statement and answer each: its Stance
    and the card's balances after it; None for an entry whose guard found the card changed."""
    if not entries:
        return []
    assert len({e.card_no for e in entries}) == len(entries), "one trade per card in a journal statement"
    rows = await conn.fetch(
        _JOURNAL_SQL, [e.merchant_id for e in entries], [e.original_id for e in entries],
        [e.card_no for e in entries], [e.terminal_code for e in entries], [e.trade_type for e in entries],
        [e.trade_mode for e in entries], [e.kind.kind for e in entries], [e.amount for e in entries],
        [e.points for e in entries], [e.item_code for e in entries], [e.names[0] for e in entries],
        [e.transfer_id for e in entries], [e.guard for e in entries],
    )
    written = {row["card_no"]: row for row in rows}
    results: list[TradeResult | None] = []
    for e in entries:
        row = written.get(e.card_no)
        if row is None:
            if e.guard is None:
                raise LookupError(f"merchant {e.merchant_id} does not exist")
            results.append(None)
            continue
        if e.guard is not None:
            passwords.counted_right()
        sv = e.kind.family == "sv"
        purse, points_after = int(row["purse_after_cents"]), int(row["points_after"])
        results.append(TradeResult(
            e.code, e.card_no, row["stance"], purse, None if sv else points_after, purse if sv else points_after,
            e.amount, e.points, e.names[0], e.names[1],
        ))
    return results


async def finish(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, terminal: Terminal, card_no: str,
    amount: int, points: int, item_code: str | None, names: tuple[str, str], transfer_id: str | None,
    original_id: int | None, *, code: str = OK, guard: str | None = None,
) -> TradeResult:
    """Journal one successful trade and answer it (``finish_all`` of one entry). With ``guard``,
    ``passwords.Contended`` when the card's password state changed."""
    (result,) = await finish_all(conn, [entry(req, kind, terminal, card_no, amount, points, item_code, names,
                                              transfer_id, original_id, code=code, guard=guard)])
    if result is None:
        raise passwords.Contended()
    return result


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
    status = await conn.execute(
        "INSERT INTO kkt_requests (terminal_code, req_id, digest, reply) VALUES ($1,$2,$3,$4::text::jsonb)"
        " ON CONFLICT DO NOTHING",
        req.terminal_code, req.req_id, req.digest(), json.dumps(result.to_json(), ensure_ascii=False),
    )
    if status != "INSERT 0 1":  # no savepoint, no error that would abort a batch's transaction
        raise Retry()  # a concurrent twin committed first: start over and replay it

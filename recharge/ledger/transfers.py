"""The double-entry ledger every flow moves money and points through: batches in, one result per event out.

Vocabulary (TigerBeetle's; other rooms — orders, the KaKaTong card service, the mobile payment
account, the SIM wallet — build on exactly these names):

- ``NewTransfer(id, debit_account_id, credit_account_id, amount, code, reference, pending,
  timeout_at)``: what ``create_transfers`` takes. ``pending=False`` posts at once (a *single*
  transfer); ``pending=True`` reserves the amount (counted in the accounts' ``*_pending``) until
  a post or a void resolves it, or ``timeout_at`` passes and the sweeper voids it.
- ``Resolution(id, pending_id, void)``: what ``resolve_pending`` takes: *post* a pending
  transfer (its amount moves from pending to posted) or, with ``void=True``, *void* it (the
  reservation disappears). Each appends its own transfer row, of kind ``post`` or ``void``.
- ``Transfer``: a stored transfer row (``kind`` single / pending / post / void, ``status``
  posted / pending / voided).
- ``Outcome(result, transfer)``: the answer to one event. ``Result`` names it; ``transfer`` is
  the transfer created, or the one that already has this id (``exists``,
  ``exists_with_different_fields``), else None. ``Outcome.ok``: the transfer now exists as asked.

Guarantees: ids are chosen by the caller, so a retry with the same id and content answers
``exists`` (the first result) and the same id with other content answers
``exists_with_different_fields``, changing nothing. An account flagged ``no_overdraft`` never
lets posted plus pending debits exceed its posted credits. ``create_transfers(conn, events)``
and ``resolve_pending(conn, events)`` are each ONE statement for the whole batch: the statement
judges every event in order, as if they came one after the other (an event sees what the
batch's earlier events did: an id they created, a pending transfer they resolved, the credits
they reserved), in TigerBeetle's precedence — create: ``amount_must_be_positive``,
``accounts_must_be_different``, ``exists`` / ``exists_with_different_fields``,
``account_not_found``, ``accounts_must_have_the_same_ledger``, ``exceeds_credits``; resolve:
``exists`` / ``exists_with_different_fields``, ``pending_transfer_not_found``,
``pending_transfer_already_posted``, ``pending_transfer_already_voided``,
``pending_transfer_expired`` (posts only) — and writes only the events it answers ``created``.
A refused event writes nothing, so a refusal never makes a caller roll back. The single-event
form is ``(await create_transfers(conn, [t]))[0]``.

Every function takes a connection already inside a transaction: the caller commits its
transfers together with its own business rows. Accounts (and pending transfers) are locked in
id order, so concurrent batches cannot deadlock each other over them; a remaining
serialization failure is retried whole by ``recharge.db.RetryPolicy``. A pending transfer's
timeout is set and cleared here only (``set_pending_timeouts``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg


class Result(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    EXCEEDS_CREDITS = "exceeds_credits"
    ACCOUNT_NOT_FOUND = "account_not_found"
    LEDGER_MISMATCH = "accounts_must_have_the_same_ledger"
    SAME_ACCOUNT = "accounts_must_be_different"
    AMOUNT_MUST_BE_POSITIVE = "amount_must_be_positive"
    PENDING_NOT_FOUND = "pending_transfer_not_found"
    PENDING_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_EXPIRED = "pending_transfer_expired"


class AccountKind(StrEnum):
    """What an account holds. Merchant accounts are per merchant and ledger."""

    EXTERNAL = "external"  # money entering/leaving the platform (bank); may go negative
    RECHARGE_FUND = "recharge_fund"  # a merchant's prepaid fund that pays recharges
    MERCHANT_SALES = "merchant_sales"  # what cardholders spent at a consuming merchant
    MERCHANT_DEPOSITS = "merchant_deposits"  # card deposits a terminal's merchant collected
    POINTS_ISSUED = "points_issued"  # the points a merchant has granted (PTS ledger)
    CARD_PURSE = "card_purse"  # a card's stored value (host card or the chip's mirror)
    CARD_POINTS = "card_points"
    CARD_DEPOSIT = "card_deposit"


class LedgerError(Exception):
    """A transfer the caller needed was refused; carries the ledger's result."""

    def __init__(self, result: Result, transfer_id: str) -> None:
        super().__init__(f"transfer {transfer_id}: {result.value}")
        self.result = result
        self.transfer_id = transfer_id


@dataclass(frozen=True, slots=True)
class NewTransfer:
    """A transfer to create: posted at once, or pending (a reservation) with an optional timeout."""

    id: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    code: str = ""
    reference: str = ""
    pending: bool = False
    timeout_at: dt.datetime | None = None  # pending only; None: never times out


@dataclass(frozen=True, slots=True)
class Resolution:
    """Post (``void=False``) or void the pending transfer ``pending_id`` with a transfer of id ``id``."""

    id: str
    pending_id: str
    void: bool = False


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    kind: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    ledger: str
    code: str
    pending_id: str | None
    status: str
    timeout_at: dt.datetime | None
    reference: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Transfer:
        return cls(**{name: row[name] for name in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    transfer: Transfer | None = None

    @property
    def ok(self) -> bool:
        """True when the transfer now exists as asked (just created, or by an earlier retry)."""
        return self.result in (Result.CREATED, Result.EXISTS)

    def check(self, transfer_id: str) -> Outcome:
        if not self.ok:
            raise LedgerError(self.result, transfer_id)
        return self


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: int
    ledger: str
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    no_overdraft: bool

    @property
    def posted(self) -> int:
        """Credits minus debits that have posted: what the holder owns."""
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        """What may still be debited: posted balance less pending debits."""
        return self.credits_posted - self.debits_posted - self.debits_pending


_COLUMNS = (
    "id", "kind", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "pending_id", "status",
    "timeout_at", "reference",
)
_TRANSFER_COLUMNS = ", ".join(_COLUMNS)


def _of(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _COLUMNS)


async def ensure_account(
    conn: asyncpg.Connection,
    *,
    ledger: str,
    kind: AccountKind,
    merchant_id: int | None = None,
    card_no: str | None = None,
    no_overdraft: bool = True,
    name: str = "",
) -> int:
    """The id of the account of this kind for this merchant or card, created if missing."""
    if card_no is not None:
        row = await conn.fetchrow(
            "SELECT id FROM accounts WHERE card_no = $1 AND kind = $2", card_no, kind.value
        )
    else:
        row = await conn.fetchrow(
            "SELECT id FROM accounts WHERE merchant_id IS NOT DISTINCT FROM $1 AND kind = $2"
            " AND ledger = $3 AND card_no IS NULL",
            merchant_id,
            kind.value,
            ledger,
        )
    if row is not None:
        return int(row["id"])
    account_id = await conn.fetchval(
        "INSERT INTO accounts (ledger, kind, merchant_id, card_no, no_overdraft, name)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
        ledger,
        kind.value,
        merchant_id,
        card_no,
        no_overdraft,
        name,
    )
    if account_id is None:  # created concurrently by another transaction
        return await ensure_account(
            conn, ledger=ledger, kind=kind, merchant_id=merchant_id, card_no=card_no
        )
    return int(account_id)


async def get_balance(conn: asyncpg.Connection, account_id: int) -> Balance:
    row = await conn.fetchrow(
        "SELECT id, ledger, debits_pending, debits_posted, credits_pending, credits_posted,"
        " no_overdraft FROM accounts WHERE id = $1",
        account_id,
    )
    if row is None:
        raise LookupError(f"account {account_id} not found")
    return Balance(*row)


async def get_transfer(conn: asyncpg.Connection, transfer_id: str) -> Transfer | None:
    row = await conn.fetchrow(f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE id = $1", transfer_id)
    return Transfer.from_row(row) if row else None


# The one place balances change: ``moves`` (account_id, debits_pending, debits_posted,
# credits_pending, credits_posted: signed changes, one row per transfer side) summed per account
# and applied once per account (a merchant fund shared by a batch is updated once, not once per
# transfer). Every account of ``moves`` is already locked by the statement this is part of.
_APPLY_MOVES = """
deltas AS MATERIALIZED (
    SELECT account_id, sum(debits_pending) AS dp, sum(debits_posted) AS dpo,
           sum(credits_pending) AS cp, sum(credits_posted) AS cpo
    FROM moves GROUP BY account_id
), applied AS (
    UPDATE accounts a SET
        debits_pending  = a.debits_pending  + d.dp,
        debits_posted   = a.debits_posted   + d.dpo,
        credits_pending = a.credits_pending + d.cp,
        credits_posted  = a.credits_posted  + d.cpo
    FROM deltas d
    WHERE a.id = d.account_id AND a.id = ANY(ARRAY(SELECT account_id FROM deltas))
    RETURNING a.id
)"""

# Each event's answer and its transfer (the one created, or the one that has its id), in batch
# order, with what the statement applied (for the "cannot happen" checks). ``made``: the walk's
# ids created by earlier events of the batch (their rows come from ``inserted``).
_ANSWER = f"""
SELECT w.result, w.result = 'created' AND n.id IS NOT NULL AS inserted, t.*,
       (SELECT count(*) FROM applied) AS applied, (SELECT count(*) FROM deltas) AS accounts, {{resolved}} AS resolved
FROM walk w JOIN judged j ON j.i = w.i
LEFT JOIN inserted n ON n.id = j.id
LEFT JOIN LATERAL (
    SELECT {_of("n")} WHERE n.id IS NOT NULL AND w.result IN ('created', 'exists', 'exists_with_different_fields')
    UNION ALL
    SELECT {_of("x")} FROM transfers x
    WHERE x.id = j.id AND n.id IS NULL AND w.result IN ('exists', 'exists_with_different_fields')
) t ON true
ORDER BY w.i
"""

# Create: lock every account of the batch in id order (the MATERIALIZED CTE is read whole, its
# ORDER BY id ... FOR UPDATE takes the locks in that order and reads the rows' latest versions),
# judge each event on its own (``judged``), then walk the batch in order carrying what earlier
# events did (``moved``: how much each account's room changed — less by a debit, more by a posted
# credit; ``made``: ids created).
# Rows are reached by their keys only (ids in arrays, lateral probes): index lookups even on
# tables without statistics.
_CREATE_SQL = f"""
WITH RECURSIVE ev AS MATERIALIZED (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::bool[],
                         $8::timestamptz[])
        WITH ORDINALITY AS ev(id, debit_account_id, credit_account_id, amount, code, reference, pending, timeout_at, i)
), locked AS MATERIALIZED (
    SELECT id, ledger, no_overdraft, credits_posted - debits_posted - debits_pending AS room FROM accounts
    WHERE id = ANY(ARRAY(SELECT debit_account_id FROM ev UNION SELECT credit_account_id FROM ev))
    ORDER BY id FOR UPDATE
), judged AS MATERIALIZED (
    SELECT ev.*, k.kind, d.ledger,
           CASE WHEN ev.amount <= 0 THEN 'amount_must_be_positive'
                WHEN ev.debit_account_id = ev.credit_account_id THEN 'accounts_must_be_different' END AS invalid,
           CASE WHEN x.id IS NULL THEN NULL
                WHEN (x.kind, x.debit_account_id, x.credit_account_id, x.amount, x.code)
                     = (k.kind, ev.debit_account_id, ev.credit_account_id, ev.amount, ev.code) THEN 'exists'
                ELSE 'exists_with_different_fields' END AS existing,
           CASE WHEN d.id IS NULL OR c.id IS NULL THEN 'account_not_found'
                WHEN d.ledger <> c.ledger THEN 'accounts_must_have_the_same_ledger' END AS unfit,
           CASE WHEN d.no_overdraft THEN d.room END AS room
    FROM ev
    CROSS JOIN LATERAL (SELECT CASE WHEN ev.pending THEN 'pending' ELSE 'single' END AS kind) k
    LEFT JOIN LATERAL (SELECT * FROM transfers x WHERE x.id = ev.id) x ON true
    LEFT JOIN locked d ON d.id = ev.debit_account_id
    LEFT JOIN locked c ON c.id = ev.credit_account_id
), walk (i, result, moved, made) AS (
    SELECT 0::bigint, NULL::text, '{{}}'::jsonb, '{{}}'::jsonb
    UNION ALL
    SELECT j.i, r.result,
           CASE WHEN r.result = 'created'
                THEN w.moved || jsonb_build_object(
                    j.debit_account_id::text, coalesce((w.moved ->> j.debit_account_id::text)::bigint, 0) - j.amount,
                    j.credit_account_id::text, coalesce((w.moved ->> j.credit_account_id::text)::bigint, 0)
                                               + CASE WHEN j.pending THEN 0 ELSE j.amount END)
                ELSE w.moved END,
           CASE WHEN r.result = 'created' THEN jsonb_set(w.made, ARRAY[j.id], to_jsonb(j.i)) ELSE w.made END
    FROM walk w JOIN judged j ON j.i = w.i + 1
    CROSS JOIN LATERAL (SELECT CASE
        WHEN j.invalid IS NOT NULL THEN j.invalid
        WHEN j.existing IS NOT NULL THEN j.existing
        WHEN w.made ? j.id THEN (
            SELECT CASE WHEN (e.kind, e.debit_account_id, e.credit_account_id, e.amount, e.code)
                             = (j.kind, j.debit_account_id, j.credit_account_id, j.amount, j.code)
                        THEN 'exists' ELSE 'exists_with_different_fields' END
            FROM judged e WHERE e.i = (w.made ->> j.id)::bigint)
        WHEN j.unfit IS NOT NULL THEN j.unfit
        WHEN j.amount > j.room + coalesce((w.moved ->> j.debit_account_id::text)::bigint, 0) THEN 'exceeds_credits'
        ELSE 'created' END AS result) r
), inserted AS (
    INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount, ledger, code, status, timeout_at,
                           reference)
    SELECT j.id, j.kind, j.debit_account_id, j.credit_account_id, j.amount, j.ledger, j.code,
           CASE WHEN j.pending THEN 'pending' ELSE 'posted' END, CASE WHEN j.pending THEN j.timeout_at END, j.reference
    FROM walk w JOIN judged j ON j.i = w.i WHERE w.result = 'created'
    ON CONFLICT (id) DO NOTHING
    RETURNING {_TRANSFER_COLUMNS}
), moves (account_id, debits_pending, debits_posted, credits_pending, credits_posted) AS (
    SELECT debit_account_id, CASE WHEN status = 'pending' THEN amount ELSE 0 END,
           CASE WHEN status = 'pending' THEN 0 ELSE amount END, 0::bigint, 0::bigint FROM inserted
    UNION ALL
    SELECT credit_account_id, 0::bigint, 0::bigint, CASE WHEN status = 'pending' THEN amount ELSE 0 END,
           CASE WHEN status = 'pending' THEN 0 ELSE amount END FROM inserted
), {_APPLY_MOVES}
{_ANSWER.format(resolved="(SELECT count(*) FROM inserted)")}
"""

# Resolve: lock the pending transfers in id order, then their accounts in id order; judge each
# event on its own, then walk the batch in order carrying the ids created (``made``) and the
# pending transfers resolved by earlier events (``resolved``: pending id → post / void).
_RESOLVE_SQL = f"""
WITH RECURSIVE ev AS MATERIALIZED (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bool[]) WITH ORDINALITY AS ev(id, pending_id, void, i)
), p AS MATERIALIZED (
    SELECT {_TRANSFER_COLUMNS}, timeout_at IS NOT NULL AND timeout_at <= now() AS expired FROM transfers
    WHERE id = ANY(ARRAY(SELECT pending_id FROM ev)) AND kind = 'pending' ORDER BY id FOR UPDATE
), locked AS MATERIALIZED (
    SELECT id FROM accounts WHERE id = ANY(ARRAY(SELECT debit_account_id FROM p UNION SELECT credit_account_id FROM p))
    ORDER BY id FOR UPDATE
), judged AS MATERIALIZED (
    SELECT ev.*, k.kind, p.debit_account_id, p.credit_account_id, p.amount, p.ledger, p.code, p.reference,
           CASE WHEN x.id IS NULL THEN NULL
                WHEN (x.kind, x.pending_id) = (k.kind, ev.pending_id) THEN 'exists'
                ELSE 'exists_with_different_fields' END AS existing,
           CASE WHEN p.id IS NULL THEN 'pending_transfer_not_found'
                WHEN p.status = 'posted' THEN 'pending_transfer_already_posted'
                WHEN p.status = 'voided' THEN 'pending_transfer_already_voided'
                WHEN NOT ev.void AND p.expired THEN 'pending_transfer_expired' END AS unfit
    FROM ev
    CROSS JOIN LATERAL (SELECT CASE WHEN ev.void THEN 'void' ELSE 'post' END AS kind) k
    LEFT JOIN LATERAL (SELECT * FROM transfers x WHERE x.id = ev.id) x ON true
    LEFT JOIN p ON p.id = ev.pending_id
), walk (i, result, made, resolved) AS (
    SELECT 0::bigint, NULL::text, '{{}}'::jsonb, '{{}}'::jsonb
    UNION ALL
    SELECT j.i, r.result,
           CASE WHEN r.result = 'created' THEN jsonb_set(w.made, ARRAY[j.id], to_jsonb(j.i)) ELSE w.made END,
           CASE WHEN r.result = 'created' THEN jsonb_set(w.resolved, ARRAY[j.pending_id], to_jsonb(j.kind))
                ELSE w.resolved END
    FROM walk w JOIN judged j ON j.i = w.i + 1
    CROSS JOIN LATERAL (SELECT CASE
        WHEN j.existing IS NOT NULL THEN j.existing
        WHEN w.made ? j.id THEN (
            SELECT CASE WHEN (e.kind, e.pending_id) = (j.kind, j.pending_id)
                        THEN 'exists' ELSE 'exists_with_different_fields' END
            FROM judged e WHERE e.i = (w.made ->> j.id)::bigint)
        WHEN j.unfit IS NOT NULL THEN j.unfit
        WHEN w.resolved ? j.pending_id THEN
            CASE w.resolved ->> j.pending_id WHEN 'post' THEN 'pending_transfer_already_posted'
                 ELSE 'pending_transfer_already_voided' END
        ELSE 'created' END AS result) r
), inserted AS (
    INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount, ledger, code, pending_id, status,
                           reference)
    SELECT j.id, j.kind, j.debit_account_id, j.credit_account_id, j.amount, j.ledger, j.code, j.pending_id,
           CASE WHEN j.void THEN 'voided' ELSE 'posted' END, j.reference
    FROM walk w JOIN judged j ON j.i = w.i WHERE w.result = 'created'
    ON CONFLICT (id) DO NOTHING
    RETURNING {_TRANSFER_COLUMNS}
), resolved AS (
    UPDATE transfers t SET status = n.status, resolved_at = now() FROM inserted n
    WHERE t.id = n.pending_id AND t.id = ANY(ARRAY(SELECT pending_id FROM inserted))
    RETURNING t.id
), moves (account_id, debits_pending, debits_posted, credits_pending, credits_posted) AS (
    SELECT debit_account_id, -amount, CASE WHEN status = 'posted' THEN amount ELSE 0 END, 0::bigint, 0::bigint
    FROM inserted
    UNION ALL
    SELECT credit_account_id, 0::bigint, 0::bigint, -amount, CASE WHEN status = 'posted' THEN amount ELSE 0 END
    FROM inserted
), {_APPLY_MOVES}
{_ANSWER.format(resolved="(SELECT count(*) FROM resolved)")}
"""


async def create_transfers(
    conn: asyncpg.Connection, transfers: Sequence[NewTransfer], *, details: bool = True
) -> list[Outcome]:
    """Create each transfer that can be created, in order; one ``Outcome`` per transfer. Without
    ``details`` the outcomes carry only their ``result`` (no ``Transfer`` built from each row: a
    caller that needs no more saves that per transfer)."""
    return await _judge(conn, _CREATE_SQL, list(transfers), _create_args, details)


async def resolve_pending(conn: asyncpg.Connection, resolutions: Sequence[Resolution]) -> list[Outcome]:
    """Post or void each pending transfer that can be, in order; one ``Outcome`` per resolution."""
    return await _judge(conn, _RESOLVE_SQL, list(resolutions), _resolve_args)


def _create_args(events: list[NewTransfer]) -> list[list[Any]]:
    return [
        [t.id for t in events], [t.debit_account_id for t in events], [t.credit_account_id for t in events],
        [t.amount for t in events], [t.code for t in events], [t.reference for t in events],
        [t.pending for t in events], [t.timeout_at if t.pending else None for t in events],
    ]


def _resolve_args(events: list[Resolution]) -> list[list[Any]]:
    return [[r.id for r in events], [r.pending_id for r in events], [r.void for r in events]]


_RESULTS = {result.value: result for result in Result}  # a dict probe; Result(value) is an enum call


async def _judge(conn: asyncpg.Connection, sql: str, events: list[Any], args: Any, details: bool = True) -> list[Outcome]:
    """Run a batch statement; events it judged ``created`` whose id a concurrent transaction
    committed meanwhile (``ON CONFLICT`` skipped them, so nothing was written for them) are
    judged again by a second statement, which sees that transfer and answers ``exists…``."""
    if not events:
        return []
    rows = await conn.fetch(sql, *args(events))
    first = rows[0]
    assert first["applied"] == first["accounts"], "every account of the batch is locked: all apply"
    assert first["resolved"] == sum(1 for r in rows if r["inserted"]), "each post or void resolves its pending transfer"
    outcomes = [Outcome(_RESULTS.get(r["result"]) or Result(r["result"]),
                        Transfer.from_row(r) if details and r["id"] is not None else None) for r in rows]
    raced = [k for k, r in enumerate(rows) if r["result"] == Result.CREATED and not r["inserted"]]
    if raced:
        again = await _judge(conn, sql, [events[k] for k in raced], args, details)
        assert all(o.result is not Result.CREATED for o in again), "a committed id is visible to the next statement"
        for k, outcome in zip(raced, again, strict=True):
            outcomes[k] = outcome
    return outcomes


async def set_pending_timeouts(
    conn: asyncpg.Connection, timeouts: Sequence[tuple[str, dt.datetime | None]]
) -> set[str]:
    """Give pending transfers a new timeout: (pending id, when; None: never — a load in flight).

    One statement; returns the ids that are still pending (their timeout is now as asked); the
    others (posted, voided, unknown) are left untouched. Each id at most once.
    """
    rows = await conn.fetch(
        "WITH v AS (SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS v(id, timeout_at)),"
        " p AS MATERIALIZED (SELECT id FROM transfers WHERE id = ANY($1::text[]) AND kind = 'pending'"
        "   AND status = 'pending' ORDER BY id FOR UPDATE),"
        " changed AS (UPDATE transfers t SET timeout_at = v.timeout_at FROM v"
        "   WHERE t.id = v.id AND t.id = ANY(ARRAY(SELECT id FROM p)) AND t.timeout_at IS DISTINCT FROM v.timeout_at"
        "   RETURNING t.id)"
        " SELECT id FROM p",
        [pending_id for pending_id, _ in timeouts],
        [when for _, when in timeouts],
    )
    return {row["id"] for row in rows}


async def expired_pending_ids(conn: asyncpg.Connection, *, limit: int) -> list[str]:
    """Pending transfers past their timeout, locked for this transaction (others skip them)."""
    rows = await conn.fetch(
        "SELECT id FROM transfers WHERE status = 'pending' AND timeout_at IS NOT NULL"
        " AND timeout_at <= now() ORDER BY timeout_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [r["id"] for r in rows]

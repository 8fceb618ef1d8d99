"""The double-entry ledger every flow moves money and points through.

Vocabulary and guarantees follow TigerBeetle: a transfer has a client-chosen id; a retry
with the same id and the same content answers ``exists`` (the first result), the same id
with other content answers ``exists_with_different_fields`` and changes nothing. Transfers
are single-phase (posted at once) or two-phase: a *pending* transfer reserves the amount,
a *post* completes it, a *void* releases it, and the sweeper voids a pending transfer whose
``timeout_at`` has passed (a pending transfer with no timeout — a load in progress — is
never swept).

Every function here takes a connection that is already inside a transaction and changes
nothing unless it returns ``created``: the caller commits the transfer together with its
own business rows, so balances and their transfers always commit together. Accounts are
locked in id order, so concurrent transfers between the same accounts cannot deadlock
each other; retry any remaining serialization failure with ``db.retry_transaction``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

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


_TRANSFER_COLUMNS = (
    "id, kind, debit_account_id, credit_account_id, amount, ledger, code, pending_id, "
    "status, timeout_at, reference"
)


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


async def _lock_accounts(conn: asyncpg.Connection, *ids: int) -> dict[int, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT id, ledger, no_overdraft, debits_pending, debits_posted, credits_posted"
        " FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
        sorted(set(ids)),
    )
    return {int(r["id"]): r for r in rows}


# One round trip for a transfer that can be created: lock both accounts in id order (the
# MATERIALIZED CTE is read whole, its ORDER BY id ... FOR UPDATE takes the row locks in id
# order), check ledgers and no-overdraft on the locked rows, insert the transfer (ON CONFLICT:
# an id that exists, or commits meanwhile, inserts nothing) and apply the balances only when
# the insert happened. Anything else is explained afterwards by ``_refusal`` (no writes).
# Every row is reached by its key (accounts by an id array): the plan stays index lookups
# even on tables without statistics.
_CREATE_SQL = f"""
WITH locked AS MATERIALIZED (
    SELECT id, ledger, no_overdraft, debits_pending, debits_posted, credits_posted
    FROM accounts WHERE id = ANY(ARRAY[$3::bigint, $4::bigint]) ORDER BY id FOR UPDATE
), allowed AS (
    SELECT d.ledger FROM locked d, locked c
    WHERE d.id = $3::bigint AND c.id = $4::bigint AND d.ledger = c.ledger
      AND (NOT d.no_overdraft OR d.debits_posted + d.debits_pending + $5::bigint <= d.credits_posted)
), inserted AS (
    INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount, ledger, code, status,
                           timeout_at, reference)
    SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::bigint, allowed.ledger, $6::text, $7::text,
           $8::timestamptz, $9::text
    FROM allowed
    ON CONFLICT (id) DO NOTHING
    RETURNING {_TRANSFER_COLUMNS}
), applied AS (
    UPDATE accounts a SET
        debits_pending  = a.debits_pending  + CASE WHEN a.id = $3::bigint THEN $10::bigint ELSE 0 END,
        debits_posted   = a.debits_posted   + CASE WHEN a.id = $3::bigint THEN $11::bigint ELSE 0 END,
        credits_pending = a.credits_pending + CASE WHEN a.id = $4::bigint THEN $10::bigint ELSE 0 END,
        credits_posted  = a.credits_posted  + CASE WHEN a.id = $4::bigint THEN $11::bigint ELSE 0 END
    WHERE a.id = ANY(ARRAY[$3::bigint, $4::bigint]) AND EXISTS (SELECT FROM inserted)
    RETURNING a.id
)
SELECT {_TRANSFER_COLUMNS}, (SELECT count(*) FROM applied) AS applied, (SELECT count(*) FROM locked) AS locked
FROM inserted
"""


async def create_transfer(
    conn: asyncpg.Connection,
    *,
    id: str,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    code: str = "",
    reference: str = "",
    pending: bool = False,
    timeout_at: dt.datetime | None = None,
) -> Outcome:
    """Create a posted transfer, or a pending one (``pending=True``, optional timeout)."""
    if amount <= 0:
        return Outcome(Result.AMOUNT_MUST_BE_POSITIVE)
    if debit_account_id == credit_account_id:
        return Outcome(Result.SAME_ACCOUNT)
    kind, status = ("pending", "pending") if pending else ("single", "posted")
    row = await conn.fetchrow(
        _CREATE_SQL,
        id,
        kind,
        debit_account_id,
        credit_account_id,
        amount,
        code,
        status,
        timeout_at if pending else None,
        reference,
        amount if pending else 0,
        0 if pending else amount,
    )
    if row is not None:
        if row["applied"] != 2:  # cannot happen: both accounts were locked and checked
            raise RuntimeError(f"transfer {id}: balances of {row['applied']} accounts applied, not 2")
        return Outcome(Result.CREATED, Transfer.from_row(row))
    return await _refusal(
        conn, id=id, kind=kind, debit_account_id=debit_account_id, credit_account_id=credit_account_id,
        amount=amount, code=code,
    )


async def _refusal(
    conn: asyncpg.Connection,
    *,
    id: str,
    kind: str,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    code: str,
) -> Outcome:
    """Why ``_CREATE_SQL`` created nothing, in the order the guarantees are checked: an
    existing id first, then missing accounts, ledgers, no-overdraft. The accounts are
    already locked by this transaction, so what is read here is what the insert saw."""
    existing = await get_transfer(conn, id)
    if existing is not None:
        same = (
            existing.kind == kind
            and existing.debit_account_id == debit_account_id
            and existing.credit_account_id == credit_account_id
            and existing.amount == amount
            and existing.code == code
        )
        return Outcome(Result.EXISTS if same else Result.EXISTS_WITH_DIFFERENT_FIELDS, existing)
    accounts = await _lock_accounts(conn, debit_account_id, credit_account_id)
    if len(accounts) != 2:
        return Outcome(Result.ACCOUNT_NOT_FOUND)
    debit, credit = accounts[debit_account_id], accounts[credit_account_id]
    if debit["ledger"] != credit["ledger"]:
        return Outcome(Result.LEDGER_MISMATCH)
    if debit["no_overdraft"] and (
        debit["debits_posted"] + debit["debits_pending"] + amount > debit["credits_posted"]
    ):
        return Outcome(Result.EXCEEDS_CREDITS)
    # Not reached in practice: ON CONFLICT waits for a concurrent insert of the same id, and
    # its commit makes it visible to get_transfer above. Answered as before this was one
    # statement; nothing was written.
    return Outcome(Result.EXISTS_WITH_DIFFERENT_FIELDS, None)


# A post or void that can happen, in one round trip: lock both accounts in id order (read
# whole before the insert), append the post/void row, mark the pending transfer resolved,
# move its amount out of pending (into posted for a post).
_RESOLVE_SQL = f"""
WITH locked AS MATERIALIZED (
    SELECT id FROM accounts WHERE id = ANY(ARRAY[$3::bigint, $4::bigint]) ORDER BY id FOR UPDATE
), inserted AS (
    INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount, ledger, code, pending_id,
                           status, reference)
    SELECT $1::text, $2::text, $3::bigint, $4::bigint, $5::bigint, $6::text, $7::text, $8::text, $9::text,
           $10::text
    WHERE (SELECT count(*) FROM locked) = 2
    RETURNING {_TRANSFER_COLUMNS}
), resolved AS (
    UPDATE transfers SET status = $9::text, resolved_at = now()
    WHERE id = $8::text AND EXISTS (SELECT FROM inserted)
    RETURNING id
), applied AS (
    UPDATE accounts a SET
        debits_pending  = a.debits_pending  - CASE WHEN a.id = $3::bigint THEN $5::bigint ELSE 0 END,
        debits_posted   = a.debits_posted   + CASE WHEN a.id = $3::bigint THEN $11::bigint ELSE 0 END,
        credits_pending = a.credits_pending - CASE WHEN a.id = $4::bigint THEN $5::bigint ELSE 0 END,
        credits_posted  = a.credits_posted  + CASE WHEN a.id = $4::bigint THEN $11::bigint ELSE 0 END
    WHERE a.id = ANY(ARRAY[$3::bigint, $4::bigint]) AND EXISTS (SELECT FROM inserted)
    RETURNING a.id
)
SELECT {_TRANSFER_COLUMNS}, (SELECT count(*) FROM resolved) AS resolved, (SELECT count(*) FROM applied) AS applied
FROM inserted
"""


async def _resolve(
    conn: asyncpg.Connection, *, id: str, pending_id: str, post: bool, now: dt.datetime | None
) -> Outcome:
    kind = "post" if post else "void"
    existing = await get_transfer(conn, id)
    if existing is not None:
        same = existing.kind == kind and existing.pending_id == pending_id
        return Outcome(Result.EXISTS if same else Result.EXISTS_WITH_DIFFERENT_FIELDS, existing)
    row = await conn.fetchrow(
        f"SELECT {_TRANSFER_COLUMNS}, now() AS db_now FROM transfers WHERE id = $1 AND kind = 'pending' FOR UPDATE",
        pending_id,
    )
    if row is None:
        return Outcome(Result.PENDING_NOT_FOUND)
    pending = Transfer.from_row(row)
    if pending.status == "posted":
        return Outcome(Result.PENDING_ALREADY_POSTED, pending)
    if pending.status == "voided":
        return Outcome(Result.PENDING_ALREADY_VOIDED, pending)
    if post and pending.timeout_at is not None:
        current = now or row["db_now"]  # now(): the transaction's start, as a separate SELECT gave
        if pending.timeout_at <= current:
            return Outcome(Result.PENDING_EXPIRED, pending)
    inserted = await conn.fetchrow(
        _RESOLVE_SQL,
        id,
        kind,
        pending.debit_account_id,
        pending.credit_account_id,
        pending.amount,
        pending.ledger,
        pending.code,
        pending_id,
        "posted" if post else "voided",
        pending.reference,
        pending.amount if post else 0,
    )
    if inserted is None or inserted["resolved"] != 1 or inserted["applied"] != 2:
        # cannot happen: a pending transfer's accounts exist (foreign keys) and it is locked here
        raise RuntimeError(f"transfer {id}: resolving {pending_id} did not apply")
    return Outcome(Result.CREATED, Transfer.from_row(inserted))


async def post_pending(
    conn: asyncpg.Connection, *, id: str, pending_id: str, now: dt.datetime | None = None
) -> Outcome:
    """Complete a pending transfer: its amount moves from pending to posted."""
    return await _resolve(conn, id=id, pending_id=pending_id, post=True, now=now)


async def void_pending(conn: asyncpg.Connection, *, id: str, pending_id: str) -> Outcome:
    """Release a pending transfer: its reservation disappears, nothing moves."""
    return await _resolve(conn, id=id, pending_id=pending_id, post=False, now=None)


# The common case of a post in one round trip: the pending transfer is still pending and not
# expired, the post's id is unused. Same locks in the same order as ``_resolve`` (the pending
# row, then both accounts in id order), same rows written.
_POST_AT_ONCE_SQL = f"""
WITH p AS MATERIALIZED (
    SELECT id, debit_account_id, credit_account_id, amount, ledger, code, reference, status, timeout_at
    FROM transfers WHERE id = $2::text AND kind = 'pending' FOR UPDATE
), ok AS MATERIALIZED (
    SELECT * FROM p WHERE status = 'pending' AND (timeout_at IS NULL OR timeout_at > now())
), locked AS MATERIALIZED (
    SELECT id FROM accounts
    WHERE id = ANY(ARRAY[(SELECT debit_account_id FROM ok), (SELECT credit_account_id FROM ok)])
    ORDER BY id FOR UPDATE
), inserted AS (
    INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount, ledger, code, pending_id,
                           status, reference)
    SELECT $1::text, 'post', ok.debit_account_id, ok.credit_account_id, ok.amount, ok.ledger, ok.code, ok.id,
           'posted', ok.reference
    FROM ok WHERE (SELECT count(*) FROM locked) = 2
    ON CONFLICT (id) DO NOTHING
    RETURNING {_TRANSFER_COLUMNS}
), resolved AS (
    UPDATE transfers SET status = 'posted', resolved_at = now()
    WHERE id = $2::text AND EXISTS (SELECT FROM inserted)
    RETURNING id
), applied AS (
    UPDATE accounts a SET
        debits_pending  = a.debits_pending  - CASE WHEN a.id = i.debit_account_id THEN i.amount ELSE 0 END,
        debits_posted   = a.debits_posted   + CASE WHEN a.id = i.debit_account_id THEN i.amount ELSE 0 END,
        credits_pending = a.credits_pending - CASE WHEN a.id = i.credit_account_id THEN i.amount ELSE 0 END,
        credits_posted  = a.credits_posted  + CASE WHEN a.id = i.credit_account_id THEN i.amount ELSE 0 END
    FROM inserted i
    WHERE a.id = ANY(ARRAY[(SELECT debit_account_id FROM ok), (SELECT credit_account_id FROM ok)])
    RETURNING a.id
)
SELECT {_TRANSFER_COLUMNS}, (SELECT count(*) FROM resolved) AS resolved, (SELECT count(*) FROM applied) AS applied
FROM inserted
"""


async def post_pending_at_once(conn: asyncpg.Connection, *, id: str, pending_id: str) -> Outcome:
    """``post_pending`` (at the transaction's time) in one statement when the post can happen.

    Anything else — an id already used, a pending transfer missing, posted, voided or expired —
    is answered by ``post_pending`` itself, so the results are exactly its own.
    """
    row = await conn.fetchrow(_POST_AT_ONCE_SQL, id, pending_id)
    if row is None:
        return await post_pending(conn, id=id, pending_id=pending_id)
    if row["resolved"] != 1 or row["applied"] != 2:
        # cannot happen: the pending row and both accounts were locked by this statement
        raise RuntimeError(f"transfer {id}: posting {pending_id} did not apply")
    return Outcome(Result.CREATED, Transfer.from_row(row))


# Many posts in one round trip (a group commit's batch): lock the pending rows in id order,
# then every account they touch in id order; append the post rows, mark the pendings posted,
# and apply each account's summed change once (a merchant fund shared by the batch is
# updated once, not once per post).
_POST_MANY_SQL = f"""
WITH v AS (
    SELECT * FROM unnest($1::text[], $2::text[]) AS v(post_id, pending_id)
), p AS MATERIALIZED (
    SELECT id, debit_account_id, credit_account_id, amount, ledger, code, reference, status, timeout_at
    FROM transfers WHERE id = ANY($2::text[]) AND kind = 'pending' ORDER BY id FOR UPDATE
), ok AS MATERIALIZED (
    SELECT v.post_id, p.* FROM p JOIN v ON v.pending_id = p.id
    WHERE p.status = 'pending' AND (p.timeout_at IS NULL OR p.timeout_at > now())
), locked AS MATERIALIZED (
    SELECT id FROM accounts
    WHERE id = ANY(ARRAY(SELECT debit_account_id FROM ok UNION SELECT credit_account_id FROM ok))
    ORDER BY id FOR UPDATE
), inserted AS (
    INSERT INTO transfers (id, kind, debit_account_id, credit_account_id, amount, ledger, code, pending_id,
                           status, reference)
    SELECT ok.post_id, 'post', ok.debit_account_id, ok.credit_account_id, ok.amount, ok.ledger, ok.code, ok.id,
           'posted', ok.reference
    FROM ok WHERE (SELECT count(*) FROM locked) > 0
    ON CONFLICT (id) DO NOTHING
    RETURNING {_TRANSFER_COLUMNS}
), resolved AS (
    UPDATE transfers SET status = 'posted', resolved_at = now()
    WHERE id = ANY(ARRAY(SELECT pending_id FROM inserted))
    RETURNING id
), deltas AS MATERIALIZED (
    SELECT id, sum(dp) AS dp, sum(dpo) AS dpo, sum(cp) AS cp, sum(cpo) AS cpo FROM (
        SELECT debit_account_id AS id, -amount AS dp, amount AS dpo, 0::bigint AS cp, 0::bigint AS cpo FROM inserted
        UNION ALL SELECT credit_account_id, 0::bigint, 0::bigint, -amount, amount FROM inserted
    ) x GROUP BY id
), applied AS (
    UPDATE accounts a SET
        debits_pending  = a.debits_pending  + d.dp,
        debits_posted   = a.debits_posted   + d.dpo,
        credits_pending = a.credits_pending + d.cp,
        credits_posted  = a.credits_posted  + d.cpo
    FROM deltas d
    WHERE a.id = d.id AND a.id = ANY(ARRAY(SELECT id FROM deltas))
    RETURNING a.id
)
SELECT {_TRANSFER_COLUMNS}, (SELECT count(*) FROM resolved) AS resolved, (SELECT count(*) FROM applied) AS applied,
       (SELECT count(*) FROM deltas) AS accounts
FROM inserted
"""


async def post_pending_many(conn: asyncpg.Connection, posts: list[tuple[str, str]]) -> dict[str, Transfer]:
    """Several ``post_pending_at_once`` in one statement: (post id, pending id) pairs, each pending once.

    Returns the posts created, by id. A pair missing from the answer changed nothing (its
    pending transfer is not pending or expired, or its id is used): ask ``post_pending`` why.
    """
    if len({pending for _, pending in posts}) != len(posts):
        raise ValueError("a pending transfer may be posted once per call")
    rows = await conn.fetch(_POST_MANY_SQL, [i for i, _ in posts], [pending for _, pending in posts])
    if rows and (rows[0]["resolved"] != len(rows) or rows[0]["applied"] != rows[0]["accounts"]):
        # cannot happen: every pending row and account was locked by this statement
        raise RuntimeError("posting a batch of pending transfers did not apply")
    return {row["id"]: Transfer.from_row(row) for row in rows}


async def hold_pending(conn: asyncpg.Connection, pending_id: str) -> bool:
    """Remove a pending transfer's timeout, so the sweeper never voids it (a load in flight).

    Returns False when the transfer is not pending any more.
    """
    status = await conn.execute(
        "UPDATE transfers SET timeout_at = NULL WHERE id = $1 AND kind = 'pending' AND status = 'pending'",
        pending_id,
    )
    return status.endswith(" 1")


async def expired_pending_ids(conn: asyncpg.Connection, *, limit: int) -> list[str]:
    """Pending transfers past their timeout, locked for this transaction (others skip them)."""
    rows = await conn.fetch(
        "SELECT id FROM transfers WHERE status = 'pending' AND timeout_at IS NOT NULL"
        " AND timeout_at <= now() ORDER BY timeout_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )
    return [r["id"] for r in rows]

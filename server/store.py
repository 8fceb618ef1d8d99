"""The DD server's database work: terminals and sign-in, CPU cards, card deposits, receipts.

Orders and their load life cycle live in ``recharge.orders`` (shared with the order API);
money moves only through ``recharge.ledger.transfers``. Every function takes a connection; the ones
that change several rows expect the caller's transaction, so a refusal leaves nothing behind:
either ``run_transaction`` (one transaction on a pool connection taken through
``Platform.acquire`` — ``Busy`` when the pool is exhausted — retried whole by the retry policy;
sign-in, DD21, DD73) or a batch of the DD service's group commit (``server.dd_context``: the
recharge steps DD11–DD19, one commit per batch).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from recharge import db
from recharge.context import Platform
from recharge.ledger import transfers as ledger
from recharge.orders.model import LOCAL_TZ, Order, columns_of
from recharge.orders.receipts import record_id_of

T = TypeVar("T")


async def run_transaction(ctx: Platform, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work`` in one transaction on a bounded pool connection (``Busy`` when the pool is exhausted),
    retried whole by the platform's retry policy (``recharge.db.RetryPolicy``)."""
    return await db.retry_transaction(ctx.acquire, work, policy=db.RetryPolicy.from_settings(ctx.settings))


# --- terminals and sign-in -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Terminal:
    id: int
    code: str
    merchant_id: int
    enabled: bool
    pki_no: str | None
    pki_enabled: bool
    locked: bool  # an operator's lock: until an operator unlocks it
    signin_failures: int  # failed sign-ins in a row since the module proved its key
    signed_in_until: dt.datetime | None
    signin_pki: str | None
    signin_locked_until: dt.datetime | None  # the lockout after failed sign-ins, bounded
    signin_peer: str | None  # the address the valid sign-in came from

    def signed_in(self, now: dt.datetime) -> bool:
        return self.enabled and self.signed_in_until is not None and self.signed_in_until > now

    def locked_at(self, now: dt.datetime) -> bool:
        return self.locked or (self.signin_locked_until is not None and self.signin_locked_until > now)

    def can_sign_in(self, now: dt.datetime) -> bool:
        """Registered for DD sign-in, enabled, and not locked: what DD01 and DD03 require."""
        return self.enabled and self.pki_no is not None and not self.locked_at(now)


_TERMINAL_COLUMNS = (
    "id, code, merchant_id, enabled, pki_no, pki_enabled, locked, signin_failures, signed_in_until, signin_pki,"
    " signin_locked_until, signin_peer"
)


async def get_terminal(conn: asyncpg.Connection, code: str) -> Terminal | None:
    row = await conn.fetchrow(f"SELECT {_TERMINAL_COLUMNS} FROM terminals WHERE code = $1", code)
    return Terminal(*row) if row else None


_TERMINAL_ALIASED = ", ".join(f"t.{c.strip()} AS t_{c.strip()}" for c in _TERMINAL_COLUMNS.split(","))
_TERMINAL_KEYS = tuple(f"t_{c.strip()}" for c in _TERMINAL_COLUMNS.split(","))  # a row's terminal, by name
_ORDER_COLUMNS = columns_of("o")


async def terminal_and_order(
    conn: asyncpg.Connection, code: str, order_no: str | None
) -> tuple[Terminal | None, Order | None, str | None]:
    """DD11's reads in one statement: the terminal by code, the order by number (None: not asked)
    and the kind of the card the order names (None: no card named, or no row for it yet)."""
    row = await conn.fetchrow(
        f"SELECT {_TERMINAL_ALIASED}, {_ORDER_COLUMNS}, c.kind AS c_kind FROM (VALUES (1)) AS one"
        " LEFT JOIN terminals t ON t.code = $1 LEFT JOIN orders o ON o.order_no = $2"
        " LEFT JOIN cards c ON c.card_no = o.card_no",
        code,
        order_no,
    )
    assert row is not None
    return _terminal_order_kind(row)


# DD11's reads of several terminals at once, one row per (code, order number) in their order: a
# lateral lookup per pair, so each is an index probe however few pairs the planner expects.
_TERMINALS_AND_ORDERS = (
    f"SELECT t.*, o.*, c.kind AS c_kind FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(code, order_no, i)"
    f" LEFT JOIN LATERAL (SELECT {_TERMINAL_ALIASED} FROM terminals t WHERE t.code = k.code LIMIT 1) t ON true"
    f" LEFT JOIN LATERAL (SELECT {_ORDER_COLUMNS} FROM orders o WHERE o.order_no = k.order_no LIMIT 1) o ON true"
    " LEFT JOIN LATERAL (SELECT c.kind FROM cards c WHERE c.card_no = o.card_no LIMIT 1) c ON true"
    " ORDER BY k.i"
)


def _terminal_order_kind(row: asyncpg.Record) -> tuple[Terminal | None, Order | None, str | None]:
    terminal = Terminal(*[row[key] for key in _TERMINAL_KEYS]) if row["t_id"] is not None else None
    order = Order.from_row(row) if row["order_no"] is not None else None
    return terminal, order, row["c_kind"]


async def terminals_and_orders(
    conn: asyncpg.Connection, items: list[tuple[str, str | None]]
) -> list[tuple[Terminal | None, Order | None, str | None]]:
    """``terminal_and_order`` for several (code, order number) pairs in one statement, in their order."""
    if len(items) == 1:
        return [await terminal_and_order(conn, *items[0])]
    rows = await conn.fetch(_TERMINALS_AND_ORDERS, [code for code, _ in items], [no for _, no in items])
    return [_terminal_order_kind(row) for row in rows]


@dataclass(frozen=True, slots=True)
class LockPolicy:
    """When failed sign-ins lock a terminal, and for how long (settings ``signin_*``)."""

    max_failures: int  # failures in a row, after the module proved its key, that lock
    base_s: int  # the first lock's length; each further lock in a row lasts twice as long
    max_s: int  # no lock lasts longer


async def record_signin_failure(
    conn: asyncpg.Connection, terminal_id: int, policy: LockPolicy
) -> tuple[Terminal, bool]:
    """One more failed sign-in in a row after the module proved its key; at ``max_failures`` the
    terminal locks for ``base_s · 2^(locks in a row)`` (at most ``max_s``) and counting restarts.
    The terminal, and whether this failure locked it."""
    row = await conn.fetchrow(
        "WITH t AS (SELECT id AS locked_id, signin_failures + 1 >= $2 AS locks FROM terminals WHERE id = $1 FOR UPDATE),"
        " u AS (UPDATE terminals SET"
        "  signin_failures = CASE WHEN t.locks THEN 0 ELSE signin_failures + 1 END,"
        "  signin_locks = signin_locks + t.locks::int,"
        "  signin_locked_until = CASE WHEN t.locks"
        "   THEN now() + make_interval(secs => least($4::float8, $3::float8 * 2 ^ least(signin_locks, 30)))"
        "   ELSE signin_locked_until END"
        f" FROM t WHERE terminals.id = t.locked_id RETURNING {_TERMINAL_COLUMNS}, t.locks),"
        # the sign-in history (terminal_signins) gets its line in the same statement
        " h AS (INSERT INTO terminal_signins (terminal_code, outcome)"
        " SELECT code, CASE WHEN locks THEN 'failed_locked' ELSE 'failed' END FROM u)"
        " SELECT * FROM u",
        terminal_id,
        policy.max_failures,
        policy.base_s,
        policy.max_s,
    )
    assert row is not None
    return Terminal(*row[:-1]), bool(row["locks"])


async def record_signin_probe(conn: asyncpg.Connection, terminal_id: int, window_s: int) -> int:
    """A sign-in of this terminal failed before its module proved its key: counted in a window
    of ``window_s`` (never towards the lock). The count in the current window."""
    count = await conn.fetchval(
        "UPDATE terminals SET"
        "  signin_probes = CASE WHEN signin_probes_since > now() - make_interval(secs => $2::float8)"
        "   THEN signin_probes + 1 ELSE 1 END,"
        "  signin_probes_since = CASE WHEN signin_probes_since > now() - make_interval(secs => $2::float8)"
        "   THEN signin_probes_since ELSE now() END"
        " WHERE id = $1 RETURNING signin_probes",
        terminal_id,
        window_s,
    )
    return int(count or 0)


async def record_signin_success(
    conn: asyncpg.Connection, terminal_id: int, pki_no: str, until: dt.datetime, peer: str | None
) -> str | None:
    """Persist a sign-in from ``peer`` (and its line of sign-in history); its 16-digit handshake
    serial, or None if the terminal was locked or disabled meanwhile. The failure counts and the
    lock streak start again."""
    serial = int(await conn.fetchval("SELECT nextval('dd_signin_serial_seq')"))
    text = f"{serial % 10**16:016d}"
    signed = await conn.fetchval(
        "WITH t AS (UPDATE terminals SET signed_in_until = $2, signin_serial = $3, signin_pki = $4, signin_peer = $5,"
        " signin_failures = 0, signin_locks = 0, signin_locked_until = NULL"
        " WHERE id = $1 AND NOT locked AND enabled AND (signin_locked_until IS NULL OR signin_locked_until <= now())"
        " RETURNING code),"
        " h AS (INSERT INTO terminal_signins (terminal_code, outcome) SELECT code, 'ok' FROM t)"
        " SELECT count(*) FROM t",
        terminal_id,
        until,
        text,
        pki_no,
        peer,
    )
    return text if signed == 1 else None


def signin_expiry(now: dt.datetime, end_hour: int) -> dt.datetime:
    """The end of the business day containing ``now``: the next ``end_hour`` o'clock, local time."""
    local = now.astimezone(LOCAL_TZ)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    candidate = day_start + dt.timedelta(hours=end_hour)
    if candidate <= local:
        candidate += dt.timedelta(days=1)
    # Re-localise: a fixed-offset zone here, but never carry a stale offset across days.
    return candidate.astimezone(dt.UTC)


# --- CPU cards -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Card:
    card_no: str
    kind: str
    deposit_open: bool
    last_balance_cents: int | None


async def ensure_cpu_card(conn: asyncpg.Connection, card_no: str, *, for_update: bool = False) -> Card:
    """The card row of a logical card number, created as a 'cpu' card on first sight."""
    await conn.execute(
        "INSERT INTO cards (card_no, kind) VALUES ($1, 'cpu') ON CONFLICT (card_no) DO NOTHING", card_no
    )
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT card_no, kind, deposit_open, last_balance_cents FROM cards WHERE card_no = $1{lock}", card_no
    )
    assert row is not None
    return Card(*row)


async def record_cpu_card_balances(conn: asyncpg.Connection, items: list[tuple[str, int]]) -> set[str]:
    """DD13: remember the balances CPU cards reported, creating the row of a card seen for the first
    time; one statement. Returns the card numbers that are CPU cards (recorded); a number that
    belongs to a card of another kind is left untouched. A card named twice keeps its last balance.
    """
    last = dict(items)
    rows = await conn.fetch(
        "INSERT INTO cards (card_no, kind, last_balance_cents)"
        " SELECT card_no, 'cpu', balance FROM unnest($1::text[], $2::bigint[]) AS v(card_no, balance)"
        " ON CONFLICT (card_no) DO UPDATE SET last_balance_cents = EXCLUDED.last_balance_cents"
        " WHERE cards.kind = 'cpu' RETURNING card_no",
        list(last),
        list(last.values()),
    )
    return {row["card_no"] for row in rows}


async def fund_available(conn: asyncpg.Connection, merchant_id: int) -> int:
    """What the merchant's recharge fund can still reserve (0 when it has no fund)."""
    row = await conn.fetchrow(
        "SELECT credits_posted - debits_posted - debits_pending AS available FROM accounts"
        " WHERE merchant_id = $1 AND kind = $2 AND ledger = 'CNY' AND card_no IS NULL",
        merchant_id,
        ledger.AccountKind.RECHARGE_FUND.value,
    )
    return int(row["available"]) if row else 0


async def set_load_random(conn: asyncpg.Connection, order_no: str, random4: bytes) -> None:
    await conn.execute("UPDATE orders SET load_random = $2 WHERE order_no = $1", order_no, random4.hex().upper())


async def record_recovery_peer(conn: asyncpg.Connection, order_no: str, peer: str | None) -> None:
    """DD21 step 0x01: where the latest recovery of a *loading* order came from."""
    await conn.execute("UPDATE orders SET recovery_peer = $2 WHERE order_no = $1", order_no, peer)


async def get_load_random(conn: asyncpg.Connection, order_no: str) -> bytes | None:
    value = await conn.fetchval("SELECT load_random FROM orders WHERE order_no = $1", order_no)
    return bytes.fromhex(value) if value else None


# dd_record_seq moves in steps of this many (migration 0101): each nextval reserves a block.
RECORD_ID_BLOCK = 1000


class RecordIds:
    """Receipt record ids from blocks of ``dd_record_seq``: one nextval per ``RECORD_ID_BLOCK`` ids.

    One per DD service (as a sequence cache is one per session): blocks are disjoint, so ids
    are unique across processes and restarts; a restart or a rolled-back step leaves a gap,
    which a receipt number may have. Ids are handed out between awaits, so concurrent
    callers never share one.
    """

    def __init__(self) -> None:
        self._next = self._end = 0

    async def take(self, conn: asyncpg.Connection, count: int, now: dt.datetime) -> list[str]:
        seqs: list[int] = []
        while len(seqs) < count:
            if self._next >= self._end:
                start = int(await conn.fetchval("SELECT nextval('dd_record_seq')"))
                self._next, self._end = start, start + RECORD_ID_BLOCK
            n = min(count - len(seqs), self._end - self._next)
            seqs.extend(range(self._next, self._next + n))
            self._next += n
        return [record_id_of(seq, now) for seq in seqs]


async def last_known_balance(conn: asyncpg.Connection, card_no: str | None) -> int:
    """A CPU card's newest balance the platform knows: after its latest load, else at first sight."""
    if card_no is None:
        return 0
    value = await conn.fetchval(
        "SELECT coalesce("
        " (SELECT balance_after_cents FROM orders WHERE card_no = $1 AND balance_after_cents IS NOT NULL"
        "  ORDER BY loaded_at DESC NULLS LAST LIMIT 1),"
        " (SELECT last_balance_cents FROM cards WHERE card_no = $1), 0)",
        card_no,
    )
    return int(value)


# --- card deposit (DD73) ---------------------------------------------------------------------


class DepositRefused(Exception):
    """Opening an open card, closing a closed one, or a refund that is not the deposit held."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def move_deposit(
    conn: asyncpg.Connection, *, card_no: str, merchant_id: int, open_: bool, amount: int, peer: str | None = None
) -> None:
    """Open (merchant → card deposit) or close (refund) a card's deposit, asked from ``peer`` (the
    terminal's address, kept with the card); inside a transaction.

    The card row is locked first so two terminals cannot open the same card twice.
    """
    card = await ensure_cpu_card(conn, card_no, for_update=True)
    if card.kind != "cpu":
        raise DepositRefused("purse_type")
    if card.deposit_open == open_:
        raise DepositRefused("already_open" if open_ else "already_closed")
    merchant_acct = await ledger.ensure_account(
        conn, ledger="CNY", kind=ledger.AccountKind.MERCHANT_DEPOSITS, merchant_id=merchant_id,
        no_overdraft=False, name="card deposits collected",
    )
    card_acct = await ledger.ensure_account(
        conn, ledger="CNY", kind=ledger.AccountKind.CARD_DEPOSIT, card_no=card_no, name="card deposit"
    )
    if not open_:
        held = (await ledger.get_balance(conn, card_acct)).available
        if held != amount:
            raise DepositRefused("amount")
    transfer_id = f"deposit:{card_no}:{'open' if open_ else 'close'}:{uuid.uuid4().hex}"
    debit, credit = (merchant_acct, card_acct) if open_ else (card_acct, merchant_acct)
    move = ledger.NewTransfer(
        transfer_id, debit, credit, amount, code="card_deposit_open" if open_ else "card_deposit_close",
        reference=card_no,
    )
    (await ledger.create_transfers(conn, [move]))[0].check(transfer_id)
    await conn.execute(
        "UPDATE cards SET deposit_open = $2, deposit_peer = $3 WHERE card_no = $1", card_no, open_, peer
    )

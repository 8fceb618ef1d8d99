"""Recharge orders (SPEC 2): numbers, creation, payment, the load life cycle, queries and
daily settlement — the one order module both the DD server and the order API use.

An order is paid by a **pending** ledger transfer ``order:<order_no>:pay`` from its
merchant's recharge fund to the card's purse; its ``timeout_at`` is the order's
``expires_at``, so ``recharge.sweeper`` voids the reservation of an order not loaded in time
and marks the order ``06``. Once the MAC2 has left the platform (DD16) the order is
*loading*: the transfer's timeout is removed and only a proof from the card (DD21) or an
operator settles it. Every function takes a connection the caller may already have inside a
transaction; functions that change several rows open a (nested) transaction of their own,
so a refusal (``OrderError``) leaves nothing behind.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncpg

from recharge.ledger import transfers as ledger

LOCAL_TZ = zoneinfo.ZoneInfo("Asia/Shanghai")

# Order states (SPEC 2, seed 004 orderstep).
SUBMITTED = "01"
PAID = "02"
LOADED = "03"
CONFIRMED = "04"
SETTLED = "05"
VOIDED = "06"
STATES = (SUBMITTED, PAID, LOADED, CONFIRMED, SETTLED, VOIDED)

ORDER_NO_DIGITS = 20
_SEQ_DIGITS = 12  # order number = local date YYYYMMDD ‖ 12 digits of order_no_seq
PAY_CODE = "order_pay"


class OrderErrorCode(StrEnum):
    """Why an order operation was refused; each maps to a DD info code / API errmsg."""

    AMOUNT_INVALID = "amount_invalid"  # ≤ 0 or above the per-order limit
    CARD_INVALID = "card_invalid"  # not 16 digits
    CARD_REQUIRED = "card_required"  # paying needs the card whose purse is credited
    CARD_MISMATCH = "card_mismatch"  # the order names another card
    CARD_UNKNOWN = "card_unknown"  # no active CPU card of that number is registered (order API)
    SERIAL_REUSED = "serial_reused"  # biz_serial_no already used with other content
    NOT_FOUND = "not_found"
    NOT_PAYABLE = "not_payable"  # state is not 01
    NOT_LOADABLE = "not_loadable"  # expired, voided, loaded or loading
    EXPIRED = "expired"
    FUND_EMPTY = "fund_empty"  # the merchant's recharge fund does not cover it
    BAD_REQUEST = "bad_request"  # an operator's request without what it needs (outcome, reason)


class OrderError(Exception):
    """An order operation was refused; nothing was changed."""

    def __init__(self, code: OrderErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Order:
    order_no: str
    merchant_id: int
    platform_id: int | None
    biz_serial_no: str | None
    request_digest: str | None
    card_no: str | None
    amount_cents: int
    state: str
    loading: bool
    pay_transfer_id: str | None
    terminal_code: str | None
    online_serial: int | None
    balance_before_cents: int | None
    balance_after_cents: int | None
    load_date: str | None
    load_time: str | None
    record_id: str | None
    extra: dict[str, Any]
    created_at: dt.datetime
    paid_at: dt.datetime | None
    expires_at: dt.datetime | None
    loading_since: dt.datetime | None
    loaded_at: dt.datetime | None
    confirmed_at: dt.datetime | None
    settled_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Order:
        values = {name: row[name] for name in _ORDER_FIELDS}
        extra = values["extra"]
        if isinstance(extra, str):  # a pool without the jsonb codec
            values["extra"] = json.loads(extra)
        return cls(**values)

    @property
    def order_no_bcd(self) -> bytes:
        """The order number as DD11/DD19/DD21 carry it: 10 bytes BCD."""
        return bytes.fromhex(self.order_no)


_ORDER_FIELDS = tuple(f.name for f in fields(Order))
_COLUMNS = ", ".join(_ORDER_FIELDS)
_QUALIFIED_COLUMNS = ", ".join(f"orders.{f.name}" for f in fields(Order))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def local_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(LOCAL_TZ).date()


def is_order_no(text: object) -> bool:
    return isinstance(text, str) and len(text) == ORDER_NO_DIGITS and text.isascii() and text.isdigit()


async def new_order_no(conn: asyncpg.Connection, now: dt.datetime | None = None) -> str:
    """A fresh 20-digit order number: local date ‖ the next value of order_no_seq."""
    seq = int(await conn.fetchval("SELECT nextval('order_no_seq')"))
    day = local_date(now or _now()).strftime("%Y%m%d")
    return f"{day}{seq % 10**_SEQ_DIGITS:0{_SEQ_DIGITS}d}"


async def get_order(conn: asyncpg.Connection, order_no: str, *, for_update: bool = False) -> Order | None:
    if not is_order_no(order_no):
        return None
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM orders WHERE order_no = $1{lock}", order_no)
    return Order.from_row(row) if row else None


async def get_order_by_serial(conn: asyncpg.Connection, platform_id: int, biz_serial_no: str) -> Order | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM orders WHERE platform_id = $1 AND biz_serial_no = $2",
        platform_id,
        biz_serial_no,
    )
    return Order.from_row(row) if row else None


def _check_card(card_no: str | None) -> None:
    if card_no is not None and not (len(card_no) == 16 and card_no.isascii() and card_no.isdigit()):
        raise OrderError(OrderErrorCode.CARD_INVALID, "card number must be 16 digits")


async def check_orderable_card(conn: asyncpg.Connection, card_no: str) -> None:
    """Raise ``CARD_UNKNOWN`` unless ``card_no`` is a registered, active CPU card.

    For channels whose card number is the client's word (the order API's reader replies),
    not the card's cryptographic proof (a terminal's DD13/DD15, which registers a card it
    sees for the first time): an order must not reserve money for a card that does not exist.
    """
    row = await conn.fetchrow("SELECT kind, state FROM cards WHERE card_no = $1", card_no)
    if row is None:
        raise OrderError(OrderErrorCode.CARD_UNKNOWN, "unknown card")
    if row["kind"] != "cpu":
        raise OrderError(OrderErrorCode.CARD_UNKNOWN, "not a CPU card")
    if row["state"] != "active":
        raise OrderError(OrderErrorCode.CARD_UNKNOWN, f"card is {row['state']}")


@dataclass(frozen=True, slots=True)
class Created:
    order: Order
    created: bool  # False: an earlier request with the same biz_serial_no made it


async def create_order(
    conn: asyncpg.Connection,
    *,
    merchant_id: int,
    amount_cents: int,
    card_no: str | None = None,
    platform_id: int | None = None,
    biz_serial_no: str | None = None,
    request_digest: str | None = None,
    pay: bool = True,
    expires_at: dt.datetime | None = None,
    expiry_s: int = 24 * 3600,
    max_amount_cents: int | None = None,
    extra: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> Created:
    """Create an order (and pay it unless ``pay=False``), idempotent per platform serial.

    With ``platform_id`` and ``biz_serial_no`` a repeat returns the original order
    (``created=False``) when ``request_digest`` matches it, and raises ``SERIAL_REUSED``
    when it does not. ``expires_at`` defaults to now + ``expiry_s``.
    """
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise OrderError(OrderErrorCode.AMOUNT_INVALID, "amount must be a positive number of cents")
    if max_amount_cents is not None and amount_cents > max_amount_cents:
        raise OrderError(OrderErrorCode.AMOUNT_INVALID, f"amount above the limit of {max_amount_cents} cents")
    _check_card(card_no)
    if pay and card_no is None:
        raise OrderError(OrderErrorCode.CARD_REQUIRED, "paying an order needs its card number")
    moment = now or _now()
    expires = expires_at or moment + dt.timedelta(seconds=expiry_s)
    if platform_id is not None and biz_serial_no is not None:
        existing = await get_order_by_serial(conn, platform_id, biz_serial_no)
        if existing is not None:
            return _repeat(existing, request_digest)
    async with conn.transaction():
        order_no = await new_order_no(conn, moment)
        row = await conn.fetchrow(
            "INSERT INTO orders (order_no, merchant_id, platform_id, biz_serial_no, request_digest,"
            " card_no, amount_cents, state, expires_at, extra, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, '01', $8, $9::text::jsonb, $10, $10)"
            " ON CONFLICT (platform_id, biz_serial_no) DO NOTHING RETURNING order_no",
            order_no,
            merchant_id,
            platform_id,
            biz_serial_no,
            request_digest,
            card_no,
            amount_cents,
            expires,
            json.dumps(extra or {}),
            moment,
        )
        if row is None:  # the same serial committed meanwhile by a concurrent request
            assert platform_id is not None and biz_serial_no is not None
            existing = await get_order_by_serial(conn, platform_id, biz_serial_no)
            assert existing is not None
            return _repeat(existing, request_digest)
        fetched = await pay_order(conn, order_no, now=moment) if pay else await get_order(conn, order_no)
    assert fetched is not None
    return Created(fetched, True)


def _repeat(existing: Order, request_digest: str | None) -> Created:
    if existing.request_digest != request_digest:
        raise OrderError(
            OrderErrorCode.SERIAL_REUSED, "biz_serial_no was already used for an order with other content"
        )
    return Created(existing, False)


async def pay_order(
    conn: asyncpg.Connection, order_no: str, *, card_no: str | None = None, now: dt.datetime | None = None
) -> Order:
    """Pay a submitted order: reserve its amount with a pending transfer fund → card purse.

    Idempotent: an order already paid is returned as it is. ``card_no`` names the card when
    the order does not (it must match when it does). Raises ``OrderError`` and changes
    nothing when the order is missing, not ``01``, expired, or the fund does not cover it.
    """
    _check_card(card_no)
    moment = now or _now()
    async with conn.transaction():
        order = await get_order(conn, order_no, for_update=True)
        if order is None:
            raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
        if order.card_no is not None and card_no is not None and card_no != order.card_no:
            raise OrderError(OrderErrorCode.CARD_MISMATCH, "the order is for another card")
        if order.state == PAID and order.pay_transfer_id is not None:
            return order
        if order.state != SUBMITTED:
            raise OrderError(OrderErrorCode.NOT_PAYABLE, f"order in state {order.state} cannot be paid")
        if order.expires_at is not None and order.expires_at <= moment:
            raise OrderError(OrderErrorCode.EXPIRED, "order expired")
        card = order.card_no or card_no
        if card is None:
            raise OrderError(OrderErrorCode.CARD_REQUIRED, "paying an order needs its card number")
        fund = await ledger.ensure_account(
            conn, ledger="CNY", kind=ledger.AccountKind.RECHARGE_FUND, merchant_id=order.merchant_id,
            name="recharge fund",
        )
        purse = await ledger.ensure_account(
            conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card, name="card purse"
        )
        transfer_id = pay_transfer_id(order_no)
        (outcome,) = await ledger.create_transfers(conn, [ledger.NewTransfer(
            transfer_id, fund, purse, order.amount_cents, code=PAY_CODE, reference=order_no, pending=True,
            timeout_at=order.expires_at,
        )])
        if outcome.result is ledger.Result.EXCEEDS_CREDITS:
            raise OrderError(OrderErrorCode.FUND_EMPTY, "the merchant's recharge fund does not cover the order")
        outcome.check(transfer_id)
        row = await conn.fetchrow(
            f"UPDATE orders SET state = '02', pay_transfer_id = $2, card_no = $3, paid_at = $4,"
            f" updated_at = $4 WHERE order_no = $1 RETURNING {_COLUMNS}",
            order_no,
            transfer_id,
            card,
            moment,
        )
    assert row is not None
    return Order.from_row(row)


def pay_transfer_id(order_no: str) -> str:
    return f"order:{order_no}:pay"


# --- the load life cycle (DD16 → DD18 / DD21), shared by the DD server and operators


async def mark_loading(conn: asyncpg.Connection, order_no: str, **load_fields: Any) -> Order:
    """DD16: the MAC2 is about to leave; the reservation must no longer time out.

    ``load_fields`` may set terminal_code, online_serial, balance_before_cents, load_date,
    load_time, load_peer (the terminal's address). Raises ``NOT_LOADABLE`` unless the order is paid, not loading and not expired.
    """
    allowed = {"terminal_code", "online_serial", "balance_before_cents", "load_date", "load_time", "load_peer"}
    unknown = set(load_fields) - allowed
    if unknown:
        raise TypeError(f"unknown load fields: {sorted(unknown)}")
    async with conn.transaction():
        order = await get_order(conn, order_no, for_update=True)
        if order is None:
            raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
        if order.state != PAID or order.loading or order.pay_transfer_id is None:
            raise OrderError(OrderErrorCode.NOT_LOADABLE, "order is not loadable")
        if not await ledger.set_pending_timeouts(conn, [(order.pay_transfer_id, None)]):
            raise OrderError(OrderErrorCode.NOT_LOADABLE, "the order's reservation is gone (expired)")
        names = sorted(load_fields)
        sets = "".join(f", {name} = ${i + 2}" for i, name in enumerate(names))
        row = await conn.fetchrow(
            f"UPDATE orders SET loading = true, loading_since = now(), updated_at = now(){sets}"
            f" WHERE order_no = $1 RETURNING {_COLUMNS}",
            order_no,
            *(load_fields[n] for n in names),
        )
    assert row is not None
    return Order.from_row(row)


async def mark_loaded(
    conn: asyncpg.Connection, order_no: str, *, balance_after_cents: int | None = None, record_id: str | None = None
) -> Order:
    """DD18 / DD21 proof: the card was credited. Posts the reservation; the order is 03."""
    async with conn.transaction():
        order = await get_order(conn, order_no, for_update=True)
        if order is None:
            raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
        if order.state in (LOADED, CONFIRMED, SETTLED):
            return order
        if order.state != PAID or order.pay_transfer_id is None:
            raise OrderError(OrderErrorCode.NOT_LOADABLE, f"order in state {order.state} cannot be loaded")
        post_id = f"order:{order_no}:post"
        (await ledger.resolve_pending(conn, [ledger.Resolution(post_id, order.pay_transfer_id)]))[0].check(post_id)
        row = await conn.fetchrow(
            f"UPDATE orders SET state = '03', loading = false, loaded_at = now(), updated_at = now(),"
            f" balance_after_cents = coalesce($2, balance_after_cents), record_id = coalesce($3, record_id)"
            f" WHERE order_no = $1 RETURNING {_COLUMNS}",
            order_no,
            balance_after_cents,
            record_id,
        )
    assert row is not None
    return Order.from_row(row)


_LOAD_FIELDS = frozenset(
    {"terminal_code", "online_serial", "balance_before_cents", "load_date", "load_time", "load_peer"}
)


async def mark_loading_in_transaction(
    conn: asyncpg.Connection, order_no: str, *, load_random: str | None = None, **load_fields: Any
) -> Order:
    """``mark_loading`` inside the caller's transaction, in one statement when the order is loadable.

    The same checks and writes as ``mark_loading`` (lock the order, hold its reservation, mark it
    *loading* with ``load_fields``) without a savepoint of its own; ``load_random`` (8 hex
    digits: the card's INITIALIZE FOR LOAD random, for DD21 recovery) is stored with them. When
    the one statement changes nothing, ``mark_loading`` itself runs, so refusals (``OrderError``)
    are exactly its own and leave nothing behind.
    """
    unknown = set(load_fields) - _LOAD_FIELDS
    if unknown:
        raise TypeError(f"unknown load fields: {sorted(unknown)}")
    values = dict(load_fields)
    if load_random is not None:
        values["load_random"] = load_random
    names = sorted(values)
    sets = "".join(f", {name} = ${i + 2}" for i, name in enumerate(names))
    row = await conn.fetchrow(
        # Every row by its key (plans that stay right on tables without statistics).
        "WITH o AS MATERIALIZED (SELECT state, loading, pay_transfer_id FROM orders WHERE order_no = $1 FOR UPDATE),"
        " held AS (UPDATE transfers SET timeout_at = NULL"
        "   WHERE id = (SELECT pay_transfer_id FROM o WHERE state = '02' AND NOT loading)"
        "   AND kind = 'pending' AND status = 'pending' RETURNING id)"
        f" UPDATE orders SET loading = true, loading_since = now(), updated_at = now(){sets}"
        f" WHERE order_no = $1 AND EXISTS (SELECT FROM held) RETURNING {_COLUMNS}",
        order_no,
        *(values[n] for n in names),
    )
    if row is not None:
        return Order.from_row(row)
    order = await mark_loading(conn, order_no, **load_fields)  # raises the refusal, or won a race
    if load_random is not None:
        await conn.execute("UPDATE orders SET load_random = $2 WHERE order_no = $1", order_no, load_random)
    return order


_LOAD_FIELD_TYPES = {
    "terminal_code": "text", "online_serial": "integer", "balance_before_cents": "bigint", "load_date": "text",
    "load_time": "text", "load_random": "text", "load_peer": "text",
}


async def mark_loading_many(conn: asyncpg.Connection, items: Sequence[tuple[str, dict[str, Any]]]) -> set[str]:
    """``mark_loading_in_transaction`` for several orders in one statement (a DD batch's DD15s).

    ``items``: (order number, load fields incl. ``load_random``), every item naming the same
    fields, each order once. Returns the numbers of the orders marked *loading* now; the others are left
    untouched (not loadable, unknown, reservation gone: ask ``mark_loading_in_transaction``
    for the precise refusal). Orders are locked in number order. Inside the caller's transaction.
    """
    if not items:
        return set()
    names = sorted(items[0][1])
    if any(sorted(f) != names for _, f in items) or set(names) - set(_LOAD_FIELD_TYPES):
        raise TypeError("every item must name the same known load fields")
    if len({no for no, _ in items}) != len(items):
        raise ValueError("an order may appear once")
    arrays = [[no for no, _ in items]] + [[f[n] for _, f in items] for n in names]
    unnest = ", ".join(f"${i + 2}::{_LOAD_FIELD_TYPES[n]}[]" for i, n in enumerate(names))
    sets = "".join(f", {n} = v.{n}" for n in names)
    rows = await conn.fetch(
        f"WITH v AS (SELECT * FROM unnest($1::text[], {unnest}) AS v(order_no, {', '.join(names)})),"
        " o AS MATERIALIZED (SELECT order_no, state, loading, pay_transfer_id FROM orders"
        "   WHERE order_no = ANY($1::text[]) ORDER BY order_no FOR UPDATE),"
        " held AS (UPDATE transfers SET timeout_at = NULL"
        "   WHERE id = ANY(ARRAY(SELECT pay_transfer_id FROM o WHERE state = '02' AND NOT loading))"
        "   AND kind = 'pending' AND status = 'pending' RETURNING id)"
        f" UPDATE orders SET loading = true, loading_since = now(), updated_at = now(){sets} FROM v"
        " WHERE orders.order_no = v.order_no AND orders.pay_transfer_id IN (SELECT id FROM held)"
        " RETURNING orders.order_no",
        *arrays,
    )
    return {row["order_no"] for row in rows}


async def mark_loaded_in_transaction(
    conn: asyncpg.Connection, order_no: str, *, balance_after_cents: int | None = None, record_id: str | None = None
) -> Order:
    """``mark_loaded`` inside the caller's transaction: two statements when the order is loading.

    Locks the paid order and marks it 03, then posts its reservation (``ledger.post_pending_at_once``);
    an order already loaded, confirmed or settled, or one that cannot be loaded, goes through
    ``mark_loaded`` itself (same answers and refusals). No savepoint of its own: when the post is
    refused it raises ``LedgerError`` after the order row changed, so the caller must roll its
    transaction (or its own savepoint) back — as the DD service's batcher does with a failed step.
    """
    row = await conn.fetchrow(
        "WITH o AS MATERIALIZED (SELECT state, pay_transfer_id FROM orders WHERE order_no = $1 FOR UPDATE)"
        " UPDATE orders SET state = '03', loading = false, loaded_at = now(), updated_at = now(),"
        " balance_after_cents = coalesce($2, balance_after_cents), record_id = coalesce($3, record_id)"
        " WHERE order_no = $1 AND EXISTS (SELECT FROM o WHERE state = '02' AND pay_transfer_id IS NOT NULL)"
        f" RETURNING {_COLUMNS}",
        order_no,
        balance_after_cents,
        record_id,
    )
    if row is None:
        return await mark_loaded(conn, order_no, balance_after_cents=balance_after_cents, record_id=record_id)
    order = Order.from_row(row)
    assert order.pay_transfer_id is not None
    post_id = f"order:{order_no}:post"
    (await ledger.resolve_pending(conn, [ledger.Resolution(post_id, order.pay_transfer_id)]))[0].check(post_id)
    return order


async def mark_loaded_many(conn: asyncpg.Connection, items: Sequence[tuple[str, int | None, str | None]]) -> list[Order]:
    """``mark_loaded_in_transaction`` for several orders (number, balance after, record id), each once.

    Locks the orders in number order, marks the paid ones 03 and posts their reservations in
    one statement (``ledger.post_pending_many``): two statements for all of them. Orders not
    paid are left untouched and missing from the answer (ask ``mark_loaded_in_transaction``).
    A refused post raises ``LedgerError`` after the order rows changed: roll back, as there.
    """
    if not items:
        return []
    if len({no for no, _, _ in items}) != len(items):
        raise ValueError("an order may appear once")
    rows = await conn.fetch(
        "WITH v AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) AS v(order_no, balance_after, rid)),"
        " o AS MATERIALIZED (SELECT order_no, state, pay_transfer_id FROM orders WHERE order_no = ANY($1::text[])"
        "   ORDER BY order_no FOR UPDATE)"
        " UPDATE orders SET state = '03', loading = false, loaded_at = now(), updated_at = now(),"
        " balance_after_cents = coalesce(v.balance_after, orders.balance_after_cents),"
        " record_id = coalesce(v.rid, orders.record_id) FROM v"
        " WHERE orders.order_no = v.order_no"
        "   AND orders.order_no = ANY(ARRAY(SELECT order_no FROM o WHERE state = '02' AND pay_transfer_id IS NOT NULL))"
        f" RETURNING {_QUALIFIED_COLUMNS}",
        [no for no, _, _ in items],
        [balance for _, balance, _ in items],
        [rid for _, _, rid in items],
    )
    loaded = [Order.from_row(row) for row in rows]
    posts = [ledger.Resolution(f"order:{o.order_no}:post", o.pay_transfer_id) for o in loaded if o.pay_transfer_id]
    for post, outcome in zip(posts, await ledger.resolve_pending(conn, posts), strict=True):
        outcome.check(post.id)  # refused: the caller rolls back
    return loaded


async def release_loading(conn: asyncpg.Connection, order_no: str) -> Order:
    """The card proves it was not credited: back to paid, the reservation may expire again."""
    async with conn.transaction():
        order = await get_order(conn, order_no, for_update=True)
        if order is None:
            raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
        if order.state != PAID or order.pay_transfer_id is None:
            raise OrderError(OrderErrorCode.NOT_LOADABLE, f"order in state {order.state} is not loading")
        await ledger.set_pending_timeouts(conn, [(order.pay_transfer_id, order.expires_at)])
        row = await conn.fetchrow(
            f"UPDATE orders SET loading = false, loading_since = NULL, updated_at = now()"
            f" WHERE order_no = $1 RETURNING {_COLUMNS}",
            order_no,
        )
    assert row is not None
    return Order.from_row(row)


async def confirm_order(conn: asyncpg.Connection, order_no: str) -> Order:
    """DD19/DD20: the terminal fetched its receipt; a loaded order becomes 04."""
    row = await conn.fetchrow(
        f"UPDATE orders SET state = '04', confirmed_at = now(), updated_at = now()"
        f" WHERE order_no = $1 AND state = '03' RETURNING {_COLUMNS}",
        order_no,
    )
    if row is not None:
        return Order.from_row(row)
    order = await get_order(conn, order_no)
    if order is None:
        raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
    if order.state not in (CONFIRMED, SETTLED):
        raise OrderError(OrderErrorCode.NOT_LOADABLE, f"order in state {order.state} cannot be confirmed")
    return order


async def confirm_orders(conn: asyncpg.Connection, order_nos: Sequence[str]) -> dict[str, Order]:
    """``confirm_order`` for several loaded orders in one statement: the ones confirmed now (03 → 04).

    Orders not in state 03 are left untouched and missing from the answer (ask ``confirm_order``).
    """
    rows = await conn.fetch(
        f"UPDATE orders SET state = '04', confirmed_at = now(), updated_at = now()"
        f" WHERE order_no = ANY($1::text[]) AND state = '03' RETURNING {_COLUMNS}",
        list(order_nos),
    )
    return {row["order_no"]: Order.from_row(row) for row in rows}


async def void_order(conn: asyncpg.Connection, order_no: str, *, reason: str = "void") -> Order:
    """Cancel an order that is not loading and not loaded: release its reservation; 06."""
    async with conn.transaction():
        order = await get_order(conn, order_no, for_update=True)
        if order is None:
            raise OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")
        if order.state == VOIDED:
            return order
        if order.state not in (SUBMITTED, PAID) or order.loading:
            raise OrderError(OrderErrorCode.NOT_LOADABLE, f"order in state {order.state} cannot be voided")
        if order.pay_transfer_id is not None:
            void = ledger.Resolution(f"{order.pay_transfer_id}:{reason}", order.pay_transfer_id, void=True)
            (outcome,) = await ledger.resolve_pending(conn, [void])
            if not outcome.ok and outcome.result is not ledger.Result.PENDING_ALREADY_VOIDED:
                outcome.check(order.pay_transfer_id)
        row = await conn.fetchrow(
            f"UPDATE orders SET state = '06', updated_at = now() WHERE order_no = $1 RETURNING {_COLUMNS}",
            order_no,
        )
    assert row is not None
    return Order.from_row(row)


# --- queries


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """What ``query_orders`` / ``count_orders`` match; every field given must hold.

    Dates are local (Asia/Shanghai), inclusive, on ``created_at``; ``userid`` and ``payway``
    match the order's ``extra`` fields of the same names.
    """

    platform_id: int | None = None
    merchant_id: int | None = None
    card_no: str | None = None
    order_no: str | None = None
    states: Sequence[str] | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    userid: str | None = None
    payway: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        for column in ("platform_id", "merchant_id", "card_no", "order_no"):
            value = getattr(self, column)
            if value is not None:
                add(f"{column} = ?", value)
        if self.states:
            add("state = ANY(?::text[])", list(self.states))
        start = _day_bound(self.start_date) if self.start_date is not None else None
        if start is not None:
            add("created_at >= ?", start)
        end = _day_bound(self.end_date, days_after=1) if self.end_date is not None else None
        if end is not None:
            add("created_at < ?", end)
        if self.userid is not None:
            add("extra ->> 'userid' = ?", self.userid)
        if self.payway is not None:
            add("extra ->> 'payway' = ?", self.payway)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


async def query_orders(conn: asyncpg.Connection, *, limit: int = 100, **filters: Any) -> list[Order]:
    """Orders matching ``OrderFilter(**filters)``, newest first, at most ``limit``."""
    where, args = OrderFilter(**filters).where()
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders{where} ORDER BY created_at DESC, order_no DESC LIMIT ${len(args)}",
        *args,
    )
    return [Order.from_row(r) for r in rows]


async def count_orders(conn: asyncpg.Connection, **filters: Any) -> int:
    where, args = OrderFilter(**filters).where()
    return int(await conn.fetchval(f"SELECT count(*) FROM orders{where}", *args))


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=LOCAL_TZ)


def _day_bound(day: dt.date, *, days_after: int = 0) -> dt.datetime | None:
    """Local midnight ``days_after`` days after ``day`` (in UTC); None at the calendar's ends
    (year 1, 9999-12-31), which bound nothing: every order lies between them."""
    try:
        return _day_start(day + dt.timedelta(days=days_after)).astimezone(dt.UTC)
    except OverflowError:
        return None


# --- settlement

CSV_HEADER = (
    "section", "biz_serial_no", "order_no", "card_no", "amount_cents", "state",
    "loaded_at", "terminal_code",
)


@dataclass(frozen=True, slots=True)
class Statement:
    """One platform's reconciliation for one day: settled orders, and loads left loading."""

    day: dt.date
    platform_raw: str  # "operator" for orders created without a platform
    settled: list[Order]
    loading: list[Order]

    @property
    def file_name(self) -> str:
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in self.platform_raw)
        return f"{self.day:%Y%m%d}_{safe}.csv"

    def render_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for section, orders in (("settled", self.settled), ("loading", self.loading)):
            for o in orders:
                writer.writerow((
                    section, o.biz_serial_no or "", o.order_no, o.card_no or "", o.amount_cents, o.state,
                    o.loaded_at.astimezone(LOCAL_TZ).isoformat() if o.loaded_at else "",
                    o.terminal_code or "",
                ))
        return out.getvalue()


async def settle_day(conn: asyncpg.Connection, day: dt.date) -> list[Statement]:
    """Move the day's loaded/confirmed orders (by local load date) to 05; build statements.

    Idempotent: a second run moves nothing and builds the same statements, since the
    statement lists every order loaded that day that is now settled. Orders still loading
    (since before the day's end) are listed apart. One statement per enabled platform, plus
    one per other platform (or "operator") that has orders in it.
    """
    start, end = _day_start(day), _day_start(day + dt.timedelta(days=1))
    async with conn.transaction():
        await conn.execute(
            "UPDATE orders SET state = '05', settled_at = now(), updated_at = now()"
            " WHERE state IN ('03', '04') AND loaded_at >= $1 AND loaded_at < $2",
            start,
            end,
        )
        settled = await conn.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE state = '05' AND loaded_at >= $1 AND loaded_at < $2"
            " ORDER BY loaded_at, order_no",
            start,
            end,
        )
        loading = await conn.fetch(
            f"SELECT {_COLUMNS} FROM orders WHERE loading AND loading_since < $1 ORDER BY loading_since, order_no",
            end,
        )
        platforms = {
            int(r["id"]): (r["platform_raw"], bool(r["enabled"]))
            for r in await conn.fetch("SELECT id, platform_raw, enabled FROM platforms")
        }
    by_key: dict[str, tuple[list[Order], list[Order]]] = {
        raw: ([], []) for raw, enabled in platforms.values() if enabled
    }
    for rows, index in ((settled, 0), (loading, 1)):
        for row in rows:
            order = Order.from_row(row)
            key = platforms[order.platform_id][0] if order.platform_id is not None else "operator"
            by_key.setdefault(key, ([], []))[index].append(order)
    return [Statement(day, key, s, ld) for key, (s, ld) in sorted(by_key.items())]


def write_statements(statements: Sequence[Statement], directory: Path) -> list[Path]:
    """Write each statement's CSV (atomically; an identical file is left untouched)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for st in statements:
        path = directory / st.file_name
        text = st.render_csv()
        if not (path.exists() and path.read_text(encoding="utf-8") == text):
            tmp = path.with_suffix(".csv.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        written.append(path)
    return written

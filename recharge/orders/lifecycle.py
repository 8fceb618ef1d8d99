"""The order life cycle (SPEC 2): creation, then one batch function per state change.

    create_order ─► 01 submitted ─pay_orders─► 02 paid ─mark_loading─► 02 *loading*
                                                 │                        │  ├─mark_loaded─► 03 loaded ─confirm_orders─► 04
                                                 │                        │  └─release_loading─► 02 paid
                                                 └─void_orders / expiry─► 06 voided

Each state change takes a batch of items (``Payment``, ``Loading``, ``Loaded``, order numbers,
``Void``) and answers ``{order_no: Order | OrderError}``, one entry per order in the order of
the items (an order named twice is done once, with its first item): the order as it is now, or
the refusal, for which nothing was written. ``model.single(answers)`` is the one-order form.

Money moves only through the ledger. Paying reserves the amount with a **pending** transfer
``order:<no>:pay`` (merchant recharge fund → card purse) whose timeout is the order's
``expires_at``, so the sweeper voids it if the order is not loaded in time. Once the MAC2 has
left the platform (DD16) the order is *loading*: the ledger clears the reservation's timeout,
and only the card's proof (DD18 / DD21) or an operator settles it — ``mark_loaded`` posts it
(``order:<no>:post``), ``void_orders`` and expiry void it. Each function runs inside the
caller's transaction when there is one (no savepoint: a refusal writes nothing) and in a
transaction of its own otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg

from recharge.db import atomic
from recharge.ledger import transfers as ledger
from recharge.orders.model import (
    COLUMNS,
    CONFIRMED,
    DONE,
    LOADED,
    PAID,
    PAY_CODE,
    SETTLED,
    SUBMITTED,
    VOIDED,
    Answers,
    Order,
    OrderError,
    OrderErrorCode,
    columns_of,
    get_order,
    get_order_by_serial,
    get_orders,
    new_order_no,
    not_found,
    pay_transfer_id,
    post_transfer_id,
    single,
    sql,
)
from recharge.orders.model import now as _now


@dataclass(frozen=True, slots=True)
class Payment:
    """Pay ``order_no``; ``card_no`` names the card when the order does not (must match when it does)."""

    order_no: str
    card_no: str | None = None


@dataclass(frozen=True, slots=True)
class Loading:
    """DD16: mark ``order_no`` *loading*, storing the load's fields (None: leave as it is)."""

    order_no: str
    terminal_code: str | None = None
    online_serial: int | None = None
    balance_before_cents: int | None = None
    load_date: str | None = None
    load_time: str | None = None
    load_random: str | None = None  # 8 hex digits: the card's INITIALIZE FOR LOAD random (DD21 recovery)
    load_peer: str | None = None  # the terminal's address


@dataclass(frozen=True, slots=True)
class Loaded:
    """DD18 / DD21 proof: ``order_no``'s card was credited (None: leave the field as it is)."""

    order_no: str
    balance_after_cents: int | None = None
    record_id: str | None = None


@dataclass(frozen=True, slots=True)
class Void:
    """Cancel ``order_no``; ``reason`` names its void transfer (``<pay id>:<reason>``)."""

    order_no: str
    reason: str = "void"


class _Item(Protocol):
    @property
    def order_no(self) -> str: ...


Item = TypeVar("Item", bound=_Item)


def _by_order(items: Iterable[Item]) -> dict[str, Item]:
    """Each order's first item, in the items' order."""
    first: dict[str, Item] = {}
    for item in items:
        first.setdefault(item.order_no, item)
    return first


def _is_card(card_no: str) -> bool:
    return len(card_no) == 16 and card_no.isascii() and card_no.isdigit()


def _card_invalid() -> OrderError:
    return OrderError(OrderErrorCode.CARD_INVALID, "card number must be 16 digits")


def _not_loadable(order: Order, action: str) -> OrderError:
    return OrderError(OrderErrorCode.NOT_LOADABLE, f"order in state {order.state} {action}")


# --- creation ---------------------------------------------------------------------------------


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
    when it does not. ``expires_at`` defaults to now + ``expiry_s``. Raises ``OrderError``
    (nothing created) when the order or its payment is refused.
    """
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise OrderError(OrderErrorCode.AMOUNT_INVALID, "amount must be a positive number of cents")
    if max_amount_cents is not None and amount_cents > max_amount_cents:
        raise OrderError(OrderErrorCode.AMOUNT_INVALID, f"amount above the limit of {max_amount_cents} cents")
    if card_no is not None and not _is_card(card_no):
        raise _card_invalid()
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
            f" card_no, amount_cents, state, expires_at, extra, created_at, updated_at)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, {sql(SUBMITTED)}, $8, $9::text::jsonb, $10, $10)"
            " ON CONFLICT (platform_id, biz_serial_no) DO NOTHING RETURNING order_no",
            order_no, merchant_id, platform_id, biz_serial_no, request_digest, card_no, amount_cents, expires,
            json.dumps(extra or {}), moment,
        )
        if row is None:  # the same serial committed meanwhile by a concurrent request
            assert platform_id is not None and biz_serial_no is not None
            existing = await get_order_by_serial(conn, platform_id, biz_serial_no)
            assert existing is not None
            return _repeat(existing, request_digest)
        if pay:
            fetched: Order | None = single(await pay_orders(conn, [Payment(order_no)], now=moment))
        else:
            fetched = await get_order(conn, order_no)
    assert fetched is not None
    return Created(fetched, True)


def _repeat(existing: Order, request_digest: str | None) -> Created:
    if existing.request_digest != request_digest:
        raise OrderError(
            OrderErrorCode.SERIAL_REUSED, "biz_serial_no was already used for an order with other content"
        )
    return Created(existing, False)


# --- paying ------------------------------------------------------------------------------------


async def pay_orders(
    conn: asyncpg.Connection, payments: Sequence[Payment], *, now: dt.datetime | None = None
) -> Answers:
    """Pay submitted orders: reserve each amount with a pending transfer fund → card purse.

    An order already paid is answered as it is. Refused (nothing changed): ``CARD_INVALID``,
    ``NOT_FOUND``, ``CARD_MISMATCH``, ``NOT_PAYABLE`` (not 01), ``EXPIRED``, ``CARD_REQUIRED``,
    ``FUND_EMPTY`` (the merchant's fund does not cover it, after the batch's earlier orders).
    """
    moment = now or _now()
    wanted = _by_order(payments)
    answers: Answers = {}
    async with atomic(conn):
        found = await get_orders(conn, list(wanted), for_update=True)
        to_pay: list[tuple[Order, str]] = []
        for no, payment in wanted.items():
            judged = _payable(found.get(no), payment.card_no, moment)
            if isinstance(judged, str):
                to_pay.append((found[no], judged))
            else:
                answers[no] = judged
        if to_pay:
            answers.update(await _reserve(conn, to_pay, moment))
    return {no: answers[no] for no in wanted}


def _payable(order: Order | None, card_no: str | None, moment: dt.datetime) -> Order | OrderError | str:
    """The answer for an order that needs no payment (paid, or refused), else the card it pays."""
    if card_no is not None and not _is_card(card_no):
        return _card_invalid()
    if order is None:
        return not_found()
    if order.card_no is not None and card_no is not None and card_no != order.card_no:
        return OrderError(OrderErrorCode.CARD_MISMATCH, "the order is for another card")
    if order.state == PAID and order.pay_transfer_id is not None:
        return order
    if order.state != SUBMITTED:
        return OrderError(OrderErrorCode.NOT_PAYABLE, f"order in state {order.state} cannot be paid")
    if order.expires_at is not None and order.expires_at <= moment:
        return OrderError(OrderErrorCode.EXPIRED, "order expired")
    card = order.card_no or card_no
    if card is None:
        return OrderError(OrderErrorCode.CARD_REQUIRED, "paying an order needs its card number")
    return card


async def _reserve(conn: asyncpg.Connection, to_pay: list[tuple[Order, str]], moment: dt.datetime) -> Answers:
    """The pending transfers of payable orders (one statement), then the orders paid (one statement)."""
    kind = ledger.AccountKind
    funds = {
        m: await ledger.ensure_account(conn, ledger="CNY", kind=kind.RECHARGE_FUND, merchant_id=m, name="recharge fund")
        for m in sorted({order.merchant_id for order, _ in to_pay})
    }
    purses = {
        c: await ledger.ensure_account(conn, ledger="CNY", kind=kind.CARD_PURSE, card_no=c, name="card purse")
        for c in sorted({card for _, card in to_pay})
    }
    reservations = [
        ledger.NewTransfer(
            pay_transfer_id(o.order_no), funds[o.merchant_id], purses[card], o.amount_cents, code=PAY_CODE,
            reference=o.order_no, pending=True, timeout_at=o.expires_at,
        )
        for o, card in to_pay
    ]
    answers: Answers = {}
    paid: list[tuple[str, str, str]] = []
    for (order, card), move, outcome in zip(
        to_pay, reservations, await ledger.create_transfers(conn, reservations), strict=True
    ):
        if outcome.result is ledger.Result.EXCEEDS_CREDITS:
            answers[order.order_no] = OrderError(
                OrderErrorCode.FUND_EMPTY, "the merchant's recharge fund does not cover the order"
            )
        else:  # an unpaid order has no reservation yet; its accounts exist, both in CNY
            assert outcome.ok, (move.id, outcome.result)
            paid.append((order.order_no, move.id, card))
    rows = await conn.fetch(
        f"UPDATE orders SET state = {sql(PAID)}, pay_transfer_id = v.transfer_id, card_no = v.card_no,"
        " paid_at = $4, updated_at = $4"
        " FROM unnest($1::text[], $2::text[], $3::text[]) AS v(order_no, transfer_id, card_no)"
        f" WHERE orders.order_no = v.order_no AND orders.order_no = ANY($1::text[]) RETURNING {columns_of('orders')}",
        [no for no, _, _ in paid], [t for _, t, _ in paid], [c for _, _, c in paid], moment,
    )
    assert len(rows) == len(paid), "the orders were locked by this transaction"
    answers.update((row["order_no"], Order.from_row(row)) for row in rows)
    return answers


# --- the load life cycle (DD16 → DD18 / DD21), shared by the DD server and operators


def _changing(update: str) -> str:
    """One statement that locks the batch's orders ($1, in number order), applies ``update`` to
    the ones it fits (``update`` ends in a WHERE clause; this adds the lock) and answers every
    order found: ``changed`` and the row as it is now."""
    return (
        f"WITH o AS MATERIALIZED (SELECT {COLUMNS} FROM orders WHERE order_no = ANY($1::text[])"
        "   ORDER BY order_no FOR UPDATE),"
        f" u AS ({update} AND orders.order_no = ANY(ARRAY(SELECT order_no FROM o)) RETURNING {columns_of('orders')})"
        f" SELECT true AS changed, {COLUMNS} FROM u"
        f" UNION ALL SELECT false, {COLUMNS} FROM o WHERE order_no <> ALL(ARRAY(SELECT order_no FROM u))"
    )


async def _change(
    conn: asyncpg.Connection, statement: str, order_nos: list[str], *args: Any,
    unchanged: Callable[[Order], Order | OrderError],
) -> Answers:
    """Run a ``_changing`` statement: each order changed, missing (``NOT_FOUND``) or ``unchanged(order)``."""
    rows = await conn.fetch(statement, order_nos, *args)
    found = {row["order_no"]: (row["changed"], Order.from_row(row)) for row in rows}
    answers: Answers = {}
    for no in order_nos:
        if no not in found:
            answers[no] = not_found()
        else:
            changed, order = found[no]
            answers[no] = order if changed else unchanged(order)
    return answers


_MARK_LOADING = _changing(
    "UPDATE orders SET loading = true, loading_since = now(), updated_at = now(),"
    " terminal_code = coalesce(v.terminal_code, orders.terminal_code),"
    " online_serial = coalesce(v.online_serial, orders.online_serial),"
    " balance_before_cents = coalesce(v.balance_before_cents, orders.balance_before_cents),"
    " load_date = coalesce(v.load_date, orders.load_date), load_time = coalesce(v.load_time, orders.load_time),"
    " load_random = coalesce(v.load_random, orders.load_random), load_peer = coalesce(v.load_peer, orders.load_peer)"
    " FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[])"
    "   AS v(order_no, terminal_code, online_serial, balance_before_cents, load_date, load_time, load_random, load_peer)"
    f" WHERE orders.order_no = v.order_no AND orders.state = {sql(PAID)} AND NOT orders.loading"
    "   AND orders.pay_transfer_id = ANY($9::text[])"
)


async def mark_loading(conn: asyncpg.Connection, loads: Sequence[Loading]) -> Answers:
    """DD16: the MAC2 is about to leave; each reservation must no longer time out.

    The ledger clears the reservations' timeouts (one statement), then the paid orders that are
    not loading yet and whose reservation is still pending become *loading* (one statement).
    Refused: ``NOT_FOUND``; ``NOT_LOADABLE`` (not paid, loading already, reservation gone).
    """
    wanted = _by_order(loads)
    items = list(wanted.values())
    async with atomic(conn):
        held = await ledger.set_pending_timeouts(conn, [(pay_transfer_id(no), None) for no in wanted])
        return await _change(
            conn, _MARK_LOADING, list(wanted), [i.terminal_code for i in items], [i.online_serial for i in items],
            [i.balance_before_cents for i in items], [i.load_date for i in items], [i.load_time for i in items],
            [i.load_random for i in items], [i.load_peer for i in items], sorted(held), unchanged=_not_marked_loading,
        )


def _not_marked_loading(order: Order) -> OrderError:
    if order.state != PAID or order.loading or order.pay_transfer_id is None:
        return OrderError(OrderErrorCode.NOT_LOADABLE, "order is not loadable")
    return OrderError(OrderErrorCode.NOT_LOADABLE, "the order's reservation is gone (expired)")


_MARK_LOADED = _changing(
    f"UPDATE orders SET state = {sql(LOADED)}, loading = false, loaded_at = now(), updated_at = now(),"
    " balance_after_cents = coalesce(v.balance_after, orders.balance_after_cents),"
    " record_id = coalesce(v.record_id, orders.record_id)"
    " FROM unnest($1::text[], $2::bigint[], $3::text[]) AS v(order_no, balance_after, record_id)"
    f" WHERE orders.order_no = v.order_no AND orders.state = {sql(PAID)} AND orders.order_no = ANY($4::text[])"
)


async def mark_loaded(conn: asyncpg.Connection, loads: Sequence[Loaded]) -> Answers:
    """DD18 / DD21 proof: the cards were credited. Posts each reservation; the orders are 03.

    The ledger posts the reservations (one statement), then the orders posted now become 03
    (one statement). An order loaded, confirmed or settled already is answered as it is.
    Refused: ``NOT_FOUND``; ``NOT_LOADABLE`` (not paid, or its reservation voided or expired).
    """
    wanted = _by_order(loads)
    items = list(wanted.values())
    async with atomic(conn):
        posts = [ledger.Resolution(post_transfer_id(no), pay_transfer_id(no)) for no in wanted]
        outcomes = await ledger.resolve_pending(conn, posts)
        posted = [no for no, outcome in zip(wanted, outcomes, strict=True) if outcome.result is ledger.Result.CREATED]
        answers = await _change(
            conn, _MARK_LOADED, list(wanted), [i.balance_after_cents for i in items], [i.record_id for i in items],
            posted, unchanged=_not_marked_loaded,
        )
    for no in posted:  # a pending reservation belongs to a paid order, which this statement loaded
        assert isinstance(answers[no], Order) and answers[no].state == LOADED, (no, answers[no])  # type: ignore[union-attr]
    return answers


def _not_marked_loaded(order: Order) -> Order | OrderError:
    return order if order.state in DONE else _not_loadable(order, "cannot be loaded")


_RELEASE = _changing(
    "UPDATE orders SET loading = false, loading_since = NULL, updated_at = now()"
    f" WHERE orders.state = {sql(PAID)} AND orders.pay_transfer_id IS NOT NULL"
)


async def release_loading(conn: asyncpg.Connection, order_nos: Sequence[str]) -> Answers:
    """The cards prove they were not credited: back to paid; each reservation may expire again
    (the ledger gives it back the order's ``expires_at``). Refused: ``NOT_FOUND``, ``NOT_LOADABLE`` (not paid)."""
    async with atomic(conn):
        answers = await _change(conn, _RELEASE, list(dict.fromkeys(order_nos)), unchanged=_not_released)
        released = [a for a in answers.values() if isinstance(a, Order)]
        await ledger.set_pending_timeouts(conn, [(o.pay_transfer_id, o.expires_at) for o in released if o.pay_transfer_id])
    return answers


def _not_released(order: Order) -> OrderError:
    return _not_loadable(order, "is not loading")


_CONFIRM = _changing(
    f"UPDATE orders SET state = {sql(CONFIRMED)}, confirmed_at = now(), updated_at = now()"
    f" WHERE orders.state = {sql(LOADED)}"
)


async def confirm_orders(conn: asyncpg.Connection, order_nos: Sequence[str]) -> Answers:
    """DD19/DD20: the terminals fetched their receipts; loaded orders become 04 (one statement).

    An order confirmed or settled already is answered as it is. Refused: ``NOT_FOUND``,
    ``NOT_LOADABLE`` (not loaded)."""
    return await _change(conn, _CONFIRM, list(dict.fromkeys(order_nos)), unchanged=_not_confirmed)


def _not_confirmed(order: Order) -> Order | OrderError:
    return order if order.state in (CONFIRMED, SETTLED) else _not_loadable(order, "cannot be confirmed")


_VOID = _changing(
    f"UPDATE orders SET state = {sql(VOIDED)}, updated_at = now()"
    f" WHERE orders.state IN {sql(SUBMITTED, PAID)} AND NOT orders.loading AND orders.order_no = ANY($2::text[])"
)


async def void_orders(conn: asyncpg.Connection, voids: Sequence[Void]) -> Answers:
    """Cancel orders that are not loading and not loaded: the ledger voids their reservations; 06.

    An order voided already is answered as it is. Refused: ``NOT_FOUND``, ``NOT_LOADABLE``.
    """
    wanted = _by_order(voids)
    async with atomic(conn):
        found = await get_orders(conn, list(wanted), for_update=True)
        voidable = [o for o in found.values() if o.state in (SUBMITTED, PAID) and not o.loading]
        releases = [
            ledger.Resolution(f"{o.pay_transfer_id}:{wanted[o.order_no].reason}", o.pay_transfer_id, void=True)
            for o in voidable if o.pay_transfer_id is not None
        ]
        for release, outcome in zip(releases, await ledger.resolve_pending(conn, releases), strict=True):
            # a paid order that is not loading holds its pending reservation (voided already: expiry won)
            assert outcome.ok or outcome.result is ledger.Result.PENDING_ALREADY_VOIDED, (release.id, outcome.result)
        return await _change(
            conn, _VOID, list(wanted), [o.order_no for o in voidable], unchanged=_not_voided
        )


def _not_voided(order: Order) -> Order | OrderError:
    return order if order.state == VOIDED else _not_loadable(order, "cannot be voided")

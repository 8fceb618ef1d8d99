"""A recharge order (SPEC 2): its states, its refusals, its number, and how it is read.

The states are named here once, for Python and for SQL (``sql(...)`` writes them into a
statement, so no statement carries a bare ``'02'``). Every state change is a batch function of
``recharge.orders.lifecycle`` answering ``{order_no: Order | OrderError}``; ``single`` turns the
answer of a one-order batch into the order, or raises its refusal.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import asyncpg

LOCAL_TZ = zoneinfo.ZoneInfo("Asia/Shanghai")

# Order states (SPEC 2, seed 004 orderstep).
SUBMITTED = "01"
PAID = "02"  # the amount reserved; *loading* once the MAC2 has left (the ``loading`` flag)
LOADED = "03"
CONFIRMED = "04"
SETTLED = "05"
VOIDED = "06"  # voided, or expired unpaid/unloaded
STATES = (SUBMITTED, PAID, LOADED, CONFIRMED, SETTLED, VOIDED)
DONE = (LOADED, CONFIRMED, SETTLED)  # the card was credited

ORDER_NO_DIGITS = 20
_SEQ_DIGITS = 12  # order number = local date YYYYMMDD ‖ 12 digits of order_no_seq
PAY_CODE = "order_pay"


def sql(*states: str) -> str:
    """States as SQL: ``'02'`` for one, ``('03', '04')`` for several (``state IN ...``)."""
    assert states and all(s in STATES for s in states), states
    quoted = ", ".join(f"'{s}'" for s in states)
    return quoted if len(states) == 1 else f"({quoted})"


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


def not_found() -> OrderError:
    return OrderError(OrderErrorCode.NOT_FOUND, "order number unknown")


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
        values = _order_values(row)  # by name, in C: no dict and no Python loop per row (a hot path of DD)
        if isinstance(values[_EXTRA], str):  # a pool without the jsonb codec
            listed = list(values)
            listed[_EXTRA] = json.loads(listed[_EXTRA])
            return cls(*listed)
        return cls(*values)

    @property
    def order_no_bcd(self) -> bytes:
        """The order number as DD11/DD19/DD21 carry it: 10 bytes BCD."""
        return bytes.fromhex(self.order_no)


ORDER_FIELDS = tuple(f.name for f in fields(Order))
_order_values = operator.itemgetter(*ORDER_FIELDS)  # a row's order columns, in the fields' order
_EXTRA = ORDER_FIELDS.index("extra")
COLUMNS = ", ".join(ORDER_FIELDS)


def columns_of(alias: str) -> str:
    """The order's columns qualified by a table alias (``o.order_no, o.merchant_id, ...``)."""
    return ", ".join(f"{alias}.{name}" for name in ORDER_FIELDS)


Answers = dict[str, "Order | OrderError"]


def single(answers: Mapping[str, Order | OrderError]) -> Order:
    """The order of a one-order batch's answer; its refusal raised."""
    (answer,) = answers.values()
    if isinstance(answer, OrderError):
        raise answer
    return answer


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def local_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(LOCAL_TZ).date()


def is_order_no(text: object) -> bool:
    return isinstance(text, str) and len(text) == ORDER_NO_DIGITS and text.isascii() and text.isdigit()


def pay_transfer_id(order_no: str) -> str:
    """The pending ledger transfer that reserves an order's amount (fund → card purse)."""
    return f"order:{order_no}:pay"


def post_transfer_id(order_no: str) -> str:
    """The ledger transfer that posts an order's reservation once the card is credited."""
    return f"order:{order_no}:post"


async def new_order_no(conn: asyncpg.Connection, moment: dt.datetime | None = None) -> str:
    """A fresh 20-digit order number: local date ‖ the next value of order_no_seq."""
    seq = int(await conn.fetchval("SELECT nextval('order_no_seq')"))
    day = local_date(moment or now()).strftime("%Y%m%d")
    return f"{day}{seq % 10**_SEQ_DIGITS:0{_SEQ_DIGITS}d}"


async def get_order(conn: asyncpg.Connection, order_no: str, *, for_update: bool = False) -> Order | None:
    if not is_order_no(order_no):
        return None
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM orders WHERE order_no = $1{lock}", order_no)
    return Order.from_row(row) if row else None


async def get_orders(conn: asyncpg.Connection, order_nos: list[str], *, for_update: bool = False) -> dict[str, Order]:
    """The orders that exist among ``order_nos``, by number; ``for_update`` locks them in number order."""
    lock = " ORDER BY order_no FOR UPDATE" if for_update else ""
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM orders WHERE order_no = ANY($1::text[]){lock}", order_nos)
    return {row["order_no"]: Order.from_row(row) for row in rows}


async def get_order_by_serial(conn: asyncpg.Connection, platform_id: int, biz_serial_no: str) -> Order | None:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM orders WHERE platform_id = $1 AND biz_serial_no = $2",
        platform_id,
        biz_serial_no,
    )
    return Order.from_row(row) if row else None


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

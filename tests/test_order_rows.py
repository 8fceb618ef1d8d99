"""How an order is read from a row (``Order.from_row``) and how the pool decodes jsonb (``recharge.db``'s codec):
by column name, wherever the order's columns sit in the row (alone, after ``changed``, after a terminal's
aliased columns as DD11's lookup reads them), with ``extra`` decoded whether the codec did it or not."""

from __future__ import annotations

from typing import Any

import asyncpg

from recharge import db, merchants
from recharge.orders import lifecycle as orders
from recharge.orders.model import COLUMNS, ORDER_FIELDS, Order, columns_of, get_order
from tests.conftest import unique_digits

EXTRA = {"userid": "u-1", "payway": "3", "nested": [1, {"a": None}]}


async def _order(conn: asyncpg.Connection, extra: dict[str, Any] | None) -> str:
    while True:  # merchant codes are four digits: one not taken yet
        code = unique_digits(4)
        if await conn.fetchval("SELECT 1 FROM merchants WHERE code = $1", code) is None:
            break
    merchant_id = await merchants.ensure_merchant(conn, code, f"rows merchant {code}")
    created = await orders.create_order(conn, merchant_id=merchant_id, amount_cents=700, pay=False, extra=extra)
    return created.order.order_no


def _by_name(row: Any) -> Order:
    """The order as the code read it before (one ``row[name]`` per field): what ``from_row`` must equal."""
    return Order(**{name: row[name] for name in ORDER_FIELDS})


async def test_an_order_is_read_by_column_name_wherever_its_columns_are(conn: asyncpg.Connection) -> None:
    order_no = await _order(conn, EXTRA)
    shapes = [
        f"SELECT {COLUMNS} FROM orders WHERE order_no = $1",
        f"SELECT true AS changed, {COLUMNS} FROM orders WHERE order_no = $1",  # lifecycle's _changing
        f"SELECT 7 AS t_id, 'T1' AS t_code, {columns_of('o')}, 'cpu' AS c_kind FROM orders o WHERE o.order_no = $1",
        f"SELECT {', '.join(reversed(ORDER_FIELDS))} FROM orders WHERE order_no = $1",  # any order of columns
    ]
    orders_read = []
    for sql in shapes:
        row = await conn.fetchrow(sql, order_no)
        assert row is not None
        order = Order.from_row(row)
        assert order == _by_name(row)
        orders_read.append(order)
    assert all(o == orders_read[0] for o in orders_read)
    first = orders_read[0]
    assert (first.order_no, first.amount_cents, first.state, first.extra) == (order_no, 700, "01", EXTRA)
    assert await get_order(conn, order_no) == first


async def test_extra_as_text_is_decoded_as_the_codec_would(conn: asyncpg.Connection) -> None:
    """A row whose ``extra`` came as text (a connection without the jsonb codec) gives the same order."""
    order_no = await _order(conn, EXTRA)
    text_columns = ", ".join("extra::text AS extra" if name == "extra" else name for name in ORDER_FIELDS)
    row = await conn.fetchrow(f"SELECT {text_columns} FROM orders WHERE order_no = $1", order_no)
    assert row is not None and isinstance(row["extra"], str)
    assert Order.from_row(row) == await get_order(conn, order_no)
    assert Order.from_row(row).extra == EXTRA


async def test_the_jsonb_codec_decodes_the_empty_object_as_a_new_dict_each_time(conn: asyncpg.Connection) -> None:
    first, second = await _order(conn, None), await _order(conn, None)
    a, b = await get_order(conn, first), await get_order(conn, second)
    assert a is not None and b is not None
    assert a.extra == {} and b.extra == {}
    a.extra["mutated"] = True  # one order's dict is its own: the next order read is not changed by it
    again = await get_order(conn, second)
    assert again is not None and again.extra == {}
    assert await conn.fetchval("SELECT '{}'::jsonb") == {}
    assert await conn.fetchval("SELECT $1::jsonb", {"k": [1, "二"]}) == {"k": [1, "二"]}
    assert await conn.fetchval("SELECT '[]'::jsonb") == [] and await conn.fetchval("SELECT '{ }'::jsonb") == {}


def test_the_decoder_alone() -> None:
    decode = db._json_loads
    assert decode("{}") == {} and decode("{}") is not decode("{}")
    assert decode('{"a": 1}') == {"a": 1} and decode("[]") == [] and decode("null") is None
    assert decode(db._json_dumps(EXTRA)) == EXTRA

"""``orders.mark_loading_in_transaction`` / ``mark_loaded_in_transaction``: the DD hot path's variants
do what ``mark_loading`` / ``mark_loaded`` do, refuse what they refuse, in one / two statements."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from recharge.ledger import transfers as ledger
from recharge.orders import lifecycle as orders
from recharge.orders.lifecycle import OrderError, OrderErrorCode
from tests.test_orders import fund_balance, new_card, new_merchant

pytestmark = pytest.mark.usefixtures("audited")


class _Counter:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.seen = conn, list[str]()

    def log(self, record: asyncpg.connection.LoggedQuery) -> None:
        if "jit" not in record.query and "pg_type" not in record.query:  # asyncpg's one-off type introspection
            self.seen.append(record.query)

    async def __aenter__(self) -> _Counter:
        await asyncio.sleep(0)
        self.conn.add_query_logger(self.log)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)  # asyncpg calls query loggers on the next loop turn
        self.conn.remove_query_logger(self.log)


async def _paid(conn: asyncpg.Connection, amount: int = 500, **kw: object) -> tuple[int, orders.Order]:
    merchant = await new_merchant(conn, 10_000)
    created = await orders.create_order(conn, merchant_id=merchant, amount_cents=amount, card_no=new_card(), **kw)
    return merchant, created.order


async def test_loading_then_loaded_in_one_and_two_statements_as_the_originals_would(conn: asyncpg.Connection) -> None:
    merchant, order = await _paid(conn)
    async with conn.transaction(), _Counter(conn) as loading_count:
        loading = await orders.mark_loading_in_transaction(
            conn, order.order_no, terminal_code="11552001", online_serial=7, balance_before_cents=100,
            load_date="20261122", load_time="010203", load_random="0A1B2C3D",
        )
    assert len(loading_count.seen) == 1, loading_count.seen
    assert loading.loading and loading.state == orders.PAID and loading.online_serial == 7
    assert loading.terminal_code == "11552001" and loading.load_time == "010203"
    assert await conn.fetchval("SELECT load_random FROM orders WHERE order_no = $1", order.order_no) == "0A1B2C3D"
    pay = await ledger.get_transfer(conn, orders.pay_transfer_id(order.order_no))
    assert pay is not None and pay.timeout_at is None  # held: never swept

    async with conn.transaction(), _Counter(conn) as loaded_count:
        loaded = await orders.mark_loaded_in_transaction(
            conn, order.order_no, balance_after_cents=600, record_id="2026112200000000001"
        )
    assert len(loaded_count.seen) == 2, loaded_count.seen
    assert loaded.state == orders.LOADED and not loaded.loading and loaded.balance_after_cents == 600
    assert loaded.record_id == "2026112200000000001"
    assert (await fund_balance(conn, merchant)).debits_posted == 500
    async with conn.transaction():
        again = await orders.mark_loaded_in_transaction(conn, order.order_no, balance_after_cents=999)
    assert again.state == orders.LOADED and again.balance_after_cents == 600  # idempotent, unchanged
    assert (await fund_balance(conn, merchant)).debits_posted == 500


async def test_loading_is_refused_like_mark_loading_and_changes_nothing(conn: asyncpg.Connection) -> None:
    _, order = await _paid(conn)
    async with conn.transaction():
        await orders.mark_loading_in_transaction(conn, order.order_no, load_random="00000000")
    with pytest.raises(OrderError) as twice:
        async with conn.transaction():
            await orders.mark_loading_in_transaction(conn, order.order_no, load_random="11111111")
    assert twice.value.code is OrderErrorCode.NOT_LOADABLE
    assert await conn.fetchval("SELECT load_random FROM orders WHERE order_no = $1", order.order_no) == "00000000"
    with pytest.raises(OrderError) as missing:
        async with conn.transaction():
            await orders.mark_loading_in_transaction(conn, "2026010100009999999" + "9")
    assert missing.value.code is OrderErrorCode.NOT_FOUND
    with pytest.raises(TypeError):
        await orders.mark_loading_in_transaction(conn, order.order_no, state="03")


async def test_loading_of_a_reservation_gone_is_refused(conn: asyncpg.Connection) -> None:
    _, order = await _paid(conn)
    async with conn.transaction():
        void = ledger.Resolution(_void_id(order), orders.pay_transfer_id(order.order_no), void=True)
        await ledger.resolve_pending(conn, [void])
    with pytest.raises(OrderError) as gone:
        async with conn.transaction():
            await orders.mark_loading_in_transaction(conn, order.order_no, load_random="00000000")
    assert gone.value.code is OrderErrorCode.NOT_LOADABLE
    row = await conn.fetchrow("SELECT loading, load_random FROM orders WHERE order_no = $1", order.order_no)
    assert row["loading"] is False and row["load_random"] is None


async def test_loaded_of_an_unpaid_order_is_refused_and_a_failed_post_raises(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    unpaid = (await orders.create_order(conn, merchant_id=merchant, amount_cents=100, pay=False)).order
    with pytest.raises(OrderError) as refused:
        async with conn.transaction():
            await orders.mark_loaded_in_transaction(conn, unpaid.order_no)
    assert refused.value.code is OrderErrorCode.NOT_LOADABLE

    _, expiring = await _paid(conn)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # its reservation timed out, not yet swept
    with pytest.raises(ledger.LedgerError):  # the reservation expired: the caller's transaction rolls back
        async with conn.transaction():  # (the expiry inside it too: no running sweeper sees it)
            await conn.execute(
                "UPDATE transfers SET timeout_at = $2 WHERE id = $1", orders.pay_transfer_id(expiring.order_no), past
            )
            await orders.mark_loaded_in_transaction(conn, expiring.order_no)
    after = await orders.get_order(conn, expiring.order_no)
    assert after is not None and after.state == orders.PAID


def _void_id(order: orders.Order) -> str:
    return orders.pay_transfer_id(order.order_no) + ":test-void"


async def test_many_orders_load_post_and_confirm_in_one_statement_each(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    made = [
        (await orders.create_order(conn, merchant_id=merchant, amount_cents=100 * (i + 1), card_no=new_card())).order
        for i in range(3)
    ]
    unpaid = (await orders.create_order(conn, merchant_id=merchant, amount_cents=50, pay=False)).order
    fields = {"terminal_code": "11552001", "online_serial": 3, "balance_before_cents": 0, "load_date": "20261122",
              "load_time": "010203", "load_random": "ABCDEF01"}
    async with conn.transaction(), _Counter(conn) as loading_count:
        loading = await orders.mark_loading_many(conn, [(o.order_no, fields) for o in [*made, unpaid]])
    assert len(loading_count.seen) == 1
    assert loading == {o.order_no for o in made}  # the unpaid one untouched
    for o in made:
        now_loading = await orders.get_order(conn, o.order_no)
        assert now_loading is not None and now_loading.loading and now_loading.load_time == "010203"
    for o in made:
        pay = await ledger.get_transfer(conn, orders.pay_transfer_id(o.order_no))
        assert pay is not None and pay.timeout_at is None
    assert (await orders.get_order(conn, unpaid.order_no)).loading is False  # type: ignore[union-attr]

    items = [(o.order_no, 1000 + i, f"2026112200000000010{i}") for i, o in enumerate(made)]
    async with conn.transaction(), _Counter(conn) as loaded_count:
        loaded = await orders.mark_loaded_many(conn, [*items, (unpaid.order_no, 1, None)])
    assert len(loaded_count.seen) == 2  # the orders, then every post in one
    assert {o.order_no for o in loaded} == {o.order_no for o in made}  # the unpaid one untouched
    assert all(o.state == orders.LOADED and not o.loading for o in loaded)
    assert {o.order_no: o.balance_after_cents for o in loaded} == {no: b for no, b, _ in items}
    fund = await fund_balance(conn, merchant)
    assert fund.debits_posted == 600 and fund.debits_pending == 0
    for o in made:
        post = await ledger.get_transfer(conn, f"order:{o.order_no}:post")
        assert post is not None and post.amount == o.amount_cents

    async with conn.transaction(), _Counter(conn) as confirm_count:
        confirmed = await orders.confirm_orders(conn, [o.order_no for o in made] + [unpaid.order_no])
    assert len(confirm_count.seen) == 1
    assert set(confirmed) == {o.order_no for o in made}
    assert all(o.state == orders.CONFIRMED for o in confirmed.values())
    with pytest.raises(ValueError):
        await orders.mark_loaded_many(conn, [items[0], items[0]])


async def test_many_loads_with_a_reservation_gone_raise_for_a_rollback(conn: asyncpg.Connection) -> None:
    _, order = await _paid(conn)
    async with conn.transaction():
        await orders.mark_loading_in_transaction(conn, order.order_no, load_random="00000000")
    async with conn.transaction():  # on purpose: the reservation is released while the order is loading
        pay_id = orders.pay_transfer_id(order.order_no)
        (await ledger.resolve_pending(conn, [ledger.Resolution(f"{pay_id}:test-void", pay_id, void=True)]))[0].check(pay_id)
    with pytest.raises(ledger.LedgerError):
        async with conn.transaction():
            await orders.mark_loaded_many(conn, [(order.order_no, 1, None)])
    after = await orders.get_order(conn, order.order_no)
    assert after is not None and after.state == orders.PAID and after.loading

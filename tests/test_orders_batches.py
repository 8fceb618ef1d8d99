"""The order batch functions (``recharge.orders.lifecycle``): one answer per order, refusals as values
that write nothing, a few statements per batch whatever its size, inside the caller's transaction."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from recharge.ledger import transfers as ledger
from recharge.orders import lifecycle as orders
from recharge.orders import model
from recharge.orders.lifecycle import Loaded, Loading, Payment
from recharge.orders.model import OrderError, OrderErrorCode
from tests.test_orders import fund_balance, new_card, new_merchant

pytestmark = pytest.mark.usefixtures("audited")

LOAD = {"terminal_code": "11552001", "online_serial": 7, "balance_before_cents": 100, "load_date": "20261122",
        "load_time": "010203", "load_random": "0A1B2C3D"}


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


async def _paid(conn: asyncpg.Connection, amount: int = 500, **kw: object) -> tuple[int, model.Order]:
    merchant = await new_merchant(conn, 10_000)
    created = await orders.create_order(conn, merchant_id=merchant, amount_cents=amount, card_no=new_card(), **kw)
    return merchant, created.order


def _refusal(answer: model.Order | OrderError) -> OrderErrorCode:
    assert isinstance(answer, OrderError), answer
    return answer.code


async def test_loading_then_loaded_in_two_statements_each(conn: asyncpg.Connection) -> None:
    merchant, order = await _paid(conn)
    async with conn.transaction(), _Counter(conn) as loading_count:
        loading = model.single(await orders.mark_loading(conn, [Loading(order.order_no, **LOAD)]))  # type: ignore[arg-type]
    assert len(loading_count.seen) == 2, loading_count.seen  # the ledger holds the reservation, then the order
    assert loading.loading and loading.state == model.PAID and loading.online_serial == 7
    assert loading.terminal_code == "11552001" and loading.load_time == "010203"
    assert await conn.fetchval("SELECT load_random FROM orders WHERE order_no = $1", order.order_no) == "0A1B2C3D"
    pay = await ledger.get_transfer(conn, model.pay_transfer_id(order.order_no))
    assert pay is not None and pay.timeout_at is None  # held: never swept

    async with conn.transaction(), _Counter(conn) as loaded_count:
        loaded = model.single(await orders.mark_loaded(conn, [Loaded(order.order_no, 600, "2026112200000000001")]))
    assert len(loaded_count.seen) == 2, loaded_count.seen  # the post, then the order
    assert loaded.state == model.LOADED and not loaded.loading and loaded.balance_after_cents == 600
    assert loaded.record_id == "2026112200000000001"
    assert (await fund_balance(conn, merchant)).debits_posted == 500
    async with conn.transaction():
        again = model.single(await orders.mark_loaded(conn, [Loaded(order.order_no, 999)]))
    assert again.state == model.LOADED and again.balance_after_cents == 600  # idempotent, unchanged
    assert (await fund_balance(conn, merchant)).debits_posted == 500


async def test_loading_refusals_are_answers_and_change_nothing(conn: asyncpg.Connection) -> None:
    _, order = await _paid(conn)
    async with conn.transaction():
        model.single(await orders.mark_loading(conn, [Loading(order.order_no, load_random="00000000")]))
    missing = "2026010100009999999" + "9"
    async with conn.transaction():
        answers = await orders.mark_loading(conn, [Loading(order.order_no, load_random="11111111"), Loading(missing)])
    assert list(answers) == [order.order_no, missing]
    assert _refusal(answers[order.order_no]) is OrderErrorCode.NOT_LOADABLE
    assert _refusal(answers[missing]) is OrderErrorCode.NOT_FOUND
    assert await conn.fetchval("SELECT load_random FROM orders WHERE order_no = $1", order.order_no) == "00000000"
    with pytest.raises(TypeError):
        Loading(order.order_no, state="03")  # type: ignore[call-arg]


async def test_loading_of_a_reservation_gone_is_refused(conn: asyncpg.Connection) -> None:
    _, order = await _paid(conn)
    pay_id = model.pay_transfer_id(order.order_no)
    async with conn.transaction():
        (await ledger.resolve_pending(conn, [ledger.Resolution(f"{pay_id}:test-void", pay_id, void=True)]))[0].check(pay_id)
    with pytest.raises(OrderError) as gone:
        model.single(await orders.mark_loading(conn, [Loading(order.order_no, load_random="00000000")]))
    assert gone.value.code is OrderErrorCode.NOT_LOADABLE
    row = await conn.fetchrow("SELECT loading, load_random FROM orders WHERE order_no = $1", order.order_no)
    assert row["loading"] is False and row["load_random"] is None


async def test_loaded_of_an_unpaid_or_expired_order_is_refused_and_changes_nothing(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    unpaid = (await orders.create_order(conn, merchant_id=merchant, amount_cents=100, pay=False)).order
    with pytest.raises(OrderError) as refused:
        model.single(await orders.mark_loaded(conn, [Loaded(unpaid.order_no)]))
    assert refused.value.code is OrderErrorCode.NOT_LOADABLE

    _, expiring = await _paid(conn)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # its reservation timed out, not yet swept
    async with conn.transaction():  # (the expiry inside it too: no running sweeper sees it)
        await ledger.set_pending_timeouts(conn, [(model.pay_transfer_id(expiring.order_no), past)])
        answers = await orders.mark_loaded(conn, [Loaded(expiring.order_no)])
        after = await model.get_order(conn, expiring.order_no)
        pay = await ledger.get_transfer(conn, model.pay_transfer_id(expiring.order_no))
    assert _refusal(answers[expiring.order_no]) is OrderErrorCode.NOT_LOADABLE
    assert after is not None and after.state == model.PAID
    assert pay is not None and pay.status == "pending"


async def test_many_orders_load_post_and_confirm_in_a_few_statements(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    made = [
        (await orders.create_order(conn, merchant_id=merchant, amount_cents=100 * (i + 1), card_no=new_card())).order
        for i in range(3)
    ]
    unpaid = (await orders.create_order(conn, merchant_id=merchant, amount_cents=50, pay=False)).order
    fields = {**LOAD, "online_serial": 3, "balance_before_cents": 0, "load_random": "ABCDEF01"}
    async with conn.transaction(), _Counter(conn) as loading_count:
        loading = await orders.mark_loading(conn, [Loading(o.order_no, **fields) for o in [*made, unpaid]])  # type: ignore[arg-type]
    assert len(loading_count.seen) == 2
    assert [no for no, a in loading.items() if isinstance(a, model.Order)] == [o.order_no for o in made]
    assert _refusal(loading[unpaid.order_no]) is OrderErrorCode.NOT_LOADABLE  # the unpaid one untouched
    for o in made:
        now_loading = await model.get_order(conn, o.order_no)
        assert now_loading is not None and now_loading.loading and now_loading.load_time == "010203"
        pay = await ledger.get_transfer(conn, model.pay_transfer_id(o.order_no))
        assert pay is not None and pay.timeout_at is None
    assert (await model.get_order(conn, unpaid.order_no)).loading is False  # type: ignore[union-attr]

    items = [Loaded(o.order_no, 1000 + i, f"2026112200000000010{i}") for i, o in enumerate(made)]
    async with conn.transaction(), _Counter(conn) as loaded_count:
        loaded = await orders.mark_loaded(conn, [*items, Loaded(unpaid.order_no, 1)])
    assert len(loaded_count.seen) == 2  # every post in one, then the orders in one
    assert _refusal(loaded.pop(unpaid.order_no)) is OrderErrorCode.NOT_LOADABLE  # the unpaid one untouched
    assert all(isinstance(o, model.Order) and o.state == model.LOADED and not o.loading for o in loaded.values())
    assert {no: o.balance_after_cents for no, o in loaded.items()} == {  # type: ignore[union-attr]
        i.order_no: i.balance_after_cents for i in items
    }
    fund = await fund_balance(conn, merchant)
    assert fund.debits_posted == 600 and fund.debits_pending == 0
    for o in made:
        post = await ledger.get_transfer(conn, model.post_transfer_id(o.order_no))
        assert post is not None and post.amount == o.amount_cents

    async with conn.transaction(), _Counter(conn) as confirm_count:
        confirmed = await orders.confirm_orders(conn, [o.order_no for o in made] + [unpaid.order_no])
    assert len(confirm_count.seen) == 1
    assert _refusal(confirmed.pop(unpaid.order_no)) is OrderErrorCode.NOT_LOADABLE
    assert all(isinstance(o, model.Order) and o.state == model.CONFIRMED for o in confirmed.values())
    twice = await orders.confirm_orders(conn, [made[0].order_no, made[0].order_no])
    assert list(twice) == [made[0].order_no]  # an order named twice is answered once


async def test_loads_with_a_reservation_gone_are_refused_and_change_nothing(conn: asyncpg.Connection) -> None:
    _, order = await _paid(conn)
    _, fine = await _paid(conn)
    async with conn.transaction():
        await orders.mark_loading(conn, [Loading(order.order_no), Loading(fine.order_no)])
    async with conn.transaction():  # on purpose: the reservation is released while the order is loading
        pay_id = model.pay_transfer_id(order.order_no)
        (await ledger.resolve_pending(conn, [ledger.Resolution(f"{pay_id}:test-void", pay_id, void=True)]))[0].check(pay_id)
    async with conn.transaction():
        answers = await orders.mark_loaded(conn, [Loaded(order.order_no, 1), Loaded(fine.order_no, 2)])
    assert _refusal(answers[order.order_no]) is OrderErrorCode.NOT_LOADABLE
    assert isinstance(answers[fine.order_no], model.Order)  # its batch-mate loaded all the same
    after = await model.get_order(conn, order.order_no)
    assert after is not None and after.state == model.PAID and after.loading


async def test_a_batch_of_payments_reserves_in_order_and_refuses_what_the_fund_does_not_cover(
    conn: asyncpg.Connection,
) -> None:
    merchant = await new_merchant(conn, 1_000)
    made = [
        (await orders.create_order(conn, merchant_id=merchant, amount_cents=amount, card_no=new_card(), pay=False)).order
        for amount in (600, 500, 400)
    ]
    async with conn.transaction():
        answers = await orders.pay_orders(conn, [Payment(o.order_no) for o in made])
    assert [a.state if isinstance(a, model.Order) else a.code for a in answers.values()] == [
        model.PAID, OrderErrorCode.FUND_EMPTY, model.PAID,
    ]
    refused = await model.get_order(conn, made[1].order_no)
    assert refused is not None and refused.state == model.SUBMITTED and refused.pay_transfer_id is None
    assert await ledger.get_transfer(conn, model.pay_transfer_id(made[1].order_no)) is None
    assert (await fund_balance(conn, merchant)).available == 0

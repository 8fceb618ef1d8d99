"""The order domain (recharge.orders.lifecycle): numbers, creation, payment, idempotency, the load life
cycle, expiry through the sweeper, queries and settlement."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import demo
from recharge import merchants, sweeper
from recharge.ledger import transfers as ledger
from recharge.orders import lifecycle as orders
from recharge.orders import model, queries, settlement
from recharge.orders.model import OrderError, OrderErrorCode
from tests.conftest import unique_digits


async def new_merchant(conn: asyncpg.Connection, fund_cents: int = 0) -> int:
    while True:
        code = unique_digits(4)
        if await conn.fetchval("SELECT 1 FROM merchants WHERE code = $1", code) is None:
            break
    merchant_id = await merchants.ensure_merchant(conn, code, f"test merchant {code}")
    if fund_cents:
        await demo.fund_recharge_fund(conn, merchant_id, fund_cents, f"test:fund:{code}")
    return merchant_id


def new_card() -> str:
    return "1680" + unique_digits(12)


async def fund_balance(conn: asyncpg.Connection, merchant_id: int) -> ledger.Balance:
    account = await ledger.ensure_account(
        conn, ledger="CNY", kind=ledger.AccountKind.RECHARGE_FUND, merchant_id=merchant_id
    )
    return await ledger.get_balance(conn, account)


async def test_order_number_is_local_date_and_twenty_digits(conn: asyncpg.Connection) -> None:
    moment = dt.datetime(2024, 1, 31, 17, 30, tzinfo=dt.UTC)  # 01:30 on Feb 1st in Shanghai
    number = await model.new_order_no(conn, moment)
    assert len(number) == 20 and number.isdigit() and number.startswith("20240201")
    assert await model.new_order_no(conn, moment) != number
    assert bytes.fromhex(number).hex() == number  # carried as 10 BCD bytes


async def test_create_order_pays_with_pending_transfer_timing_out_at_expiry(
    conn: asyncpg.Connection, audited: None
) -> None:
    merchant = await new_merchant(conn, 10_000)
    card = new_card()
    created = await orders.create_order(conn, merchant_id=merchant, amount_cents=2_500, card_no=card)
    order = created.order
    assert created.created and order.state == model.PAID and order.card_no == card
    transfer = await ledger.get_transfer(conn, model.pay_transfer_id(order.order_no))
    assert transfer is not None and transfer.status == "pending" and transfer.amount == 2_500
    assert transfer.timeout_at == order.expires_at
    assert transfer.reference == order.order_no and order.pay_transfer_id == transfer.id
    fund = await fund_balance(conn, merchant)
    assert fund.available == 7_500 and fund.posted == 10_000


async def test_empty_fund_refuses_and_leaves_no_order(conn: asyncpg.Connection, audited: None) -> None:
    merchant = await new_merchant(conn, 1_000)
    with pytest.raises(OrderError) as err:
        await orders.create_order(
            conn, merchant_id=merchant, amount_cents=1_001, card_no=new_card(), platform_id=None
        )
    assert err.value.code is OrderErrorCode.FUND_EMPTY
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE merchant_id = $1", merchant) == 0
    assert (await fund_balance(conn, merchant)).debits_pending == 0


@pytest.mark.parametrize("amount", [0, -5])
async def test_non_positive_amount_is_refused(conn: asyncpg.Connection, amount: int) -> None:
    merchant = await new_merchant(conn, 1_000)
    with pytest.raises(OrderError) as err:
        await orders.create_order(conn, merchant_id=merchant, amount_cents=amount, card_no=new_card())
    assert err.value.code is OrderErrorCode.AMOUNT_INVALID


async def test_amount_over_limit_is_refused(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    with pytest.raises(OrderError) as err:
        await orders.create_order(
            conn, merchant_id=merchant, amount_cents=5_001, card_no=new_card(), max_amount_cents=5_000
        )
    assert err.value.code is OrderErrorCode.AMOUNT_INVALID
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE merchant_id = $1", merchant) == 0


async def test_paying_needs_a_card(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 1_000)
    with pytest.raises(OrderError) as err:
        await orders.create_order(conn, merchant_id=merchant, amount_cents=100)
    assert err.value.code is OrderErrorCode.CARD_REQUIRED
    unpaid = (await orders.create_order(conn, merchant_id=merchant, amount_cents=100, pay=False)).order
    assert unpaid.state == model.SUBMITTED
    card = new_card()
    paid = model.single(await orders.pay_orders(conn, [orders.Payment(unpaid.order_no, card_no=card)]))
    assert paid.state == model.PAID and paid.card_no == card
    assert model.single(await orders.pay_orders(conn, [orders.Payment(unpaid.order_no)])) == paid  # idempotent


async def test_serial_repeat_returns_the_same_order_and_other_content_is_refused(
    conn: asyncpg.Connection, audited: None
) -> None:
    merchant = await new_merchant(conn, 10_000)
    platform_id = await conn.fetchval(
        "INSERT INTO platforms (platform_raw, merchant_id) VALUES ($1, $2) RETURNING id",
        "t" + unique_digits(10),
        merchant,
    )
    card = new_card()
    kwargs = dict(merchant_id=merchant, amount_cents=300, card_no=card, platform_id=platform_id,
                  biz_serial_no="S-1")
    first = await orders.create_order(conn, request_digest="d1", **kwargs)  # type: ignore[arg-type]
    again = await orders.create_order(conn, request_digest="d1", **kwargs)  # type: ignore[arg-type]
    assert first.created and not again.created and again.order.order_no == first.order.order_no
    with pytest.raises(OrderError) as err:
        await orders.create_order(conn, request_digest="d2", **kwargs)  # type: ignore[arg-type]
    assert err.value.code is OrderErrorCode.SERIAL_REUSED
    assert (await fund_balance(conn, merchant)).debits_pending == 300


async def test_expired_order_is_voided_by_the_sweeper(
    conn: asyncpg.Connection, pool: asyncpg.Pool, audited: None
) -> None:
    merchant = await new_merchant(conn, 1_000)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    order = (await orders.create_order(
        conn, merchant_id=merchant, amount_cents=400, card_no=new_card(),
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300),
    )).order
    assert order.expires_at is not None and order.expires_at > past
    await conn.execute("SELECT pg_sleep(0.4)")
    # Sweep until it is voided: a running platform's sweeper may hold the row (SKIP LOCKED)
    # and commit the void itself a moment later.
    for _ in range(50):
        await sweeper.sweep_once(pool)
        expired = await model.get_order(conn, order.order_no)
        assert expired is not None
        if expired.state == model.VOIDED:
            break
        await conn.execute("SELECT pg_sleep(0.05)")
    assert expired.state == model.VOIDED
    transfer = await ledger.get_transfer(conn, model.pay_transfer_id(order.order_no))
    assert transfer is not None and transfer.status == "voided"
    assert (await fund_balance(conn, merchant)).available == 1_000


async def test_a_sweep_that_meets_a_deadlock_is_run_again_whole(
    conn: asyncpg.Connection, pool: asyncpg.Pool, audited: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper's first attempt voids, then deadlocks: rolled back and run again by the retry policy,
    the reservation is released once."""
    merchant = await new_merchant(conn, 1_000)
    order = (await orders.create_order(
        conn, merchant_id=merchant, amount_cents=400, card_no=new_card(),
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=200),
    )).order
    await conn.execute("SELECT pg_sleep(0.3)")
    me, real, attempts = asyncio.current_task(), sweeper._sweep, []

    async def deadlocks_once(tx: asyncpg.Connection) -> Any:
        answer = await real(tx)
        if asyncio.current_task() is me:  # not the running platform's own sweeper
            attempts.append(answer)
            if len(attempts) == 1:
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return answer

    monkeypatch.setattr(sweeper, "_sweep", deadlocks_once)
    await sweeper.sweep_once(pool)
    assert len(attempts) == 2
    for _ in range(50):  # the running platform's sweeper may have held the row (SKIP LOCKED)
        voided = await model.get_order(conn, order.order_no)
        assert voided is not None
        if voided.state == model.VOIDED:
            break
        await sweeper.sweep_once(pool)
    assert voided.state == model.VOIDED
    assert (await fund_balance(conn, merchant)).available == 1_000


async def test_paying_an_expired_order_is_refused(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 1_000)
    order = (await orders.create_order(
        conn, merchant_id=merchant, amount_cents=100, card_no=new_card(), pay=False,
        expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
    )).order
    with pytest.raises(OrderError) as err:
        model.single(await orders.pay_orders(conn, [orders.Payment(order.order_no)]))
    assert err.value.code is OrderErrorCode.EXPIRED


async def test_loading_order_survives_expiry_and_posts_on_load(
    conn: asyncpg.Connection, pool: asyncpg.Pool, audited: None
) -> None:
    merchant = await new_merchant(conn, 1_000)
    card = new_card()
    order = (await orders.create_order(
        conn, merchant_id=merchant, amount_cents=250, card_no=card,
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300),
    )).order
    loading = model.single(await orders.mark_loading(
        conn, [orders.Loading(order.order_no, terminal_code="11552001", online_serial=7)]
    ))
    assert loading.loading and loading.online_serial == 7
    await conn.execute("SELECT pg_sleep(0.4)")
    while await sweeper.sweep_once(pool):
        pass
    still = await model.get_order(conn, order.order_no)
    assert still is not None and still.state == model.PAID and still.loading
    loaded = model.single(await orders.mark_loaded(conn, [orders.Loaded(order.order_no, balance_after_cents=250)]))
    assert loaded.state == model.LOADED and not loaded.loading
    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card)
    assert (await ledger.get_balance(conn, purse)).posted == 250
    confirmed = model.single(await orders.confirm_orders(conn, [order.order_no]))
    assert confirmed.state == model.CONFIRMED


async def test_release_loading_makes_the_order_loadable_again(conn: asyncpg.Connection, audited: None) -> None:
    merchant = await new_merchant(conn, 1_000)
    order = (await orders.create_order(conn, merchant_id=merchant, amount_cents=100, card_no=new_card())).order
    model.single(await orders.mark_loading(conn, [orders.Loading(order.order_no)]))
    with pytest.raises(OrderError):
        model.single(await orders.mark_loading(conn, [orders.Loading(order.order_no)]))
    released = model.single(await orders.release_loading(conn, [order.order_no]))
    assert not released.loading
    transfer = await ledger.get_transfer(conn, model.pay_transfer_id(order.order_no))
    assert transfer is not None and transfer.timeout_at == order.expires_at
    assert model.single(await orders.mark_loading(conn, [orders.Loading(order.order_no)])).loading


async def test_void_order_releases_the_reservation(conn: asyncpg.Connection, audited: None) -> None:
    merchant = await new_merchant(conn, 1_000)
    order = (await orders.create_order(conn, merchant_id=merchant, amount_cents=600, card_no=new_card())).order
    voided = model.single(await orders.void_orders(conn, [orders.Void(order.order_no)]))
    assert voided.state == model.VOIDED
    assert (await fund_balance(conn, merchant)).available == 1_000
    with pytest.raises(OrderError):
        model.single(await orders.pay_orders(conn, [orders.Payment(order.order_no)]))


async def test_query_orders_filters_by_card_state_and_date(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    card = new_card()
    a = (await orders.create_order(conn, merchant_id=merchant, amount_cents=100, card_no=card)).order
    b = (await orders.create_order(conn, merchant_id=merchant, amount_cents=200, card_no=card, pay=False)).order
    await orders.create_order(conn, merchant_id=merchant, amount_cents=300, card_no=new_card())
    by_card = await queries.query_orders(conn, merchant_id=merchant, card_no=card)
    assert {o.order_no for o in by_card} == {a.order_no, b.order_no}
    paid = await queries.query_orders(conn, merchant_id=merchant, card_no=card, states=[model.PAID])
    assert [o.order_no for o in paid] == [a.order_no]
    today = model.local_date(dt.datetime.now(dt.UTC))
    assert len(await queries.query_orders(conn, merchant_id=merchant, start_date=today, end_date=today)) == 3
    tomorrow = today + dt.timedelta(days=1)
    assert await queries.query_orders(conn, merchant_id=merchant, start_date=tomorrow) == []


async def test_settle_day_moves_loaded_orders_and_is_idempotent(
    conn: asyncpg.Connection, tmp_path: Path, audited: None
) -> None:
    merchant = await new_merchant(conn, 10_000)
    raw = "s" + unique_digits(8)
    platform_id = await conn.fetchval(
        "INSERT INTO platforms (platform_raw, merchant_id) VALUES ($1, $2) RETURNING id", raw, merchant
    )
    made = []
    for i in range(3):
        made.append((await orders.create_order(
            conn, merchant_id=merchant, amount_cents=100 + i, card_no=new_card(), platform_id=platform_id,
            biz_serial_no=f"B{i}", request_digest="x",
        )).order)
    model.single(await orders.mark_loading(conn, [orders.Loading(made[0].order_no)]))
    model.single(await orders.mark_loaded(conn, [orders.Loaded(made[0].order_no)]))
    model.single(await orders.mark_loading(conn, [orders.Loading(made[1].order_no)]))  # left loading: listed apart
    today = model.local_date(dt.datetime.now(dt.UTC))
    statements = await settlement.settle_day(conn, today)
    mine = next(s for s in statements if s.platform_raw == raw)
    assert [o.order_no for o in mine.settled] == [made[0].order_no]
    assert [o.order_no for o in mine.loading] == [made[1].order_no]
    settled = await model.get_order(conn, made[0].order_no)
    assert settled is not None and settled.state == model.SETTLED and settled.settled_at is not None
    paths = settlement.write_statements([mine], tmp_path)
    text = paths[0].read_text()
    assert text.splitlines()[1].startswith(f"settled,B0,{made[0].order_no},")
    assert text.splitlines()[2].startswith(f"loading,B1,{made[1].order_no},")
    mtime = paths[0].stat().st_mtime_ns
    again = next(s for s in await settlement.settle_day(conn, today) if s.platform_raw == raw)
    assert again.render_csv() == text
    settlement.write_statements([again], tmp_path)
    assert paths[0].stat().st_mtime_ns == mtime
    assert (await model.get_order(conn, made[0].order_no)).settled_at == settled.settled_at  # type: ignore[union-attr]


async def test_query_orders_filters_by_userid_and_payway_in_extra(conn: asyncpg.Connection) -> None:
    merchant = await new_merchant(conn, 10_000)
    user = "user-" + unique_digits(8)
    mine = (await orders.create_order(conn, merchant_id=merchant, amount_cents=100, card_no=new_card(),
                                      extra={"userid": user, "payway": "00"})).order
    await orders.create_order(conn, merchant_id=merchant, amount_cents=100, card_no=new_card(),
                              extra={"userid": user + "x", "payway": "00"})
    assert mine.extra == {"userid": user, "payway": "00"}
    found = await queries.query_orders(conn, merchant_id=merchant, userid=user)
    assert [o.order_no for o in found] == [mine.order_no]
    assert await queries.count_orders(conn, merchant_id=merchant, payway="00") == 2
    assert await queries.count_orders(conn, merchant_id=merchant, payway="01") == 0

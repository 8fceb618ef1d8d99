"""End to end: the real DD server on a free port against PostgreSQL; the tests speak to it as a
terminal (TerminalClient over a socket) with a virtual security module and virtual cards.

Happy paths of every flow (sign-in, recharge with receipt, query, deposit open and close),
with their ledger and order effects; the ledger audit balances after every test.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import (
    DEPOSIT_UPDATE_HEADER,
    bcd_decode,
    be_decode,
    script_decode,
)
from recharge.ledger import transfers as ledger
from recharge.orders import model
from server.stages import INFO_REVERSAL_OK

pytestmark = pytest.mark.usefixtures("audited")


def query(term: SimTerminal, order_no: str) -> Any:
    with term.client().connect() as client:
        return client.dd21(order_no)


async def purse_posted(conn: asyncpg.Connection, card_no: str) -> int:
    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card_no)
    return (await ledger.get_balance(conn, purse)).posted


async def test_signin_happy_path_persists_signed_in_until_and_serial(term: SimTerminal, conn: asyncpg.Connection) -> None:
    dd08 = await asyncio.to_thread(term.client().sign_in, term.module())
    assert dd08.stage == 0x08 and dd08.flow == 0xFF and dd08.result == 0
    assert dd08.pki == bytes.fromhex(term.pki) and len(dd08.info) == 15
    serial, expiry = bcd_decode(dd08.info[:8]), bcd_decode(dd08.info[8:])
    row = await conn.fetchrow(
        "SELECT signin_serial, signed_in_until, signin_pki FROM terminals WHERE code = $1", term.code
    )
    assert row["signin_serial"] == serial and row["signin_pki"] == term.pki
    assert row["signed_in_until"].astimezone(model.LOCAL_TZ).strftime("%Y%m%d%H%M%S") == expiry


async def test_signin_answers_carry_ff_pki_until_dd04_then_the_module_pki(term: SimTerminal) -> None:
    def talk() -> None:
        client, module = term.client(), term.module()
        with client.connect():
            dd02 = client.dd01()
            assert (dd02.stage, dd02.flow, dd02.pki, dd02.info) == (0x02, 0, b"\xff" * 4, bytes.fromhex("BB10000000"))
            dd04 = client.dd03(module.r_init())
            assert dd04.pki == bytes.fromhex(term.pki) and len(dd04.info) == 16
            dd06 = client.dd05(module.ac_login1(dd04.info))
            assert dd06.flow == 0x00 and len(dd06.info) == 19
            dd08 = client.dd07(module.ac_login2(dd06.info))
            assert dd08.result == 0 and client.closed_by_peer()

    await asyncio.to_thread(talk)


async def test_recharge_happy_path_posts_transfer_and_returns_receipt(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=500)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 1234)
    dd20 = await asyncio.to_thread(term.client().recharge, card, order_no, 1234)
    assert dd20.stage == 0x20 and dd20.result == 0 and dd20.flow == 0xFF
    assert card.balance == 1734
    info = dd20.info
    assert len(info) == 30 and info[10:14] == bytes.fromhex(term.pki)
    assert bcd_decode(info[14:22]) == card.card_no and be_decode(info[22:26]) == 1234
    assert be_decode(info[26:30]) == 1734
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.CONFIRMED and not order.loading
    assert bcd_decode(info[:10]) == order.record_id and order.balance_after_cents == 1734
    assert await purse_posted(conn, card.card_no) == 1234
    cpu = await conn.fetchrow("SELECT kind, last_balance_cents FROM cards WHERE card_no = $1", card.card_no)
    assert cpu["kind"] == "cpu" and cpu["last_balance_cents"] == 500  # first sight; the load's are in the order
    assert order.balance_before_cents == 500


def _record_dd13_tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The DD13s the server ran as a task (``flows.dd13``), by card number, from now on."""
    import dataclasses

    from server.dispatch import STAGES

    ran: list[str] = []
    row = STAGES.rows[0x13, 1]
    step = row.handler

    async def recorded(dd: Any, st: Any, frame: Any) -> Any:
        answer = await step(dd, st, frame)
        ran.append(st.card_no)
        return answer

    monkeypatch.setitem(STAGES.rows, (0x13, 1), dataclasses.replace(row, handler=recorded))
    return ran


async def test_dd13_of_known_cpu_card_writes_nothing_and_dd15_keeps_its_balance_in_the_order(
    term: SimTerminal, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DD13 of a paid order's own (known) CPU card is answered at once, without a task, and
    changes no row: the balance the card reported is stored by DD15's step as the order's
    balance before."""
    ran_as_task = _record_dd13_tasks(monkeypatch)
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=900)
    await conn.execute("INSERT INTO cards (card_no, kind, last_balance_cents) VALUES ($1, 'cpu', 5)", card.card_no)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 100)
    loop = asyncio.get_running_loop()

    def snapshot() -> Any:
        return asyncio.run_coroutine_threadsafe(conn.fetchrow(
            "SELECT c.xmin::text AS card_version, c.last_balance_cents, o.xmin::text AS order_version,"
            " o.balance_before_cents FROM cards c, orders o WHERE c.card_no = $1 AND o.order_no = $2",
            card.card_no, order_no,
        ), loop).result(10)

    seen: list[Any] = []

    def talk() -> None:
        client = term.client()
        with client.connect():
            dd12 = client.dd11(100, order_no)
            seen.append(snapshot())
            dd14 = client.dd13(card.run_script(dd12.info))
            assert dd14.result == 0
            seen.append(snapshot())
            assert client.dd15(card.run_script(dd14.info)).result == 0
            seen.append(snapshot())

    await asyncio.to_thread(talk)
    assert ran_as_task == []  # answered by flows.dd13_sync
    before_dd13, after_dd14, after_dd16 = seen
    assert after_dd14 == before_dd13  # no row version changed
    assert after_dd16["card_version"] == before_dd13["card_version"] and after_dd16["last_balance_cents"] == 5
    assert after_dd16["balance_before_cents"] == 900


async def test_dd13_of_a_card_not_yet_known_creates_its_cpu_row(
    term: SimTerminal, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran_as_task = _record_dd13_tasks(monkeypatch)
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=40)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 100)

    def talk() -> None:
        client = term.client()
        with client.connect():
            assert client.dd13(card.run_script(client.dd11(100, order_no).info)).result == 0

    await asyncio.to_thread(talk)
    assert ran_as_task == [card.card_no]  # a card row to write: the step runs as a task
    row = await conn.fetchrow("SELECT kind, last_balance_cents FROM cards WHERE card_no = $1", card.card_no)
    assert row is not None and (row["kind"], row["last_balance_cents"]) == ("cpu", 40)


async def test_recharge_without_receipt_leaves_order_loaded(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card()
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 300)
    dd18 = await asyncio.to_thread(term.client().recharge, card, order_no, 300, receipt=False)
    assert (dd18.stage, dd18.flow, dd18.result, dd18.info) == (0x18, 0xFF, 0, b"")
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.LOADED


async def test_recharge_of_unpaid_order_pays_it_at_dd11(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card()
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 777, pay=False)
    client = term.client()
    with client.connect():
        assert (await asyncio.to_thread(client.dd11, 777, order_no)).result == 0
        paid = await model.get_order(conn, order_no)
        assert paid is not None and paid.state == model.PAID and paid.pay_transfer_id is not None
    await asyncio.to_thread(term.client().recharge, card, order_no, 777)
    assert await purse_posted(conn, card.card_no) == 777


async def test_recharge_of_order_naming_no_card_pays_the_card_read_at_dd13(
    term: SimTerminal, conn: asyncpg.Connection
) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=10)
    order_no = await fixtures.paid_order(conn, term.merchant_id, None, 555, pay=False)
    await asyncio.to_thread(term.client().recharge, card, order_no, 555)
    order = await model.get_order(conn, order_no)
    assert order is not None and order.card_no == card.card_no and order.state == model.CONFIRMED
    assert card.balance == 565 and await purse_posted(conn, card.card_no) == 555


async def test_query_of_loaded_order_returns_receipt(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=100)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 200)
    await asyncio.to_thread(term.client().recharge, card, order_no, 200, receipt=False)
    dd22 = await asyncio.to_thread(query, term, order_no)
    assert (dd22.stage, dd22.flow, dd22.result) == (0x22, 0xFF, 0)
    assert be_decode(dd22.info[22:26]) == 200 and be_decode(dd22.info[26:30]) == 300
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.CONFIRMED


async def test_query_of_order_never_attempted_answers_A5_with_zero_amount(
    term: SimTerminal, conn: asyncpg.Connection
) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    order_no = await fixtures.paid_order(conn, term.merchant_id, "1680" + fixtures.random_digits(12), 200)
    dd22 = await asyncio.to_thread(query, term, order_no)
    assert (dd22.stage, dd22.flow, dd22.result) == (0x22, 0xFF, INFO_REVERSAL_OK)
    assert be_decode(dd22.info[22:26]) == 0 and be_decode(dd22.info[26:30]) == 0


def _deposit(term: SimTerminal, card: Any, operation: int, amount: int) -> Any:
    """What a terminal does: read the card (select DDF1/ADF1), get a challenge, then DD73."""
    card.transmit(bytes.fromhex("00A4000002DDF1"))
    card.transmit(bytes.fromhex("00A4000002ADF1"))
    challenge = card.transmit(bytes.fromhex("0084000004"))[:4]
    with term.client().connect() as client:
        return client.dd73(operation, card.card_no, amount, challenge)


async def test_deposit_open_then_close_moves_money_and_card_flag(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card()
    dd74 = await asyncio.to_thread(_deposit, term, card, 0x01, 2000)
    assert (dd74.stage, dd74.flow, dd74.result) == (0x74, 0xFF, 0)
    [instruction] = script_decode(dd74.info)
    assert instruction.apdu[:5] == DEPOSIT_UPDATE_HEADER and instruction.apdu[5] == 0x01
    assert card.transmit(instruction.apdu) == b"\x90\x00" and card.deposit_flag == 1
    deposit = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_DEPOSIT, card_no=card.card_no)
    assert (await ledger.get_balance(conn, deposit)).posted == 2000
    assert await conn.fetchval("SELECT deposit_open FROM cards WHERE card_no = $1", card.card_no)

    dd74 = await asyncio.to_thread(_deposit, term, card, 0x02, 2000)
    assert dd74.result == 0
    [instruction] = script_decode(dd74.info)
    assert card.transmit(instruction.apdu) == b"\x90\x00" and card.deposit_flag == 0
    assert (await ledger.get_balance(conn, deposit)).posted == 0
    assert not await conn.fetchval("SELECT deposit_open FROM cards WHERE card_no = $1", card.card_no)

"""Recharge faults end to end: wrong MAC1, wrong TAC, a card error status word, the connection
lost after DD16 and recovered with DD21 (credited → posted; not credited → back to paid, then
voided by expiry), two terminals racing for one order, and the sweeper never voiding a load
left *loading*. The ledger audit balances after each test.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import pytest

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import Frame, be_decode, reply_encode
from core_ext import Reply as CardReply
from recharge import sweeper
from recharge.ledger import transfers as ledger
from recharge.loads import pboc
from recharge.orders import model
from server.terminal_client import FlowFailed
from tests.conftest import sweep_until

pytestmark = pytest.mark.usefixtures("audited")


async def get(conn: asyncpg.Connection, order_no: str) -> model.Order:
    order = await model.get_order(conn, order_no)
    assert order is not None
    return order


async def transfer_status(conn: asyncpg.Connection, order: model.Order) -> tuple[str, Any]:
    assert order.pay_transfer_id is not None
    t = await ledger.get_transfer(conn, order.pay_transfer_id)
    assert t is not None
    return t.status, t.timeout_at


async def test_wrong_mac1_answers_AA_and_leaves_order_paid_not_loading(
    signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    card = signed_in.card()
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)

    def talk() -> Frame:
        with signed_in.client().connect() as client:
            dd14 = client.dd13(card.run_script(client.dd11(100, order_no).info))
            reply = bytearray(card.run_script(dd14.info))
            reply[-3] ^= 0x01  # the last byte of MAC1
            return client.dd15(bytes(reply))

    answer = await asyncio.to_thread(talk)
    assert (answer.stage, answer.result) == (0x16, 0xAA)
    order = await get(conn, order_no)
    assert order.state == model.PAID and not order.loading
    status, timeout_at = await transfer_status(conn, order)
    assert status == "pending" and timeout_at is not None


async def test_wrong_tac_answers_AA_and_leaves_load_loading_without_timeout(
    signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    card = signed_in.card()
    card.corrupt_tac = True
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)
    with pytest.raises(FlowFailed) as failed:
        await asyncio.to_thread(signed_in.client().recharge, card, order_no, 100)
    assert (failed.value.stage, failed.value.result) == (0x18, 0xAA)
    order = await get(conn, order_no)
    assert order.state == model.PAID and order.loading and order.loading_since is not None
    assert await transfer_status(conn, order) == ("pending", None)
    # the card holds the money: recovery finds the proof and posts it
    card.corrupt_tac = False

    def recover() -> Frame:
        with signed_in.client().connect() as client:
            return client.dd21_reply(order_no, card.run_script(client.dd21(order_no).info))

    answer = await asyncio.to_thread(recover)
    assert (answer.stage, answer.flow, answer.result) == (0x22, 0xFF, 0)
    assert (await get(conn, order_no)).state == model.CONFIRMED


async def test_card_error_status_word_goes_back_to_paid_and_retry_loads(
    signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    card = signed_in.card(balance_cents=5)
    card.fail_next_credit_with = b"\x69\x85"
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)
    with pytest.raises(FlowFailed) as failed:
        await asyncio.to_thread(signed_in.client().recharge, card, order_no, 100)
    assert (failed.value.stage, failed.value.result) == (0x18, 0xAA)
    order = await get(conn, order_no)
    assert order.state == model.PAID and not order.loading
    status, timeout_at = await transfer_status(conn, order)
    assert status == "pending" and timeout_at == order.expires_at
    await asyncio.to_thread(signed_in.client().recharge, card, order_no, 100)
    assert card.balance == 105 and (await get(conn, order_no)).state == model.CONFIRMED


async def test_connection_dropped_after_dd16_then_dd21_posts_when_card_was_credited(
    signed_in: SimTerminal, conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    card = signed_in.card(balance_cents=1000)
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 250)

    def load_and_lose_the_answer() -> None:
        with signed_in.client().connect() as client:
            dd16 = fixtures.recharge_until_dd16(client, card, order_no, 250)
            card.run_script(dd16)  # the card is credited, but the terminal never sends DD17

    await asyncio.to_thread(load_and_lose_the_answer)
    order = await get(conn, order_no)
    assert order.loading and card.balance == 1250
    await conn.execute("UPDATE orders SET expires_at = now() - interval '1 second' WHERE order_no = $1", order_no)
    while await sweeper.sweep_once(pool):  # a loading order is never swept, even past its expiry
        pass
    assert (await get(conn, order_no)).loading

    def recover() -> tuple[Frame, Frame]:
        with signed_in.client().connect() as client:
            dd22 = client.dd21(order_no)
            return dd22, client.dd21_reply(order_no, card.run_script(dd22.info))

    prove, answer = await asyncio.to_thread(recover)
    assert (prove.stage, prove.flow, prove.result) == (0x22, 0x00, 0)
    assert prove.info[2:7] == bytes.fromhex("805A000202")
    assert (answer.flow, answer.result) == (0xFF, 0)
    assert be_decode(answer.info[22:26]) == 250 and be_decode(answer.info[26:30]) == 1250
    order = await get(conn, order_no)
    assert order.state == model.CONFIRMED and not order.loading
    assert (await transfer_status(conn, order))[0] == "posted"


async def test_connection_dropped_after_dd16_then_dd21_back_to_paid_and_expiry_voids(
    signed_in: SimTerminal, conn: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    card = signed_in.card(balance_cents=70)
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 250)

    def load_without_credit_then_recover() -> Frame:
        with signed_in.client().connect() as client:
            fixtures.recharge_until_dd16(client, card, order_no, 250)
        with signed_in.client().connect() as client:
            return client.dd21_reply(order_no, card.run_script(client.dd21(order_no).info))

    answer = await asyncio.to_thread(load_without_credit_then_recover)
    assert (answer.flow, answer.result) == (0xFF, 0xA5)
    assert be_decode(answer.info[26:30]) == 70  # the balance the card reported before the load
    order = await get(conn, order_no)
    assert order.state == model.PAID and not order.loading and card.balance == 70
    # the reservation may expire again: past its expiry the sweeper voids it and the order is 06
    await conn.execute("UPDATE orders SET expires_at = now() - interval '1 second' WHERE order_no = $1", order_no)
    await conn.execute("UPDATE transfers SET timeout_at = now() - interval '1 second' WHERE id = $1",
                       order.pay_transfer_id)

    async def voided() -> bool:
        return (await get(conn, order_no)).state == model.VOIDED

    await sweep_until(pool, voided)
    order = await get(conn, order_no)
    assert order.state == model.VOIDED
    assert (await transfer_status(conn, order))[0] == "voided"

    def query() -> Frame:
        with signed_in.client().connect() as client:
            return client.dd21(order_no)

    assert (await asyncio.to_thread(query)).result == 0xA5


async def test_recovery_with_unparseable_reply_stays_loading_A4(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    card = signed_in.card()
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)

    def talk() -> Frame:
        with signed_in.client().connect() as client:
            fixtures.recharge_until_dd16(client, card, order_no, 100)
        with signed_in.client().connect() as client:
            client.dd21(order_no)
            return client.dd21_reply(order_no, reply_encode([CardReply(1, b"\x6a\x82")]))

    answer = await asyncio.to_thread(talk)
    assert answer.result == 0xA4
    assert (await get(conn, order_no)).loading


async def test_two_terminals_racing_for_one_order_load_it_exactly_once(
    platform: Any, signed_in: SimTerminal, conn: asyncpg.Connection, test_keys: Any
) -> None:
    rival = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    await asyncio.to_thread(rival.client().sign_in, rival.module())
    card_no = "1680" + fixtures.random_digits(12)
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card_no, 300)
    cards = [signed_in.card(card_no, 0), rival.card(card_no, 0)]  # the same card number on two readers
    gate = threading.Barrier(2)  # both have read the card before either sends DD15

    def race(term: SimTerminal, card: Any) -> int:
        with term.client().connect() as client:
            dd12 = client.dd11(300, order_no)
            if dd12.result:
                return dd12.result
            dd14 = client.dd13(card.run_script(dd12.info))
            gate.wait(timeout=5)
            dd16 = client.dd15(card.run_script(dd14.info))
            if dd16.result:
                return dd16.result
            return client.dd17(card.run_script(dd16.info)).result

    results = await asyncio.gather(asyncio.to_thread(race, signed_in, cards[0]),
                                   asyncio.to_thread(race, rival, cards[1]))
    assert sorted(results) == [0x00, 0x96]
    assert sorted(c.balance for c in cards) == [0, 300]
    order = await get(conn, order_no)
    assert order.state == model.LOADED
    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card_no)
    assert (await ledger.get_balance(conn, purse)).posted == 300


async def _lose_after_dd16(term: SimTerminal, card: Any, order_no: str, amount: int, *, credit: bool) -> None:
    def talk() -> None:
        with term.client().connect() as client:
            dd16 = fixtures.recharge_until_dd16(client, card, order_no, amount)
            if credit:
                card.run_script(dd16)  # credited, but the terminal never sends DD17

    await asyncio.to_thread(talk)


async def test_dd21_settles_a_lost_outcome_through_the_load_lanes(
    platform: Any, signed_in: SimTerminal, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DD21's post and release are the load engine's items on the shared lanes (the orders' book: the very
    groups DD17 uses), and its receipt's confirmation DD19's group: no transaction of its own settles a load."""
    lanes = platform.dd.dd.lanes
    committed: list[str] = []
    commit = lanes.commit

    async def spy(group: Any, item: Any) -> Any:
        committed.append(group.name)
        return await commit(group, item)

    credited, never = signed_in.card(balance_cents=1000), signed_in.card(balance_cents=70)
    loaded_no = await fixtures.paid_order(conn, signed_in.merchant_id, credited.card_no, 250)
    paid_no = await fixtures.paid_order(conn, signed_in.merchant_id, never.card_no, 250)
    await _lose_after_dd16(signed_in, credited, loaded_no, 250, credit=True)
    await _lose_after_dd16(signed_in, never, paid_no, 250, credit=False)
    monkeypatch.setattr(lanes, "commit", spy)

    def recover(card: Any, order_no: str) -> Frame:
        with signed_in.client().connect() as client:
            return client.dd21_reply(order_no, card.run_script(client.dd21(order_no).info))

    loaded = await asyncio.to_thread(recover, credited, loaded_no)
    assert (loaded.result, be_decode(loaded.info[26:30])) == (0x00, 1250)
    assert committed == ["order_post", "dd19_confirm"], "posted on the lanes, confirmed as DD19 confirms"
    committed.clear()
    back = await asyncio.to_thread(recover, never, paid_no)
    assert (back.result, be_decode(back.info[26:30])) == (0xA5, 70)
    assert committed == ["order_release"]
    assert (await get(conn, loaded_no)).state == model.CONFIRMED
    assert (await get(conn, paid_no)).state == model.PAID and not (await get(conn, paid_no)).loading


async def test_two_recoveries_of_one_order_at_once_both_get_the_receipt_and_post_once(
    signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    card = signed_in.card(balance_cents=500)
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 120)
    await _lose_after_dd16(signed_in, card, order_no, 120, credit=True)
    order = await get(conn, order_no)
    assert order.online_serial is not None
    proof = card.run_script(pboc.prove_script(order.online_serial))
    gate = threading.Barrier(2)  # both asked for the proof before either sends it

    def recover() -> Frame:
        with signed_in.client().connect() as client:
            assert client.dd21(order_no).flow == 0x00
            gate.wait(timeout=5)
            return client.dd21_reply(order_no, proof)

    answers = await asyncio.gather(asyncio.to_thread(recover), asyncio.to_thread(recover))
    assert [a.result for a in answers] == [0x00, 0x00] and answers[0].info == answers[1].info, "one receipt"
    order = await get(conn, order_no)
    assert order.state == model.CONFIRMED and (await transfer_status(conn, order))[0] == "posted"
    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card.card_no)
    assert (await ledger.get_balance(conn, purse)).posted == 120, "the ledger moved once"

"""The counter's and the hall's steps of the SIM wallet end to end (SPEC 7.6, 7.7): the real server, virtual
RFID-SIMs, handsets and hall POS terminals; the SIM swap with its balance carried over as a waiting load, the
counter's wallet cancellation, 销号; every hostile request refused with its code and nothing changed; the
ledger audited after each test."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from core_ext.virtual_pos import SHANGHAI
from core_ext.virtual_sim import STATE_CANCELLED, STATE_OPEN, VirtualRfidSim
from tests.conftest import settings_changed, unique_digits
from tests.wallet_counter_world import ID, REASON, WalletDesk

pytestmark = pytest.mark.usefixtures("audited")
WHEN = datetime(2026, 1, 5, 10, 0, 0, tzinfo=SHANGHAI)


async def test_readable_swap_carries_the_balance_to_the_new_card(desk: WalletDesk, platform: Any) -> None:
    phone, msisdn, acct = await desk.wallet_phone(15_000)
    record = desk.pos.buy_out(phone.sim, WHEN)
    assert (record.amount, record.balance_after, phone.sim.balance) == (15_000, 0, 0)
    reply = await desk.send(desk.pos, desk.pos.swap_request(record))
    assert reply["code"] == "0000" and reply["data"]["amount"] == 15_000 and reply["data"]["load_id"].startswith("L")
    assert await desk.figure(f"W/{acct}") == (0, 0, 15_000), "W → C posted, the earmark C → W pending"
    assert await desk.figure(f"C/{acct}") == (15_000, 15_000, 0), "the cash is earmarked: none of it available"
    assert (await desk.exchange(phone, "account.balance")).code == "5007", "the old card retired"
    again = await desk.send(desk.pos, desk.pos.swap_request(record))
    assert again["code"] == "5011", "the same buy-out again: a duplicate (the card retired with the first)"
    new_card = await desk.stock()
    with settings_changed(platform, wallet_handset_blacklist="Nokia 6212, Moto K1"):
        before = await desk.transfers()
        assert (await desk.swap(msisdn, new_card, model="nokia  6212"))[0] == "5012"
        assert (await desk.swap(msisdn, new_card, id_type="id_card", id_number="1"))[0] == "3007"
        assert (await desk.swap(msisdn, "7310" + unique_digits(12)))[0] == "5007", "not a registered stock card"
        assert (await desk.swap("13" + unique_digits(9).replace("0", "5", 1), new_card))[0] == "2008"
        assert (await desk.swap(msisdn, "12345"))[0] == "1001"
        assert await desk.transfers() == before
        code, data = await desk.swap(msisdn, new_card, model="Galaxy S3")
    assert (code, data) == ("0000", {"msisdn": msisdn, "card_no": new_card})
    async with desk.w.pool.acquire() as conn:
        wallet = await conn.fetchrow("SELECT card_no, state, limit_cents FROM wallets WHERE account_id = $1", acct)
        swap = await conn.fetchrow("SELECT new_card, amount, limit_cents FROM wallet_swaps WHERE account_id = $1",
                                   acct)
    assert tuple(wallet) == (new_card, "open", 20_000) and tuple(swap) == (new_card, 15_000, 20_000)
    assert (await desk.swap(msisdn, new_card))[0] == "0000", "the same card bound again answers as the first time"
    card = VirtualRfidSim(new_card, desk.keys)  # ③ 换卡圈存: the hall POS drives the swap's load onto the new card
    picked = await desk.send(desk.pos, desk.pos.load_request(new_card))
    assert picked["code"] == "0000" and picked["data"]["load_id"] == reply["data"]["load_id"]
    step = await desk.send(desk.pos, desk.pos.continue_request(picked["data"]["load_id"],
                                                               challenge=desk.pos.challenge(card)))
    while step["code"] == "0000" and step["data"].get("script"):
        replies = desk.pos.run_script(card, step["data"]["script"])
        step = await desk.send(desk.pos, desk.pos.continue_request(picked["data"]["load_id"], replies))
    assert step["code"] == "0000", step
    assert (card.state, card.limit, card.balance) == (STATE_OPEN, 20_000, 15_000), "the balance carried over"
    assert await desk.figure(f"W/{acct}") == (15_000, 0, 0) and await desk.figure(f"C/{acct}") == (0, 0, 0)


async def test_swap_refusals_change_nothing(desk: WalletDesk) -> None:
    phone, _, acct = await desk.wallet_phone(10_000)
    shop = await desk.terminal(merchant="M" + unique_digits(7))
    record = shop.buy_out(phone.sim, WHEN)
    assert (await desk.send(shop, shop.swap_request(record)))["code"] == "1004", "a merchant's terminal"
    before = (await desk.transfers(), await desk.figure(f"W/{acct}"))
    assert (await desk.send(desk.pos, desk.pos.swap_request(record)))["code"] == "5008", "TAC of another terminal"
    other = VirtualRfidSim("7310" + unique_digits(12), desk.keys, balance=500, state=STATE_OPEN)
    stranger = desk.pos.buy_out(other, WHEN)
    assert (await desk.send(desk.pos, desk.pos.swap_request(stranger)))["code"] == "5007"
    phone.sim.balance = 10_000  # the merchant's buy-out above never reached the platform: a fresh card state
    part = desk.pos.purchase(phone.sim, 4_000, WHEN)
    assert (await desk.send(desk.pos, desk.pos.swap_request(part)))["code"] == "5008", "balance_after not 0"
    assert (await desk.transfers(), await desk.figure(f"W/{acct}")) == before


async def test_counter_cancellation_buys_the_wallet_out(desk: WalletDesk, platform: Any) -> None:
    phone, msisdn, acct = await desk.wallet_phone(8_000)
    record = desk.pos.buy_out(phone.sim, WHEN)
    challenge = desk.pos.challenge(phone.sim)
    assert (await desk.send(desk.pos, desk.pos.wallet_cancel_request(record, challenge)))["code"] == "1004"
    _, reply, _ = await desk.api.call("POST", "/counter/wallet-cancel", {"msisdn": msisdn, "id_type": "id_card",
                                                                         "id_number": "0", **REASON}, token=desk.counter)
    assert reply["code"] == "3007"
    rid = desk.api.rid()
    body = {"msisdn": msisdn, **ID, **REASON}
    permit = await desk.api.ok("POST", "/counter/wallet-cancel", body, token=desk.counter, rid=rid)
    assert permit["expires_at"].endswith("+08:00")
    assert await desk.api.ok("POST", "/counter/wallet-cancel", body, token=desk.counter, rid=rid) == permit
    elsewhere = await desk.terminal(hall="X" + unique_digits(5))
    assert (await desk.send(elsewhere, elsewhere.wallet_cancel_request(record, challenge)))["code"] == "1004"
    done = await desk.send(desk.pos, desk.pos.wallet_cancel_request(record, challenge))
    assert done["code"] == "0000" and done["data"]["amount"] == 8_000
    assert done["data"]["text"] == "手机钱包已注销,余额80元已转入手机支付现金账户。"
    phone.sim.run_script(bytes.fromhex(done["data"]["script"]))
    assert phone.sim.state == STATE_CANCELLED
    assert await desk.figure(f"W/{acct}") == (0, 0, 0) and await desk.figure(f"C/{acct}") == (8_000, 0, 0)
    assert "手机钱包已注销,余额80元已转入手机支付现金账户。" in await desk.w.notices(msisdn)
    assert (await desk.exchange(phone, "wallet.pause")).code == "5001"
    _, reply, _ = await desk.api.call("POST", "/counter/wallet-cancel", body, token=desk.counter)
    assert reply["code"] == "5001", "nothing left to cancel"


async def test_number_cancelled_voids_waiting_loads_and_closes_on_the_last_upload(desk: WalletDesk) -> None:
    phone, msisdn, acct = await desk.wallet_phone(6_000)
    merchant = "M" + unique_digits(7)
    shop = await desk.terminal(merchant=merchant)
    shop.purchase(phone.sim, 2_500, WHEN)
    boss = await desk.api.operator("boss")
    body = {"name": "张三", **ID, "province": "430000", "brand": "GOTONE", "status": "cancelled", "reason": "销号"}
    data = await desk.api.ok("PUT", f"/registry/subscribers/{msisdn}", body, token=boss, rid=None)
    assert "wallet:pending_closure" in data["events"] and "detached:pending_closure" in data["events"]
    async with desk.w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", acct) == "pending_closure"
    first = await desk.send(shop, shop.batch())
    assert first["data"]["results"][0]["code"] == "0000"
    async with desk.w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM mpay_accounts WHERE id = $1", acct) == "pending_closure"
    shop.purchase(phone.sim, 3_500, WHEN)
    assert (await desk.send(shop, shop.batch()))["data"]["results"][0]["code"] == "0000"
    async with desk.w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", acct) == "cancelled"
        assert await conn.fetchval("SELECT status FROM mpay_accounts WHERE id = $1", acct) == "closed"


async def test_number_cancelled_after_a_swap_voids_the_earmark(desk: WalletDesk) -> None:
    phone, msisdn, acct = await desk.wallet_phone(4_000)
    assert (await desk.send(desk.pos, desk.pos.swap_request(desk.pos.buy_out(phone.sim, WHEN))))["code"] == "0000"
    boss = await desk.api.operator("boss")
    body = {"name": "张三", **ID, "province": "430000", "brand": "GOTONE", "status": "cancelled", "reason": "销号"}
    data = await desk.api.ok("PUT", f"/registry/subscribers/{msisdn}", body, token=boss, rid=None)
    assert data["events"][:2] == ["wallet:waiting_voided:1", "wallet:cancelled"], data["events"]
    assert await desk.figure(f"C/{acct}") == (4_000, 0, 0), "the money stays in cash"
    async with desk.w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM mpay_accounts WHERE id = $1", acct) == "pending_closure"


async def test_counter_requests_replay_by_request_id_and_hostile_input_changes_nothing(desk: WalletDesk) -> None:
    msisdn, card_no = await desk.w.subscriber(), await desk.stock()
    body = {"msisdn": msisdn, "new_card": card_no, "handset_model": "Galaxy S3", **ID, **REASON}
    rid = desk.api.rid()
    _, first, raw = await desk.api.call("POST", "/counter/sim-swap", body, token=desk.counter, rid=rid)
    assert first["code"] == "0000"
    assert (await desk.api.call("POST", "/counter/sim-swap", body, token=desk.counter, rid=rid))[2] == raw
    other = {**body, "new_card": await desk.stock()}
    assert await desk.api.code("POST", "/counter/sim-swap", other, token=desk.counter, rid=rid) == "1005"
    before = await desk.transfers()
    cs = await desk.api.operator("cs")
    for token, fields, code in (
            (cs, body, "1004"), (None, body, "1003"),
            (desk.counter, {**body, "handset_model": "x" * 65}, "1001"),
            (desk.counter, {**body, "new_card": 7310}, "1001"),
            (desk.counter, {**body, "extra": 1}, "1001"),
            (desk.counter, {k: v for k, v in body.items() if k != "id_type"}, "1001"),
            (desk.counter, {k: v for k, v in body.items() if k != "reason"}, "1001"),
            (desk.counter, {**body, "reason": "  "}, "1001")):
        assert await desk.api.code("POST", "/counter/sim-swap", fields, token=token) == code, fields
    cancel = {"msisdn": msisdn, **ID, **REASON}
    assert await desk.api.code("POST", "/counter/wallet-cancel", cancel, token=cs) == "1004"
    assert await desk.api.code("POST", "/counter/wallet-cancel", {"msisdn": msisdn, **ID, **REASON},
                               token=desk.counter) == "2003", "no account yet"
    status, reply, _ = await desk.api.call("POST", "/counter/sim-swap", raw=b"{not json", token=desk.counter)
    assert (status, reply["code"]) == (400, "1001")
    assert await desk.transfers() == before


async def test_a_repeated_pos_request_gets_its_stored_reply(desk: WalletDesk) -> None:
    phone, _, acct = await desk.wallet_phone(2_000)
    request = desk.pos.swap_request(desk.pos.buy_out(phone.sim, WHEN))
    first = await desk.send(desk.pos, request)
    assert first["code"] == "0000"
    assert await desk.send(desk.pos, request) == first, "the same pos_seq and body: the stored reply"
    assert await desk.figure(f"W/{acct}") == (0, 0, 2_000), "moved once"


async def test_buy_out_refusals_void_duplicate_and_a_load_in_progress(desk: WalletDesk) -> None:
    phone, msisdn, acct = await desk.wallet_phone(3_000)
    await desk.api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 1_000, **REASON}, token=desk.counter)
    started = await desk.send(desk.pos, desk.pos.load_request(phone.sim.card_no, 1_000))
    load_id = started["data"]["load_id"]
    step = await desk.send(desk.pos, desk.pos.continue_request(load_id))
    while "loading" != await _load_state(desk, load_id):  # up to the CREDIT script: the load is *loading*
        step = await desk.send(desk.pos, desk.pos.continue_request(load_id, desk.pos.run_script(phone.sim,
                                                                                               step["data"]["script"])))
    credit = step["data"]["script"]
    before = (await desk.transfers(), await desk.figure(f"W/{acct}"))
    record = desk.pos.buy_out(phone.sim, WHEN)
    assert (await desk.send(desk.pos, desk.pos.swap_request(record)))["code"] == "5006"
    voided = desk.pos.request("/pos/swaps", record={**record.wire(), "void": True})
    assert (await desk.send(desk.pos, voided))["code"] == "1001", "a buy-out is never voided"
    assert (await desk.transfers(), await desk.figure(f"W/{acct}")) == before, "refusals change nothing"
    phone.sim.balance += record.amount  # the card's purchase never reached the platform: the card as it was
    finished = await desk.send(desk.pos, desk.pos.continue_request(load_id, desk.pos.run_script(phone.sim, credit)))
    assert finished["code"] == "0000" and await _load_state(desk, load_id) == "posted"
    record = desk.pos.buy_out(phone.sim, WHEN)
    assert (await desk.send(desk.pos, desk.pos.swap_request(record)))["code"] == "0000"
    again = desk.pos.request("/pos/swaps", record=record.wire())
    assert (await desk.send(desk.pos, again))["code"] == "5011", "taken with the first; the card retired"


async def _load_state(desk: WalletDesk, load_id: str) -> str:
    async with desk.w.pool.acquire() as conn:
        return str(await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", load_id))


async def test_the_shadow_audit_gauges_count_a_shadow_spent_below_zero_without_a_load(desk: WalletDesk) -> None:
    from recharge import metrics
    from recharge.sweeper import export_wallet_shadow_gauges

    phone, _, acct = await desk.wallet_phone(0)
    phone.sim.balance = 500  # value on the card the platform never loaded
    shop = await desk.terminal(merchant="M" + unique_digits(7))
    shop.purchase(phone.sim, 500, WHEN)
    assert (await desk.send(shop, shop.batch()))["data"]["results"][0]["code"] == "0000", "the TAC proves it"
    assert await desk.figure(f"W/{acct}") == (-500, 0, 0)
    await export_wallet_shadow_gauges(desk.w.pool)
    negative, unexplained = (metrics.WALLET_SHADOWS_NEGATIVE._value.get(),
                             metrics.WALLET_SHADOWS_UNEXPLAINED._value.get())
    assert negative >= unexplained >= 1


async def test_a_buy_out_sent_again_is_a_duplicate_5011_and_changes_nothing(desk: WalletDesk) -> None:
    """A hall POS that lost the reply of a buy-out and sends its record again under a new ``pos_seq`` (after a
    restart, or to another route) is told ``5011`` 重复交易 — the buy-out is done — not ``5007``, which would send
    the clerk looking for a wrong card; nothing moves twice."""
    phone, msisdn, acct = await desk.wallet_phone(6_000)
    swapped = desk.pos.buy_out(phone.sim, WHEN)
    assert (await desk.send(desk.pos, desk.pos.swap_request(swapped)))["code"] == "0000"
    before = (await desk.transfers(), await desk.figure(f"W/{acct}"), await desk.figure(f"C/{acct}"))
    again = await desk.send(desk.pos, desk.pos.swap_request(swapped))
    assert (again["code"], again["data"]) == ("5011", {"pos_seq": desk.pos.pos_seq, "text": "重复交易。"})
    challenge = desk.pos.challenge(phone.sim)
    assert (await desk.send(desk.pos, desk.pos.wallet_cancel_request(swapped, challenge)))["code"] == "5011"
    forged = desk.pos.request("/pos/swaps", record={**swapped.wire(), "offline_serial": swapped.offline_serial + 1})
    assert (await desk.send(desk.pos, forged))["code"] == "5011", "the same (card, terminal, TTS)"
    assert (await desk.transfers(), await desk.figure(f"W/{acct}"), await desk.figure(f"C/{acct}")) == before

    phone, msisdn, acct = await desk.wallet_phone(7_000)
    await desk.api.ok("POST", "/counter/wallet-cancel", {"msisdn": msisdn, **ID, **REASON}, token=desk.counter)
    cancelled = desk.pos.buy_out(phone.sim, WHEN)
    challenge = desk.pos.challenge(phone.sim)
    assert (await desk.send(desk.pos, desk.pos.wallet_cancel_request(cancelled, challenge)))["code"] == "0000"
    before = (await desk.transfers(), await desk.figure(f"W/{acct}"), await desk.figure(f"C/{acct}"))
    assert (await desk.send(desk.pos, desk.pos.wallet_cancel_request(cancelled, challenge)))["code"] == "5011"
    assert (await desk.send(desk.pos, desk.pos.swap_request(cancelled)))["code"] == "5011"
    assert (await desk.transfers(), await desk.figure(f"W/{acct}"), await desk.figure(f"C/{acct}")) == before
    assert (await desk.figure(f"W/{acct}"), await desk.figure(f"C/{acct}")) == ((0, 0, 0), (7_000, 0, 0))
    elsewhere = await desk.terminal(hall=desk.hall)  # the same record from another terminal: its TAC is not ours
    assert (await desk.send(elsewhere, elsewhere.swap_request(cancelled)))["code"] == "5007"

"""The STK endpoint of SPEC 7.2 end to end: the real server, a virtual handset with its RFID-SIM; texts, menus
that change only when the script ran, seq rules, X-MAC both ways, the account opened by wallet.open."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

import core_ext
from core_ext.virtual_handset import Outcome, VirtualHandset
from core_ext.virtual_pos import SHANGHAI, PurchaseRefused, SignedRequest, VirtualPOS
from core_ext.virtual_sim import STATE_NONE, STATE_OPEN, STATE_PAUSED, VirtualRfidSim
from recharge.mpay import accounts, closure, credentials, events, postings, registry
from recharge.mpay import cards as mpay_cards
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.wallet import cards, terminals
from tests import mpay_world
from tests.wallet_world import digits, virtual_keys


class World:
    def __init__(self, platform: Any, pool: asyncpg.Pool, keys: Any) -> None:
        self.url = f"http://127.0.0.1:{platform.http_port}/mpay/v1"
        self.pool = pool
        self.env = Env.of(platform.ctx.settings, keys)
        self.keys = virtual_keys(keys)

    async def handset(self, *, eligible: bool = True, bind: bool = True) -> tuple[VirtualHandset, str]:
        msisdn, card_no = "139" + digits(8), "7310" + digits(12)
        body = {"province": "430000", "brand": "GOTONE" if eligible else "SZX_STD", "status": "normal"}
        async with self.pool.acquire() as conn, conn.transaction():
            await events.set_subscribers(conn, self.env, [registry.validate(msisdn, body)], "test")
            await cards.add_stock(conn, [card_no])
            if bind:
                assert await cards.bind(conn, [(msisdn, card_no)]) == ["created"]
        return VirtualHandset(VirtualRfidSim(card_no, self.keys, balance=10_000)), msisdn

    async def post(self, request: SignedRequest, mac: str | None = None) -> tuple[int, bytes, str | None]:
        async with aiohttp.ClientSession() as http, http.post(
                self.url + request.path, data=request.body, headers={**request.headers, "X-MAC": mac or request.mac}
        ) as response:
            return response.status, await response.read(), response.headers.get("X-MAC")

    async def exchange(self, phone: VirtualHandset, op: str, params: dict[str, Any] | None = None,
                       **kw: Any) -> Outcome:
        status, body, mac = await self.post(phone.request(op, params, **kw))
        return phone.receive(status, body, mac)


@pytest.fixture
async def world(platform: Any, pool: asyncpg.Pool, test_keys: Any, audited: None) -> World:
    return World(platform, pool, test_keys[0])


async def test_wallet_open_creates_the_account_and_the_menu_toggles_only_after_the_script(world: World) -> None:
    phone, msisdn = await world.handset()
    request = phone.request("wallet.open")
    status, body, mac = await world.post(request)
    lost = phone.receive(None, None, None)
    assert lost.shown == ["钱包开通请求发送失败!"] and phone.menu[0] == "开通钱包"
    assert (await world.post(request))[1:] == (body, mac), "a repeat gets the stored reply byte for byte"
    again = await world.exchange(phone, "wallet.open")
    assert again.mac_ok and again.code == "0000" and again.script_ok
    assert again.shown == ["钱包开通请求发送成功!", "钱包开通成功。"]
    assert again.data is not None and again.data["waiting"] == 0 and again.data["seq"] == 2
    assert (phone.sim.state, phone.sim.limit) == (STATE_OPEN, 20_000) and phone.menu[0] == "注销钱包"
    async with world.pool.acquire() as conn:
        account = await conn.fetchrow("SELECT id FROM mpay_accounts WHERE msisdn = $1", msisdn)
        assert account is not None
        assert await conn.fetchval("SELECT count(*) FROM mpay_outbox WHERE msisdn = $1 AND sensitive", msisdn) == 1
        wallet = await conn.fetchrow("SELECT state, limit_cents, card_no FROM wallets WHERE account_id = $1",
                                     account["id"])
        assert tuple(wallet) == ("open", 20_000, phone.sim.card_no)
        row = await conn.fetchrow("SELECT * FROM mpay_accounts WHERE id = $1", account["id"])
        with pytest.raises(Refused) as refused:
            await closure.check(conn, row, "web")
        assert refused.value.code == "2011", "an open wallet blocks closing the account"


async def test_pause_and_resume_are_enforced_by_the_card(world: World) -> None:
    phone, _ = await world.handset()
    assert (await world.exchange(phone, "wallet.open")).script_ok
    paused = await world.exchange(phone, "wallet.pause")
    assert paused.shown == ["暂停请求发送成功!", "钱包已暂停。"] and phone.sim.state == STATE_PAUSED
    assert phone.menu[3] == "钱包恢复"
    shop = VirtualPOS(digits(12), world.keys.purchase, world.keys.pos)
    with pytest.raises(PurchaseRefused) as refused:
        shop.purchase(phone.sim, 100, datetime(2026, 1, 5, 12, tzinfo=SHANGHAI))
    assert refused.value.sw == b"\x69\x85"
    assert (await world.exchange(phone, "wallet.pause")).script_ok, "repeated in that state: the script again"
    resumed = await world.exchange(phone, "wallet.resume")
    assert resumed.shown == ["恢复请求发送成功!", "钱包已恢复。"] and phone.sim.state == STATE_OPEN
    assert shop.purchase(phone.sim, 100, datetime(2026, 1, 5, 12, tzinfo=SHANGHAI)).balance_after == 9_900


async def test_limit_needs_a_usable_pay_password_checked_last(world: World) -> None:
    phone, msisdn = await world.handset()
    await world.exchange(phone, "wallet.open")
    initial = await world.exchange(phone, "wallet.limit", {"amount": 50_000, "pay_password": "123456"})
    assert initial.code == "3004" and initial.data is not None and initial.data["text"].startswith("初始支付密码")
    async with world.pool.acquire() as conn:
        account_id = await conn.fetchval("SELECT id FROM mpay_accounts WHERE msisdn = $1", msisdn)
        await credentials.replace(conn, world.env.hasher, account_id, "pay", "135790", initial=False)
    assert (await world.exchange(phone, "wallet.limit", {"amount": 99, "pay_password": "000000"})).code == "4001"
    wrong = await world.exchange(phone, "wallet.limit", {"amount": 50_000, "pay_password": "000000"})
    assert wrong.code == "3002" and wrong.shown[-1] == "支付密码错误,还可输入4次。" and phone.sim.limit == 20_000
    done = await world.exchange(phone, "wallet.limit", {"amount": 50_000, "pay_password": "135790"})
    assert done.shown[-1] == "单次消费限额已设为500元。" and done.script_ok and phone.sim.limit == 50_000
    balance = await world.exchange(phone, "account.balance")
    assert balance.shown[-1] == "现金账户余额:0元;充值卡账户余额:0元,可用余额0元。"


async def test_refusals_in_the_spec_order_and_the_seq_rules(world: World) -> None:
    stock, _ = await world.handset(bind=False)
    assert (await world.exchange(stock, "wallet.open")).code == "5007"
    phone, _ = await world.handset()
    assert (await world.exchange(phone, "account.balance")).code == "2003"
    ineligible, _ = await world.handset(eligible=False)
    assert (await world.exchange(ineligible, "wallet.pause")).code == "2003"
    assert (await world.exchange(ineligible, "wallet.open")).code == "2001"
    assert ineligible.sim.state == STATE_NONE
    assert (await world.exchange(phone, "wallet.pause")).code == "2003"
    assert (await world.exchange(phone, "no.such.op")).code == "1001"
    request = phone.request("wallet.open")
    status, body, mac = await world.post(request, mac="00000000")
    assert json.loads(body)["code"] == "1002" and mac == core_ext.mac(phone.sim.k_stk, body).hex().upper()
    assert json.loads((await world.post(request))[1])["code"] == "0000", "a failed MAC consumed nothing"
    assert json.loads((await world.post(phone.request("wallet.pause", seq=1)))[1])["code"] == "1002"
    no_challenge = json.loads(request.body)
    del no_challenge["challenge"]
    no_challenge["seq"] = 99
    raw = json.dumps(no_challenge).encode()
    status, body, _ = await world.post(SignedRequest("/stk", raw, core_ext.mac(phone.sim.k_stk, raw).hex()))
    assert json.loads(body)["code"] == "1001"
    async with aiohttp.ClientSession() as http, http.post(world.url + "/stk", data=b"[") as response:
        assert response.status == 400 and "X-MAC" not in response.headers


async def test_stk_cancel_needs_an_empty_card_and_account_then_closes_both(world: World) -> None:
    phone, msisdn = await world.handset()
    await world.exchange(phone, "wallet.open")
    async with world.pool.acquire() as conn:
        account_id = await conn.fetchval("SELECT id FROM mpay_accounts WHERE msisdn = $1", msisdn)
        await credentials.replace(conn, world.env.hasher, account_id, "pay", "135790", initial=False)
    assert (await world.exchange(phone, "wallet.cancel", {"balance": 100, "pay_password": "135790"})).code == "5005"
    wrong = await world.exchange(phone, "wallet.cancel", {"balance": 0, "pay_password": "000000"})
    assert wrong.code == "3002" and phone.sim.state == STATE_OPEN
    done = await world.exchange(phone, "wallet.cancel", {"balance": 0, "pay_password": "135790"})
    assert done.shown == ["注销钱包请求发送成功!", "钱包及手机支付账户已注销。"] and done.script_ok
    assert phone.sim.state == 0x03 and phone.menu[0] == "开通钱包"
    assert (await world.exchange(phone, "account.balance")).code == "2003"
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM mpay_accounts WHERE id = $1", account_id) == "closed"
        assert await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", account_id) == "cancelled"
        assert await conn.fetchval("SELECT count(*) FROM mpay_outbox WHERE msisdn = $1 AND text = $2", msisdn,
                                   "您的手机支付账户已注销,感谢使用!") == 1


async def test_hall_pos_opens_the_wallet_of_an_existing_account(world: World) -> None:
    phone, msisdn = await world.handset()
    hall = VirtualPOS(digits(12), world.keys.purchase, world.keys.pos)
    shop = VirtualPOS(digits(12), world.keys.purchase, world.keys.pos)
    async with world.pool.acquire() as conn:
        await terminals.register(conn, [terminals.Terminal(hall.terminal_code, hall="HN0001"),
                                        terminals.Terminal(shop.terminal_code, merchant="DEMODIG")])
    sim = phone.sim

    async def open_at(pos: VirtualPOS) -> tuple[str, dict[str, Any], bytes, str | None]:
        request = pos.wallet_open_request(sim.card_no, pos.challenge(sim))
        status, body, mac = await world.post(request)
        reply = json.loads(body)
        return reply["code"], reply["data"], body, mac

    assert (await open_at(hall))[0] == "2003", "the hall opens the wallet of an existing account only"
    async with world.pool.acquire() as conn, conn.transaction():
        await accounts.open_account(conn, world.env, msisdn)
    assert (await open_at(shop))[0] == "1004"
    code, data, body, mac = await open_at(hall)
    assert code == "0000" and hall.reply_ok(body, mac) and data["text"] == "钱包开通成功。"
    assert core_ext.reply_decode(hall.run_script(sim, data["script"]))[-1].sw == b"\x90\x00"
    assert (sim.state, sim.limit) == (STATE_OPEN, 20_000)


async def test_password_settings_over_stk_and_the_operation_password_gate(world: World) -> None:
    phone, msisdn = await world.handset()
    await world.exchange(phone, "wallet.open")
    async with world.pool.acquire() as conn:
        account_id = await conn.fetchval("SELECT id FROM mpay_accounts WHERE msisdn = $1", msisdn)
        await credentials.replace(conn, world.env.hasher, account_id, "pay", "111111", initial=True)
    assert (await world.exchange(phone, "pwd.pay.change", {"old": "111111", "new": "12345"})).code == "3005"
    changed = await world.exchange(phone, "pwd.pay.change", {"old": "111111", "new": "135790"})
    assert changed.shown[-1] == "支付密码修改成功。"
    assert (await world.exchange(phone, "pwd.op.change", {"new": "5678"})).code == "4011"
    enabled = await world.exchange(phone, "pwd.op.enable", {"pay_password": "135790"})
    assert enabled.shown[-1] == "操作密码已启用。"
    gate = await world.exchange(phone, "account.balance")
    assert gate.code == "3009" and gate.shown[-1] == "操作密码错误,还可输入4次。"
    assert (await world.exchange(phone, "account.balance", op_password="1234")).code == "0000"
    assert (await world.exchange(phone, "pwd.op.change", {"new": "1234"}, op_password="1234")).code == "3005"
    assert (await world.exchange(phone, "pwd.op.change", {"new": "5678"}, op_password="1234")).code == "0000"
    disabled = await world.exchange(phone, "pwd.op.disable", {"pay_password": "135790"}, op_password="5678")
    assert disabled.shown[-1] == "操作密码已关闭。"
    assert (await world.exchange(phone, "account.balance")).code == "0000"


async def test_account_ops_over_stk_card_recharge_phone_bill_and_history(world: World) -> None:
    phone, msisdn = await world.handset()
    await world.exchange(phone, "wallet.open")
    pin = mpay_world.new_pin()
    rows = mpay_cards.parse_pool(f"serial,pin,face_yuan,province,expiry\n{mpay_world.new_serial()},{pin},20,"
                                 "430000,2099-12-31\n")
    async with world.pool.acquire() as conn, conn.transaction():
        await mpay_cards.import_pool(conn, world.env, rows)
    recharged = await world.exchange(phone, "account.card_recharge", {"pin": pin})
    assert recharged.shown[-1] == "充值成功!充值卡账户充入20元,充值卡账户余额20元。"
    paid = await world.exchange(phone, "hf.self", {"amount": 1000})
    assert paid.shown[-1] == f"缴费成功!已为{msisdn}缴话费10元,从充值卡账户扣款。"
    today = datetime.now(SHANGHAI).date()
    history = await world.exchange(phone, "account.history", {"from": today.isoformat()})
    assert history.code == "0000" and history.shown[-1].startswith("最近交易:")
    later = (today + timedelta(days=1)).isoformat()
    assert (await world.exchange(phone, "account.history", {"from": later})).code == "7003"
    assert (await world.exchange(phone, "account.history", {"from": "20260105"})).code == "1001"
    other = await world.exchange(phone, "hf.other", {"target": "13912345678", "amount": 100, "pay_password": "123456"})
    assert other.code == "3004", "another number's bill needs a usable pay password"


async def test_lost_card_reopening_writes_the_shadow_off_and_late_records_debit_retired(world: World) -> None:
    old_phone, msisdn = await world.handset()
    await world.exchange(old_phone, "wallet.open")
    async with world.pool.acquire() as conn, conn.transaction():
        account_id = await conn.fetchval("SELECT id FROM mpay_accounts WHERE msisdn = $1", msisdn)
        # a posted load stands in for 7.3's load engine (not built yet): 50.00 in the shadow
        await postings.must(conn, [postings.Move(f"test:load:{account_id}", await postings.account_id(
            conn, "HALL/HN0001"), await postings.account_id(conn, f"W/{account_id}"), 5000, "test_load")])
    shop = VirtualPOS(digits(12), world.keys.purchase, world.keys.pos)
    async with world.pool.acquire() as conn:
        await terminals.register(conn, [terminals.Terminal(shop.terminal_code, merchant="DEMODIG")])
    old_phone.sim.balance = 5000
    late = shop.purchase(old_phone.sim, 1000, datetime(2026, 1, 5, 12, tzinfo=SHANGHAI))
    new_phone = VirtualHandset(VirtualRfidSim("7310" + digits(12), world.keys))
    async with world.pool.acquire() as conn, conn.transaction():
        await cards.add_stock(conn, [new_phone.sim.card_no])
        assert await cards.bind(conn, [(msisdn, new_phone.sim.card_no)]) == ["created"]

    async def balance(name: str) -> int:
        async with world.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM accounts"
                                           " WHERE kind = 'mpay' AND card_no = $1", name))

    retired = await balance("RETIRED")
    reopened = await world.exchange(new_phone, "wallet.open")
    assert reopened.script_ok and (new_phone.sim.state, new_phone.sim.limit) == (STATE_OPEN, 20_000)
    assert await balance(f"W/{account_id}") == 0 and await balance("RETIRED") == retired + 5000
    assert (await world.exchange(old_phone, "account.balance")).code == "5007"
    status, body, mac = await world.post(shop.batch())
    assert json.loads(body)["data"]["results"][0]["code"] == "0000" and late.amount == 1000
    assert await balance(f"W/{account_id}") == 0 and await balance("RETIRED") == retired + 4000

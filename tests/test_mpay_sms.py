"""The 10658888 SMS channel end to end (SPEC 6.5, 6.11): the real server, its /sms/inbound hook."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from recharge.mpay import accounts, payments, sms_channel
from recharge.mpay.codes import HELP_TEXT, zh
from recharge.mpay.unit import atomic
from tests.mpay_world import MpayWorld, new_msisdn


async def pay_from(w: MpayWorld, msisdn: str, merchant: str, amount: int, pay_password: str) -> Any:
    async with w.pool.acquire() as conn, conn.transaction():
        m = await conn.fetchrow("SELECT * FROM mpay_merchants WHERE id = $1", merchant)
        payment = await payments.create(conn, w.env, m, f"o{new_msisdn()}", msisdn, amount, "test", 100)
    async with w.pool.acquire() as conn:

        async def work() -> Any:
            account = await accounts.live_by_msisdn(conn, msisdn, lock=True)
            return await payments.confirm(conn, w.env, payment["id"], account, pay_password, None, "web")

        return await atomic(conn, work)


async def test_the_seeds_own_cx_reply_after_a_20_yuan_card_and_a_10_fen_payment(w: MpayWorld, audited: None) -> None:
    msisdn = await w.subscriber()
    assert await w.sms(msisdn, "KT") == "欢迎开通手机支付!回复A同意《手机支付业务客户服务协议》并开户,10分钟内有效。"
    assert await w.sms(msisdn, "A") == "手机支付开户成功!初始密码及别名将另行短信发送至本机,请及时修改。"
    opening = (await w.notices(msisdn))[0]
    assert opening.startswith("手机支付登录密码") and opening.endswith("请尽快登录网站修改并删除本短信。")
    pin = await w.card(20)
    assert await w.sms(msisdn, f"CZK {pin}") == "充值成功!充值卡账户充入20元,充值卡账户余额20元。"
    pp = opening.split("支付密码")[1].split(",")[0]
    new_pp = await w.set_pay_password(msisdn, pp)
    paid = await pay_from(w, msisdn, await w.merchant("DIGITAL"), 10, new_pp)
    assert paid["bucket"] == "card" and paid["state"] == "paid"
    assert await w.sms(msisdn, "CX") == "现金账户余额:0元;充值卡账户余额:19.9元,可用余额19.9元。"
    assert (await w.notices(msisdn))[-1] == "您已向数字商城支付0.1元,扣款账户:充值卡账户。"


async def test_an_mo_that_meets_a_deadlock_is_run_again_whole(w: MpayWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CZK whose first attempt credits the card account, then deadlocks: rolled back and run again by the
    retry policy, the 20 yuan credited once."""
    msisdn, _ = await w.opened()
    real, attempts = sms_channel._run, []

    async def deadlocks_once(mo: Any, raw: str) -> Any:
        answer = await real(mo, raw)
        attempts.append(answer.code)
        if len(attempts) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return answer

    monkeypatch.setattr(sms_channel, "_run", deadlocks_once)
    assert await w.sms(msisdn, f"CZK {await w.card(20)}") == "充值成功!充值卡账户充入20元,充值卡账户余额20元。"
    monkeypatch.undo()
    assert attempts == ["0000", "0000"]
    assert await w.sms(msisdn, "CX") == "现金账户余额:0元;充值卡账户余额:20元,可用余额20元。"


async def test_kt_codes_and_the_agreement_dialogue(w: MpayWorld) -> None:
    assert await w.sms(await w.subscriber(brand="SZX_STD"), "KT") == zh("2001")
    assert await w.sms(await w.subscriber(status="arrears"), "KT") == zh("2001")
    assert await w.sms(new_msisdn(), "KT") == zh("2001")
    msisdn, _ = await w.opened()
    assert await w.sms(msisdn, "KT") == zh("2002")
    other = await w.subscriber()
    await w.sms(other, "KT")
    assert await w.sms(other, "B") == HELP_TEXT  # at an A prompt any other text is 7002, ending it
    assert await w.sms(other, "A") == zh("7001")
    assert (await w.sms(other, "KT")).startswith("欢迎开通")
    assert await w.sms(other, "0") == "已退出。"
    assert await w.sms(other, "A") == zh("7001")


async def test_parsing_stray_unknown_full_width_and_glued_words(w: MpayWorld) -> None:
    msisdn, _ = await w.opened()
    for stray in ("A", "Y", "0", "9", "6", "12.5", "20091101", "123456", "5元"):
        assert await w.sms(msisdn, stray) == zh("7001"), stray
    for unknown in ("KTA", "TX100", "hello", "CX 1", "KT B", "XH 9", ""):
        assert await w.sms(msisdn, unknown) == HELP_TEXT, unknown
    assert (await w.sms(msisdn, "ｃｘ")).startswith("现金账户余额:0元")  # NFKC + case-insensitive
    assert (await w.sms(msisdn, "  cx  ")).startswith("现金账户余额")
    assert await w.sms(msisdn, "CZK") == zh("6001")
    assert await w.sms(msisdn, "HF") == zh("4001")
    assert await w.sms(msisdn, "HF50") == zh("4002")  # glued HF reads its amount


async def test_a_repeated_message_id_gets_the_first_reply_and_runs_nothing(w: MpayWorld, audited: None) -> None:
    msisdn, _ = await w.opened()
    pin = await w.card(10)
    first = await w.sms(msisdn, f"CZK {pin}", message_id="mo-1")
    assert first.startswith("充值成功")
    assert await w.sms(msisdn, f"CZK {pin}", message_id="mo-1") == first
    assert await w.sms(msisdn, f"CZK {pin}", message_id="mo-2") == zh("6002")
    assert (await w.balances(msisdn)).card == 1000
    replies = await asyncio.gather(*(w.sms(msisdn, "CX", message_id="mo-3") for _ in range(4)))
    assert len(set(replies)) == 1


async def test_a_dialogue_expires_after_ten_minutes_and_a_command_word_replaces_it(w: MpayWorld) -> None:
    msisdn, _ = await w.opened()
    assert await w.sms(msisdn, "CXLS") == "请回复查询起始日期(8位),如20091101。"
    async with w.pool.acquire() as conn:
        await conn.execute("UPDATE mpay_dialogues SET expires_at = now() - interval '1 second' WHERE msisdn = $1",
                           msisdn)
    assert await w.sms(msisdn, "20200101") == zh("7001")
    await w.sms(msisdn, "CXLS")
    assert await w.sms(msisdn, "M") == "回复Y确认重置手机支付登录密码,新密码将短信发送至本机。"
    assert await w.sms(msisdn, "20200101") == HELP_TEXT  # the M prompt wants Y


async def test_cxls_dates_and_history(w: MpayWorld, audited: None) -> None:
    msisdn, secrets_ = await w.opened()
    await w.sms(msisdn, "CXLS")
    assert await w.sms(msisdn, "20201301") == zh("7003")  # not a date: the dialogue stays
    assert await w.sms(msisdn, "29990101") == zh("7003")  # after today
    assert await w.sms(msisdn, "2020") == zh("7003")
    assert await w.sms(msisdn, "20200101") == "20200101以来无交易记录。"
    await w.sms(msisdn, f"CZK {await w.card(20)}")
    pp = await w.set_pay_password(msisdn, secrets_["pay"])
    await pay_from(w, msisdn, await w.merchant(), 10, pp)
    await w.sms(msisdn, "CXLS")
    reply = await w.sms(msisdn, "20200101")
    assert reply.startswith("最近交易:") and reply.endswith("充值卡充值+20元。")
    assert "消费-0.1元;" in reply


async def test_czk_codes_in_order_and_the_unknown_pin_limit(w: MpayWorld, audited: None) -> None:
    msisdn, _ = await w.opened()
    before = await w.snapshot(msisdn)
    assert await w.sms(msisdn, "CZK 12345") == zh("6001")  # format: not counted
    expired = await w.card(20, expiry="2020-01-01")
    assert await w.sms(msisdn, f"CZK {expired}") == zh("6003")
    assert await w.sms(msisdn, f"CZK {await w.card(20, province='440000')}") == zh("6004")
    assert await w.snapshot(msisdn) == before
    for _ in range(4):
        assert await w.sms(msisdn, "CZK 180000000000000000") == zh("6001")
    assert await w.sms(msisdn, "CZK 180000000000000001") == zh("6005")
    assert await w.sms(msisdn, f"CZK {await w.card(20)}") == zh("6005")  # blocked 24 h
    assert await w.snapshot(msisdn) == before


async def test_hf_pays_the_own_bill_from_the_card_bucket_then_cash(w: MpayWorld, audited: None) -> None:
    msisdn, _ = await w.opened()
    await w.sms(msisdn, f"CZK {await w.card(30)}")
    assert await w.sms(msisdn, "HF 0.99") == zh("4001")
    assert await w.sms(msisdn, "HF 500.01") == zh("4001")
    assert await w.sms(msisdn, "HF 20") == f"缴费成功!已为{msisdn}缴话费20元,从充值卡账户扣款。"
    assert await w.sms(msisdn, "HF 20") == zh("4002")  # 10 left on the card, no cash: never split
    assert (await w.balances(msisdn)).card == 1000


async def test_gx_upgrades_when_the_registry_has_the_data(w: MpayWorld) -> None:
    msisdn, _ = await w.opened(name=None)
    assert await w.sms(msisdn, "GX") == zh("2010")
    await w.subscriber(msisdn, name="欧阳小明")
    assert await w.sms(msisdn, "GX") == "将为您升级为实名账户(姓名:欧***),回复Y确认,10分钟内有效。"
    assert await w.sms(msisdn, "Y") == "实名升级成功!您已可使用提现等全部功能。"
    assert (await w.account(msisdn))["kind"] == "real_name"
    assert await w.sms(msisdn, "GX") == zh("2014")


async def test_m_resets_the_login_password_by_sms(w: MpayWorld) -> None:
    msisdn, secrets_ = await w.opened()
    before = (await w.account(msisdn))["login_hash"]
    assert await w.sms(msisdn, "M") == "回复Y确认重置手机支付登录密码,新密码将短信发送至本机。"
    assert await w.sms(msisdn, "Y") == "登录密码已重置,新密码将另行短信发送至本机。"
    assert (await w.account(msisdn))["login_hash"] != before
    assert (await w.notices(msisdn))[-1].startswith("您的手机支付登录密码已重置为")


async def test_xh_closes_an_empty_account_after_its_menus_and_the_pay_password(w: MpayWorld) -> None:
    msisdn, secrets_ = await w.opened()
    assert await w.sms(msisdn, "XH") == zh("3004")  # the initial pay password must be changed first
    pp = await w.set_pay_password(msisdn, secrets_["pay"])
    assert await w.sms(msisdn, "XH") == "手机支付服务菜单:回复9业务管理,回复0退出。"
    assert await w.sms(msisdn, "9") == "业务管理:回复6注销手机支付账户,回复0退出。"
    assert await w.sms(msisdn, "6") == "注销后之前的交易无法退款。请回复6位支付密码确认注销。"
    assert await w.sms(msisdn, "abc") == zh("3002", 5)  # not 6 digits: wrong, not counted
    assert await w.sms(msisdn, "000000") == zh("3002", 4)
    assert await w.sms(msisdn, pp) == "您的手机支付账户已注销,感谢使用!"
    assert await w.sms(msisdn, "CX") == zh("2003")
    assert (await w.sms(msisdn, "KT")).startswith("欢迎开通")  # the number may open a new account


async def test_xh_refuses_an_account_with_money(w: MpayWorld, audited: None) -> None:
    msisdn, secrets_ = await w.opened()
    await w.set_pay_password(msisdn, secrets_["pay"])
    await w.sms(msisdn, f"CZK {await w.card(10)}")
    await w.sms(msisdn, "XH")
    await w.sms(msisdn, "9")
    assert await w.sms(msisdn, "6") == zh("2012")
    assert await w.sms(msisdn, "000000") == zh("7001")  # the refusal ended the dialogue


async def test_five_wrong_pay_passwords_lock_xh_and_m_still_works(w: MpayWorld) -> None:
    msisdn, secrets_ = await w.opened()
    await w.set_pay_password(msisdn, secrets_["pay"])
    for n in (4, 3, 2, 1):
        await w.sms(msisdn, "XH"), await w.sms(msisdn, "9"), await w.sms(msisdn, "6")
        assert await w.sms(msisdn, "999999") == zh("3002", n)
    assert await w.sms(msisdn, "999999") == zh("3003")
    assert await w.sms(msisdn, "XH") == zh("3003")
    assert await w.sms(msisdn, "TX") in (zh("3003"), zh("2009"), zh("4005"))
    assert await w.sms(msisdn, "M") == "回复Y确认重置手机支付登录密码,新密码将短信发送至本机。"


async def test_parallel_wrong_pay_passwords_are_counted_exactly(w: MpayWorld) -> None:
    msisdn, secrets_ = await w.opened()
    await w.set_pay_password(msisdn, secrets_["pay"])
    await w.sms(msisdn, f"CZK {await w.card(10)}")
    merchant = await w.merchant()

    async def guess(i: int) -> str:
        try:
            await pay_from(w, msisdn, merchant, 10, f"{i:06d}")
        except Exception as exc:  # Refused
            return str(getattr(exc, "code", exc))
        return "paid"

    results = await asyncio.gather(*(guess(i) for i in range(8)))
    assert sorted(results) == ["3002"] * 4 + ["3003"] * 4
    account = await w.account(msisdn)
    assert account["pay_failures"] == 5 and account["pay_locked_until"] is not None


async def test_number_status_and_no_account(w: MpayWorld) -> None:
    assert await w.sms(new_msisdn(), "CX") == zh("2008")
    assert await w.sms(await w.subscriber(), "CX") == zh("2003")
    msisdn, _ = await w.opened()
    await w.subscriber(msisdn, status="suspended_oneway")
    assert (await w.account(msisdn))["status"] == "locked"
    assert await w.sms(msisdn, "CX") == zh("2008")
    await w.subscriber(msisdn, status="normal")
    assert (await w.account(msisdn))["status"] == "normal"
    assert (await w.sms(msisdn, "CX")).startswith("现金账户余额")


async def test_other_service_numbers_still_reach_kakatong(w: MpayWorld) -> None:
    msisdn, _ = await w.opened()
    assert await w.sms(msisdn, "CX", to="1065888812") != HELP_TEXT  # 10658888 + digits: here
    assert not (await w.sms(msisdn, "CX", to="10658000")).startswith("现金账户余额")


async def test_too_many_unknown_pins_platform_wide_pause_card_recharges(w: MpayWorld, platform: Any) -> None:
    from tests.conftest import settings_changed

    msisdn, _ = await w.opened()
    other, _ = await w.opened()
    async with w.pool.acquire() as conn:
        seen = await conn.fetchval("SELECT count(*) FROM mpay_pin_failures WHERE created_at > now() - interval '1 hour'")
    try:
        with settings_changed(platform, mpay_cards_platform_failures=seen + 1):
            assert await w.sms(msisdn, "CZK 180000000000000777") == zh("6001")
            assert await w.sms(other, "CZK 180000000000000778") == zh("6006")  # the (limit+1)th in an hour
            assert await w.sms(msisdn, f"CZK {await w.card(10)}") == zh("6006")  # paused for everyone
    finally:
        async with w.pool.acquire() as conn:
            await conn.execute("DELETE FROM mpay_blocks WHERE subject = 'pin:platform'")
    assert (await w.sms(msisdn, f"CZK {await w.card(10)}")).startswith("充值成功")

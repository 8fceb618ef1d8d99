"""The SPEC 6.10 codes no other test provokes through a real channel, each one changing nothing:
``4017`` and ``2007`` (merchant refunds), a customer's ``1005``, ``2011`` (closing with an open
wallet), ``9001`` (busy) and ``9002`` (a platform fault), the last two leaving the request id
free to be retried (6.12)."""

from __future__ import annotations

from typing import Any

import pytest

from recharge.mpay import postings
from tests.conftest import settings_changed, unique_digits
from tests.mpay_world import Api, MpayWorld

pytestmark = pytest.mark.usefixtures("audited")
CARD = {"bank": "CCB", "province": "430000", "city": "430100", "branch": "b", "number": "6217000000009876",
        "holder": "张三"}


async def _customer(w: MpayWorld, api: Api, cash: int = 0) -> tuple[str, str, str]:
    msisdn, initial = await w.opened()
    token = await api.login(msisdn, initial["login"])
    await api.ok("POST", "/me/password/pay", {"old": initial["pay"], "new": "246810"}, token=token)
    if cash:
        await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": cash, "reason": "现金"},
                     token=await api.operator("counter", "HN0001"))
    return msisdn, token, "246810"


async def _paid(w: MpayWorld, api: Api, merchant: str, msisdn: str, token: str, order_no: str, amount: int) -> None:
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": order_no, "msisdn": msisdn, "amount": amount, "subject": "x"})
    await api.ok("POST", f"/payments/{reply['data']['payment_id']}/confirm", {"pay_password": "246810"}, token=token)


async def _merchant_available(w: MpayWorld, merchant: str) -> int:
    async with w.pool.acquire() as conn:
        mer = await postings.account_id(conn, f"MER/{merchant}")
        return (await postings.buckets(conn, mer))[mer].available


async def test_refunds_answer_4017_when_the_merchant_is_short_and_2007_to_a_closed_account(
        w: MpayWorld, api: Api, platform: Any) -> None:
    short, token, _ = await _customer(w, api, cash=1000)
    merchant = await w.merchant("GENERAL")
    await _paid(w, api, merchant, short, token, "s1", 600)
    async with w.pool.acquire() as conn, conn.transaction():  # the day's payout left MER with nothing
        mer, payout = [await postings.account_id(conn, name) for name in (f"MER/{merchant}", "PAYOUT")]
        await postings.must(conn, [postings.Move(f"test:payout:{merchant}", mer, payout, 600, "mpay_merchant_payout",
                                                 "test")])
    gone, token, pay = await _customer(w, api, cash=400)
    await _paid(w, api, merchant, gone, token, "g1", 400)
    await api.ok("POST", "/me/close", {"pay_password": pay}, token=token)
    before = (await w.snapshot(short), await _merchant_available(w, merchant))
    with settings_changed(platform, mpay_refund_enabled=True):
        for order_no, amount, code in (("s1", 500, "4017"), ("g1", 100, "2007")):
            _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/refunds", {
                "merchant_order_no": order_no, "refund_no": f"r-{order_no}", "amount": amount})
            assert reply["code"] == code, reply
    assert (await w.snapshot(short), await _merchant_available(w, merchant)) == before == (before[0], 400)


async def test_a_customer_reusing_a_request_id_for_another_body_gets_1005(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await _customer(w, api, cash=5000)
    body = {"target": msisdn, "amount": 1000, "pay_password": pay}
    _, first, raw = await api.call("POST", "/me/hf", body, token=token, rid="hf-1")
    assert first["code"] == "0000"
    before = await w.snapshot(msisdn)
    assert (await api.call("POST", "/me/hf", body, token=token, rid="hf-1"))[2] == raw  # the first reply again
    for other in (dict(body, amount=2000), {"amount": 1000, "pay_password": pay}):
        assert await api.code("POST", "/me/hf", other, token=token, rid="hf-1") == "1005"
    assert await api.code("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token,
                          rid="hf-1") == "1005"  # another path
    assert (await api.call("POST", "/me/hf", body, token=token, rid="hf-1"))[2] == raw  # still kept after 1005s
    assert await w.snapshot(msisdn) == before and (await w.balances(msisdn)).cash == 4000


async def test_closing_with_an_open_wallet_is_2011(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await _customer(w, api)
    await w.open_wallet(msisdn)
    before = await w.snapshot(msisdn)
    assert await api.code("POST", "/me/close", {"pay_password": pay}, token=token) == "2011"
    assert await w.sms(msisdn, "XH") == "手机支付服务菜单:回复9业务管理,回复0退出。"
    assert await w.sms(msisdn, "9") == "业务管理:回复6注销手机支付账户,回复0退出。"
    assert await w.sms(msisdn, "6") == "请先注销手机钱包。"
    assert await w.snapshot(msisdn) == before


async def test_a_saturated_pool_answers_9001_and_the_request_id_may_be_retried(
        w: MpayWorld, api: Api, platform: Any) -> None:
    msisdn, token, pay = await _customer(w, api, cash=2000)
    before = await w.snapshot(msisdn)
    pool = platform.ctx.pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        with settings_changed(platform, pool_acquire_timeout_s=0.05):
            status, reply, _ = await api.call("POST", "/me/hf", {"target": msisdn, "amount": 1000,
                                                                  "pay_password": pay}, token=token, rid="busy-1")
            assert await w.sms(msisdn, "CX") == "系统繁忙,请稍后再试。"  # the SMS channel's busy answer
    finally:
        for conn in held:
            await pool.release(conn)
    assert (status, reply["code"], reply["msg_zh"]) == (503, "9001", "系统繁忙,请稍后再试。")
    assert await w.snapshot(msisdn) == before
    await api.ok("POST", "/me/hf", {"target": msisdn, "amount": 1000, "pay_password": pay}, token=token, rid="busy-1")
    assert (await w.balances(msisdn)).cash == 1000


async def test_a_platform_fault_answers_9002_changes_nothing_and_the_request_id_may_be_retried(
        w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await _customer(w, api, cash=2000)
    await api.ok("PUT", "/me/bank-card", dict(CARD, pay_password=pay), token=token)
    account_id = (await w.account(msisdn))["id"]
    fault = f"test_fault_{unique_digits(8)}"
    async with w.pool.acquire() as conn:  # the platform's own table refuses this account's rows: a fault
        await conn.execute(f"CREATE FUNCTION {fault}() RETURNS trigger LANGUAGE plpgsql AS"
                           " $$BEGIN RAISE EXCEPTION 'injected fault'; END$$")
        await conn.execute(f"CREATE TRIGGER {fault} BEFORE INSERT ON mpay_withdrawals FOR EACH ROW"
                           f" WHEN (NEW.account_id = {int(account_id)}) EXECUTE FUNCTION {fault}()")
    before = await w.snapshot(msisdn)
    body = {"amount": 1000, "pay_password": pay}
    try:
        status, reply, _ = await api.call("POST", "/me/withdrawals", body, token=token, rid="fault-1",
                                          expect_fault=True)
        assert await w.sms(msisdn, "TX 10") == "请回复6位支付密码,确认提现10元。"
        assert await w.sms(msisdn, pay) == "系统错误。"  # the SMS channel's answer; the dialogue is kept
    finally:
        async with w.pool.acquire() as conn:
            await conn.execute(f"DROP TRIGGER {fault} ON mpay_withdrawals")
            await conn.execute(f"DROP FUNCTION {fault}()")
    assert (status, reply["code"], reply["msg_zh"], reply["data"]) == (500, "9002", "系统错误。", None)
    assert await w.snapshot(msisdn) == before and (await w.balances(msisdn)).cash_pending == 0
    assert (await api.ok("POST", "/me/withdrawals", body, token=token, rid="fault-1"))["state"] == "submitted"
    assert await w.sms(msisdn, pay) == "提现申请已受理,10元已冻结,款项汇出后一般3-7个工作日到账。"


async def test_failed_logins_from_one_address_answer_1006_for_the_rest_of_the_minute(
        w: MpayWorld, api: Api, platform: Any) -> None:
    """SPEC 6.3's per-address limit (``mpay_auth_fail_per_ip``). The suite raises it for everyone else
    (its deliberate wrong passwords all come from 127.0.0.1); here it is set just above this minute's count."""
    msisdn, initial = await w.opened()
    async with w.pool.acquire() as conn:
        failed = await conn.fetchval("SELECT count(*) FROM mpay_auth_failures WHERE client = '127.0.0.1'"
                                     " AND created_at > now() - interval '1 minute'")
    with settings_changed(platform, mpay_auth_fail_per_ip=failed + 2):
        for _ in range(2):
            assert await api.code("POST", "/auth/login", {"login": msisdn, "password": "Wrong0pass"}) != "0000"
        assert await api.code("POST", "/auth/login", {"login": msisdn, "password": initial["login"]}) == "1006"
    assert await api.login(msisdn, initial["login"])  # the suite's own limit again

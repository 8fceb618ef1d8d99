"""Closing a mobile payment account over the API (SPEC 6.4, 6.13): with funds in transit and at the counter,
a pending closure that closes when its last money leaves, a 10086 agent's close. The helpers are
tests/test_mpay_api.py's; the fixtures tests/shared_fixtures.py's."""

from __future__ import annotations

import pytest

from tests.mpay_world import Api, MpayWorld
from tests.test_mpay_api import customer

pytestmark = pytest.mark.usefixtures("audited")


async def test_closing_with_funds_in_transit_and_at_the_counter(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, cash=1000)
    await api.ok("PUT", "/me/bank-card", {"bank": "BOC", "province": "430000", "city": "430100", "branch": "b",
                                          "number": "6013820000001111", "holder": "张三", "pay_password": pay},
                 token=token)
    await api.ok("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token)
    assert await api.code("POST", "/me/close", {"pay_password": pay}, token=token) == "2013"
    ops = await api.operator("ops")
    wid = (await w.account(msisdn))["id"]
    async with w.pool.acquire() as conn:
        withdrawal = await conn.fetchval("SELECT id FROM mpay_withdrawals WHERE account_id = $1", wid)
    assert (await api.ok("POST", f"/ops/withdrawals/{withdrawal}/void", {"reason": "customer asked"},
                         token=ops)) == {"state": "voided"}
    assert await api.code("POST", f"/ops/withdrawals/{withdrawal}/void", {"reason": "again"}, token=ops) == "4011"
    assert await api.code("POST", "/me/close", {"pay_password": pay}, token=token) == "2012"
    counter = await api.operator("counter", "HN0002")
    await api.ok("POST", "/counter/otp", {"msisdn": msisdn, "purpose": "close"}, token=counter)
    code = (await w.notices(msisdn))[-1][3:9]
    ident = {"msisdn": msisdn, "id_type": "id_card", "id_number": "430102199001011234", "otp": code,
             "reason": "客户申请销户"}
    assert await api.code("POST", "/counter/close", ident, token=counter) == "2012"


async def test_a_pending_closure_account_closes_when_its_last_money_leaves(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, cash=1500)
    alias = (await w.account(msisdn))["alias"]
    await w.subscriber(msisdn, status="cancelled")
    async with w.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, msisdn FROM mpay_accounts WHERE lower(alias) = lower($1)", alias)
    assert (row["status"], row["msisdn"]) == ("pending_closure", None)
    assert await api.code("POST", "/auth/login", {"login": msisdn, "password": "Passw0rd1"}) == "3001"
    token = await api.login(alias, "Passw0rd1")  # by alias only (6.2)
    assert (await api.ok("GET", "/me", token=token))["status"] == "pending_closure"
    target = await w.subscriber(province="430000")
    assert await api.code("POST", "/me/recharges/card", {"pin": await w.card(10)}, token=token) == "2006"
    await api.ok("POST", "/me/hf", {"target": target, "amount": 1500, "pay_password": pay}, token=token)
    async with w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM mpay_accounts WHERE lower(alias) = lower($1)", alias) == "closed"
        assert await conn.fetchval("SELECT count(*) FROM mpay_outbox WHERE msisdn = $1 AND state = 'pending'"
                                   " AND text LIKE '%注销%'", msisdn) == 0  # suppressed, never sent


async def test_a_10086_agent_closes_an_account_with_the_pay_password_and_a_reason(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api)
    cs = await api.operator("cs")
    ani = {"X-ANI": msisdn}
    assert await api.code("POST", "/cs/close", {"pay_password": pay}, token=cs, headers=ani) == "1001"
    assert await api.code("POST", "/cs/close", {"pay_password": pay, "reason": " "}, token=cs, headers=ani) == "1001"
    assert await api.code("POST", "/cs/close", {"pay_password": pay, "reason": "客户来电销户"}, token=cs,
                          headers=ani) == "0000"
    assert (await w.notices(msisdn))[-1] == "您的手机支付账户已注销,感谢使用!"
    async with w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT reason FROM operator_actions WHERE action = 'mpay_cs_close' AND subject ="
                                   " (SELECT alias FROM mpay_accounts WHERE former_msisdn = $1 OR msisdn = $1"
                                   " ORDER BY id DESC LIMIT 1)", msisdn) == "客户来电销户"

"""The ``/mpay/v1`` JSON API end to end (SPEC 6.4, 6.6, 6.12, 6.13): website, merchants, banks,
counter, 10086 and operators against the real server; every reply checked against the
served OpenAPI document's envelope."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from Crypto.PublicKey import RSA

from recharge.mpay import bank
from recharge.mpay.codes import zh
from tests.mpay_world import Api, MpayWorld, new_msisdn

pytestmark = pytest.mark.usefixtures("audited")


async def customer(w: MpayWorld, api: Api, *, cash: int = 0, card_yuan: int = 0, **kwargs: Any
                   ) -> tuple[str, str, str]:
    """An opened account logged in on the website, its pay password changed: (msisdn, token, pay)."""
    msisdn, initial = await w.opened(**kwargs)
    token = await api.login(msisdn, initial["login"])
    pay = "246810"
    await api.ok("POST", "/me/password/pay", {"old": initial["pay"], "new": pay}, token=token)
    if card_yuan:
        assert (await w.sms(msisdn, f"CZK {await w.card(card_yuan)}")).startswith("充值成功")
    if cash:
        counter = await api.operator("counter", "HN0001")
        await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": cash, "reason": "现金"}, token=counter)
    return msisdn, token, pay


async def test_openapi_document_and_envelope_errors(w: MpayWorld, api: Api) -> None:
    async with w.session.get(f"{w.base}/mpay/v1/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"] == "3.1.0" and "/merchant/payments" in doc["paths"] and "/me/withdrawals" in doc["paths"]
    status, reply, _ = await api.call("GET", "/no/such/path")
    assert (status, reply["code"]) == (404, "1001")
    status, reply, _ = await api.call("DELETE", "/me")
    assert (status, reply["code"]) == (405, "1001")
    status, reply, _ = await api.call("POST", "/auth/login", raw=b"\xff\xfe not json")
    assert (status, reply["code"]) == (400, "1001")
    assert await api.code("GET", "/me") == "1003"
    assert await api.code("GET", "/me", token="forged") == "1003"
    for body in ({"login": 1, "password": "x"}, {"login": "a"}, {"login": "a", "password": "b", "x": 1},
                 {"login": "a\u0000", "password": "b"}, [1, 2]):
        assert await api.code("POST", "/auth/login", body) == "1001", body


async def test_website_opening_login_initial_password_and_lock(w: MpayWorld, api: Api) -> None:
    msisdn = await w.subscriber()
    await api.ok("POST", "/auth/otp", {"msisdn": msisdn, "purpose": "open"})
    assert await api.code("POST", "/auth/otp", {"msisdn": msisdn, "purpose": "open"}) == "1006"  # 60 s
    code = (await w.notices(msisdn))[-1][3:9]
    assert await api.code("POST", "/auth/open", {"msisdn": msisdn, "otp": code, "agree": False}) == "1001"
    assert await api.code("POST", "/auth/open", {"msisdn": msisdn, "otp": "000000", "agree": True}) in ("3006",)
    opened = await api.ok("POST", "/auth/open", {"msisdn": msisdn, "otp": code, "agree": True})
    assert opened["kind"] == "real_name" and opened["alias"].startswith("mp")
    text = (await w.notices(msisdn))[-1]
    login_pw = text.split("登录密码")[1].split(",")[0]
    data = await api.ok("POST", "/auth/login", {"login": opened["alias"].upper(), "password": login_pw})
    assert data["must_change_password"] is True
    assert await api.code("GET", "/me", token=data["token"]) == "1007"
    await api.ok("POST", "/me/password/login", {"old": login_pw, "new": "Secret123"}, token=data["token"])
    profile = await api.ok("GET", "/me", token=data["token"])
    assert profile["msisdn"] == msisdn and profile["name_masked"] == "张*" and profile["bank_card"] is None
    for _ in range(4):
        assert await api.code("POST", "/auth/login", {"login": msisdn, "password": "Wrong123"}) == "3001"
    assert await api.code("POST", "/auth/login", {"login": msisdn, "password": "Wrong123"}) == "3003"
    assert await api.code("POST", "/auth/login", {"login": msisdn, "password": "Secret123"}) == "3003"
    assert await w.sms(msisdn, "M") == zh("3003")  # C21: only 10086 resets a locked login password
    assert await api.code("POST", "/auth/login", {"login": new_msisdn(), "password": "Wrong123"}) == "3001"


async def test_remote_payment_100_needs_no_otp_and_100_01_does(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, cash=30_000)
    merchant = await w.merchant("GENERAL", "百货商城")
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "o100", "msisdn": msisdn, "amount": 10_000, "subject": "book"})
    pid = reply["data"]["payment_id"]
    shown = await api.ok("GET", f"/payments/{pid}", token=token)
    assert shown["otp_required"] is False and shown["merchant_name"] == "百货商城"
    assert await api.code("POST", f"/payments/{pid}/otp", token=token) == "4011"
    assert await api.code("POST", f"/payments/{pid}/confirm", {"pay_password": "000000"}, token=token) == "3002"
    paid = await api.ok("POST", f"/payments/{pid}/confirm", {"pay_password": pay}, token=token)
    assert paid == {"state": "paid", "bucket": "cash"}
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "o10001", "msisdn": msisdn, "amount": 10_001, "subject": "book"})
    pid = reply["data"]["payment_id"]
    assert (await api.ok("GET", f"/payments/{pid}", token=token))["otp_required"] is True
    assert await api.code("POST", f"/payments/{pid}/confirm", {"pay_password": pay}, token=token) == "4011"
    await api.ok("POST", f"/payments/{pid}/otp", token=token)
    assert (await w.balances(msisdn)).cash_pending == 10_001
    code = (await w.notices(msisdn))[-1][3:9]
    assert (await w.notices(msisdn))[-1].endswith("用于向百货商城支付100.01元,请勿告知他人。")
    wrong = "000000" if code != "000000" else "111111"
    assert await api.code("POST", f"/payments/{pid}/confirm", {"pay_password": pay, "otp": wrong},
                          token=token) == "3006"
    await api.ok("POST", f"/payments/{pid}/confirm", {"pay_password": pay, "otp": code}, token=token)
    _, reply, _ = await api.merchant_call(merchant, "GET", "/merchant/payments/o10001")
    assert reply["data"]["state"] == "paid" and reply["data"]["amount"] == 10_001
    assert (await w.balances(msisdn)).cash == 30_000 - 10_000 - 10_001


async def test_a_third_wrong_otp_fails_the_payment(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, cash=20_000)
    merchant = await w.merchant("GENERAL")
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "big", "msisdn": msisdn, "amount": 15_000, "subject": "tv"})
    pid = reply["data"]["payment_id"]
    await api.ok("POST", f"/payments/{pid}/otp", token=token)
    code = (await w.notices(msisdn))[-1][3:9]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(3):
        assert await api.code("POST", f"/payments/{pid}/confirm", {"pay_password": pay, "otp": wrong},
                              token=token) == "3006"
    _, reply, _ = await api.merchant_call(merchant, "GET", "/merchant/payments/big")
    assert reply["data"]["state"] == "failed"
    assert (await w.balances(msisdn)).cash_pending == 0


async def test_merchant_signatures_replays_and_order_numbers(w: MpayWorld, api: Api) -> None:
    msisdn, _, _ = await customer(w, api)
    merchant = await w.merchant()
    body = {"merchant_order_no": "m1", "msisdn": msisdn, "amount": 500, "subject": "game"}
    status, first, raw_first = await api.merchant_call(merchant, "POST", "/merchant/payments", body, rid="r-1")
    assert first["code"] == "0000"
    _, again, raw_again = await api.merchant_call(merchant, "POST", "/merchant/payments", body, rid="r-1")
    assert raw_again == raw_first  # the first reply, byte for byte
    other = dict(body, amount=600)
    assert (await api.merchant_call(merchant, "POST", "/merchant/payments", other, rid="r-1"))[1]["code"] == "1005"
    assert (await api.merchant_call(merchant, "POST", "/merchant/payments", other, rid="r-2"))[1]["code"] == "1005"
    forged = RSA.generate(2048)
    from recharge.mpay import merchants

    bad_sign = merchants.sign(forged.export_key(), b"whatever")
    assert (await api.merchant_call(merchant, "POST", "/merchant/payments", body, rid="r-3",
                                    sign=bad_sign))[1]["code"] == "1002"
    assert (await api.merchant_call(merchant, "POST", "/merchant/payments", body, rid="r-4",
                                    stamp=1))[1]["code"] == "1002"
    assert (await api.merchant_call("NOSUCH", "POST", "/merchant/payments", body))[1]["code"] == "1002"
    unknown = dict(body, merchant_order_no="m2", msisdn=new_msisdn())
    assert (await api.merchant_call(merchant, "POST", "/merchant/payments", unknown))[1]["data"]["state"] == "created"
    assert (await api.merchant_call(merchant, "POST", "/merchant/refunds", {
        "merchant_order_no": "m1", "refund_no": "f1", "amount": 100}))[1]["code"] == "4015"


async def test_withdrawals_consecutive_rule_binding_and_payout(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, cash=50_000)
    card = {"bank": "CCB", "province": "430000", "city": "430100", "branch": "长沙支行",
            "number": "6217000000001234", "holder": "李四", "pay_password": pay}
    assert await api.code("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token) == "4005"
    assert await api.code("PUT", "/me/bank-card", card, token=token) == "4007"
    assert await api.ok("PUT", "/me/bank-card", dict(card, holder=" 张 三 "), token=token) == {
        "bank": "CCB", "last4": "1234"}
    assert (await w.notices(msisdn))[-1] == "尊敬的客户:您的提现银行卡已设定成功!提现银行卡已设定为[中国建设银行尾号1234]卡。详询10086。"
    assert await api.code("POST", "/me/withdrawals", {"amount": 99, "pay_password": pay}, token=token) == "4001"
    assert await api.code("POST", "/me/withdrawals", {"amount": 60_000, "pay_password": pay}, token=token) == "4002"
    for _ in range(2):
        await api.ok("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token)
    assert await api.code("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token) == "4004"
    assert zh("4004") == "连续提现次数超限"
    assert await w.sms(msisdn, "TX") == "连续提现次数超限"
    await api.ok("POST", "/me/hf", {"target": msisdn, "amount": 1000, "pay_password": pay}, token=token)
    assert await api.code("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token) == "4004"
    assert await api.code("PUT", "/me/bank-card", dict(card, holder="张三"), token=token) == "4008"
    merchant = await w.merchant("GENERAL")
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "wd", "msisdn": msisdn, "amount": 100, "subject": "x"})
    await api.ok("POST", f"/payments/{reply['data']['payment_id']}/confirm", {"pay_password": pay}, token=token)
    assert await w.sms(msisdn, "TX") == "请回复提现金额(元),款项将提至尾号1234的银行卡,仅现金账户余额可提现。"
    assert await w.sms(msisdn, "10") == "请回复6位支付密码,确认提现10元。"
    assert await w.sms(msisdn, pay) == "提现申请已受理,10元已冻结,款项汇出后一般3-7个工作日到账。"
    assert (await w.balances(msisdn)).cash_pending == 3000


async def test_fourth_binding_in_a_month_is_refused(w: MpayWorld, api: Api) -> None:
    _, token, pay = await customer(w, api)
    card = {"bank": "ICBC", "province": "430000", "city": "430100", "branch": "b", "number": "621700000000",
            "holder": "张三", "pay_password": pay}
    for last in "123":
        await api.ok("PUT", "/me/bank-card", dict(card, number="62170000000" + last), token=token)
    assert await api.code("PUT", "/me/bank-card", card, token=token) == "4006"


async def bank_recharge(w: MpayWorld, api: Api, token: str) -> tuple[Any, dict[str, str]]:
    """A fresh unionpay gateway key and the customer's 50-yuan bank recharge: (key, its success notice)."""
    key = RSA.generate(2048)
    async with w.pool.acquire() as conn:
        await bank.set_gateway_key(conn, "unionpay", key.publickey().export_key().decode())
    order = await api.ok("POST", "/me/recharges/bank", {"bank": "CCB", "amount": 5000, "into": "account"},
                         token=token)
    return key, {"order_id": order["order_id"], "amount": "5000", "result": "S", "bank_serial": "B1",
                 "paid_at": "20260101120000"}


async def test_bank_notices_are_verified_stored_once_and_authoritative(w: MpayWorld, api: Api, tmp_path: Any) -> None:
    msisdn, token, _ = await customer(w, api)
    key, form = await bank_recharge(w, api, token)
    assert await api.code("POST", "/me/recharges/bank", {"bank": "CCB", "amount": 99, "into": "account"},
                          token=token) == "4001"

    async def notify(fields: dict[str, str], gw: str = "unionpay", signer: Any = key) -> tuple[int, str]:
        signed = dict(fields, sign=bank.sign_form(signer.export_key(), fields))
        async with w.session.post(f"{w.base}/mpay/v1/bank/notify/{gw}", data=urlencode(signed),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            return resp.status, await resp.text()

    assert await notify(form, signer=RSA.generate(2048)) == (403, "FAIL")
    assert await notify(form, gw="icbc") == (403, "FAIL")
    assert (await w.balances(msisdn)).cash == 0
    assert await notify(form) == (200, "OK")
    assert await notify(form) == (200, "OK")
    assert await notify(dict(form, bank_serial="B2")) == (200, "OK")  # a second success changes nothing
    assert await notify(dict(form, result="F", bank_serial="B3")) == (200, "OK")
    assert (await w.balances(msisdn)).cash == 5000
    assert (await w.notices(msisdn))[-1] == "您已成功充值50元至手机支付现金账户,现金账户余额50元。"
    assert await notify(dict(form, order_id="nosuch")) == (200, "OK")


async def test_counter_opens_takes_cash_and_closes_with_id_and_otp(w: MpayWorld, api: Api) -> None:
    msisdn = await w.subscriber()
    counter = await api.operator("counter", "HN0001")
    assert await api.code("POST", "/counter/otp", {"msisdn": msisdn, "purpose": "open"}) == "1003"
    await api.ok("POST", "/counter/otp", {"msisdn": msisdn, "purpose": "open"}, token=counter)
    code = (await w.notices(msisdn))[-1][3:9]
    ident = {"msisdn": msisdn, "id_type": "id_card", "id_number": "430102199001011234", "reason": "客户申请开户"}
    assert await api.code("POST", "/counter/accounts", dict(ident, id_number="X", otp=code), token=counter) == "3007"
    for reason in (None, "", "  "):  # a write that changes a status needs its reason
        without = {k: v for k, v in dict(ident, otp=code, reason=reason).items() if v is not None}
        assert await api.code("POST", "/counter/accounts", without, token=counter) == "1001"
    opened = await api.ok("POST", "/counter/accounts", dict(ident, otp=code), token=counter)
    assert opened["kind"] == "real_name"
    cash = {"msisdn": msisdn, "reason": "柜台现金"}
    assert await api.code("POST", "/counter/cash", dict(cash, amount=99), token=counter) == "4001"
    assert await api.code("POST", "/counter/cash", {"msisdn": msisdn, "amount": 2000}, token=counter) == "1001"
    assert (await api.ok("POST", "/counter/cash", dict(cash, amount=2000), token=counter)) == {"cash_balance": 2000}
    assert (await w.notices(msisdn))[-1] == "您已在营业厅现金充值20元,现金账户余额20元。"
    assert await api.code("POST", "/counter/close", dict(ident, otp="123456"), token=counter) == "2012"
    cs = await api.operator("cs")
    assert await api.code("POST", "/counter/cash", dict(cash, amount=200), token=cs) == "1004"
    async with w.pool.acquire() as conn:  # one audit trail: who (the console's operator), which token, why
        rows = await conn.fetch("SELECT actor, action, reason, detail FROM operator_actions WHERE subject = $1"
                                " AND action LIKE 'mpay_counter_%' ORDER BY id", msisdn)
    assert [(r["action"], r["reason"]) for r in rows] == [("mpay_counter_open", "客户申请开户"),
                                                         ("mpay_counter_cash", "柜台现金")]
    detail = rows[1]["detail"] if isinstance(rows[1]["detail"], dict) else json.loads(rows[1]["detail"])
    assert rows[1]["actor"].startswith("mpay:counter") and detail["hall"] == "HN0001"
    assert detail["amount"] == 2000 and isinstance(detail["token_id"], int)


async def test_freeze_and_the_status_matrix_over_channels(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, card_yuan=20)
    ops = await api.operator("ops")
    assert (await api.ok("POST", f"/ops/accounts/{msisdn}/freeze", {"reason": "risk"}, token=ops)) == {
        "status": "frozen"}
    assert await w.sms(msisdn, f"CZK {await w.card(10)}") == zh("2005")
    assert (await w.sms(msisdn, "CX")).startswith("现金账户余额")  # frozen: queries and SMS still work
    assert await api.code("GET", "/me", token=token) == "1003"  # a freeze revokes the tokens
    await api.ok("POST", f"/ops/accounts/{msisdn}/unfreeze", {"reason": "cleared"}, token=ops)
    assert (await w.notices(msisdn))[-1] == "您的手机支付账户已解除冻结。"
    await w.subscriber(msisdn, status="lost")
    cs = await api.operator("cs")
    got = await api.ok("GET", "/cs/account", token=cs, headers={"X-ANI": msisdn})
    assert (got["status"], got["lock_reason"], got["card_balance"]) == ("locked", "lost", 2000)
    token = await api.login(msisdn, "Passw0rd1")
    assert await api.code("POST", "/me/recharges/card", {"pin": await w.card(10)}, token=token) == "2004"
    assert await api.code("POST", "/me/hf", {"target": msisdn, "amount": 500, "pay_password": pay},
                          token=token) == "2004"
    await w.subscriber(msisdn, status="suspended_oneway")
    assert (await api.ok("POST", "/me/hf", {"target": msisdn, "amount": 500, "pay_password": pay}, token=token))[
        "bucket"] == "card"  # C5: suspended numbers may pay phone bills on the web
    assert await api.code("POST", "/me/close", {"pay_password": pay}, token=token) == "2008"


async def test_registry_put_by_boss_cancels_a_number_and_detaches_its_account(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api)
    boss = await api.operator("boss")
    record = {"name": "张三", "id_type": "id_card", "id_number": "430102199001011234", "province": "430000",
              "brand": "GOTONE", "status": "cancelled", "reason": "BOSS 销号"}
    assert await api.code("PUT", f"/registry/subscribers/{msisdn}", record, token=token) == "1003"
    cs = await api.operator("cs")
    assert await api.code("PUT", f"/registry/subscribers/{msisdn}", record, token=cs) == "1004"
    async with w.pool.acquire() as conn:
        before = await conn.fetchval("SELECT now()")
    assert await api.code("PUT", f"/registry/subscribers/{msisdn}", dict(record, reason=None), token=boss) == "1001"
    data = await api.ok("PUT", f"/registry/subscribers/{msisdn}", record, token=boss)
    async with w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT reason FROM operator_actions WHERE subject = $1 AND action ="
                                   " 'mpay_registry_put'", msisdn) == "BOSS 销号"
    assert data["created"] is False and data["events"] == ["detached:closed"]
    assert await w.sms(msisdn, "CX") == zh("2008")
    assert (await api.ok("GET", f"/registry/subscribers/{msisdn}", token=boss))["record"]["status"] == "cancelled"
    assert await api.code("GET", f"/registry/subscribers/{new_msisdn()}", token=boss) == "2008"
    async with w.pool.acquire() as conn:
        sent = await conn.fetchval("SELECT count(*) FROM mpay_outbox WHERE msisdn = $1 AND state = 'pending'"
                                   " AND created_at >= $2", msisdn, before)
    assert sent == 0  # nothing reaches the detached account's former number


async def test_a_replayed_request_id_while_the_first_runs_waits_for_it(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, card_yuan=50)
    replies = await asyncio.gather(*(api.call("POST", "/me/hf", {"target": msisdn, "amount": 1000,
                                                                 "pay_password": pay}, token=token, rid="same")
                                     for _ in range(4)))
    assert len({raw for _, _, raw in replies}) == 1, replies
    async with w.pool.acquire() as conn:
        rows = await conn.fetch("SELECT b.id, b.amount, t.code FROM mpay_bill_payments b JOIN transfers t ON t.id = b.transfer_id"
                                " WHERE target = $1", msisdn)
    assert (await w.balances(msisdn)).card == 4000, (rows, replies[0])


async def test_sms_sink_hands_out_notices_once(w: MpayWorld, api: Api) -> None:
    msisdn, _ = await w.opened()
    ops = await api.operator("ops")
    items = (await api.ok("GET", f"/ops/sms-sink?msisdn={msisdn}", token=ops))["items"]
    assert items and items[0]["text"].startswith("手机支付登录密码")
    assert (await api.ok("GET", f"/ops/sms-sink?msisdn={msisdn}", token=ops))["items"] == []
    async with w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM mpay_outbox WHERE msisdn = $1 AND text_enc IS NOT NULL",
                                   msisdn) == 0  # the sensitive text is erased once handed out



async def _cli(database_url: str, *argv: str) -> int:
    from app.cli import main

    return await asyncio.to_thread(main, [*argv[:3], "--database-url", database_url, *argv[3:]])


async def test_payout_cycle_through_the_cli(w: MpayWorld, api: Api, database_url: str, tmp_path: Any,
                                           monkeypatch: pytest.MonkeyPatch, test_keys: Any) -> None:
    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    msisdn, token, pay = await customer(w, api, cash=10_000)
    await api.ok("PUT", "/me/bank-card", {"bank": "ABC", "province": "430000", "city": "430100", "branch": "b",
                                          "number": "6228480000005678", "holder": "张三", "pay_password": pay},
                 token=token)
    ids = [(await api.ok("POST", "/me/withdrawals", {"amount": amount, "pay_password": pay}, token=token))[
        "withdrawal_id"] for amount in (1000, 2000)]
    async with w.pool.acquire() as conn:  # submitted a month ago: in the latest complete batch (17:00 cut-off)
        await conn.execute("UPDATE mpay_withdrawals SET created_at = created_at - interval '30 days'"
                           " WHERE id = ANY($1::text[])", ids)
    export = tmp_path / "payout.csv"
    assert await _cli(database_url, "mpay", "payout", "export", str(export)) == 0
    lines = export.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,bank,province,city,branch,account,name,yuan"
    mine = [line for line in lines if line.split(",")[0] in ids]
    assert sorted(line.split(",")[-1] for line in mine) == ["10.00", "20.00"]
    results = tmp_path / "results.csv"
    results.write_text(f"id,result,reference,reason\n{ids[0]},S,BANKREF1,\n{ids[1]},F,,account closed\n"
                       "nosuch,S,,\n", encoding="utf-8")
    assert await _cli(database_url, "mpay", "payout", "import", str(results)) == 2  # none of it
    assert (await w.balances(msisdn)).cash_pending == 3000
    results.write_text(f"id,result,reference,reason\n{ids[0]},S,BANKREF1,\n{ids[1]},F,,account closed\n",
                       encoding="utf-8")
    assert await _cli(database_url, "mpay", "payout", "import", str(results)) == 0
    assert await _cli(database_url, "mpay", "payout", "import", str(results)) == 0  # repeated rows: no-ops
    figures = await w.balances(msisdn)
    assert (figures.cash, figures.cash_pending) == (9000, 0)
    texts = await w.notices(msisdn)
    assert "您的提现10元已汇至尾号5678的银行卡,请注意查收。详询10086。" in texts
    assert "您的提现20元未能汇出,冻结款项已退回现金账户。详询10086。" in texts
    results.write_text(f"id,result,reference,reason\n{ids[0]},F,,\n", encoding="utf-8")
    assert await _cli(database_url, "mpay", "payout", "import", str(results)) == 2  # contradicts S


async def test_operator_cli_tokens_and_the_simulated_bank(w: MpayWorld, api: Api, database_url: str,
                                                          tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                          test_keys: Any, capfd: pytest.CaptureFixture[str]) -> None:
    from app import bank_sim, mpay_demo

    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    assert await _cli(database_url, "mpay", "operator", "add", "feed1", "--role", "boss") == 0
    assert await _cli(database_url, "mpay", "operator", "token", "feed1", "--ttl", "91") == 2
    capfd.readouterr()
    assert await _cli(database_url, "mpay", "operator", "token", "feed1", "--ttl", "30") == 0
    token = capfd.readouterr().out.strip().splitlines()[-1]
    msisdn = await w.subscriber()
    assert (await api.ok("GET", f"/registry/subscribers/{msisdn}", token=token))["record"]["msisdn"] == msisdn
    key_path = mpay_demo.key_path(tmp_path, "gw_unionpay")
    pem = mpay_demo.ensure_key(key_path)
    (tmp_path / "pub.pem").write_text(pem, encoding="utf-8")
    assert await _cli(database_url, "mpay", "gateway", "key", "unionpay", "--public-key", str(tmp_path / "pub.pem")) == 0
    owner, token2, _ = await customer(w, api)
    order = await api.ok("POST", "/me/recharges/bank", {"bank": "CMB", "amount": 1234, "into": "account"},
                         token=token2)
    status = await asyncio.to_thread(bank_sim.notify, w.base, "unionpay", key_path, order["order_id"], 1234)
    assert status == (200, "OK")
    assert (await w.balances(owner)).cash == 1234


async def test_security_centre_and_pay_resets(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api)
    questions = [{"id": 1, "answer": "Ｌｉｎ Ｙｉ"}, {"id": 4, "answer": "长沙"}, {"id": 8, "answer": "blue"}]
    assert await api.code("POST", "/me/password/pay/reset", {"answers": questions}, token=token) == "3007"  # none set
    assert await api.code("PUT", "/me/security", {"pay_password": pay, "questions": questions[:2]},
                          token=token) == "1001"
    await api.ok("PUT", "/me/security", {"pay_password": pay, "questions": questions}, token=token)
    wrong = [dict(q, answer="x") if q["id"] == 8 else q for q in questions]
    assert await api.code("POST", "/me/password/pay/reset", {"answers": wrong}, token=token) == "3007"
    assert await api.code("POST", "/me/password/pay/reset", {"answers": wrong}, token=token) == "3007"
    assert await api.code("POST", "/me/password/pay/reset", {"answers": wrong}, token=token) == "3008"
    assert await api.code("POST", "/me/password/pay/reset", {"answers": questions}, token=token) == "3008"
    cs = await api.operator("cs")
    ani = {"X-ANI": msisdn}
    assert await api.code("POST", "/cs/resets/pay", {"answers": [{"id": 4, "answer": " 长 沙 "}]}, token=cs,
                          headers=ani) == "0000"
    assert (await w.notices(msisdn))[-1].startswith("您的手机支付支付密码已重置为")
    assert (await w.account(msisdn))["pay_initial"] is True
    identity = {"name": "张三", "id_number": "430102199001011234", "opened_on": "1999-01-01"}
    assert await api.code("POST", "/cs/resets/pay", {"identity": identity}, token=cs, headers=ani) == "0000"
    assert await api.code("POST", "/cs/resets/pay", {"identity": dict(identity, name="李四")}, token=cs,
                          headers=ani) == "3007"
    other, _ = await w.opened(name=None)
    assert await api.code("POST", "/cs/resets/pay", {"identity": identity}, token=cs,
                          headers={"X-ANI": other}) == "2010"
    assert await api.code("POST", "/cs/resets/operation", {"name": "张三", "id_number": "430102199001011234"},
                          token=cs, headers=ani) == "0000"
    assert (await w.notices(msisdn))[-1] == "您的手机钱包操作密码已重置为1234。"


async def test_payments_expire_open_limit_and_refunds_when_enabled(w: MpayWorld, api: Api, platform: Any) -> None:
    from tests.conftest import settings_changed

    msisdn, token, pay = await customer(w, api, card_yuan=50)
    merchant = await w.merchant("DIGITAL")
    for i in range(5):
        await api.merchant_call(merchant, "POST", "/merchant/payments", {
            "merchant_order_no": f"e{i}", "msisdn": msisdn, "amount": 100, "subject": "x"})
    assert (await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "e5", "msisdn": msisdn, "amount": 100, "subject": "x"}))[1]["code"] == "1006"
    _, reply, _ = await api.merchant_call(merchant, "GET", "/merchant/payments/e0")
    pid = reply["data"]["payment_id"]
    async with w.pool.acquire() as conn:
        await conn.execute("UPDATE mpay_payments SET expires_at = now() - interval '1 second' WHERE id = $1", pid)
    assert await api.code("POST", f"/payments/{pid}/confirm", {"pay_password": pay}, token=token) == "4011"
    assert (await api.merchant_call(merchant, "GET", "/merchant/payments/e0"))[1]["data"]["state"] == "expired"
    _, reply, _ = await api.merchant_call(merchant, "GET", "/merchant/payments/e1")
    await api.ok("POST", f"/payments/{reply['data']['payment_id']}/confirm", {"pay_password": pay}, token=token)
    refund = {"merchant_order_no": "e1", "refund_no": "R1", "amount": 60}
    with settings_changed(platform, mpay_refund_enabled=True):
        assert (await api.merchant_call(merchant, "POST", "/merchant/refunds", dict(refund, amount=101)))[1][
            "code"] == "4016"
        assert (await api.merchant_call(merchant, "POST", "/merchant/refunds", dict(
            refund, merchant_order_no="e2")))[1]["code"] == "4011"
        data = (await api.merchant_call(merchant, "POST", "/merchant/refunds", refund))[1]["data"]
        assert data["refunded"] == 60
        assert (await api.merchant_call(merchant, "POST", "/merchant/refunds", dict(
            refund, refund_no="R2", amount=41)))[1]["code"] == "4016"
    assert (await w.notices(msisdn))[-1] == "数字商城退款0.6元已退回您的充值卡账户。"
    assert (await w.balances(msisdn)).card == 5000 - 100 + 60


async def test_hf_for_another_number_and_its_codes(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, card_yuan=100)
    guangdong = await w.subscriber(province="440000")
    sichuan = await w.subscriber(province="510000")
    gone = await w.subscriber(status="cancelled")
    body = {"amount": 1000, "pay_password": pay}
    assert await api.code("POST", "/me/hf", dict(body, target=new_msisdn()), token=token) == "4009"
    assert await api.code("POST", "/me/hf", dict(body, target=gone), token=token) == "4009"
    assert await api.code("POST", "/me/hf", dict(body, target=guangdong), token=token) == "4010"
    assert await api.code("POST", "/me/hf", dict(body, target=sichuan, amount=99), token=token) == "4001"
    assert await api.code("POST", "/me/hf", dict(body, target=sichuan, pay_password="000000"), token=token) == "3002"
    assert await api.ok("POST", "/me/hf", dict(body, target=sichuan), token=token) == {"bucket": "card",
                                                                                       "amount": 1000}
    assert (await w.notices(msisdn))[-1] == f"缴费成功!已为{sichuan}缴话费10元,从充值卡账户扣款。"


async def test_alias_rules_and_login_by_alias(w: MpayWorld, api: Api) -> None:
    msisdn, token, _ = await customer(w, api)
    other, other_token, _ = await customer(w, api)
    assert await api.code("PUT", "/me/alias", {"alias": "1abcdef"}, token=token) == "1001"
    assert await api.code("PUT", "/me/alias", {"alias": "mp12345678"}, token=token) == "1001"
    name = "Zq" + msisdn[-8:]
    assert await api.ok("PUT", "/me/alias", {"alias": name}, token=token) == {"alias": name}
    assert await api.code("PUT", "/me/alias", {"alias": name + "x"}, token=token) == "1004"
    assert await api.code("PUT", "/me/alias", {"alias": name.lower()}, token=other_token) == "2015"
    assert (await api.ok("POST", "/auth/login", {"login": name.upper(), "password": "Passw0rd1"}))["token"]


async def test_bills_export_and_merchant_payout_through_the_cli(w: MpayWorld, api: Api, database_url: str,
                                                                 tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                                 test_keys: Any) -> None:
    from recharge.mpay import postings

    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    msisdn, token, pay = await customer(w, api, cash=5000)
    await api.ok("POST", "/me/hf", {"target": msisdn, "amount": 1234, "pay_password": pay}, token=token)
    merchant = await w.merchant("GENERAL")
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "p1", "msisdn": msisdn, "amount": 700, "subject": "x"})
    await api.ok("POST", f"/payments/{reply['data']['payment_id']}/confirm", {"pay_password": pay}, token=token)
    out = tmp_path / "bills.csv"
    assert await _cli(database_url, "mpay", "bills", "export", str(out)) == 0
    assert f",{msisdn},12.34," in out.read_text(encoding="utf-8")
    assert await _cli(database_url, "mpay", "bills", "export", str(out)) == 0
    assert msisdn not in out.read_text(encoding="utf-8")  # once
    async with w.pool.acquire() as conn:  # paid that morning, before the day's 17:00 cut-off
        await conn.execute("UPDATE transfers SET created_at = '2026-12-02 09:00+08' WHERE id = $1",
                           f"mpay:pay:{reply['data']['payment_id']}")
    assert await _cli(database_url, "mpay", "calendar", "set", "2026-12-02", "holiday") == 0
    assert await _cli(database_url, "mpay", "merchant", "payout", "--day", "2026-12-02") == 0  # a holiday: nothing
    async with w.pool.acquire() as conn:
        assert not await conn.fetchval("SELECT 1 FROM transfers WHERE id = $1", f"mpay:merpayout:{merchant}:2026-12-02")
    assert await _cli(database_url, "mpay", "calendar", "set", "2026-12-02", "workday") == 0
    for _ in range(2):  # the second run of the day is a no-op
        assert await _cli(database_url, "mpay", "merchant", "payout", "--day", "2026-12-02") == 0
    async with w.pool.acquire() as conn:
        mer = await postings.account_id(conn, f"MER/{merchant}")
        assert (await postings.buckets(conn, mer))[mer].posted == 0
        assert await conn.fetchval("SELECT amount FROM transfers WHERE id = $1",
                                   f"mpay:merpayout:{merchant}:2026-12-02") == 700


async def test_hostile_input_gets_a_documented_refusal_never_a_5xx(w: MpayWorld, api: Api) -> None:
    msisdn, token, pay = await customer(w, api, card_yuan=10)
    before = await w.snapshot(msisdn)
    for body in ({"amount": 2**70, "pay_password": pay}, {"amount": 1.5, "pay_password": pay},
                 {"amount": "100", "pay_password": pay}, {"amount": -1, "pay_password": pay},
                 {"amount": True, "pay_password": pay}, {"amount": 100, "pay_password": "１２３４５６"},
                 {"amount": 100, "pay_password": "12\u000056"}, {"amount": 100, "pay_password": "\ud800"},
                 {"amount": 100}, {"amount": 100, "pay_password": pay, "extra": 1}):
        assert await api.code("POST", "/me/withdrawals", body, token=token) == "1001", body
    for rid in ("", "x" * 65, "bad id", "é"):
        status, reply, _ = await api.call("POST", "/me/hf", {"target": msisdn, "amount": 100, "pay_password": pay},
                                          token=token, rid=rid or None)
        assert reply["code"] == "1001", rid
    status, reply, _ = await api.call("POST", "/me/hf", raw=b'{"target": "\xff\xfe"}', token=token)
    assert (status, reply["code"]) == (400, "1001")
    assert await api.code("GET", "/payments/" + "x" * 5000, token=token) == "4011"
    assert await api.code("GET", "/me/history?from=2026-13-01", token=token) == "4001"
    assert await api.code("GET", "/me/history?cursor=%00", token=token) == "1001"
    async with w.session.post(f"{w.base}/mpay/v1/bank/notify/unionpay", data=b"\xff\x00garbage&&==",
                              headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert (resp.status, await resp.text()) == (403, "FAIL")
    async with w.session.get(f"{w.base}/sms/inbound", params={
            "secret": "test-sms-secret", "from": msisdn, "to": "10658888", "text": "CZK \u0000\ud7ff" + "9" * 500}) as resp:
        assert resp.status in (200, 400)
    assert await w.snapshot(msisdn) == before

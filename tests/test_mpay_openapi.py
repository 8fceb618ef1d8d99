"""``/mpay/v1/openapi.json`` (SPEC 6.12): a valid OpenAPI 3.1 document whose every operation
describes its success ``data``, and real replies of every endpoint valid against it.

``tests.mpay_world.Api`` validates every reply of every mpay test against its operation;
the walks below drive each endpoint of SPEC 6.13 to a ``0000`` at least once (each walk
names the endpoints it covers, and together they cover the routing table).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import jsonschema
import pytest
from aiohttp import web
from Crypto.PublicKey import RSA
from openapi_spec_validator import validate as validate_openapi

from http_api import (
    mpay_api,
    mpay_customer,
    mpay_openapi,
    mpay_partners,
    mpay_replies,
    mpay_staff,
    wallet_web,
)
from recharge.mpay import bank
from tests.conftest import settings_changed
from tests.mpay_world import Api, MpayWorld, reply_validator

pytestmark = pytest.mark.usefixtures("audited")
IVR_SECRET = "openapi-ivr-secret"
CARD = {"bank": "CCB", "province": "430000", "city": "430100", "branch": "长沙支行", "number": "6217000000004321",
        "holder": "张三"}
QUESTIONS = [{"id": 1, "answer": "a"}, {"id": 2, "answer": "b"}, {"id": 3, "answer": "c"}]

WEBSITE = {("POST", "/auth/otp"), ("POST", "/auth/open"), ("POST", "/auth/login"), ("POST", "/me/password/login"),
           ("POST", "/me/password/pay"), ("GET", "/me"), ("GET", "/me/balance"), ("GET", "/me/history"),
           ("PUT", "/me/alias"), ("POST", "/me/recharges/card"), ("POST", "/me/recharges/bank"),
           ("PUT", "/me/security"), ("POST", "/me/otp"), ("PUT", "/me/security/phone"),
           ("POST", "/me/password/pay/reset"), ("PUT", "/me/bank-card"), ("POST", "/me/withdrawals"),
           ("POST", "/me/hf"), ("POST", "/auth/logout"), ("POST", "/auth/login-reset"), ("POST", "/me/close"),
           ("POST", "/me/real-name"), ("POST", "/me/wallet/transfers"), ("POST", "/me/wallet/loads/{load_id}/cancel")}
PARTNERS = {("POST", "/merchant/payments"), ("GET", "/payments/{id}"), ("POST", "/payments/{id}/otp"),
            ("POST", "/payments/{id}/confirm"), ("GET", "/merchant/payments/{order_no}"),
            ("POST", "/merchant/refunds"), ("POST", "/ops/login"), ("POST", "/ops/accounts/{login}/freeze"),
            ("POST", "/ops/accounts/{login}/unfreeze"), ("POST", "/ops/withdrawals/{id}/void"),
            ("GET", "/ops/sms-sink"), ("PUT", "/registry/subscribers/{msisdn}"),
            ("GET", "/registry/subscribers/{msisdn}"), ("GET", "/sms/dlr")}
STAFF = {("POST", "/counter/otp"), ("POST", "/counter/accounts"), ("POST", "/counter/cash"),
         ("POST", "/counter/close"), ("GET", "/cs/account"), ("GET", "/cs/history"), ("POST", "/cs/resets/login"),
         ("POST", "/cs/resets/pay"), ("POST", "/cs/resets/operation"), ("POST", "/cs/close"),
         ("POST", "/cs/ivr/resets/login"), ("GET", "/cs/ivr/balance"), ("POST", "/cs/ivr/password/pay"),
         ("POST", "/ivr/card-recharge")}


WALLET = {("POST", "/counter/sim-swap"), ("POST", "/counter/wallet-cancel"), ("GET", "/me/wallet"),
          ("GET", "/me/wallet/history"), ("GET", "/me/wallet/log")}


def routed() -> list[tuple[str, str, Any]]:
    root, sub = web.Application(), mpay_api.build()
    root.add_subapp("/mpay/v1", sub)
    return mpay_openapi.endpoints(sub.router.routes())


async def test_the_document_is_openapi_3_1_and_describes_every_reply(api: Api) -> None:
    doc = await api.document()
    validate_openapi(doc)
    endpoints = {(method, path) for method, path, _ in routed()}
    assert endpoints - set(mpay_replies.DATA) == set(), "add the data schema of these to http_api/mpay_replies.DATA"
    assert set(mpay_replies.DATA) - endpoints - {("GET", "/sms/dlr")} == set(), "a schema of no endpoint"
    spec6 = {(method, path) for module in (mpay_customer, mpay_partners, mpay_staff, wallet_web)
             for method, path, _ in module.ROUTES} | {("PUT", "/registry/subscribers/{msisdn}"), ("GET", "/sms/dlr")}
    assert spec6 == WEBSITE | PARTNERS | STAFF, "the walks below cover every SPEC 6.13 endpoint"
    validator, template = reply_validator(doc, "POST", "/me/withdrawals", 200)
    assert template == "/me/withdrawals"
    good = {"code": "0000", "msg_zh": "成功", "msg_en": "OK", "data": {"withdrawal_id": "w1", "state": "submitted"}}
    validator.validate(good)
    for bad in ({**good, "data": {"withdrawal_id": "w1", "state": "submitted", "extra": 1}},
                {**good, "data": {"withdrawal_id": "w1"}}, {**good, "data": None},
                {**good, "code": "4002", "data": {}}, {**good, "code": "0"}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)


async def _customer(w: MpayWorld, api: Api, **kwargs: Any) -> tuple[str, str, str]:
    """An account opened over SMS, logged in, its passwords changed: (msisdn, token, pay password)."""
    msisdn, initial = await w.opened(**kwargs)
    token = await api.login(msisdn, initial["login"])
    await api.ok("POST", "/me/password/pay", {"old": initial["pay"], "new": "246810"}, token=token)
    return msisdn, token, "246810"


async def _last_code(w: MpayWorld, msisdn: str) -> str:
    return (await w.notices(msisdn))[-1][3:9]


async def test_every_website_endpoint_answers_as_documented(w: MpayWorld, api: Api) -> None:
    msisdn = await w.subscriber()
    await api.ok("POST", "/auth/otp", {"msisdn": msisdn, "purpose": "open"})
    alias = (await api.ok("POST", "/auth/open", {"msisdn": msisdn, "otp": await _last_code(w, msisdn),
                                                 "agree": True}))["alias"]
    text = (await w.notices(msisdn))[-1]
    token = await api.login(alias, text.split("登录密码")[1].split(",")[0])
    pay = "246810"
    await api.ok("POST", "/me/password/pay", {"old": text.split("支付密码")[1].split(",")[0], "new": pay}, token=token)
    await api.ok("PUT", "/me/alias", {"alias": "Oa" + msisdn[-8:]}, token=token)
    await api.ok("POST", "/me/recharges/card", {"pin": await w.card(50)}, token=token)
    await api.ok("POST", "/me/recharges/bank", {"bank": "ICBC", "amount": 1000, "into": "account"}, token=token)
    await api.ok("PUT", "/me/security", {"pay_password": pay, "questions": QUESTIONS}, token=token)
    phone = await w.subscriber()
    await api.ok("POST", "/me/otp", {"purpose": "security_phone", "msisdn": phone}, token=token)
    await api.ok("PUT", "/me/security/phone", {"msisdn": phone, "otp": await _last_code(w, phone)}, token=token)
    await api.ok("POST", "/me/hf", {"target": msisdn, "amount": 1000, "pay_password": pay}, token=token)
    assert (await api.ok("GET", "/me/history", token=token))["items"]
    await api.ok("GET", "/me", token=token)
    await api.ok("GET", "/me/balance", token=token)
    await api.ok("POST", "/auth/logout", token=await api.login(msisdn, "Passw0rd1"))  # a second session
    await api.ok("POST", "/me/password/pay/reset", {"answers": QUESTIONS}, token=token)
    rich, token, pay = await _customer(w, api)
    await w.subscriber(rich)  # real-name data already complete: bind and withdraw
    cash = await api.operator("counter", "HN0001")
    await api.ok("POST", "/counter/cash", {"msisdn": rich, "amount": 5000, "reason": "现金"}, token=cash)
    await api.ok("PUT", "/me/bank-card", dict(CARD, pay_password=pay), token=token)
    await api.ok("POST", "/me/withdrawals", {"amount": 1000, "pay_password": pay}, token=token)
    await w.open_wallet(rich)
    load = await api.ok("POST", "/me/wallet/transfers", {"amount": 1000, "pay_password": pay}, token=token)
    await api.ok("POST", f"/me/wallet/loads/{load['load_id']}/cancel", token=token)
    await api.ok("POST", "/auth/otp", {"msisdn": rich, "purpose": "login_reset"})
    await api.ok("POST", "/auth/login-reset", {"login": rich, "otp": await _last_code(w, rich)})
    plain, token, pay = await _customer(w, api, name=None)
    await w.subscriber(plain)  # the registry completes its data: the website upgrades it
    await api.ok("POST", "/me/otp", {"purpose": "real_name"}, token=token)
    assert (await api.ok("POST", "/me/real-name", {"otp": await _last_code(w, plain)}, token=token)) == {
        "kind": "real_name"}
    await api.ok("POST", "/me/close", {"pay_password": pay}, token=token)
    assert api.seen >= WEBSITE, WEBSITE - api.seen


async def test_every_merchant_ops_and_boss_endpoint_answers_as_documented(w: MpayWorld, api: Api,
                                                                           platform: Any) -> None:
    msisdn, token, pay = await _customer(w, api)
    ops = await api.operator("ops")
    await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 20_000, "reason": "现金"},
                 token=await api.operator("counter", "HN0001"))
    merchant = await w.merchant("GENERAL")
    created = (await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "big", "msisdn": msisdn, "amount": 10_001, "subject": "tv"}))[1]["data"]
    pid = created["payment_id"]
    await api.ok("GET", f"/payments/{pid}", token=token)
    await api.ok("POST", f"/payments/{pid}/otp", token=token)
    await api.ok("POST", f"/payments/{pid}/confirm", {"pay_password": pay, "otp": await _last_code(w, msisdn)},
                 token=token)
    assert (await api.merchant_call(merchant, "GET", "/merchant/payments/big"))[1]["data"]["state"] == "paid"
    with settings_changed(platform, mpay_refund_enabled=True):
        assert (await api.merchant_call(merchant, "POST", "/merchant/refunds", {
            "merchant_order_no": "big", "refund_no": "r1", "amount": 1}))[1]["code"] == "0000"
    await api.ok("POST", f"/ops/accounts/{msisdn}/freeze", {"reason": "risk"}, token=ops)
    await api.ok("POST", f"/ops/accounts/{msisdn}/unfreeze", {"reason": "cleared"}, token=ops)
    token = await api.login(msisdn, "Passw0rd1")
    await api.ok("PUT", "/me/bank-card", dict(CARD, pay_password=pay), token=token)
    withdrawal = (await api.ok("POST", "/me/withdrawals", {"amount": 100, "pay_password": pay}, token=token))[
        "withdrawal_id"]
    await api.ok("POST", f"/ops/withdrawals/{withdrawal}/void", {"reason": "asked"}, token=ops)
    sink = (await api.ok("GET", f"/ops/sms-sink?msisdn={msisdn}", token=ops))["items"]
    boss = await api.operator("boss")
    record = {"name": "张三", "id_type": "id_card", "id_number": "430102199001011234", "province": "430000",
              "brand": "GOTONE", "status": "normal", "reason": "BOSS 同步"}
    await api.ok("PUT", f"/registry/subscribers/{msisdn}", record, token=boss)
    await api.ok("GET", f"/registry/subscribers/{msisdn}", token=boss)
    await api.ok("GET", f"/sms/dlr?id={sink[0]['id']}&status=1&secret=test-sms-secret")
    assert api.seen >= PARTNERS, PARTNERS - api.seen


async def test_every_counter_10086_and_ivr_endpoint_answers_as_documented(w: MpayWorld, api: Api,
                                                                          platform: Any) -> None:
    counter, cs = await api.operator("counter", "HN0001"), await api.operator("cs")
    msisdn = await w.subscriber()
    ident = {"msisdn": msisdn, "id_type": "id_card", "id_number": "430102199001011234", "reason": "客户申请"}
    await api.ok("POST", "/counter/otp", {"msisdn": msisdn, "purpose": "open"}, token=counter)
    await api.ok("POST", "/counter/accounts", dict(ident, otp=await _last_code(w, msisdn)), token=counter)
    msisdn, _ = await w.opened()  # an OTP a minute per number: close another one
    await api.ok("POST", "/counter/otp", {"msisdn": msisdn, "purpose": "close"}, token=counter)
    await api.ok("POST", "/counter/close", dict(ident, msisdn=msisdn, otp=await _last_code(w, msisdn)), token=counter)
    msisdn, _, pay = await _customer(w, api)
    await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 1000, "reason": "现金"}, token=counter)
    ani = {"X-ANI": msisdn}
    await api.ok("GET", "/cs/account", token=cs, headers=ani)
    await api.ok("GET", "/cs/history", token=cs, headers=ani)
    await api.ok("POST", "/cs/resets/login", token=cs, headers=ani)
    await api.ok("POST", "/cs/resets/operation", {"name": "张三", "id_number": "430102199001011234"}, token=cs,
                 headers=ani)
    with settings_changed(platform, mpay_ivr_secret=IVR_SECRET):
        ivr = dict(ani, **{"X-Gateway-Secret": IVR_SECRET})
        await api.ok("POST", "/cs/ivr/resets/login", headers=ivr)
        await api.ok("GET", "/cs/ivr/balance", headers=ivr)
        await api.ok("POST", "/ivr/card-recharge", {"pin": await w.card(10)}, headers=ivr)
        await api.ok("POST", "/cs/ivr/password/pay", {"old": pay, "new": "135790"}, headers=ivr)
    identity = {"name": "张三", "id_number": "430102199001011234", "opened_on": "1999-01-01", "last_recharge": 1000}
    await api.ok("POST", "/cs/resets/pay", {"identity": identity}, token=cs, headers={"X-ANI": msisdn})
    empty, _ = await w.opened()
    pay = await w.set_pay_password(empty, (await w.notices(empty))[-1].split("支付密码")[1].split(",")[0])
    await api.ok("POST", "/cs/close", {"pay_password": pay, "reason": "客户来电销户"}, token=cs, headers={"X-ANI": empty})
    assert api.seen >= STAFF, STAFF - api.seen


async def test_a_bank_notice_is_answered_as_documented(w: MpayWorld, api: Api) -> None:
    """The one endpoint outside the JSON envelope: form in, plain ``OK``/``FAIL`` out."""
    _, token, _ = await _customer(w, api)
    key = RSA.generate(2048)
    async with w.pool.acquire() as conn:
        await bank.set_gateway_key(conn, "icbc", key.publickey().export_key().decode())
    order = await api.ok("POST", "/me/recharges/bank", {"bank": "ICBC", "amount": 100, "into": "account"},
                         token=token)
    form = {"order_id": order["order_id"], "amount": "100", "result": "S", "bank_serial": "S1"}
    responses = (await api.document())["paths"]["/bank/notify/{gw}"]["post"]["responses"]
    for signed, status in ((dict(form, sign=bank.sign_form(key.export_key(), form)), 200), (form, 403)):
        async with w.session.post(f"{w.base}/mpay/v1/bank/notify/icbc", data=urlencode(signed),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == status and resp.content_type == "text/plain"
            jsonschema.validate(await resp.text(), responses[str(status)]["content"]["text/plain"]["schema"])


async def test_every_wallet_counter_and_website_endpoint_answers_as_documented(w: MpayWorld, api: Api,
                                                                               platform: Any) -> None:
    from tests.wallet_counter_world import ID, REASON, WalletDesk
    from tests.wallet_world import virtual_keys

    assert WALLET <= {(method, path) for method, path, _ in routed()}
    keys = virtual_keys(platform.ctx.keys)
    desk = WalletDesk(w, api, keys, "HN0001", await api.operator("counter", "HN0001"), None)  # type: ignore[arg-type]
    phone, msisdn, _ = await desk.wallet_phone(0)
    opened = next(t for t in await w.notices(msisdn) if t.startswith("手机支付登录密码"))
    token = await api.login(msisdn, opened.split("登录密码")[1].split(",")[0])
    assert (await api.ok("GET", "/me/wallet", token=token))["card_no"] == phone.sim.card_no
    assert (await api.ok("GET", "/me/wallet/history", token=token))["items"] == []
    assert await api.ok("GET", "/me/wallet/log", token=token) == {"card_no": phone.sim.card_no, "items": []}
    assert (await api.ok("POST", "/counter/wallet-cancel", {"msisdn": msisdn, **ID, **REASON},
                         token=desk.counter))["expires_at"]
    assert api.seen >= WALLET, WALLET - api.seen


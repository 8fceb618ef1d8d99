"""SPEC 6.7's status matrix through the real channels: for each account status, one request per row
over the website (and SMS), each refused cell answering its code and each allowed one getting past
the matrix (whatever the operation's own checks then say). tests/test_mpay_matrix.py checks every
cell of the table itself, for every channel."""

from __future__ import annotations

import pytest

from recharge.mpay.codes import zh
from tests.mpay_world import Api, MpayWorld

pytestmark = pytest.mark.usefixtures("audited")
PASS = "pass"  # the matrix let the request through: any code but 2004-2007 and 1004
MATRIX_CODES = {"2004", "2005", "2006", "2007", "1004"}
QUESTIONS = [{"id": 1, "answer": "a"}, {"id": 2, "answer": "b"}, {"id": 3, "answer": "c"}]
CARD = {"bank": "CCB", "province": "430000", "city": "430100", "branch": "b", "number": "6217000000001357",
        "holder": "张三"}
STATES = ("normal", "suspended", "lost", "frozen", "pending_closure")
# row: (normal, locked: suspended, locked: lost, frozen, pending_closure); 2008 where SPEC names the
# number's status first (SMS 6.5, pay reset 6.3, close 6.6).
EXPECTED: dict[str, tuple[str, ...]] = {
    "query": (PASS, PASS, PASS, PASS, PASS),
    "sms": (PASS, "2008", "2008", PASS, "2008"),
    "alias_change": (PASS, PASS, PASS, PASS, "2006"),
    "real_name_update": (PASS, "2004", "2004", PASS, "2006"),
    "recharge": (PASS, "2004", "2004", "2005", "2006"),
    "payment": (PASS, "2004", "2004", "2005", PASS),
    "hf": (PASS, PASS, "2004", "2005", PASS),
    "bind_card": (PASS, PASS, PASS, "2005", PASS),
    "withdrawal": (PASS, PASS, PASS, "2005", PASS),
    "close": (PASS, "2008", "2008", "2005", "2008"),
    "pay_reset": (PASS, "2008", "2008", "2005", "2008"),
    "pay_change": (PASS, PASS, PASS, PASS, PASS),
    "login_change": (PASS, PASS, PASS, PASS, PASS),
}


async def _account_in(w: MpayWorld, api: Api, state: str) -> tuple[str, str, str, str]:
    """A real-name account with cash, a card bucket, a bound card, security questions and a payment to
    confirm, then put in ``state``: (msisdn, token, payment id, target of HF)."""
    msisdn, initial = await w.opened()
    token = await api.login(msisdn, initial["login"])
    await api.ok("POST", "/me/password/pay", {"old": initial["pay"], "new": "246810"}, token=token)
    await api.ok("PUT", "/me/security", {"pay_password": "246810", "questions": QUESTIONS}, token=token)
    await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 5000, "reason": "现金"},
                 token=await api.operator("counter", "HN0001"))
    await api.ok("PUT", "/me/bank-card", dict(CARD, pay_password="246810"), token=token)
    merchant = await w.merchant("GENERAL")
    _, reply, _ = await api.merchant_call(merchant, "POST", "/merchant/payments", {
        "merchant_order_no": "m1", "msisdn": msisdn, "amount": 100, "subject": "x"})
    login = msisdn
    if state in ("suspended", "lost", "pending_closure"):
        status = {"suspended": "suspended_oneway", "lost": "lost", "pending_closure": "cancelled"}[state]
        await w.subscriber(msisdn, status=status)
        login = await _alias_of(w, msisdn) if state == "pending_closure" else msisdn  # detached: alias only
    elif state == "frozen":
        await api.ok("POST", f"/ops/accounts/{msisdn}/freeze", {"reason": "risk"}, token=await api.operator("ops"))
    token = await api.login(login, "Passw0rd1")
    return msisdn, token, reply["data"]["payment_id"], await w.subscriber()


async def _alias_of(w: MpayWorld, former: str) -> str:
    async with w.pool.acquire() as conn:
        return str(await conn.fetchval("SELECT alias FROM mpay_accounts WHERE former_msisdn = $1", former))


@pytest.mark.parametrize("state", STATES)
async def test_each_row_of_the_status_matrix_over_the_channels(w: MpayWorld, state: str) -> None:
    api = Api(w)
    msisdn, token, payment, target = await _account_in(w, api, state)
    pay = {"pay_password": "246810"}
    got: dict[str, str] = {
        "query": await api.code("GET", "/me/balance", token=token),
        "sms": "2008" if await w.sms(msisdn, "CX") == zh("2008") else PASS,
        "alias_change": await api.code("PUT", "/me/alias", {"alias": "Mx" + msisdn[-8:]}, token=token),
        "real_name_update": await api.code("POST", "/me/otp", {"purpose": "real_name"}, token=token),
        "recharge": await api.code("POST", "/me/recharges/card", {"pin": await w.card(10)}, token=token),
        "payment": await api.code("POST", f"/payments/{payment}/confirm", pay, token=token),
        "hf": await api.code("POST", "/me/hf", dict(pay, target=target, amount=100), token=token),
        "bind_card": await api.code("PUT", "/me/bank-card", dict(CARD, number="6217000000002468", **pay),
                                    token=token),
        "withdrawal": await api.code("POST", "/me/withdrawals", dict(pay, amount=100), token=token),
        "close": await api.code("POST", "/me/close", pay, token=token),
        "pay_reset": await api.code("POST", "/me/password/pay/reset", {"answers": QUESTIONS}, token=token),
    }
    if got["pay_reset"] == "0000":  # a reset revokes the tokens
        token = await api.login(msisdn, "Passw0rd1")
    got["pay_change"] = await api.code("POST", "/me/password/pay", {"old": "246810", "new": "135790"}, token=token)
    got["login_change"] = await api.code("POST", "/me/password/login", {"old": "Passw0rd1", "new": "Passw0rd2"},
                                         token=token)
    column = STATES.index(state)
    seen = {row: PASS if code not in MATRIX_CODES and code != "2008" else code for row, code in got.items()}
    assert seen == {row: cells[column] for row, cells in EXPECTED.items()}, got

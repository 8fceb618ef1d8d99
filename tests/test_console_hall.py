"""The console's business-hall counter over HTTP (the browser walk is in test_console_browser.py):
a clerk opens an account on the ID and a code sent to the phone, takes cash and closes it; every
refusal (its SPEC 6.10 code, a missing reason, a second submission of one form, a clerk of rank
viewer, an operator who is no clerk, a forged form) changes nothing; the audit trail names the
clerk, the hall and the reason. The SIM wallet's counter steps: a new RFID-SIM bound (SIM swap),
a wallet cancellation the hall's POS then carries out.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

import asyncpg
import pytest

from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SHANGHAI
from core_ext.virtual_sim import VirtualRfidSim
from recharge.mpay import accounts, sessions
from tests.conftest import settings_changed
from tests.console_world import ConsoleUser, hidden, new_operator
from tests.mpay_world import MpayWorld
from tests.wallet_counter_world import WalletDesk

pytestmark = pytest.mark.usefixtures("audited")
ID = {"id_type": "id_card", "id_number": "430102199001011234"}
WHEN = dt.datetime(2026, 1, 5, 10, 0, 0, tzinfo=SHANGHAI)


async def clerk(w: MpayWorld, platform: Any, *, hall: str = "HN0001", rank: str | None = None) -> ConsoleUser:
    name = f"clerk{secrets.token_hex(3)}"
    async with w.pool.acquire() as conn:
        password = await sessions.add_operator(conn, w.env, name, "counter", hall)
        if rank:
            await conn.execute("UPDATE operators SET role = $2 WHERE name = $1", name, rank)
    user = ConsoleUser(f"http://127.0.0.1:{platform.http_port}")
    await user.signed_in(name, password)
    user.name = name  # type: ignore[attr-defined]
    return user


async def post(user: ConsoleUser, msisdn: str, action: str, data: dict[str, str]) -> tuple[int, str]:
    status, html, _ = await user.form(f"/console/hall?msisdn={msisdn}", f"/console/hall/{action}",
                                      {"msisdn": msisdn, **data})
    return status, html


async def otp(w: MpayWorld, user: ConsoleUser, msisdn: str, purpose: str) -> str:
    assert (await post(user, msisdn, "otp", {"purpose": purpose}))[0] == 303
    return (await w.notices(msisdn))[-1][3:9]


async def test_a_clerk_opens_an_account_takes_cash_and_closes_it(w: MpayWorld, platform: Any,
                                                                 conn: asyncpg.Connection) -> None:
    msisdn = await w.subscriber()
    user = await clerk(w, platform)
    try:
        status, html, _ = await user.get(f"/console/hall?msisdn={msisdn}")
        assert status == 200 and 'id="hall-no-account"' in html and "HN0001" in html
        code = await otp(w, user, msisdn, "open")
        assert (await post(user, msisdn, "open", dict(ID, otp=code, reason="客户持身份证开户")))[0] == 303
        status, html, _ = await user.get(f"/console/hall?msisdn={msisdn}&msg=account_opened")
        assert re.search(r'id="hall-alias">mp\d{8}<', html) and "开户成功" in html
        assert (await w.notices(msisdn))[-1].startswith("手机支付登录密码")
        assert (await post(user, msisdn, "cash", {"amount": "20.5", "reason": "柜台收现"}))[0] == 303
        _, html, _ = await user.get(f"/console/hall?msisdn={msisdn}")
        assert 'id="cash-balance">20.50<' in html and "现金充值" in html  # the recent transactions
        assert (await w.notices(msisdn))[-1] == "您已在营业厅现金充值20.5元,现金账户余额20.5元。"
        status, html = await post(user, msisdn, "close", dict(ID, otp="123456", reason="客户销户"))
        assert status == 400 and "2012" in html  # balance not zero
        rows = await conn.fetch("SELECT actor, action, reason, detail FROM operator_actions WHERE subject = $1"
                                " ORDER BY id", msisdn)
        assert [(r["actor"], r["action"], r["reason"]) for r in rows] == [
            (f"console:{user.name}", "mpay_counter_open", "客户持身份证开户"),  # type: ignore[attr-defined]
            (f"console:{user.name}", "mpay_counter_cash", "柜台收现")]  # type: ignore[attr-defined]
        assert rows[1]["detail"]["hall"] == "HN0001" and rows[1]["detail"]["amount"] == 2050
    finally:
        await user.close()
    fresh = await w.subscriber()
    user = await clerk(w, platform)
    try:  # a fresh account with nothing in it closes at the counter
        code = await otp(w, user, fresh, "open")
        assert (await post(user, fresh, "open", dict(ID, otp=code, reason="开户")))[0] == 303
        with settings_changed(platform, mpay_otp_min_interval_s=0):  # a second code within the minute
            code = await otp(w, user, fresh, "close")
        assert (await post(user, fresh, "close", dict(ID, otp=code, reason="客户要求销户")))[0] == 303
        assert await accounts.live_by_msisdn(conn, fresh) is None
        assert (await w.notices(fresh))[-1] == "您的手机支付账户已注销,感谢使用!"
    finally:
        await user.close()


async def test_refusals_change_nothing(w: MpayWorld, platform: Any, conn: asyncpg.Connection) -> None:
    msisdn, _ = await w.opened()
    user = await clerk(w, platform)
    try:
        before = await w.snapshot(msisdn)
        for data, status, text in (({"amount": "20"}, 400, "此操作必须填写原因"), ({"amount": "abc", "reason": "x"}, 400, "4001"),
                                   ({"amount": "0.99", "reason": "x"}, 400, "4001")):
            got = await post(user, msisdn, "cash", data)
            assert got[0] == status and text in got[1], got
        code = await otp(w, user, await w.subscriber(), "open")
        assert (await post(user, msisdn, "open", dict(ID, otp=code, reason="x")))[0] == 400  # 2002: opened
        _, page, _ = await user.get(f"/console/hall?msisdn={msisdn}")
        form = {**hidden(page), "msisdn": msisdn, "amount": "10", "reason": "一次"}
        assert (await user.post("/console/hall/cash", form))[0] == 303
        assert (await user.post("/console/hall/cash", form))[0] == 409  # the same form again: not run
        assert (await user.post("/console/hall/cash", {**form, "csrf": "forged", "form_token": "x" * 20}))[0] == 403
        assert (await w.balances(msisdn)).cash == before[1].cash + 1000
    finally:
        await user.close()
    viewer = await clerk(w, platform, rank="viewer")
    name, otp_admin = await new_operator(conn, "admin")
    admin = ConsoleUser(viewer.base)
    try:
        assert (await viewer.get(f"/console/hall?msisdn={msisdn}"))[0] == 200  # a viewer clerk sees
        status, html = await post(viewer, msisdn, "cash", {"amount": "10", "reason": "x"})
        assert status == 403
        await admin.signed_in(name, otp_admin)
        status, html, _ = await admin.get(f"/console/hall?msisdn={msisdn}")
        assert status == 403 and "营业厅柜员" in html  # an admin who is no clerk
        assert 'id="nav-hall"' not in html
        assert (await w.balances(msisdn)).cash == before[1].cash + 1000
    finally:
        await viewer.close()
        await admin.close()


async def test_an_admin_binds_an_operator_to_a_hall_on_the_operators_page(platform: Any, conn: asyncpg.Connection
                                                                          ) -> None:
    name, otp_admin = await new_operator(conn, "admin")
    admin = ConsoleUser(f"http://127.0.0.1:{platform.http_port}")
    try:
        await admin.signed_in(name, otp_admin)
        added = f"clerk{secrets.token_hex(3)}"
        status, html, _ = await admin.form("/console/operators", "/console/operators", {
            "name": added, "role": "operator", "mpay_role": "counter", "hall": "HN0003"})
        assert status == 200 and added in html  # the one-time password page
        row = await conn.fetchrow("SELECT mpay_role, hall FROM operators WHERE name = $1", added)
        assert tuple(row) == ("counter", "HN0003")
        page = f"/console/operators/{added}/api-role"
        status, html, _ = await admin.form("/console/operators", page, {"mpay_role": "counter", "hall": "",
                                                                        "reason": "x"})
        assert status == 400 and "hall" in html  # a clerk without a hall is refused
        status, _, _ = await admin.form("/console/operators", page, {"mpay_role": "cs", "hall": "", "reason": ""})
        assert status == 400  # no reason
        status, _, _ = await admin.form("/console/operators", page, {"mpay_role": "cs", "hall": "",
                                                                     "reason": "调去 10086"})
        assert status == 303
        assert tuple(await conn.fetchrow("SELECT mpay_role, hall FROM operators WHERE name = $1", added)) == ("cs", None)
        assert await conn.fetchval("SELECT reason FROM operator_actions WHERE subject = $1 AND action ="
                                   " 'operator_api_role'", added) == "调去 10086"
    finally:
        await admin.close()


async def test_a_clerk_binds_a_new_rfid_sim_and_lets_the_hall_pos_cancel_the_wallet(
        w: MpayWorld, desk: WalletDesk, platform: Any, conn: asyncpg.Connection) -> None:
    keys = desk.keys
    msisdn, card = await w.subscriber(), await desk.stock()
    user = await clerk(w, platform, hall=desk.hall)
    try:
        swap = dict(ID, new_card=card, handset_model="Galaxy S3", reason="客户换 RFID-SIM 卡")
        status, html = await post(user, msisdn, "sim-swap", dict(swap, new_card="123"))
        assert status == 400 and "1001" in html
        assert (await post(user, msisdn, "sim-swap", dict(swap, id_number="X")))[0] == 400  # 3007
        assert (await post(user, msisdn, "sim-swap", swap))[0] == 303
        assert await conn.fetchval("SELECT msisdn FROM wallet_cards WHERE card_no = $1", card) == msisdn
        phone = VirtualHandset(VirtualRfidSim(card, keys, balance=3_000))
        assert (await desk.exchange(phone, "wallet.open")).script_ok  # STK opens the account and the wallet
        await desk.posted_load(int((await w.account(msisdn))["id"]), 3_000)
        _, html, _ = await user.get(f"/console/hall?msisdn={msisdn}")
        assert card in html and 'id="hall-wallet-cancel-form"' in html
        status, html = await post(user, msisdn, "wallet-cancel", dict(ID, id_number="X", reason="退订"))
        assert status == 400 and "3007" in html
        assert (await post(user, msisdn, "wallet-cancel", dict(ID, reason="客户退订手机钱包")))[0] == 303
        record = desk.pos.buy_out(phone.sim, WHEN)
        done = await desk.send(desk.pos, desk.pos.wallet_cancel_request(record, desk.pos.challenge(phone.sim)))
        assert done["code"] == "0000" and done["data"]["amount"] == 3_000
        _, html, _ = await user.get(f"/console/hall?msisdn={msisdn}")
        assert 'id="cash-balance">30.00<' in html and 'hall-wallet-cancel-form' not in html
        actions = await conn.fetch("SELECT action, reason FROM operator_actions WHERE subject = $1 AND actor = $2"
                                   " ORDER BY id", msisdn, f"console:{user.name}")  # type: ignore[attr-defined]
        assert [tuple(a) for a in actions] == [("wallet_counter_sim_swap", "客户换 RFID-SIM 卡"),
                                              ("wallet_counter_cancel", "客户退订手机钱包")]
    finally:
        await user.close()

"""The website's wallet views end to end (SPEC 6.13, 7.5): the shadow, the limit and what waits, and the shadow's
history by day range with today refused as the end date; through the real server, with a wallet opened over STK,
purchases uploaded by a merchant POS and a swap's buy-out at a hall POS."""

from __future__ import annotations

import datetime as dt

import pytest

from core_ext.virtual_pos import SHANGHAI
from recharge.mpay.text import today
from tests.conftest import unique_digits
from tests.wallet_counter_world import WalletDesk

pytestmark = pytest.mark.usefixtures("audited")
WHEN = dt.datetime(2026, 1, 5, 10, 0, 0, tzinfo=SHANGHAI)


async def _token(desk: WalletDesk, msisdn: str) -> str:
    opened = next(t for t in await desk.w.notices(msisdn) if t.startswith("手机支付登录密码"))
    return await desk.api.login(msisdn, opened.split("登录密码")[1].split(",")[0])


async def test_wallet_view_and_history(desk: WalletDesk) -> None:
    phone, msisdn, acct = await desk.wallet_phone(5_000)
    token = await _token(desk, msisdn)
    view = await desk.api.ok("GET", "/me/wallet", token=token)
    assert view == {"state": "open", "card_no": phone.sim.card_no, "shadow": 5_000, "limit": 20_000, "waiting": 0}
    shop = await desk.terminal(merchant="M" + unique_digits(7))
    shop.purchase(phone.sim, 1_234, WHEN)
    assert (await desk.send(shop, shop.batch()))["data"]["results"][0]["code"] == "0000"
    assert (await desk.send(desk.pos, desk.pos.swap_request(desk.pos.buy_out(phone.sim, WHEN))))["code"] == "0000"
    view = await desk.api.ok("GET", "/me/wallet", token=token)
    assert (view["shadow"], view["waiting"]) == (0, 3_766)
    yesterday = today() - dt.timedelta(days=1)
    assert await desk.api.code("GET", f"/me/wallet/history?to={today().isoformat()}", token=token) == "4001"
    assert (await desk.api.ok("GET", "/me/wallet/history", token=token))["items"] == [], "all of it is today's"
    async with desk.w.pool.acquire() as conn:  # the same movements, a day earlier
        await conn.execute(
            "UPDATE transfers SET created_at = created_at - interval '1 day' WHERE id IN (SELECT t.id FROM transfers t"
            " JOIN accounts a ON a.id IN (t.debit_account_id, t.credit_account_id) WHERE a.card_no = $1)",
            f"W/{acct}")
    items = (await desk.api.ok("GET", f"/me/wallet/history?from={yesterday}&to={yesterday}", token=token))["items"]
    assert [(i["type"], i["amount"], i["state"]) for i in items] == [
        ("load", 3_766, "waiting"), ("buy_out", -3_766, "posted"), ("purchase", -1_234, "posted"),
        ("load", 5_000, "posted")]
    assert all(i["created_at"].endswith("+08:00") and ":" not in i["id"] for i in items)
    for bad in (f"from={yesterday}&to={yesterday - dt.timedelta(days=1)}", "to=2026-02-30", "from=20260101",
                f"from={yesterday - dt.timedelta(days=400)}&to={yesterday}"):
        assert await desk.api.code("GET", f"/me/wallet/history?{bad}", token=token) == "4001", bad


async def test_an_account_without_a_wallet(desk: WalletDesk) -> None:
    msisdn, initial = await desk.w.opened()
    token = await desk.api.login(msisdn, initial["login"])
    assert await desk.api.code("GET", "/me/wallet", token=token) == "5001"
    assert await desk.api.code("GET", "/me/wallet/history", token=token) == "5001"
    assert await desk.api.code("GET", "/me/wallet") == "1003"

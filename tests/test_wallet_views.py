"""The website's wallet views end to end (SPEC 6.13, 7.5): the shadow, the limit and what waits, the shadow's
history by day range with today refused as the end date, and the card's last-ten log as the platform knows it
(SPEC 7.1's SFI 0x18, compared with what the virtual RFID-SIM itself answers to READ RECORD); through the real
server, with a wallet opened over STK, loads driven by a hall POS, purchases uploaded by a merchant POS and a
swap's buy-out at a hall POS."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from core_ext.virtual_pos import SHANGHAI
from core_ext.virtual_sim import LOG_SIZE, TYPE_LOAD, LogRecord, VirtualRfidSim
from recharge.mpay.text import today
from tests.conftest import unique_digits
from tests.wallet_counter_world import REASON, WalletDesk

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


def _card_log(desk: WalletDesk, sim: VirtualRfidSim) -> list[dict[str, Any]]:
    """The card's own last-ten log, read record by record (``00 B2 nn C4 17``), spelled as the website spells it."""
    desk.pos.read_card(sim)  # SELECT DDF1, ADF1
    out = []
    for n in range(1, LOG_SIZE + 1):
        raw = sim.transmit(bytes((0x00, 0xB2, n, 0xC4, 0x17)))
        if raw[-2:] != b"\x90\x00":
            break
        r = LogRecord.decode(raw[:-2])
        out.append({"serial": r.serial, "type": "load" if r.kind == TYPE_LOAD else "purchase", "amount": r.amount,
                    "terminal_id": r.terminal_id.hex(), "date": r.date.hex(), "time": r.time.hex()})
    return out


async def _hall_load(desk: WalletDesk, sim: VirtualRfidSim, amount: int | None) -> None:
    """POS转存 of ``amount`` (or the card's oldest waiting load) driven onto ``sim`` by the hall POS."""
    started = await desk.send(desk.pos, desk.pos.load_request(sim.card_no, amount))
    assert started["code"] == "0000", started
    load_id = started["data"]["load_id"]
    first = desk.pos.challenge(sim) if amount is None else None  # a swap's load writes 0x17 first
    step = await desk.send(desk.pos, desk.pos.continue_request(load_id, challenge=first))
    while step["code"] == "0000" and step["data"].get("script"):
        step = await desk.send(desk.pos, desk.pos.continue_request(load_id, desk.pos.run_script(
            sim, step["data"]["script"])))
    assert step["code"] == "0000", step


async def test_the_website_shows_the_cards_last_ten_log_as_the_platform_knows_it(desk: WalletDesk) -> None:
    phone, msisdn, _ = await desk.wallet_phone(0)
    token = await _token(desk, msisdn)
    sim = phone.sim
    assert await desk.api.ok("GET", "/me/wallet/log", token=token) == {"card_no": sim.card_no, "items": []}
    await desk.api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 20_000, **REASON}, token=desk.counter)
    for amount in (5_000, 4_000, 3_000):
        await _hall_load(desk, sim, amount)
    shop = await desk.terminal(merchant="M" + unique_digits(7))
    bought = [shop.purchase(sim, 100 * k) for k in range(1, 10)]
    shop.void(bought[4])  # a void still logged on the card: it refunds to cash, not to the card
    assert all(r["code"] == "0000" for r in (await desk.send(shop, shop.batch()))["data"]["results"])
    card_log = _card_log(desk, sim)
    assert [r["type"] for r in card_log] == ["purchase"] * 9 + ["load"], "twelve on the card, ten kept"
    log = await desk.api.ok("GET", "/me/wallet/log", token=token)
    assert log == {"card_no": sim.card_no, "items": card_log}, "record for record the card's own"
    shop.purchase(sim, 250)  # not uploaded yet: the platform does not know it
    assert await desk.api.ok("GET", "/me/wallet/log", token=token) == log
    assert _card_log(desk, sim)[1:] == card_log[:9]
    await desk.send(shop, shop.batch())
    assert (await desk.api.ok("GET", "/me/wallet/log", token=token))["items"] == _card_log(desk, sim)
    sold = sim.balance
    assert (await desk.send(desk.pos, desk.pos.swap_request(desk.pos.buy_out(sim))))["code"] == "0000"
    old_log = _card_log(desk, sim)
    assert old_log[0]["type"] == "purchase" and old_log[0]["amount"] == sold
    assert (await desk.api.ok("GET", "/me/wallet/log", token=token))["items"] == old_log, "the buy-out too"
    new_card = VirtualRfidSim(await desk.stock(), desk.keys)
    assert (await desk.swap(msisdn, new_card.card_no))[0] == "0000"
    assert await desk.api.ok("GET", "/me/wallet/log", token=token) == {"card_no": new_card.card_no, "items": []}
    await _hall_load(desk, new_card, None)  # 换卡圈存
    new_log = await desk.api.ok("GET", "/me/wallet/log", token=token)
    assert new_log["items"] == _card_log(desk, new_card) and new_log["items"][0]["amount"] == sold

"""Bank recharge into the SIM wallet end to end (SPEC 6.6 ``into: wallet``, 7.3's online-banking path): the
order passes the load's creation checks, the bank's signed notice posts ``BANK → C`` and queues a waiting
``C → W`` load, the handset's next STK contact drives it onto the RFID-SIM, and the ledger follows the card."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from Crypto.PublicKey import RSA

from recharge.mpay import bank, credentials
from tests.mpay_world import Api, MpayWorld
from tests.wallet_loads_world import LoadWorld

pytestmark = pytest.mark.usefixtures("audited")


async def _login(w: MpayWorld, api: Api, account_id: int) -> str:
    async with w.pool.acquire() as conn:
        msisdn = await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE id = $1", account_id)
        await credentials.replace(conn, w.env.hasher, account_id, "login", "Passw0rd1", initial=False)
    return await api.login(msisdn, "Passw0rd1")


async def test_a_bank_recharge_into_the_wallet_waits_for_the_next_stk_contact_and_loads_the_card(
        w: MpayWorld, platform: Any, test_keys: Any) -> None:
    world, api = LoadWorld(platform.http_port, w.pool, w.env, test_keys[0]), Api(w)
    phone, acct = await world.handset(balance=10_000, cash=0)
    token = await _login(w, api, acct)
    key = RSA.generate(2048)
    async with w.pool.acquire() as conn:
        await bank.set_gateway_key(conn, "unionpay", key.publickey().export_key().decode())
    order = {"bank": "CCB", "into": "wallet"}
    assert await api.code("POST", "/me/recharges/bank", dict(order, amount=100_001), token=token) == "4001"
    placed = await api.ok("POST", "/me/recharges/bank", dict(order, amount=3_000), token=token)
    form = {"order_id": placed["order_id"], "amount": "3000", "result": "S", "bank_serial": "W1",
            "paid_at": "20261203100000"}
    for _ in range(2):  # a repeated notice: stored once, one load
        async with w.session.post(f"{w.base}/mpay/v1/bank/notify/unionpay",
                                  data=urlencode(dict(form, sign=bank.sign_form(key.export_key(), form))),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert (resp.status, await resp.text()) == (200, "OK")
    async with w.pool.acquire() as conn:
        load = await conn.fetchrow("SELECT load_id, path, amount, state FROM wallet_loads WHERE account_id = $1",
                                   acct)
    assert (load["path"], load["amount"], load["state"]) == ("bank", 3_000, "waiting")
    assert await api.code("POST", "/me/recharges/bank", dict(order, amount=97_001), token=token) == "5003", \
        "the waiting load counts against the 1,000.00 cap"
    assert await world.named(f"C/{acct}") == (3_000, 0) and await world.named(f"W/{acct}") == (0, 3_000)
    async with w.pool.acquire() as conn:
        msisdn = await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE id = $1", acct)
    assert (await w.notices(msisdn))[-1] == "您已成功充值30元至手机支付现金账户,现金账户余额30元。"
    status = await world.exchange(phone, "account.balance")
    assert status.data is not None and (status.data["waiting"], status.data["waiting_load_id"]) == (3_000, load["load_id"])
    done = await world.drive_stk(phone, await world.exchange(phone, "wallet.load.init", {"load_id": load["load_id"]}))
    assert done.code == "0000" and done.shown[-1] == "钱包充值成功,充值30元,钱包余额130元。"
    assert phone.sim.balance == 13_000
    assert await world.named(f"W/{acct}") == (3_000, 0) and await world.named(f"C/{acct}") == (0, 0)


async def test_into_the_wallet_needs_an_open_wallet_and_one_closed_since_leaves_the_money_in_cash(
        w: MpayWorld, platform: Any, test_keys: Any) -> None:
    world, api = LoadWorld(platform.http_port, w.pool, w.env, test_keys[0]), Api(w)
    msisdn, initial = await w.opened()
    plain = await api.login(msisdn, initial["login"])
    assert await api.code("POST", "/me/recharges/bank", {"bank": "ICBC", "amount": 1_000, "into": "wallet"},
                          token=plain) == "5001"
    phone, acct = await world.handset(cash=0)
    token = await _login(w, api, acct)
    key = RSA.generate(2048)
    async with w.pool.acquire() as conn:
        await bank.set_gateway_key(conn, "icbc", key.publickey().export_key().decode())
    placed = await api.ok("POST", "/me/recharges/bank", {"bank": "ICBC", "amount": 2_000, "into": "wallet"},
                          token=token)
    assert (await world.exchange(phone, "wallet.pause")).code == "0000"  # paused before the bank pays
    form = {"order_id": placed["order_id"], "amount": "2000", "result": "S", "bank_serial": "P1"}
    async with w.session.post(f"{w.base}/mpay/v1/bank/notify/icbc",
                              data=urlencode(dict(form, sign=bank.sign_form(key.export_key(), form))),
                              headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert (resp.status, await resp.text()) == (200, "OK")
    async with w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM wallet_loads WHERE account_id = $1", acct) == 0
    assert await world.named(f"C/{acct}") == (2_000, 0) and await world.named(f"W/{acct}") == (0, 0)
    assert await api.code("POST", "/me/recharges/bank", {"bank": "ICBC", "amount": 1_000, "into": "wallet"},
                          token=token) == "5002"

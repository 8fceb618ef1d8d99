"""The POS endpoints of SPEC 7.4 end to end: the real server, virtual RFID-SIMs and a virtual merchant POS;
batches cleared record by record with their TACs, X-MAC both ways, pos_seq rules, returns, the ledger audited."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import jsonschema
import pytest

import core_ext
from core_ext.virtual_pos import SHANGHAI, SignedRequest, VirtualPOS
from core_ext.virtual_sim import VirtualRfidSim
from recharge.keys import MasterKeys
from recharge.mpay import accounts, closure
from recharge.mpay.env import Env
from recharge.wallet import shadows, terminals
from recharge.wallet.terminals import Terminal
from tests.conftest import unique_digits
from tests.wallet_world import account_with_sim, virtual_keys

WHEN = datetime(2026, 1, 5, 10, 0, 0, tzinfo=SHANGHAI)


class World:
    def __init__(self, platform: Any, pool: asyncpg.Pool, keys: MasterKeys) -> None:
        self.url = f"http://127.0.0.1:{platform.http_port}/mpay/v1"
        self.pool = pool
        self.settings = platform.ctx.settings
        self.master = keys
        self.keys = virtual_keys(keys)
        self.merchant = "M" + unique_digits(7)

    async def terminal(self, *, hall: bool = False, merchant: str | None = None) -> VirtualPOS:
        tid = unique_digits(12)
        owner = {"hall": "HN0001"} if hall else {"merchant": merchant or self.merchant}
        async with self.pool.acquire() as conn:
            await terminals.register(conn, [Terminal(tid, **owner)])
        return VirtualPOS(tid, self.keys.purchase, self.keys.pos)

    async def sim(self, balance: int = 50_000) -> tuple[VirtualRfidSim, int]:
        async with self.pool.acquire() as conn:
            return await account_with_sim(conn, self.settings, self.master, balance=balance)

    async def send(self, pos: VirtualPOS, request: SignedRequest, *, mac: str | None = None,
                   body: bytes | None = None) -> tuple[int, dict[str, Any], bytes, str | None]:
        headers = {**request.headers, "X-MAC": mac or request.mac}
        async with aiohttp.ClientSession() as http, http.post(self.url + request.path, data=body or request.body,
                                                              headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw), raw, response.headers.get("X-MAC")

    async def balance(self, name: str) -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval("SELECT credits_posted - debits_posted FROM accounts WHERE kind = 'mpay'"
                                        " AND card_no = $1", name)
        return int(value or 0)


@pytest.fixture
async def world(platform: Any, pool: asyncpg.Pool, test_keys: Any, audited: None) -> World:
    return World(platform, pool, test_keys[0])


async def test_batch_upload_clears_each_record_and_repeats_answer_the_first_reply(world: World) -> None:
    pos = await world.terminal()
    sim, acct = await world.sim()
    sale, small = pos.purchase(sim, 1234, WHEN), pos.purchase(sim, 50, WHEN)
    voided = pos.void(pos.purchase(sim, 700, WHEN))
    batch = pos.batch()
    status, reply, raw, mac = await world.send(pos, batch)
    assert status == 200 and reply["code"] == "0000" and pos.reply_ok(raw, mac)
    assert reply["data"] == {"batch_no": "000001", "pos_seq": 1, "results": [
        {"card": sim.card_no, "offline_serial": 0, "code": "0000", "commission": 7},
        {"card": sim.card_no, "offline_serial": 1, "code": "0000", "commission": 0},
        {"card": sim.card_no, "offline_serial": 2, "code": "0000", "commission": 0}]}
    assert (sale.amount, small.amount, voided.void) == (1234, 50, True)
    assert await world.balance(f"W/{acct}") == -(1234 + 50 + 700)
    assert await world.balance(f"MER/{world.merchant}") == 1234 + 50 - 7
    assert await world.balance(f"C/{acct}") == 700
    again = await world.send(pos, batch)
    assert again[2] == raw and again[3] == mac, "a repeat gets the stored reply byte for byte"
    pos.batch_no -= 1
    renumbered = pos.request("/pos/batches", batch_no="000001", records=[])
    status, reply, _, _ = await world.send(pos, renumbered)
    assert reply["code"] == "0000" and reply["data"]["results"][0]["code"] == "0000" and reply["data"]["pos_seq"] == 2
    assert await world.balance(f"W/{acct}") == -(1234 + 50 + 700), "a repeated batch moves nothing"


async def test_refusals_mac_seq_shape_and_terminal(world: World) -> None:
    pos = await world.terminal()
    sim, _ = await world.sim()
    pos.purchase(sim, 100, WHEN)
    batch = pos.batch()
    status, reply, raw, mac = await world.send(pos, batch, mac="00000000")
    assert (status, reply["code"], reply["data"]) == (200, "1002", {"pos_seq": 1, "text": "签名或MAC校验失败"})
    assert pos.reply_ok(raw, mac)
    assert (await world.send(pos, batch))[1]["code"] == "0000", "a request whose MAC failed consumed nothing"
    other_body = batch.body.replace(b'"000001"', b'"000009"')
    changed = SignedRequest(batch.path, other_body, core_ext.mac(pos.k_pos, other_body).hex())
    assert (await world.send(pos, changed))[1]["code"] == "1002", "a stored seq with another body"
    pos.pos_seq = 0
    assert (await world.send(pos, pos.request("/pos/batches", batch_no="x", records=[])))[1]["code"] == "1002"
    bad = pos.request("/pos/batches", batch_no="b", records={})
    status, reply, raw, mac = await world.send(pos, bad)
    assert reply["code"] == "1001" and reply["data"]["pos_seq"] == bad.fields["pos_seq"] and pos.reply_ok(raw, mac)
    status, reply, _, mac = await world.send(pos, bad, body=b"not json")
    assert (status, reply["code"], reply["data"], mac) == (400, "1001", None, None)
    stranger = VirtualPOS(unique_digits(12), world.keys.purchase, world.keys.pos)
    assert (await world.send(stranger, stranger.request("/pos/batches", batch_no="1", records=[])))[1]["code"] == "1004"
    hall = await world.terminal(hall=True)
    assert (await world.send(hall, hall.request("/pos/batches", batch_no="1", records=[])))[1]["code"] == "1004"


async def test_returns_refund_to_cash_keep_the_commission_and_check_in_order(world: World) -> None:
    pos = await world.terminal()
    sim, acct = await world.sim()
    sale = pos.purchase(sim, 1000, WHEN)
    voided = pos.void(pos.purchase(sim, 300, WHEN))
    not_uploaded = pos.purchase(sim, 200, WHEN)
    pos.pending.remove(not_uploaded)
    assert (await world.send(pos, pos.batch()))[1]["code"] == "0000"
    other = await world.terminal(merchant="O" + unique_digits(7))
    for terminal, record, amount, code in ((pos, not_uploaded, 100, "5010"), (pos, voided, 100, "5010"),
                                           (other, sale, 100, "4011"), (pos, sale, 1001, "4016"),
                                           (pos, sale, 1000, "4017"), (pos, sale, 400, "0000"),
                                           (pos, sale, 594, "0000"), (pos, sale, 7, "4016")):
        status, reply, raw, mac = await world.send(terminal, terminal.return_request(record, amount))
        assert reply["code"] == code, (record.offline_serial, amount, reply)
        assert terminal.reply_ok(raw, mac)
    assert reply["data"] == {"pos_seq": reply["data"]["pos_seq"], "text": "退款金额超过可退金额。"}
    assert await world.balance(f"C/{acct}") == 300 + 994
    assert await world.balance(f"MER/{world.merchant}") == 0
    assert await world.balance("FEE") >= 6


async def test_refunds_tell_the_holder_and_a_closed_accounts_void_goes_to_suspense(world: World) -> None:
    pos = await world.terminal()
    sim, acct = await world.sim()
    sale = pos.purchase(sim, 1000, WHEN)
    assert (await world.send(pos, pos.batch()))[1]["code"] == "0000"
    assert (await world.send(pos, pos.return_request(sale, 400)))[1]["code"] == "0000"
    late_void = pos.void(pos.purchase(sim, 250, WHEN))
    async with world.pool.acquire() as conn:
        msisdn = await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE id = $1", acct)
        texts = [r["text"] for r in await conn.fetch("SELECT text FROM mpay_outbox WHERE msisdn = $1 AND NOT sensitive",
                                                        msisdn)]
        assert texts == ["钱包交易退款4元已存入您的手机支付现金账户。"]
        async with conn.transaction():
            await closure.close(conn, Env.of(world.settings, world.master), await accounts.by_id(conn, acct),
                                notify=False)
    suspense = await world.balance("SUSPENSE")
    assert (await world.send(pos, pos.return_request(sale, 100)))[1]["code"] == "2007"
    status, reply, _, _ = await world.send(pos, pos.batch())
    assert reply["data"]["results"][0]["code"] == "0000" and late_void.void
    assert await world.balance("SUSPENSE") == suspense + 250
    assert await world.balance(f"C/{acct}") == 400


async def test_openapi_document_describes_the_stk_and_pos_bodies_and_replies(world: World) -> None:
    async with aiohttp.ClientSession() as http, http.get(world.url + "/openapi.json") as response:
        doc = await response.json()
    assert {"/stk", "/pos/batches", "/pos/returns", "/pos/wallet-opens"} <= set(doc["paths"])
    async with aiohttp.ClientSession() as http, http.post(world.url + "/pos/nowhere", data=b"{}") as response:
        assert response.status == 404 and (await response.json())["code"] == "1001"
    pos = await world.terminal()
    sim, _ = await world.sim()
    pos.purchase(sim, 100, WHEN)
    batch = pos.batch()
    operation = doc["paths"]["/pos/batches"]["post"]
    jsonschema.validate(json.loads(batch.body), operation["requestBody"]["content"]["application/json"]["schema"])
    status, reply, _, _ = await world.send(pos, batch)
    jsonschema.validate(reply, doc["components"]["schemas"]["Envelope"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(batch.body), "extra": 1},
                            operation["requestBody"]["content"]["application/json"]["schema"])


async def test_negative_shadows_are_listed_and_flagged_without_an_unresolved_load(world: World) -> None:
    pos = await world.terminal()
    sim, acct = await world.sim()
    pos.purchase(sim, 300, WHEN)
    assert (await world.send(pos, pos.batch()))[1]["code"] == "0000"
    async with world.pool.acquire() as conn:
        found = {s.account_id: s for s in await shadows.negative(conn)}
    assert found[acct].balance == -300 and not found[acct].explained
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "app.cli", "wallet", "shadows",
                                                    "--data-dir", str(world.settings.data_dir)],
                                   capture_output=True, text=True, timeout=120,
                                   env={**os.environ, "DATABASE_URL": world.settings.database_url or ""})
    assert done.returncode == 1 and f"W/{acct}: -3.00 yuan (NO LOAD UNRESOLVED)" in done.stdout, done.stderr

"""What the HTTP fuzzing's signed pass found behind the SIM wallet's ``X-MAC`` and the bank's signature
(chaos/api_fuzz_devices.py), each fixed and kept fixed.

- A string JSON can carry but PostgreSQL's ``jsonb`` and ``text`` cannot (NUL, a lone surrogate) in a
  MAC-valid STK or POS body — a batch record, a password of ``pwd.pay.change`` — was a 500: the body is
  kept for its sequence number before the operation runs. It is malformed (``1001``) at the door now, the
  sequence number not consumed.
- A verified bank notice whose ``paid_at`` held such a character was a 500 as it was stored, and one
  whose ``amount`` was digits ``str.isdigit`` takes but ``int`` does not (``²``) a 500 as it was read: a
  ``paid_at`` that is not SPEC 6.6's ``YYYYMMDDhhmmss`` or an ``amount`` not of ASCII digits makes the
  notice malformed (``FAIL``, nothing stored), as a malformed ``order_id``, ``result`` or ``bank_serial``
  already did.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
from Crypto.PublicKey import RSA

import core_ext
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SignedRequest
from recharge.mpay import bank
from tests.mpay_world import MpayWorld
from tests.test_wallet_pos import World

pytestmark = pytest.mark.usefixtures("audited")
NOT_STORABLE = ["\x00", "\ud800", "a\x00b"]


@pytest.fixture
async def world(platform: Any, pool: asyncpg.Pool, test_keys: Any) -> World:
    return World(platform, pool, test_keys[0])


def _mac(key: bytes, body: bytes) -> str:
    return core_ext.mac(key, body).hex().upper()


def _signed(request: SignedRequest) -> tuple[bytes, str]:
    return request.body, request.mac


async def _post(world: World, path: str, body: bytes, mac: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(world.url + path, data=body, headers={
            "Content-Type": "application/json; charset=utf-8", "X-MAC": mac}) as response:
        return response.status, json.loads(await response.read())


@pytest.mark.parametrize("text", NOT_STORABLE)
async def test_a_batch_record_holding_what_no_database_stores_is_malformed(world: World, text: str) -> None:
    pos = await world.terminal()
    fields = {"terminal_id": pos.terminal_code, "pos_seq": 1, "batch_no": "B1", "records": [{"card": text}]}
    body = json.dumps(fields, separators=(",", ":")).encode("ascii")  # the escape, as JSON may carry it
    status, reply = await _post(world, "/pos/batches", body, _mac(pos.k_pos, body))
    assert (status, reply["code"]) == (200, "1001"), reply
    pos.pos_seq = 0
    status, reply = await _post(world, "/pos/batches", *_signed(pos.request("/pos/batches", batch_no="B1", records=[])))
    assert reply["code"] == "0000", "the malformed request consumed no sequence number"


@pytest.mark.parametrize("text", NOT_STORABLE)
async def test_an_stk_password_holding_what_no_database_stores_is_malformed(world: World, text: str) -> None:
    sim, _ = await world.sim()
    handset = VirtualHandset(sim)
    fields = {"card_no": sim.card_no, "seq": 1, "op": "pwd.pay.change", "params": {"old": text, "new": "135790"}}
    body = json.dumps(fields, separators=(",", ":")).encode("ascii")
    status, reply = await _post(world, "/stk", body, _mac(sim.k_stk, body))
    assert (status, reply["code"]) == (200, "1001"), reply
    status, reply = await _post(world, "/stk", *_signed(handset.request("account.balance", seq=1)))
    assert reply["code"] == "0000", reply


async def test_a_verified_notice_whose_paid_at_is_not_a_time_fails_and_stores_nothing(w: MpayWorld) -> None:
    key, prefix = RSA.generate(2048), "bf" + secrets.token_hex(4)
    async with w.pool.acquire() as conn:
        await bank.set_gateway_key(conn, "icbc", key.publickey().export_key().decode())
    for n, (amount, paid_at, answer) in enumerate((
            ("100", "\x00", (403, "FAIL")), ("100", "2026", (403, "FAIL")), ("²", "", (403, "FAIL")),
            ("١٠٠", "", (403, "FAIL")), ("100", "20261203100000", (200, "OK")), ("100", "", (200, "OK")))):
        form = {"order_id": f"{prefix}{n}", "amount": amount, "result": "S", "bank_serial": "Z1", "paid_at": paid_at}
        async with w.session.post(f"{w.base}/mpay/v1/bank/notify/icbc",
                                  data=urlencode(dict(form, sign=bank.sign_form(key.export_key(), form))),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert (resp.status, await resp.text()) == answer, (amount, paid_at)
    async with w.pool.acquire() as conn:
        kept = await conn.fetch("SELECT order_id FROM mpay_bank_notices WHERE order_id LIKE $1", prefix + "%")
    assert sorted(r["order_id"] for r in kept) == [prefix + "4", prefix + "5"]

"""The SIM wallet's loads of SPEC 7.3 end to end: the real server and PostgreSQL, virtual handsets with their
RFID-SIMs and hall POS terminals; air recharge over STK, POS转存, waiting loads driven at the next contact, every
one posted by the card's TAC through the load engine the DD recharge uses; a drop after MAC2 recovered by GET
TRANSACTION PROVE; the creation checks and their codes; repeats answered from the stored reply; the audit."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY

from app.cli import main
from core_ext.virtual_pos import SignedRequest, VirtualPOS
from core_ext.virtual_sim import STATE_OPEN, VirtualRfidSim
from recharge.mpay import credentials, events, registry
from recharge.mpay.env import Env
from recharge.wallet import cards, loads, sequence
from tests.wallet_loads_world import PAY_PASSWORD, LoadWorld


@pytest.fixture
async def world(platform: Any, pool: asyncpg.Pool, test_keys: Any, audited: None) -> LoadWorld:
    keys = test_keys[0]
    return LoadWorld(platform.http_port, pool, Env.of(platform.ctx.settings, keys), keys)


async def _sms(world: LoadWorld, account_id: int) -> list[str]:
    async with world.pool.acquire() as conn:
        rows = await conn.fetch("SELECT text FROM mpay_outbox WHERE account_id = $1 AND NOT sensitive"
                                " ORDER BY created_at", account_id)
    return [r["text"] for r in rows]


async def test_air_recharge_over_stk_posts_by_the_cards_tac(world: LoadWorld) -> None:
    phone, acct = await world.handset(balance=10_000, cash=20_000)
    first = await world.exchange(phone, "wallet.load.init", {"amount": 5_000, "pay_password": PAY_PASSWORD})
    assert first.code == "0000" and first.mac_ok and first.data is not None
    assert first.data["script"].startswith("01") and first.data["waiting"] == 5_000 and first.data["text"] == ""
    assert await world.named(f"C/{acct}") == (20_000, 0) and await world.named(f"W/{acct}") == (0, 5_000), \
        "created: a pending C → W (the cash frozen)"
    done = await world.drive_stk(phone, first)
    text = "钱包充值成功,充值50元,钱包余额150元。"
    assert done.code == "0000" and done.shown == ["钱包充值请求发送成功!", text]
    assert done.data is not None and "script" not in done.data and done.data["waiting"] == 0
    assert phone.sim.balance == 15_000 and phone.sim.log[0].kind == 0x02 and phone.sim.log[0].amount == 5_000
    assert phone.sim.log[0].terminal_id == bytes.fromhex("990000000001")
    assert await world.named(f"W/{acct}") == (5_000, 0) and await world.named(f"C/{acct}") == (15_000, 0)
    assert text in await _sms(world, acct)


async def test_a_repeat_gets_the_stored_reply_and_creates_nothing(world: LoadWorld) -> None:
    phone, acct = await world.handset()
    request = phone.request("wallet.load.init", {"amount": 1_000, "pay_password": PAY_PASSWORD})
    first = await world.post(request)
    assert await world.post(request) == first, "same seq and body: the stored reply byte for byte"
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM wallet_loads WHERE account_id = $1", acct) == 1
    out = phone.receive(*first)
    done = await world.drive_stk(phone, out)
    assert done.code == "0000" and phone.sim.balance == 11_000


async def test_a_drop_after_mac2_is_recovered_by_get_transaction_prove(world: LoadWorld) -> None:
    phone, acct = await world.handset()
    out = await world.exchange(phone, "wallet.load.init", {"amount": 2_000, "pay_password": PAY_PASSWORD})
    assert out.data is not None
    load_id = out.data["load_id"]
    sent = []
    for _ in range(2):  # read → INITIALIZE → CREDIT: the credit script comes back, runs, and its reply is lost
        assert out.replies is not None
        sent.append(out.replies.hex())
        out = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": sent[-1]})
    assert out.code == "0000" and out.script_ok and phone.sim.balance == 12_000
    credit = out.data
    again = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": sent[-1]})
    assert again.data is not None and credit is not None and again.data["script"] == credit["script"], \
        "the INITIALIZE reply again (a new seq): the same CREDIT FOR LOAD, nothing written"
    assert phone.sim.balance == 12_000, "the card's session is gone: run again, the credit is refused"
    busy = await world.exchange(phone, "wallet.load.init", {"amount": 100, "pay_password": PAY_PASSWORD})
    assert busy.code == "5006", "meanwhile new loads get 5006"
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", load_id) == "loading"
    prove = await world.exchange(phone, "wallet.load.recover", {"load_id": load_id})
    assert prove.code == "0000" and prove.data is not None and prove.data["script"][4:12] == "805A0002"
    done = await world.drive_stk(phone, prove)
    assert done.code == "0000" and done.shown[-1] == "钱包充值成功,充值20元,钱包余额120元。"
    assert await world.named(f"W/{acct}") == (2_000, 0)


async def test_a_credit_that_never_reached_the_card_waits_again_after_the_proof(world: LoadWorld) -> None:
    phone, acct = await world.handset()
    out = await world.exchange(phone, "wallet.load.init", {"amount": 3_000, "pay_password": PAY_PASSWORD})
    assert out.data is not None
    load_id = out.data["load_id"]
    assert out.replies is not None
    out = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": out.replies.hex()})
    phone.sim.fail_next_credit_with = b"\x94\x06"  # never credited: the card has no proof of this serial
    assert out.replies is not None
    credit = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": out.replies.hex()})
    assert credit.code == "0000" and not credit.script_ok, "the CREDIT script ran and failed on the card"
    prove = await world.exchange(phone, "wallet.load.recover", {"load_id": load_id})
    back = await world.drive_stk(phone, prove)
    assert back.code == "5008" and back.shown[-1] == "卡片校验失败。"
    status = await world.exchange(phone, "account.balance")
    assert status.data is not None and (status.data["waiting"], status.data["waiting_load_id"]) == (3_000, load_id)
    again = await world.exchange(phone, "wallet.load.init", {"load_id": load_id})
    done = await world.drive_stk(phone, again)
    assert done.code == "0000" and phone.sim.balance == 13_000
    assert await world.named(f"W/{acct}") == (3_000, 0)


async def test_creation_checks_answer_their_codes_in_order(world: LoadWorld) -> None:
    phone, acct = await world.handset(cash=60_000)

    async def init(amount: int, password: str = PAY_PASSWORD) -> str | None:
        return (await world.exchange(phone, "wallet.load.init", {"amount": amount, "pay_password": password})).code

    assert await init(99) == "4001" and await init(50_001) == "4001"
    assert await init(100, "000000") == "3002"
    for _ in range(4):
        assert await init(100) == "0000", "created, left waiting (not driven)"
    assert await init(49_700) == "5004", "the day's total would pass 500.00"
    assert await init(49_600) == "0000"
    assert await init(100) == "5004", "a sixth air recharge today"
    pos = await world.hall_pos()
    reply = await world.pos_send(pos, pos.load_request(phone.sim.card_no, 10_001))
    assert reply["code"] == "4002", "cash: 60,000 − 50,000 frozen"
    async with world.pool.acquire() as conn:
        await world.add_cash(conn, acct, 100_000)
    reply = await world.pos_send(pos, pos.load_request(phone.sim.card_no, 50_001))
    assert reply["code"] == "5003", "shadow 0 + 500.00 waiting + 500.01 > 1,000.00"
    paused = await world.exchange(phone, "wallet.pause")
    assert paused.script_ok and await init(100) == "5002"


async def test_hall_pos_load_and_a_waiting_load_driven_at_the_next_contact(world: LoadWorld) -> None:
    phone, acct = await world.handset(balance=0)
    pos = await world.hall_pos()
    none = await world.pos_send(pos, pos.load_request(phone.sim.card_no))
    assert none["code"] == "4011", "no waiting load"
    created = await world.pos_send(pos, pos.load_request(phone.sim.card_no, 20_000))
    assert created["code"] == "0000" and created["data"]["amount"] == 20_000 and created["data"]["waiting"] == 20_000
    done = await world.drive_pos(pos, phone.sim, created["data"]["load_id"])
    assert done["code"] == "0000" and done["data"]["text"] == "钱包充值成功,充值200元,钱包余额200元。"
    assert phone.sim.balance == 20_000 and phone.sim.log[0].terminal_id == bytes.fromhex(pos.terminal_code)
    async with world.pool.acquire() as conn, conn.transaction():
        queued = await loads.queue_waiting_load(conn, world.env, acct, 7_000, path="transfer", request_key="web:1")
        again = await loads.queue_waiting_load(conn, world.env, acct, 7_000, path="transfer", request_key="web:1")
    assert again.load_id == queued.load_id, "idempotent by request key"
    status = await world.exchange(phone, "account.balance")
    assert status.data is not None and (status.data["waiting"], status.data["waiting_load_id"]) == (7_000, queued.load_id)
    picked = await world.pos_send(pos, pos.load_request(phone.sim.card_no))
    assert picked["data"] == {"pos_seq": picked["data"]["pos_seq"], "load_id": queued.load_id, "amount": 7_000,
                              "waiting": 7_000}
    assert (await world.drive_pos(pos, phone.sim, queued.load_id))["code"] == "0000"
    assert phone.sim.balance == 27_000 and await world.named(f"W/{acct}") == (27_000, 0)


async def test_a_bad_mac1_or_another_card_sends_the_load_back_to_waiting(world: LoadWorld) -> None:
    phone, acct = await world.handset()
    other, _ = await world.handset()
    pos = await world.hall_pos()
    created = await world.pos_send(pos, pos.load_request(phone.sim.card_no, 1_000))
    load_id = created["data"]["load_id"]
    first = await world.pos_send(pos, pos.continue_request(load_id))
    wrong = await world.pos_send(pos, pos.continue_request(load_id, pos.run_script(other.sim, first["data"]["script"])))
    assert wrong["code"] == "5007"
    first = await world.pos_send(pos, pos.continue_request(load_id))
    init = await world.pos_send(pos, pos.continue_request(load_id, pos.run_script(phone.sim, first["data"]["script"])))
    replies = bytearray(pos.run_script(phone.sim, init["data"]["script"]))
    replies[-3] ^= 0xFF  # the last byte of MAC1
    bad = await world.pos_send(pos, pos.continue_request(load_id, bytes(replies)))
    assert bad["code"] == "5008" and bad["data"]["text"] == "卡片校验失败。"
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", load_id) == "waiting"
    assert (await world.drive_pos(pos, phone.sim, load_id))["code"] == "0000" and phone.sim.balance == 11_000
    stranger = VirtualPOS(pos.terminal_code[::-1], world.keys.purchase, world.keys.pos)
    assert (await world.pos_send(stranger, stranger.load_request(phone.sim.card_no, 100)))["code"] == "1004"


async def test_website_transfer_waits_for_the_next_contact_and_cancel_voids_it(world: LoadWorld) -> None:
    phone, acct = await world.handset(cash=10_000)
    async with world.pool.acquire() as conn:
        msisdn = await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE id = $1", acct)
        await credentials.replace(conn, world.env.hasher, acct, "login", "Passw0rd1", initial=False)

    async def call(path: str, body: dict[str, Any], token: str | None = None, rid: str = "") -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "X-Request-Id": rid or f"r{path.count('/')}{id(body)}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as http, http.post(world.url + path, data=json.dumps(body),
                                                              headers=headers) as response:
            return dict(json.loads(await response.read()))

    token = (await call("/auth/login", {"login": msisdn, "password": "Passw0rd1"}))["data"]["token"]
    body = {"amount": 4_000, "pay_password": PAY_PASSWORD}
    first = await call("/me/wallet/transfers", body, token, rid="transfer-1")
    assert first["code"] == "0000" and first["data"]["waiting"] == 4_000, "cents (6.12), as GET /me/wallet"
    assert await call("/me/wallet/transfers", body, token, rid="transfer-1") == first, "X-Request-Id replay"
    assert (await call("/me/wallet/transfers", dict(body, amount=7_000), token, rid="t2"))["code"] == "4002"
    load_id = first["data"]["load_id"]
    status = await world.exchange(phone, "account.balance")
    assert status.data is not None and status.data["waiting_load_id"] == load_id
    assert (await call(f"/me/wallet/loads/{load_id}/cancel", {}, token, rid="c1"))["code"] == "0000"
    assert await world.named(f"W/{acct}") == (0, 0) and await world.named(f"C/{acct}") == (10_000, 0)
    assert (await world.exchange(phone, "wallet.load.init", {"load_id": load_id})).code == "4011"
    second = await call("/me/wallet/transfers", body, token, rid="transfer-2")
    done = await world.drive_stk(phone, await world.exchange(phone, "wallet.load.init",
                                                             {"load_id": second["data"]["load_id"]}))
    assert done.code == "0000" and phone.sim.balance == 14_000
    assert (await call(f"/me/wallet/loads/{second['data']['load_id']}/cancel", {}, token, rid="c2"))["code"] == "4011"


async def test_a_bad_tac_leaves_the_load_loading_for_customer_service(
        world: LoadWorld, database_url: str, monkeypatch: pytest.MonkeyPatch, test_keys: Any) -> None:
    phone, acct = await world.handset()
    out = await world.exchange(phone, "wallet.load.init", {"amount": 1_500, "pay_password": PAY_PASSWORD})
    phone.sim.corrupt_tac = True
    done = await world.drive_stk(phone, out)
    assert done.code == "5008" and phone.sim.balance == 11_500, "credited, but the TAC does not verify"
    assert out.data is not None
    load_id = out.data["load_id"]
    assert (await world.exchange(phone, "wallet.load.init", {"amount": 100, "pay_password": PAY_PASSWORD})).code \
        == "5006"
    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    argv = ["wallet", "load-resolve", load_id, "--database-url", database_url, "--outcome", "posted",
            "--actor", "alice", "--reason", "card log shows the load"]
    assert await asyncio.to_thread(main, argv) == 0
    assert await asyncio.to_thread(main, argv) == 1, "not loading any more"
    assert await world.named(f"W/{acct}") == (1_500, 0)
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM operator_actions WHERE subject = $1", load_id) == 1
    again = await world.exchange(phone, "wallet.load.recover", {"load_id": load_id})
    assert again.code == "0000" and again.shown[-1] == "钱包充值成功,充值15元,钱包余额115元。"
    phone.sim.corrupt_tac = True  # garbled on the way back: the card's own proof still carries the true TAC
    out = await world.exchange(phone, "wallet.load.init", {"amount": 500, "pay_password": PAY_PASSWORD})
    assert (await world.drive_stk(phone, out)).code == "5008"
    assert out.data is not None
    prove = await world.exchange(phone, "wallet.load.recover", {"load_id": out.data["load_id"]})
    assert (await world.drive_stk(phone, prove)).code == "0000" and await world.named(f"W/{acct}") == (2_000, 0)


async def test_a_swap_load_opens_the_new_card_in_its_first_round(world: LoadWorld) -> None:
    phone, acct = await world.handset(cash=0)
    new_card = "7310" + phone.sim.card_no[4:][::-1]
    async with world.pool.acquire() as conn, conn.transaction():
        msisdn = await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE id = $1", acct)
        await world.add_cash(conn, acct, 2_345)  # as the swap's buy-out would leave the old card's balance
        await cards.add_stock(conn, [new_card])
        assert await cards.bind(conn, [(msisdn, new_card)]) == ["created"]
        swap = await loads.earmark(conn, acct, 2_345, path="swap", request_key=f"test-swap:{acct}")  # not swap:<purchase id>, the hall swaps' keys
    sim = VirtualRfidSim(new_card, world.keys)
    pos = await world.hall_pos()
    picked = await world.pos_send(pos, pos.load_request(new_card))
    assert picked["data"]["load_id"] == swap.load_id
    assert (await world.pos_send(pos, pos.continue_request(swap.load_id)))["code"] == "1001", "needs the challenge"
    first = await world.pos_send(pos, pos.continue_request(swap.load_id, challenge=pos.challenge(sim)))
    assert first["code"] == "0000" and first["data"]["script"].startswith("010E04D6970009")
    reply = await world.pos_send(pos, pos.continue_request(swap.load_id, pos.run_script(sim, first["data"]["script"])))
    assert (sim.state, sim.limit) == (STATE_OPEN, 20_000)
    while reply["data"].get("script"):
        reply = await world.pos_send(pos, pos.continue_request(swap.load_id,
                                                               pos.run_script(sim, reply["data"]["script"])))
    assert reply["code"] == "0000" and sim.balance == 2_345 and await world.named(f"W/{acct}") == (2_345, 0)


async def test_a_suspended_number_refuses_loads_and_its_waiting_loads_wait(world: LoadWorld) -> None:
    phone, acct = await world.handset()
    async with world.pool.acquire() as conn, conn.transaction():
        queued = await loads.queue_waiting_load(conn, world.env, acct, 1_000, path="bank", request_key=f"bank:{acct}")
        msisdn = await conn.fetchval("SELECT msisdn FROM mpay_accounts WHERE id = $1", acct)
        body = {"province": "430000", "brand": "GOTONE", "status": "suspended_oneway"}
        await events.set_subscribers(conn, world.env, [registry.validate(msisdn, body)], "test")
    assert (await world.exchange(phone, "wallet.load.init", {"load_id": queued.load_id})).code == "2004"
    assert (await world.exchange(phone, "wallet.load.init", {"amount": 100, "pay_password": PAY_PASSWORD})).code \
        == "2004"
    pos = await world.hall_pos()
    assert (await world.pos_send(pos, pos.load_request(phone.sim.card_no, 100)))["code"] == "2004"
    async with world.pool.acquire() as conn, conn.transaction():
        body["status"] = "normal"
        await events.set_subscribers(conn, world.env, [registry.validate(msisdn, body)], "test")
    done = await world.drive_stk(phone, await world.exchange(phone, "wallet.load.init", {"load_id": queued.load_id}))
    assert done.code == "0000" and phone.sim.balance == 11_000


async def test_voiding_waiting_loads_leaves_a_load_loading_alone(world: LoadWorld) -> None:
    phone, acct = await world.handset(cash=10_000)
    async with world.pool.acquire() as conn, conn.transaction():
        for k in range(2):
            await loads.queue_waiting_load(conn, world.env, acct, 500, path="bank", request_key=f"v{acct}:{k}")
    out = await world.exchange(phone, "wallet.load.init", {"amount": 1_000, "pay_password": PAY_PASSWORD})
    for _ in range(2):  # up to the CREDIT script: loading
        assert out.replies is not None and out.data is not None
        out = await world.exchange(phone, "wallet.load.continue",
                                   {"load_id": out.data["load_id"], "replies": out.replies.hex()})
    async with world.pool.acquire() as conn, conn.transaction():
        assert await loads.void_all_waiting(conn, acct) == 2
    assert await world.named(f"W/{acct}") == (0, 1_000) and await world.named(f"C/{acct}") == (10_000, 0)
    assert out.data is not None
    recovered = await world.drive_stk(phone, await world.exchange(phone, "wallet.load.recover",
                                                                  {"load_id": out.data["load_id"]}))
    assert recovered.code == "0000" and await world.named(f"W/{acct}") == (1_000, 0)


async def test_the_load_id_of_the_path_is_part_of_what_pos_seq_covers(world: LoadWorld) -> None:
    phone, _ = await world.handset()
    pos = await world.hall_pos()
    first = (await world.pos_send(pos, pos.load_request(phone.sim.card_no, 100)))["data"]["load_id"]
    second = (await world.pos_send(pos, pos.load_request(phone.sim.card_no, 200)))["data"]["load_id"]
    request = pos.continue_request(first)
    started = await world.pos_send(pos, request)
    assert started["code"] == "0000" and await world.pos_send(pos, request) == started, "a repeat: the stored reply"
    other = SignedRequest(f"/pos/loads/{second}/continue", request.body, request.mac)
    refused = await world.pos_send(pos, other)
    assert refused["code"] == "1002", "the same pos_seq and body for another load"


async def test_a_rerun_after_the_lanes_released_the_load_answers_5008_as_the_first_run(
        world: LoadWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's transaction runs again after the lanes committed the release (here: a serialization failure
    when its reply is stored, so the front door's retry policy reruns it): the load is waiting again, and the rerun
    answers what the first run answered, 5008 — for an error status word at CREDIT and for the proof's 9406."""
    phone, acct = await world.handset()
    store, armed = sequence.store, []

    async def store_failing_once(conn: asyncpg.Connection, sender: str, seq: int, body: Any, reply: bytes) -> None:
        if armed:
            armed.clear()
            raise asyncpg.exceptions.SerializationError("could not serialize access (test)")
        await store(conn, sender, seq, body, reply)

    monkeypatch.setattr(sequence, "store", store_failing_once)

    async def until_credit(out: Any) -> Any:
        for _ in range(2):  # read → INITIALIZE → CREDIT (loading); the card runs the CREDIT script
            assert out.code == "0000" and out.replies is not None and out.data is not None
            out = await world.exchange(phone, "wallet.load.continue",
                                       {"load_id": out.data["load_id"], "replies": out.replies.hex()})
        return out

    out = await world.exchange(phone, "wallet.load.init", {"amount": 2_000, "pay_password": PAY_PASSWORD})
    assert out.data is not None
    load_id = out.data["load_id"]
    phone.sim.fail_next_credit_with = b"\x69\x85"
    credit = await until_credit(out)
    assert credit.replies is not None and not credit.script_ok
    armed.append(True)
    refused = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": credit.replies.hex()})
    assert not armed and refused.code == "5008", "the rerun answers as the first run (it answered 4011)"
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", load_id) == "waiting"
    other = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": "01029000"})
    assert other.code == "4011", "another reply list for the released load: not the round that released it"

    phone.sim.fail_next_credit_with = b"\x94\x06"
    credit = await until_credit(await world.exchange(phone, "wallet.load.init", {"load_id": load_id}))
    prove = await world.exchange(phone, "wallet.load.recover", {"load_id": load_id})
    assert prove.code == "0000" and prove.replies is not None and prove.replies.hex().endswith("9406")
    armed.append(True)
    refused = await world.exchange(phone, "wallet.load.continue", {"load_id": load_id, "replies": prove.replies.hex()})
    assert not armed and refused.code == "5008"
    done = await world.drive_stk(phone, await world.exchange(phone, "wallet.load.init", {"load_id": load_id}))
    assert done.code == "0000" and phone.sim.balance == 12_000 and await world.named(f"W/{acct}") == (2_000, 0)


def _loads_counted(path: str, result: str) -> float:
    return REGISTRY.get_sample_value("recharge_wallet_loads_total", {"path": path, "result": result}) or 0.0


async def test_every_refusal_of_a_drive_or_a_recover_is_counted_with_its_code(world: LoadWorld) -> None:
    """recharge_wallet_loads_total{path, result}: the refusals of STK's and the hall POS's starts, continues and
    recovers by the load's path — ``unknown`` when the request names no load the platform knows —, and a refused
    creation's checks by the path it would have had."""
    phone, acct = await world.handset()
    pos = await world.hall_pos()
    async with world.pool.acquire() as conn, conn.transaction():
        queued = await loads.queue_waiting_load(conn, world.env, acct, 1_000, path="bank", request_key=f"count:{acct}")
    expected = {("bank", "4011"): 2, ("unknown", "4011"): 2, ("bank", "5008"): 1, ("air", "5002"): 1,
                ("bank", "5002"): 1, ("unknown", "5002"): 1}
    before = {key: _loads_counted(*key) for key in expected}
    assert (await world.exchange(phone, "wallet.load.recover", {"load_id": queued.load_id})).code == "4011"
    assert (await world.exchange(phone, "wallet.load.init", {"load_id": "L999999999"})).code == "4011"
    assert (await world.pos_send(pos, pos.recover_request(queued.load_id)))["code"] == "4011"
    assert (await world.pos_send(pos, pos.continue_request("L999999998")))["code"] == "4011"
    assert (await world.pos_send(pos, pos.continue_request(queued.load_id)))["code"] == "0000"
    garbled = await world.pos_send(pos, pos.continue_request(queued.load_id, bytes.fromhex("01026A82")))
    assert garbled["code"] == "5008"
    assert (await world.exchange(phone, "wallet.pause")).script_ok
    assert (await world.exchange(phone, "wallet.load.init", {"amount": 100, "pay_password": PAY_PASSWORD})).code \
        == "5002"
    assert (await world.exchange(phone, "wallet.load.init", {"load_id": queued.load_id})).code == "5002"
    assert (await world.pos_send(pos, pos.load_request(phone.sim.card_no)))["code"] == "5002"
    assert {key: _loads_counted(*key) - before[key] for key in expected} == expected

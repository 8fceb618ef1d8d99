"""The order JSON API over real HTTP (the platform fixture): the seed's request through the
gate, the three endpoints' happy paths, biz_serial_no idempotency, expiry, the OpenAPI
document — and every kind of bad input, each answered ``status: 0`` with an ``errmsg`` and
nothing changed in the database."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

import core_ext
from app import fixtures
from http_api import order_api, order_envelope
from http_api.order_client import ClientIdentity, build_request, open_reply, seal
from recharge.ledger import transfers as ledger
from recharge.orders import lifecycle, model
from recharge.orders import platforms as order_platforms

pytestmark = pytest.mark.usefixtures("audited")

# Seed 004 3.2.1: the APPLLogin request example. Its printed ciphertext lost two hex
# digits; this is the full one (core_ext reproduces it from the plaintext).
SEED_TIMESTAMP = 1428042275
SEED_PLAINTEXT = '{"platform":1, "userinfo": "{\\"openid\\":\\"1234567890\\"}", "type":1}'
SEED_DATA = (
    "C99486C1AA1897DE48650DC10C2BECB796D3F43CA80F884DE22023F22E0C359398EA8F3C3A8D3965024F8FFE"
    "F9F4E4F17AACBFEF799F113279B4BEDEA9B3541D1A0E156475F7E2DC"
)
FUND_CENTS = 1_000_000


@dataclass
class ApiPlatform:
    who: ClientIdentity
    platform_id: int
    merchant_id: int
    pki: str


async def register(conn: asyncpg.Connection, tmp: Path, raw: int, fund_cents: int, crt: int = 1) -> ApiPlatform:
    code = await fixtures.fresh_merchant_code(conn)
    merchant_id = await fixtures.funded_merchant(conn, code, fund_cents)
    pki = fixtures.random_digits(8)
    platform = await order_platforms.register_platform(
        conn, platform_raw=str(raw), name=f"test platform {raw}", merchant_code=code, pki_no=pki
    )
    key_path = tmp / f"platform{raw}.pem"
    pem = order_platforms.generate_key_pair(key_path)
    await order_platforms.add_public_key(conn, platform.id, str(crt), pem, min_bits=2048)
    who = ClientIdentity(raw, crt, key_path.read_text())
    return ApiPlatform(who, platform.id, merchant_id, pki)


def fresh_raw() -> int:
    return int("9" + fixtures.random_digits(8))


@pytest.fixture(scope="module")
async def api(pool: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory, known_cards: None) -> ApiPlatform:
    async with pool.acquire() as conn:
        return await register(conn, tmp_path_factory.mktemp("api"), fresh_raw(), FUND_CENTS)


async def post(http: aiohttp.ClientSession, endpoint: str, body: Any) -> dict[str, Any]:
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False)
    async with http.post(f"/{endpoint}", data=raw, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200
        reply: dict[str, Any] = await resp.json()
    return reply


def issuer_file(card_no: str, card_type: int = 0x01) -> bytes:
    return (bytes.fromhex("44005800") + bytes((card_type, 0x01)) + b"\x00\x00" + bytes.fromhex(card_no)
            + bytes.fromhex("2024010120340101") + b"\x00" * 6)


def reqinfo_for(card_no: str, card_type: int = 0x01) -> list[str]:
    replies = [core_ext.Reply(1, b"\x90\x00"), core_ext.Reply(2, b"\x90\x00"),
               core_ext.Reply(3, issuer_file(card_no, card_type) + b"\x90\x00"),
               core_ext.Reply(4, bytes.fromhex("000001F4") + b"\x90\x00")]
    return [core_ext.reply_encode([r]).hex() for r in replies]


# Cards an order may name: registered CPU cards (the order API refuses unknown numbers).
KNOWN_CARDS = 2_000
_CARD_PREFIX = "1680" + fixtures.random_digits(4)
_next_card = itertools.count()


@pytest.fixture(scope="module")
async def known_cards(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await fixtures.register_cpu_cards(conn, [f"{_CARD_PREFIX}{i:08d}" for i in range(KNOWN_CARDS)])


def new_card() -> str:
    """A registered CPU card no other test of the run has used."""
    return f"{_CARD_PREFIX}{next(_next_card):08d}"


def order_fields(api: ApiPlatform, card: str, amount: int = 1_000, **over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "platform": api.who.platform_raw, "userinfo": json.dumps({"userid": "gzzxc001"}), "pki": "",
        "chargeamt": amount, "chargetype": 0, "transtype": 1, "serial": "", "step": 0,
        "reqinfo": reqinfo_for(card),
    }
    fields.update(over)
    return fields


def create_body(api: ApiPlatform, card: str, amount: int = 1_000, serial_no: str | None = None,
                **over: Any) -> dict[str, Any]:
    return build_request(api.who, order_fields(api, card, amount, **over),
                         extra_clear={"biz_serial_no": serial_no or secrets.token_hex(8)})


async def login(http: aiohttp.ClientSession, api: ApiPlatform, login_type: int = 5) -> dict[str, Any]:
    body = build_request(api.who, {"platform": api.who.platform_raw, "userinfo": '{"userid":"gzzxc001"}',
                                   "type": login_type, "biz_serial_no": "L1", "money": 100,
                                   "mobile_imei": "860000000000000"})
    reply = await post(http, "APPLLogin", body)
    assert reply["status"] == 1, reply
    return open_reply(reply)


async def snapshot(conn: asyncpg.Connection, api: ApiPlatform) -> tuple[Any, ...]:
    fund = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.RECHARGE_FUND,
                                       merchant_id=api.merchant_id)
    return (
        await conn.fetchval("SELECT count(*) FROM orders"),
        await conn.fetchval("SELECT count(*) FROM transfers"),
        await conn.fetchval("SELECT count(*) FROM order_api_sessions"),
        await conn.fetchval("SELECT count(*) FROM order_api_nonces WHERE platform_id = $1", api.platform_id),
        await ledger.get_balance(conn, fund),
    )


async def refused(http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, endpoint: str,
                  body: Any, errmsg_part: str) -> dict[str, Any]:
    """POST, expect status 0 with that errmsg, a valid reply mac, and no database change."""
    before = await snapshot(conn, api)
    reply = await post(http, endpoint, body)
    assert reply["status"] == 0 and errmsg_part in reply["errmsg"], reply
    assert "data" not in reply
    open_reply(reply)  # the refusal's mac verifies
    assert await snapshot(conn, api) == before
    return reply


# --- the seed's vectors through the HTTP layer


async def test_seed_request_example_passes_the_gate_and_opens_a_session(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = await order_platforms.get_platform(conn, "1")
    if seed is None:
        seed_api = await register(conn, tmp_path, 1, 0)
    else:  # another test of this run registered it: add a key version of our own
        pem = order_platforms.generate_key_pair(tmp_path / "p1.pem")
        crt = int(fixtures.random_digits(6)) + 2
        await order_platforms.add_public_key(conn, seed.id, str(crt), pem, min_bits=2048)
        seed_api = ApiPlatform(ClientIdentity(1, crt, (tmp_path / "p1.pem").read_text()), seed.id,
                               seed.merchant_id, seed.pki_no or "")
    assert order_envelope.envelope_encrypt(str(SEED_TIMESTAMP), SEED_PLAINTEXT)[0] == SEED_DATA
    monkeypatch.setattr(order_api, "now_s", lambda: SEED_TIMESTAMP + 1.5)
    reply = await post(http, "APPLLogin", seal(seed_api.who, SEED_DATA, timestamp=SEED_TIMESTAMP))
    assert reply["status"] == 1, reply
    assert reply["timestamp"] == (SEED_TIMESTAMP + 1) * 1000 + 500  # replies count milliseconds
    assert reply["data"] == reply["data"].lower() and list(reply) == ["timestamp", "status", "errmsg", "data", "mac"]
    opened = open_reply(reply)
    assert opened["key"] == "00000000" and len(opened["serial"]) == 16 and opened["serial"].isdigit()
    assert opened["toreader"] == order_api.TOREADER
    row = await conn.fetchrow("SELECT userid, login_type FROM order_api_sessions WHERE serial = $1",
                              opened["serial"])
    assert (row["userid"], row["login_type"]) == ("1234567890", 1)


async def test_appllogin_returns_pki_serial_key_and_the_card_reading_script(
    http: aiohttp.ClientSession, api: ApiPlatform
) -> None:
    opened = await login(http, api)
    assert opened["pki"] == api.pki and opened["status"] == 1 and opened["errmsg"] == ""
    assert opened["toreader"] == ["010700a4000002ddf190000200", "020700a4000002adf190000300",
                                  "030500b095001e90000400", "0405805c00020490000000"]
    script = core_ext.script_decode(bytes.fromhex("".join(opened["toreader"])))
    assert [i.seq for i in script] == [1, 2, 3, 4]


async def test_create_auto_load_order_reserves_the_amount_and_query_lists_it(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    card = new_card()
    reply = await post(http, "CreateAutoLoadOrder", create_body(api, card, 2_345, "BIZ-" + card))
    assert reply["status"] == 1, reply
    opened = open_reply(reply)
    order_no = opened["order"]
    assert model.is_order_no(order_no) and opened["pki"] == api.pki
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.PAID and order.card_no == card
    assert order.amount_cents == 2_345 and order.biz_serial_no == "BIZ-" + card
    transfer = await ledger.get_transfer(conn, model.pay_transfer_id(order_no))
    assert transfer is not None and transfer.status == "pending" and transfer.timeout_at == order.expires_at
    session = await login(http, api)
    query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"gzzxc001"}', "pki": api.pki,
             "serial": session["serial"], "step": 0, "reqinfo": reqinfo_for(card),
             "qrycondition": "cardnum,orderstep", "orderstep": "02"}
    result = open_reply(await post(http, "AcctQueryLNT", build_request(api.who, query)))
    assert result["status"] == 1 and result["chargerecordnum"] == 1 and result["acctstatus"] == "00"
    (record,) = result["acctresult"]
    assert record["orderseq"] == order_no and record["logiccardnum"] == card and record["amount"] == 2_345
    assert record["step"] == "02" and record["payway"] == "00" and len(record["ordertime"]) == 14
    query.update(orderstep="03")
    none = open_reply(await post(http, "AcctQueryLNT", build_request(api.who, query)))
    assert none["chargerecordnum"] == 0 and none["acctresult"] == []


async def test_a_request_that_meets_a_deadlock_is_run_again_whole(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt creates and pays the order, then deadlocks: everything it wrote (order, reservation,
    nonce) is rolled back and the request runs again by the retry policy — one order, no replay refusal."""
    real = lifecycle.create_order
    attempts: list[str] = []

    async def deadlocks_once(*args: Any, **kwargs: Any) -> Any:
        created = await real(*args, **kwargs)
        attempts.append(created.order.order_no)
        if len(attempts) == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return created

    monkeypatch.setattr(lifecycle, "create_order", deadlocks_once)
    card = new_card()
    reply = await post(http, "CreateAutoLoadOrder", create_body(api, card, 1_500, "DEADLOCK-" + card))
    assert reply["status"] == 1, reply
    assert len(attempts) == 2 and open_reply(reply)["order"] == attempts[1]
    assert await model.get_order(conn, attempts[0]) is None
    assert await ledger.get_transfer(conn, model.pay_transfer_id(attempts[0])) is None
    rows = await conn.fetch("SELECT state FROM orders WHERE biz_serial_no = $1", "DEADLOCK-" + card)
    assert [r["state"] for r in rows] == [model.PAID]


async def test_query_by_orderid_and_time_sees_only_the_platforms_own_orders(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, tmp_path: Path
) -> None:
    other = await register(conn, tmp_path, fresh_raw(), 100_000)
    card = new_card()
    theirs = open_reply(await post(http, "CreateAutoLoadOrder", create_body(other, card, 500)))["order"]
    session = await login(http, api)
    today = model.local_date(dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
    query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"gzzxc001"}', "serial": session["serial"],
             "step": 0, "reqinfo": [], "qrycondition": "orderid,time", "orderid": theirs,
             "starttime": today, "endtime": today}
    result = open_reply(await post(http, "AcctQueryLNT", build_request(api.who, query)))
    assert result["status"] == 1 and result["chargerecordnum"] == 0
    mine = open_reply(await post(http, "CreateAutoLoadOrder", create_body(api, card, 600)))["order"]
    query.update(orderid=mine)
    result = open_reply(await post(http, "AcctQueryLNT", build_request(api.who, query)))
    assert [r["orderseq"] for r in result["acctresult"]] == [mine]


async def test_biz_serial_no_repeat_returns_the_same_order(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    card, serial_no = new_card(), "R-" + secrets.token_hex(6)
    first = open_reply(await post(http, "CreateAutoLoadOrder", create_body(api, card, 700, serial_no)))
    before = await snapshot(conn, api)
    again = open_reply(await post(http, "CreateAutoLoadOrder",
                                  build_request(api.who, order_fields(api, card, 700),
                                                timestamp=int(time.time()) + 1,
                                                extra_clear={"biz_serial_no": serial_no})))
    assert again["status"] == 1 and again["order"] == first["order"]
    after = await snapshot(conn, api)
    assert after[:2] == before[:2] and after[4] == before[4]  # no order, no transfer, no money moved


async def test_biz_serial_no_with_other_content_is_refused(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    card, serial_no = new_card(), "D-" + secrets.token_hex(6)
    assert (await post(http, "CreateAutoLoadOrder", create_body(api, card, 800, serial_no)))["status"] == 1
    await refused(http, conn, api, "CreateAutoLoadOrder", create_body(api, card, 801, serial_no),
                  "biz_serial_no already used")


async def test_order_not_loaded_in_time_expires_and_its_reservation_is_voided(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, platform: Any
) -> None:
    settings = platform.ctx.settings
    platform.ctx.settings = settings.replace(order_expiry_s=1)
    try:
        opened = open_reply(await post(http, "CreateAutoLoadOrder", create_body(api, new_card(), 900)))
    finally:
        platform.ctx.settings = settings
    deadline = time.monotonic() + 10
    while True:  # the platform's own sweeper runs every 0.5 s in the tests
        order = await model.get_order(conn, opened["order"])
        assert order is not None
        if order.state == model.VOIDED or time.monotonic() > deadline:
            break
        await conn.execute("SELECT pg_sleep(0.2)")
    assert order.state == model.VOIDED
    transfer = await ledger.get_transfer(conn, model.pay_transfer_id(order.order_no))
    assert transfer is not None and transfer.status == "voided"


async def test_openapi_document_describes_the_three_endpoints(
    http: aiohttp.ClientSession, platform: Any
) -> None:
    async with http.get("/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {"/APPLLogin", "/AcctQueryLNT", "/CreateAutoLoadOrder"}
    create = doc["paths"]["/CreateAutoLoadOrder"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "biz_serial_no" in create["required"] and "Sign" in create["required"]
    assert "chargeamt" in create["x-encrypted"]["required"]


async def test_demo_seed_registers_platform_7_with_a_key_generated_into_the_data_dir(
    empty_database: str, settings: Any, test_keys: Any, tmp_path: Path
) -> None:
    """On a database of its own: other tests register platform 7 (the seed's example) too."""
    from app import demo
    from app.runtime import RunningPlatform
    from recharge import db

    conn = await asyncpg.connect(empty_database)
    running = RunningPlatform(settings.replace(database_url=empty_database), empty_database)
    try:
        await db.init_connection(conn)
        await db.migrate(conn)
        await demo.seed(conn, test_keys[0], tmp_path)
        key_path = demo.demo_private_key_path(tmp_path)
        assert key_path.is_relative_to(tmp_path) and (key_path.stat().st_mode & 0o077) == 0
        first = key_path.read_bytes()
        await demo.seed(conn, test_keys[0], tmp_path)  # idempotent: same key, nothing regenerated
        assert key_path.read_bytes() == first
        platform = await order_platforms.get_platform(conn, "7")
        assert platform is not None and platform.pki_no == "70000472"
        assert await order_platforms.get_public_key_pem(conn, platform.id, "1") == \
            order_platforms.public_key_of_private_file(key_path)
        await running.start()
        who = ClientIdentity(7, 1, key_path.read_text())
        body = build_request(who, {"platform": 7, "userinfo": '{"userid":"gzzxc001"}', "type": 5})
        async with aiohttp.ClientSession(f"http://127.0.0.1:{running.http_port}") as http:
            opened = open_reply(await post(http, "APPLLogin", body))
        assert opened["status"] == 1 and opened["pki"] == "70000472"
    finally:
        if getattr(running, "ctx", None) is not None:
            await running.stop()
        await conn.close()


async def test_mac_covers_the_fields_in_wire_order_when_data_is_not_last(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform
) -> None:
    from http_api.order_envelope import wire_mac

    signed = create_body(api, new_card(), 1_200)
    reordered = {k: signed[k] for k in ("timestamp", "data", "version", "platformRaw", "crt_version",
                                        "biz_serial_no", "Sign")}
    canonical_mac = signed["mac"]  # timestamp … data last: not the order these fields travel in
    assert wire_mac(reordered) != canonical_mac
    await refused(http, conn, api, "CreateAutoLoadOrder", {**reordered, "mac": canonical_mac}, "mac does not match")
    reply = await post(http, "CreateAutoLoadOrder", {**reordered, "mac": wire_mac(reordered)})
    assert reply["status"] == 1 and model.is_order_no(open_reply(reply)["order"])


async def test_saturated_pool_is_answered_busy_in_the_reply_format_and_nothing_changes(
    http: aiohttp.ClientSession, conn: asyncpg.Connection, api: ApiPlatform, platform: Any
) -> None:
    from tests.conftest import settings_changed

    before = await snapshot(conn, api)
    pool = platform.ctx.pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        with settings_changed(platform, pool_acquire_timeout_s=0.05):
            raw = json.dumps(create_body(api, new_card(), 1_000))
            async with http.post("/CreateAutoLoadOrder", data=raw, headers={"Content-Type": "application/json"}) as resp:
                status, reply = resp.status, await resp.json()
    finally:
        for held_conn in held:
            await pool.release(held_conn)
    assert status == 503
    assert reply["status"] == 0 and "busy" in reply["errmsg"]
    open_reply(reply)  # a client can verify the busy answer like any refusal
    assert await snapshot(conn, api) == before

"""Every changing form of the console over HTTP: what each does (through the domain, recorded
in the audit trail with the console operator as actor) and the least role that may do it —
one role below is refused with 403 and nothing changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from Crypto.PublicKey import RSA

from app import demo, fixtures
from recharge.kkt import cards
from tests.conftest import eventually
from tests.console_world import ConsoleUser, hidden, new_operator

pytestmark = pytest.mark.usefixtures("audited")


@pytest.fixture(scope="module")
async def users(platform: Any, pool: asyncpg.Pool, test_keys: Any, settings: Any) -> AsyncIterator[dict[str, ConsoleUser]]:
    """One signed-in user per role for the whole module (signing in costs argon2 time)."""
    base = f"http://127.0.0.1:{platform.http_port}"
    signed: dict[str, ConsoleUser] = {}
    async with pool.acquire() as conn:
        await demo.seed(conn, test_keys[0], settings.data_dir)
        for role in ("viewer", "operator", "admin"):
            signed[role] = ConsoleUser(base)
            await signed[role].signed_in(*await new_operator(conn, role))
    yield signed
    for u in signed.values():
        await u.close()


async def post_as(user: ConsoleUser, path: str, data: dict[str, str]) -> tuple[int, str]:
    _, html, _ = await user.get("/console/")
    status, page, _ = await user.post(path, {**hidden(html), "form_token": fixtures.random_digits(32), **data})
    return status, page


async def least_role(users: dict[str, ConsoleUser], conn: asyncpg.Connection, role: str, path: str,
                     data: dict[str, str]) -> str:
    """Refused one role below ``role`` (nothing recorded), done by ``role``; the action's actor."""
    below = {"operator": "viewer", "admin": "operator"}[role]
    before = await conn.fetchval("SELECT max(id) FROM operator_actions")
    status, _ = await post_as(users[below], path, data)
    assert status == 403, (path, below, status)
    assert await conn.fetchval("SELECT max(id) FROM operator_actions") == before
    status, page = await post_as(users[role], path, data)
    assert status == 303, (path, status, page[:3000])
    actor = await conn.fetchval("SELECT actor FROM operator_actions WHERE id > $1 ORDER BY id DESC LIMIT 1",
                                before or 0)
    assert actor is not None and actor.startswith("console:")
    return str(actor)


async def test_terminal_unlock_disable_enable(users: dict[str, ConsoleUser], conn: asyncpg.Connection) -> None:
    code = fixtures.random_digits(8)
    await least_role(users, conn, "operator", "/console/terminals",
                     {"code": code, "merchant": "1155", "pki": fixtures.random_digits(8)})
    await conn.execute("UPDATE terminals SET locked = true, signin_failures = 5 WHERE code = $1", code)
    await least_role(users, conn, "operator", f"/console/terminals/{code}/unlock", {"reason": "shop called"})
    assert not await conn.fetchval("SELECT locked FROM terminals WHERE code = $1", code)
    await least_role(users, conn, "operator", f"/console/terminals/{code}/disable", {"reason": "stolen"})
    assert not await conn.fetchval("SELECT enabled FROM terminals WHERE code = $1", code)
    await least_role(users, conn, "operator", f"/console/terminals/{code}/enable", {"reason": "found"})
    assert await conn.fetchval("SELECT enabled FROM terminals WHERE code = $1", code)


async def test_kkt_reference_data(users: dict[str, ConsoleUser], conn: asyncpg.Connection) -> None:
    code = await fixtures.fresh_merchant_code(conn)
    await least_role(users, conn, "operator", "/console/kkt/merchants",
                     {"code": code, "name": "洗车店", "issuing": "on", "consuming": "on"})
    await least_role(users, conn, "operator", "/console/kkt/service-codes",
                     {"merchant": code, "item": "888", "name": "洗车"})
    assert await conn.fetchval("SELECT name FROM service_codes WHERE item_code = '888' AND merchant_id ="
                               " (SELECT id FROM merchants WHERE code = $1)", code) == "洗车"
    key = "K" + fixtures.random_digits(19)
    await least_role(users, conn, "admin", "/console/kkt/license-keys",
                     {"key": key, "merchant": code, "networks": "10.0.0.0/8\n192.168.0.0/16",
                      "valid_to": "2030-01-01T00:00", "enabled": "on"})
    row = await conn.fetchrow("SELECT allowed_networks, valid_to FROM license_keys WHERE license_key = $1", key)
    assert row["allowed_networks"] == ["10.0.0.0/8", "192.168.0.0/16"] and row["valid_to"].year in (2029, 2030)
    # the merchant's own keys: the list is paged by merchant code, and other tests add merchants with keys
    _, html, _ = await users["viewer"].get(f"/console/kkt/license-keys?q={code}")
    assert key not in html and key[-4:] in html  # only the tail is ever shown
    await least_role(users, conn, "operator", "/console/kkt/terminals",
                     {"issuer": code, "merchant": code, "kind": "operator", "number": "OP" + fixtures.random_digits(6)})
    status, page = await post_as(users["operator"], "/console/kkt/terminals",
                                 {"issuer": code, "merchant": code, "kind": "sms", "number": "12345"})
    assert status == 400 and "11-digit" in page


async def test_card_state_password_and_batch(users: dict[str, ConsoleUser], conn: asyncpg.Connection,
                                             test_keys: Any, settings: Any) -> None:
    code = await fixtures.fresh_merchant_code(conn)
    await fixtures.funded_merchant(conn, code, 0)
    batch = await cards.create_card_batch(conn, code, 1, actor="test")
    card = batch.first
    await conn.execute("UPDATE cards SET state = 'active' WHERE card_no = $1", card)
    status, _ = await post_as(users["operator"], f"/console/kkt/cards/{card}/state", {"action": "freeze", "reason": ""})
    assert status == 400
    await least_role(users, conn, "operator", f"/console/kkt/cards/{card}/state", {"action": "freeze", "reason": "holder"})
    assert await conn.fetchval("SELECT state FROM cards WHERE card_no = $1", card) == "frozen"
    await least_role(users, conn, "operator", f"/console/kkt/cards/{card}/password",
                     {"password": "654321", "reason": "holder at the desk"})
    stored = await conn.fetchval("SELECT password_hash FROM cards WHERE card_no = $1", card)
    md5 = cards.normalise_password("654321")
    assert md5 is not None and cards.verify_password(stored, md5, cards.password_pepper(test_keys[0]))
    form = {"merchant": code, "count": "3", "kind": "sv"}
    assert (await post_as(users["viewer"], "/console/kkt/batches", form))[0] == 403
    assert (await post_as(users["operator"], "/console/kkt/batches", form))[0] == 303
    job = await conn.fetchrow("SELECT * FROM card_batch_jobs WHERE merchant_code = $1", code)
    assert job is not None and job["actor"].startswith("console:")
    body = ""

    async def finished() -> bool:
        nonlocal body
        _, body, _ = await users["viewer"].get(f"/console/kkt/batches/{job['id']}/progress")
        return bool(json.loads(body)["state"] != "running")

    await eventually(finished, "the card batch finished")
    assert json.loads(body) == {"done": 3, "count": 3, "state": "done", "first_card": f"1680{code}00000002",
                                "last_card": f"1680{code}00000004", "error": None}
    assert await conn.fetchval("SELECT actor FROM operator_actions WHERE action = 'card_batch' AND subject = $1",
                               f"1680{code}00000002-1680{code}00000004") == job["actor"]
    status, _ = await post_as(users["operator"], "/console/kkt/batches", {"merchant": code, "count": "0", "kind": "sv"})
    assert status == 400


async def test_platforms_and_operators_are_admin_only(users: dict[str, ConsoleUser], conn: asyncpg.Connection) -> None:
    raw = str(100_000 + int(fixtures.random_digits(6)) % 900_000)  # platformRaw: no leading zero
    pem = RSA.generate(2048).publickey().export_key("PEM").decode("ascii")
    await least_role(users, conn, "admin", "/console/platforms",
                     {"raw": raw, "name": "bike", "merchant": "1155", "crt_version": "1", "public_key": pem})
    await least_role(users, conn, "admin", f"/console/platforms/{raw}/disable", {"reason": "contract ended"})
    assert not await conn.fetchval("SELECT enabled FROM platforms WHERE platform_raw = $1", raw)
    status, page = await post_as(users["admin"], "/console/platforms",
                                 {"raw": raw, "name": "bike", "merchant": "1155", "public_key": "not a key"})
    assert status == 400
    name = f"new{fixtures.random_digits(6)}"
    status, _ = await post_as(users["operator"], "/console/operators", {"name": name, "role": "viewer"})
    assert status == 403
    status, page = await post_as(users["admin"], "/console/operators", {"name": name, "role": "viewer"})
    assert status == 200 and 'id="one-time-password"' in page
    await least_role(users, conn, "admin", f"/console/operators/{name}/disable", {"reason": "left"})
    assert await conn.fetchval("SELECT disabled FROM operators WHERE name = $1", name)


async def test_read_pages_of_the_ledger(users: dict[str, ConsoleUser], conn: asyncpg.Connection) -> None:
    viewer = users["viewer"]
    account = await conn.fetchval("SELECT credit_account_id FROM transfers WHERE id = 'demo:fund:1155'")
    status, html, _ = await viewer.get(f"/console/ledger/accounts/{account}")
    assert status == 200 and "demo:fund:1155" in html
    assert (await viewer.get("/console/ledger/accounts/99999999999"))[0] == 404
    assert (await viewer.get("/console/ledger/transfer?id=nope"))[0] == 404
    assert (await viewer.get("/console/kkt/batches/123456789"))[0] == 404
    assert (await viewer.get("/console/kkt/cards/0000000000000000"))[0] == 404
    assert (await viewer.get("/console/loads/12345"))[0] == 404

"""KaKaTong administration: the admin HTTP API behind the admin token and ``rechargectl kkt``
(merchants, terminals, keys, service codes, points rules, a 100,000-card batch with a
progress bar, lost / frozen / cancelled / reissued cards), each refusal changing nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from tests.kkt_world import PASSWORD_MD5, World, new_merchant

TOKEN = "test-admin-token"  # tests/conftest.py settings


async def admin(world: World, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"X-Admin-Actor": "tester"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.request(
        method, f"{world.base}{path}", json=body if raw is None else None, data=raw, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def test_admin_requires_the_token(world: World) -> None:
    assert (await admin(world, "GET", "/admin/kkt/cards/1680000000000000", token=None))[0] == 403
    assert (await admin(world, "GET", "/admin/kkt/cards/1680000000000000", token="wrong"))[0] == 403
    status, _ = await admin(world, "PUT", "/admin/kkt/merchants/9999", {"name": "x"}, token="wrong")
    assert status == 403


async def test_admin_sets_up_a_merchant_that_can_trade(world: World, pool: Any) -> None:
    async with pool.acquire() as conn:
        code, _ = await new_merchant(conn)
    terminal = f"{code}0007"
    key = f"ADMINKEY{code}XYZW0000"
    for method, path, body in [
        ("PUT", f"/admin/kkt/merchants/{code}", {"name": "管理测试"}),
        ("PUT", f"/admin/kkt/terminals/{terminal}", {"merchant": code, "kind": "pos"}),
        ("PUT", "/admin/kkt/license-keys", {"key": key, "merchant": code, "networks": ["127.0.0.0/8", "::1/128"]}),
        ("PUT", f"/admin/kkt/service-codes/{code}/123", {"name": "洗车"}),
        ("PUT", f"/admin/kkt/points-rules/{code}", {"cents_per_point": 50}),
        ("POST", "/admin/kkt/card-batches", {"merchant": code, "count": 5, "kind": "both"}),
    ]:
        status, reply = await admin(world, method, path, body)
        assert status == 200, (path, reply)
    assert reply == {"first": f"1680{code}00000001", "last": f"1680{code}00000005", "count": 5}
    mine = World(pool, world.keys, world.http_port, code, 0, terminal, key)
    card = reply["first"]
    _, body = await mine.get("aCRequest", LICENSEKEY=key, POSCODE=terminal, CARDNO=card, CARDPWD="111111")
    assert "<Result>11</Result>" in body
    rec = await mine.ct(TRADETYPE="0033", TRADEMODE="0", CARDNO=card, AMOUNT="500", ITEMCODE="123", LANG="GB2312")
    assert (rec["PayInForm"], rec["Points"], rec["TradeName"]) == ("11", "10", "洗车")
    status, shown = await admin(world, "GET", f"/admin/kkt/cards/{card}")
    assert status == 200 and shown["state"] == "active" and shown["points"] == 10
    assert "password_hash" not in shown


async def test_card_states_lost_found_frozen_reissued(world: World, audited: None) -> None:
    card = await world.new_card(balance=700, points=3)

    async def state(action: str) -> tuple[int, Any]:
        return await admin(world, "POST", f"/admin/kkt/cards/{card}/state", {"action": action, "reason": "test"})

    assert (await state("lose"))[1]["state"] == "lost"
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "14"
    assert (await state("found"))[1]["state"] == "active"
    assert (await state("freeze"))[1]["state"] == "frozen"
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "69"
    assert (await state("freeze"))[0] == 400  # already frozen: refused
    assert (await state("unfreeze"))[1]["state"] == "active"
    status, reply = await state("cancel")
    assert status == 400 and "value" in reply["error"]  # still holds money
    status, reply = await admin(world, "POST", f"/admin/kkt/cards/{card}/reissue", {"reason": "worn out"})
    assert status == 200
    new = reply["new_card_no"]
    assert (await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))["PayInForm"] == "19"
    rec = await world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=new, CARDPWD=PASSWORD_MD5)
    assert (rec["PayInForm"], rec["Integral"]) == ("11", "700")
    assert await world.balance(new) == (700, 3) and await world.balance(card) == (0, 0)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/admin/kkt/merchants/12", {"name": "bad code"}),
    ("PUT", "/admin/kkt/merchants/1234", {"name": 5}),
    ("PUT", "/admin/kkt/terminals/T1", {"merchant": "0000", "kind": "pos"}),
    ("PUT", "/admin/kkt/terminals/T1", {"merchant": "MERCHANT", "kind": "kiosk"}),
    ("PUT", "/admin/kkt/terminals/T1", {"merchant": "MERCHANT", "kind": "sms"}),
    ("PUT", "/admin/kkt/license-keys", {"key": "short", "merchant": "MERCHANT"}),
    ("PUT", "/admin/kkt/license-keys", {"key": "x" * 20, "merchant": "MERCHANT", "networks": ["not-a-net"]}),
    ("PUT", "/admin/kkt/service-codes/MERCHANT/12", {"name": "too short a code"}),
    ("PUT", "/admin/kkt/points-rules/MERCHANT", {"cents_per_point": 0}),
    ("POST", "/admin/kkt/card-batches", {"merchant": "MERCHANT", "count": 0}),
    ("POST", "/admin/kkt/card-batches", {"merchant": "MERCHANT", "count": 100_001}),
    ("POST", "/admin/kkt/card-batches", {"merchant": "MERCHANT", "count": "5"}),
    ("POST", "/admin/kkt/card-batches", {"merchant": "MERCHANT", "count": 5, "kind": "gold"}),
    ("POST", "/admin/kkt/cards/1680000000000000/state", {"action": "lose", "reason": "x"}),
    ("POST", "/admin/kkt/cards/CARD/state", {"action": "explode", "reason": "x"}),
    ("POST", "/admin/kkt/cards/CARD/state", {"action": "lose", "reason": " "}),
    ("POST", "/admin/kkt/cards/CARD/reissue", {"reason": "x", "new_card_no": "12"}),
])
async def test_admin_bad_input_is_refused_and_changes_nothing(world: World, pool: Any, method: str, path: str,
                                                              body: dict[str, Any]) -> None:
    card = await world.new_card()
    path = path.replace("MERCHANT", world.merchant_code).replace("CARD", card)
    body = {k: (v.replace("MERCHANT", world.merchant_code) if isinstance(v, str) else v) for k, v in body.items()}
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM operator_actions")
        cards_before = await conn.fetchval("SELECT count(*) FROM cards")
    status, reply = await admin(world, method, path, body)
    assert status == 400, reply
    assert reply["error"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM operator_actions") == before
        assert await conn.fetchval("SELECT count(*) FROM cards") == cards_before
        assert await conn.fetchval("SELECT state FROM cards WHERE card_no = $1", card) == "active"


async def test_admin_malformed_json_is_refused(world: World) -> None:
    status, reply = await admin(world, "PUT", "/admin/kkt/merchants/1234", raw=b"{not json")
    assert status == 400
    status, reply = await admin(world, "PUT", "/admin/kkt/merchants/1234", raw=b"[1, 2]")
    assert status == 400


def _cli(settings: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "RECHARGE_KEY_FILE": str(settings.key_file)}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "kkt", *args, "--data-dir", str(settings.data_dir)],
        capture_output=True, text=True, env=env, input=stdin, timeout=120,
    )


async def test_cli_generates_100000_cards_with_a_progress_bar(settings: Any, pool: Any) -> None:
    async with pool.acquire() as conn:
        code, _ = await new_merchant(conn)
    done = await asyncio.to_thread(_cli, settings, "card-batch", "--merchant", code, "--count", "100000")
    assert done.returncode == 0, done.stderr
    assert f"100000 cards 1680{code}00000001 … 1680{code}00100000 generated" in done.stdout
    assert "100000/100000" in done.stderr  # the progress bar's last state
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM cards WHERE merchant_id = (SELECT id FROM merchants"
                                   " WHERE code = $1) AND state = 'inactive'", code) == 100_000


async def test_cli_reference_data_and_card_commands(settings: Any, pool: Any, test_keys: Any) -> None:
    async with pool.acquire() as conn:
        code, _ = await new_merchant(conn)
    steps = [
        ("merchant", code, "命令行商户"),
        ("terminal", f"{code}0001", "--merchant", code, "--kind", "sms", "--msisdn", f"138{code}0001"),
        ("service-code", code, "456", "停车"),
        ("points-rule", code, "200"),
        ("card-batch", "--merchant", code, "--count", "2", "--quiet"),
        ("card-state", f"1680{code}00000001", "cancel", "--reason", "damaged in stock"),
    ]
    for step in steps:
        done = await asyncio.to_thread(_cli, settings, *step)
        assert done.returncode == 0, (step, done.stderr)
    done = await asyncio.to_thread(_cli, settings, "license-key", "--merchant", code, "--network", "10.0.0.0/8",
                                   stdin=f"CLIKEY{code}ABCDEFGHIJ\n")
    assert done.returncode == 0 and f"CLIKEY{code}" not in done.stdout  # the key is never echoed
    done = await asyncio.to_thread(_cli, settings, "card-password", f"1680{code}00000002", "--reason", "t",
                                   "--password-stdin", stdin="123456\n")
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(_cli, settings, "card-show", f"1680{code}00000002")
    assert '"state": "inactive"' in done.stdout and "password_hash" not in done.stdout
    refused = await asyncio.to_thread(_cli, settings, "card-state", f"1680{code}00000001", "lose", "--reason", "x")
    assert refused.returncode == 2 and "cannot be lose" in refused.stderr
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT kind, msisdn FROM terminals WHERE code = $1", f"{code}0001")
        assert (row["kind"], row["msisdn"]) == ("sms", f"138{code}0001")
        nets = await conn.fetchval("SELECT allowed_networks FROM license_keys WHERE license_key = $1",
                                   f"CLIKEY{code}ABCDEFGHIJ")
        assert nets == ["10.0.0.0/8"]
        assert await conn.fetchval("SELECT password_hash FROM cards WHERE card_no = $1",
                                   f"1680{code}00000002") is not None

"""One operator identity (issue 17): the mobile payment API's operators are the console's.

A clerk made by ``rechargectl mpay operator add`` signs in to the console and to
``POST /ops/login`` with one password; the console's lockout covers the API; a console operator
without an API role gets ``1004``; migration 0710 carries an old ``mpay_operators`` row (its
peppered hash) and its log into ``operators`` and ``operator_actions``.
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest

from recharge import db
from recharge.mpay import sessions
from recharge.mpay.env import Env
from recharge.operators import accounts
from tests.console_world import ConsoleUser, new_operator
from tests.mpay_world import Api


async def test_a_clerk_signs_in_to_the_console_and_the_api_with_one_password(
        api: Api, platform: Any, conn: asyncpg.Connection) -> None:
    name = f"clerk{secrets.token_hex(3)}"
    password = await sessions.add_operator(conn, api.world.env, name, "counter", "HN0001")
    op = await conn.fetchrow("SELECT role, mpay_role, hall, must_change_password FROM operators WHERE name = $1", name)
    assert tuple(op) == ("operator", "counter", "HN0001", True)
    data = await api.ok("POST", "/ops/login", {"operator": name, "password": password})
    assert (data["role"], data["hall"]) == ("counter", "HN0001")
    user = ConsoleUser(f"http://127.0.0.1:{platform.http_port}")
    try:
        await user.signed_in(name, password, "the clerk's own password")
        status, html, _ = await user.get("/console/hall")
        assert status == 200 and "HN0001" in html
    finally:
        await user.close()
    assert await api.code("POST", "/ops/login", {"operator": name, "password": password}) == "3001"
    await api.ok("POST", "/ops/login", {"operator": name, "password": "the clerk's own password"})
    await conn.execute("UPDATE operators SET disabled = true WHERE name = $1", name)  # the console disables it
    assert await api.code("GET", "/registry/subscribers/13900000000", token=data["token"]) == "1003"


async def test_the_console_lockout_covers_the_api_and_a_console_only_operator_gets_1004(
        api: Api, conn: asyncpg.Connection) -> None:
    name, otp = await new_operator(conn, "admin")
    assert await api.code("POST", "/ops/login", {"operator": name, "password": otp}) == "1004"
    clerk = f"clerk{secrets.token_hex(3)}"
    password = await sessions.add_operator(conn, api.world.env, clerk, "counter", "HN0002")
    for _ in range(5):
        assert await api.code("POST", "/ops/login", {"operator": clerk, "password": "wrong"}) == "3001"
    assert await api.code("POST", "/ops/login", {"operator": clerk, "password": password}) == "3001"  # locked
    outcomes = [r["outcome"] for r in await conn.fetch(
        "SELECT outcome FROM operator_signins WHERE name = $1 ORDER BY id", clerk)]
    assert outcomes == ["bad_password"] * 4 + ["now_locked", "locked"]
    with pytest.raises(accounts.OperatorError):
        await accounts.set_api_role(conn, clerk, "counter", None, actor="test", reason="no hall")
    await accounts.set_api_role(conn, clerk, "cs", None, actor="test", reason="moved to 10086")
    assert await sessions.operator(conn, clerk) is not None and (await sessions.operator(conn, clerk))["role"] == "cs"


async def test_migration_0710_carries_old_operators_and_their_log(
        empty_database: str, settings: Any, test_keys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    every = db.migration_files()
    monkeypatch.setattr(db, "migration_files", lambda: [m for m in every if m[0] < "0710"])
    env = Env.of(settings, test_keys[0])
    conn = await asyncpg.connect(empty_database)
    try:
        await db.migrate(conn)
        await conn.execute("INSERT INTO mpay_operators (id, role, hall, password_hash) VALUES"
                           " ('hall9', 'counter', 'HN0009', $1), ('cs9', 'cs', NULL, $2)",
                           await env.hasher.hash("hall9 password"), await env.hasher.hash("cs9 password"))
        await conn.execute("INSERT INTO mpay_operator_log (operator, token_id, action, subject, reason)"
                           " VALUES ('hall9', 7, 'mpay_counter_cash', '13900000009', '')")
        otp = accounts.one_time_password()  # a console operator of that name, before 0710
        await conn.execute("INSERT INTO operators (name, role, password_hash) VALUES ('cs9', 'admin', $1)",
                           await accounts.hash_password(otp))
        monkeypatch.setattr(db, "migration_files", lambda: every)
        await db.migrate(conn)
        rows = {r["name"]: tuple(r) for r in await conn.fetch(
            "SELECT name, role, mpay_role, hall, password_peppered FROM operators ORDER BY name")}
        assert rows == {"cs9": ("cs9", "admin", "cs", None, False), "hall9": ("hall9", "operator", "counter",
                                                                              "HN0009", True)}
        kw = {"max_failures": 5, "lock_s": 60}
        assert (await accounts.authenticate(conn, "hall9", "hall9 password", **kw))[0] is accounts.SignIn.BAD_PASSWORD
        outcome, op = await accounts.authenticate(conn, "hall9", "hall9 password", peppered=env.hasher.verify, **kw)
        assert outcome is accounts.SignIn.OK and op is not None and op.clerk
        assert not await conn.fetchval("SELECT password_peppered FROM operators WHERE name = 'hall9'")
        assert (await accounts.authenticate(conn, "hall9", "hall9 password", **kw))[0] is accounts.SignIn.OK
        assert (await accounts.authenticate(conn, "cs9", otp, **kw))[0] is accounts.SignIn.OK
        log = await conn.fetchrow("SELECT actor, action, detail::text FROM operator_actions WHERE action ="
                                  " 'mpay_counter_cash'")
        assert tuple(log) == ("mpay:hall9", "mpay_counter_cash", '{"token_id": 7}')
        await conn.execute("DELETE FROM operator_actions")  # append-only
        assert await conn.fetchval("SELECT count(*) FROM operator_actions") > 0
    finally:
        await conn.close()

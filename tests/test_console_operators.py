"""Operator accounts and sessions (recharge.operators) and ``rechargectl operator``: one-time
passwords, argon2 hashes, the lockout after wrong passwords — serialized per operator, so
parallel guesses cannot slip past it — password changes, and session deadlines."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import pytest

from app.cli import main
from recharge.operators import accounts, sessions
from recharge.operators.accounts import SignIn


def fresh_name() -> str:
    return f"op{secrets.token_hex(4)}"


async def sign_in(conn: asyncpg.Connection, name: str, password: str, **kw: Any) -> SignIn:
    outcome, _ = await accounts.authenticate(conn, name, password, max_failures=kw.get("max_failures", 5),
                                             lock_s=kw.get("lock_s", 900))
    return outcome


async def test_a_new_operator_signs_in_with_its_one_time_password_which_must_be_changed(
    conn: asyncpg.Connection,
) -> None:
    name = fresh_name()
    op, password = await accounts.add_operator(conn, name, "operator", actor="test")
    assert op.must_change_password and op.role == "operator" and len(password) >= 16
    stored = await conn.fetchval("SELECT password_hash FROM operators WHERE id = $1", op.id)
    assert stored.startswith("$argon2id$") and password not in stored
    outcome, signed = await accounts.authenticate(conn, name, password, max_failures=5, lock_s=900)
    assert outcome is SignIn.OK and signed is not None and signed.must_change_password
    assert await conn.fetchval("SELECT actor FROM operator_actions WHERE action = 'operator_add' AND subject = $1",
                               name) == "test"
    with pytest.raises(accounts.OperatorError):
        await accounts.add_operator(conn, name, "viewer", actor="test")
    with pytest.raises(accounts.OperatorError):
        await accounts.add_operator(conn, "bad name<script>", "viewer", actor="test")
    with pytest.raises(accounts.OperatorError):
        await accounts.add_operator(conn, fresh_name(), "root", actor="test")


async def test_five_wrong_passwords_lock_the_account_and_the_right_one_is_then_refused(
    conn: asyncpg.Connection,
) -> None:
    name = fresh_name()
    _, password = await accounts.add_operator(conn, name, "viewer", actor="test")
    outcomes = [await sign_in(conn, name, "wrong-password") for _ in range(5)]
    assert outcomes == [SignIn.BAD_PASSWORD] * 4 + [SignIn.NOW_LOCKED]
    assert await sign_in(conn, name, password) is SignIn.LOCKED
    # the lock ends by itself
    await conn.execute("UPDATE operators SET locked_until = now() - interval '1 second' WHERE name = $1", name)
    assert await sign_in(conn, name, password) is SignIn.OK
    assert await conn.fetchval(
        "SELECT count(*) FROM operator_signins WHERE name = $1 AND outcome = 'now_locked'", name) == 1


async def test_parallel_wrong_guesses_are_taken_one_at_a_time(pool: asyncpg.Pool) -> None:
    name = fresh_name()
    async with pool.acquire() as conn:
        await accounts.add_operator(conn, name, "viewer", actor="test")

    async def guess() -> SignIn:
        async with pool.acquire() as conn:
            return await sign_in(conn, name, "wrong-password")

    outcomes = await asyncio.gather(*(guess() for _ in range(9)))
    # exactly five were checked; the lock stopped the others unverified
    assert sorted(outcomes) == sorted([SignIn.BAD_PASSWORD] * 4 + [SignIn.NOW_LOCKED] + [SignIn.LOCKED] * 4)


async def test_unknown_and_disabled_operators_are_refused(conn: asyncpg.Connection) -> None:
    assert await sign_in(conn, fresh_name(), "whatever") is SignIn.UNKNOWN
    name = fresh_name()
    _, password = await accounts.add_operator(conn, name, "viewer", actor="test")
    await accounts.set_disabled(conn, name, True, actor="test", reason="left")
    assert await sign_in(conn, name, password) is SignIn.DISABLED


async def test_password_change_checks_the_old_one_and_the_policy_and_ends_other_sessions(
    conn: asyncpg.Connection,
) -> None:
    name = fresh_name()
    op, otp = await accounts.add_operator(conn, name, "admin", actor="test")
    mine = await sessions.open_session(conn, op.id, idle_s=60, max_s=600)
    other = await sessions.open_session(conn, op.id, idle_s=60, max_s=600)
    kw: dict[str, Any] = {"min_length": 12, "keep_session": sessions.token_hash(mine), "actor": name}
    for old, new in ((otp, "short"), ("not-the-otp-at-all", "a-long-new-password"), (otp, otp), (otp, name.upper())):
        with pytest.raises(accounts.OperatorError):
            await accounts.change_password(conn, op.id, old, new, **kw)
    await accounts.change_password(conn, op.id, otp, "a-long-new-password", **kw)
    assert await sign_in(conn, name, otp) is SignIn.BAD_PASSWORD
    outcome, signed = await accounts.authenticate(conn, name, "a-long-new-password", max_failures=5, lock_s=9)
    assert outcome is SignIn.OK and signed is not None and not signed.must_change_password
    assert await sessions.session_of(conn, mine, idle_s=60) is not None
    assert await sessions.session_of(conn, other, idle_s=60) is None


async def test_a_session_ends_when_idle_at_its_deadline_and_at_logout(conn: asyncpg.Connection) -> None:
    op, _ = await accounts.add_operator(conn, fresh_name(), "viewer", actor="test")
    token = await sessions.open_session(conn, op.id, idle_s=60, max_s=600)
    live = await sessions.session_of(conn, token, idle_s=60)
    assert live is not None and live.operator.id == op.id
    assert await conn.fetchval("SELECT count(*) FROM operator_sessions WHERE token_hash = $1", token) == 0
    await conn.execute("UPDATE operator_sessions SET idle_until = now() - interval '1 second'"
                       " WHERE token_hash = $1", sessions.token_hash(token))
    assert await sessions.session_of(conn, token, idle_s=60) is None
    token = await sessions.open_session(conn, op.id, idle_s=60, max_s=600)
    await conn.execute("UPDATE operator_sessions SET expires_at = now() - interval '1 second'"
                       " WHERE token_hash = $1", sessions.token_hash(token))
    assert await sessions.session_of(conn, token, idle_s=60) is None
    assert await sessions.purge_expired(conn) >= 2
    token = await sessions.open_session(conn, op.id, idle_s=60, max_s=600)
    await sessions.close_session(conn, sessions.token_hash(token))
    assert await sessions.session_of(conn, token, idle_s=60) is None
    assert await sessions.session_of(conn, "x" * 500, idle_s=60) is None


async def test_rechargectl_operator_add_prints_a_one_time_password_once(
    database_url: str, conn: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    name = fresh_name()
    status = await asyncio.to_thread(
        main, ["operator", "add", "--database-url", database_url, "--name", name, "--role", "viewer"])
    assert status == 0
    password = capsys.readouterr().out.strip().splitlines()[-1]
    assert await sign_in(conn, name, password) is SignIn.OK
    assert await asyncio.to_thread(
        main, ["operator", "add", "--database-url", database_url, "--name", name, "--role", "viewer"]) == 1
    assert await asyncio.to_thread(
        main, ["operator", "reset-password", "--database-url", database_url, "--name", name]) == 0
    new = capsys.readouterr().out.strip().splitlines()[-1]
    assert new != password and await sign_in(conn, name, new) is SignIn.OK
    assert await asyncio.to_thread(
        main, ["operator", "disable", "--database-url", database_url, "--name", name]) == 0
    assert await sign_in(conn, name, new) is SignIn.DISABLED
    assert await asyncio.to_thread(main, ["operator", "list", "--database-url", database_url]) == 0
    assert name in capsys.readouterr().out

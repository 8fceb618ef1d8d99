"""Who is calling the JSON API (SPEC 6.4): website logins, operators and their bearer tokens.

Tokens are 32 random bytes (base64url), stored as SHA-256; a token lapses 30 minutes after
the last request it authenticated or 8 hours after login (``1003``); a system token
(``rechargectl mpay operator token``) lapses only at its own expiry. A website login by
MSISDN or alias: an unknown login, a closed account, a detached account's MSISDN and a
wrong password all answer ``3001`` (only the last counts against the password); failures
per client address are limited first (``1006``). Operators are the console's operators
(``recharge.operators``: one identity, one password, one lockout) with an API role (``boss``,
``counter`` bound to a hall, ``cs``, ``ops``); every operator write is in ``operator_actions``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from recharge.mpay import accounts, credentials, matrix
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.operators import accounts as op_accounts
from recharge.operators.actions import record_action

ROLES = ("boss", "counter", "cs", "ops")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    token_id: int
    expires_at: dt.datetime


async def issue(conn: asyncpg.Connection, env: Env, *, account_id: int | None = None,
                operator_id: str | None = None, ttl_s: int | None = None) -> Issued:
    token = new_token()
    seconds = ttl_s or env.settings.mpay_session_max_s
    row = await conn.fetchrow(
        "INSERT INTO mpay_tokens (token_hash, account_id, operator_id, expires_at, system)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5) RETURNING id, expires_at",
        _digest(token), account_id, operator_id, float(seconds), ttl_s is not None,
    )
    return Issued(token, int(row["id"]), row["expires_at"])


@dataclass(frozen=True, slots=True)
class Session:
    token_id: int
    account_id: int | None
    operator_id: str | None
    expires_at: dt.datetime


async def authenticate(conn: asyncpg.Connection, env: Env, token: str) -> Session | None:
    """The live session of a bearer token (its idle clock restarted), or None (``1003``)."""
    if not token or len(token) > 64:
        return None
    row = await conn.fetchrow(
        "UPDATE mpay_tokens SET last_used_at = now() WHERE token_hash = $1 AND NOT revoked AND expires_at > now()"
        " AND (system OR last_used_at > now() - make_interval(secs => $2))"
        " RETURNING id, account_id, operator_id, least(expires_at, CASE WHEN system THEN expires_at"
        " ELSE now() + make_interval(secs => $2) END) AS lapses_at",
        _digest(token), float(env.settings.mpay_session_idle_s),
    )
    if row is None:
        return None
    return Session(int(row["id"]), row["account_id"], row["operator_id"], row["lapses_at"])


async def revoke(conn: asyncpg.Connection, token_id: int) -> None:
    await conn.execute("UPDATE mpay_tokens SET revoked = true WHERE id = $1", token_id)


async def count_failure(conn: asyncpg.Connection, client: str) -> None:
    await conn.execute("INSERT INTO mpay_auth_failures (client) VALUES ($1)", client)


async def check_client(conn: asyncpg.Connection, env: Env, client: str) -> None:
    """``1006`` once a client address failed ``mpay_auth_fail_per_ip`` logins in a minute."""
    failures = await conn.fetchval(
        "SELECT count(*) FROM mpay_auth_failures WHERE client = $1 AND created_at > now() - interval '1 minute'",
        client,
    )
    if failures >= env.settings.mpay_auth_fail_per_ip:
        raise Refused("1006")


async def login(conn: asyncpg.Connection, env: Env, login_name: str, password: str, client: str
                ) -> tuple[Issued, bool]:
    """A website login: (token, must_change_password). The account row is locked while its
    password is checked, so parallel guesses count one by one."""
    await check_client(conn, env, client)
    found = await accounts.by_login(conn, login_name)
    if found is None or found["status"] == "closed":
        await count_failure(conn, client)
        raise Refused("3001")
    account = await accounts.by_id(conn, found["id"], lock=True)
    assert account is not None
    matrix.require(account, "query_login", "web")
    now = await conn.fetchval("SELECT now()")
    try:
        await credentials.check(conn, env.hasher, env.policy, account, "login", password, now)
    except Refused:
        await count_failure(conn, client)
        raise
    return await issue(conn, env, account_id=account["id"]), bool(account["login_initial"])


# --- operators: the console's operators (recharge.operators), one identity (migration 0710)
_OPERATOR = ("SELECT id AS number, name AS id, mpay_role AS role, hall, must_change_password FROM operators"
             " WHERE name = $1 AND NOT disabled AND mpay_role IS NOT NULL")


async def add_operator(conn: asyncpg.Connection, env: Env, operator_id: str, role: str, hall: str | None,
                       password: str | None = None, *, actor: str = "mpay") -> str:
    """Create an operator with the API role (or give an existing one the role and a new password);
    returns its initial password (shown once; the demo passes its own). The same name and password
    sign in to the console, which has it changed first; a new clerk is a console ``operator``, any
    other role a ``viewer`` (an admin may raise it)."""
    if role not in ROLES or (role == "counter") != (hall is not None):
        raise ValueError("role must be boss|counter|cs|ops; a counter operator needs --hall, others none")
    cost = op_accounts.Argon2Cost.of(env.settings)
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM operators WHERE name = $1", operator_id):
            await op_accounts.set_api_role(conn, operator_id, role, hall, actor=actor, reason="mpay operator add")
            await conn.execute("UPDATE operators SET disabled = false WHERE name = $1", operator_id)
            return await op_accounts.reset_password(conn, operator_id, actor=actor, reason="mpay operator add",
                                                    cost=cost, password=password)
        _, password = await op_accounts.add_operator(conn, operator_id, "operator" if role == "counter" else "viewer",
                                                     actor=actor, cost=cost, password=password, mpay_role=role,
                                                     hall=hall)
    return password


async def operator_login(conn: asyncpg.Connection, env: Env, operator_id: str, password: str, client: str
                         ) -> tuple[Issued, asyncpg.Record]:
    """``POST /ops/login``: the console's sign-in check (its lockout and sign-in history), after
    the per-address limit; an operator without an API role is refused ``1004``."""
    await check_client(conn, env, client)
    s = env.settings
    outcome, _ = await op_accounts.authenticate(
        conn, operator_id[:64], password, max_failures=s.console_password_max_failures,
        lock_s=s.console_password_lock_s, remote=f"api:{client}", peppered=env.hasher.verify)
    if outcome is not op_accounts.SignIn.OK:
        await count_failure(conn, client)
        raise Refused("3001")
    row = await operator(conn, operator_id)
    if row is None:
        raise Refused("1004")
    return await issue(conn, env, operator_id=operator_id), row


async def operator(conn: asyncpg.Connection, operator_id: str) -> asyncpg.Record | None:
    """The enabled operator ``operator_id`` with an API role: ``id`` (its name), ``role``, ``hall``."""
    return await conn.fetchrow(_OPERATOR, operator_id)


async def log_action(conn: asyncpg.Connection, operator_id: str, token_id: int | None, action: str, subject: str,
                     reason: str = "", **detail: object) -> None:
    """An operator write in the one append-only audit trail (``operator_actions``), actor ``mpay:<name>``."""
    await record_action(conn, f"mpay:{operator_id}", action, subject, reason, token_id=token_id, **detail)

"""Server-side console sessions: opened at sign-in, slid forward by use, closed at logout.

The browser holds a random token; the database holds only its SHA-256, the operator, a
CSRF token for the session's forms, and two deadlines: ``idle_until`` (moved forward by each
request, never past) ``expires_at`` (fixed at sign-in). A session past either is gone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from recharge.operators.accounts import COLUMNS, Operator, operator_from


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    csrf_token: str
    expires_at: dt.datetime
    operator: Operator


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


async def open_session(conn: asyncpg.Connection, operator_id: int, *, idle_s: int, max_s: int) -> str:
    """A new session of ``operator_id``; returns the token for the cookie (stored only hashed)."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO operator_sessions (token_hash, operator_id, csrf_token, idle_until, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4), now() + make_interval(secs => $5))",
        token_hash(token), operator_id, secrets.token_urlsafe(32), float(min(idle_s, max_s)), float(max_s),
    )
    return token


_OPERATOR_ALIASED = ", ".join(f"o.{c}" for c in COLUMNS.split(", "))


async def session_of(conn: asyncpg.Connection, token: str, *, idle_s: int) -> Session | None:
    """The live session of ``token`` (its idle deadline moved forward), or None. One statement."""
    if not token or len(token) > 128:
        return None
    row = await conn.fetchrow(
        "UPDATE operator_sessions s SET last_seen_at = now(),"
        " idle_until = least(now() + make_interval(secs => $2), s.expires_at)"
        " FROM operators o WHERE s.token_hash = $1 AND o.id = s.operator_id AND NOT o.disabled"
        " AND s.idle_until > now() AND s.expires_at > now()"
        f" RETURNING s.token_hash, s.csrf_token, s.expires_at, {_OPERATOR_ALIASED}",
        token_hash(token), float(idle_s),
    )
    if row is None:
        return None
    operator = operator_from(row)
    return Session(row["token_hash"], row["csrf_token"], row["expires_at"], operator)


async def close_session(conn: asyncpg.Connection, token_hash_hex: str) -> None:
    await conn.execute("DELETE FROM operator_sessions WHERE token_hash = $1", token_hash_hex)


async def purge_expired(conn: asyncpg.Connection, *, limit: int = 1000, signin_history_days: int = 90) -> int:
    """Delete sessions past their deadlines and sign-in attempts older than the history kept
    (a few at a time: each sign-in calls this, so nothing needs a cron job); how many sessions went."""
    status = await conn.execute(
        "DELETE FROM operator_sessions WHERE token_hash IN (SELECT token_hash FROM operator_sessions"
        " WHERE expires_at < now() OR idle_until < now() LIMIT $1)", limit,
    )
    await conn.execute(
        "DELETE FROM operator_signins WHERE id IN (SELECT id FROM operator_signins"
        " WHERE created_at < now() - make_interval(days => $1) LIMIT $2)", signin_history_days, limit,
    )
    return int(status.split()[-1])

"""Operator accounts: roles (the console's, and the mobile payment API's with its hall), argon2id
passwords, one-time passwords, sign-in with lockout: one identity for the console and /mpay/v1.

An account is created (or its password reset) with a one-time password that must be changed
at the next sign-in. ``authenticate`` locks the operator's row for the whole check, so
parallel guesses are taken one at a time: after ``max_failures`` wrong passwords in a row
the account is locked for ``lock_s`` and further guesses are not even verified. Every
attempt is recorded in ``operator_signins``; every change of an account in
``operator_actions``. Passwords never leave this module except as their argon2 hash.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from recharge.config import Settings
from recharge.operators.actions import record_action

ROLES = ("viewer", "operator", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_PASSWORD_CHARS = 256  # longer input is refused before hashing (argon2 would take it, slowly)


@dataclass(frozen=True, slots=True)
class Argon2Cost:
    """argon2id parameters of new hashes (settings ``console_argon2_*``); a stored hash carries
    its own, so changing them never locks anyone out."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024  # OWASP's argon2id minimum: m=19 MiB, t=2, p=1
    parallelism: int = 1

    @classmethod
    def of(cls, settings: Settings) -> Argon2Cost:
        return cls(settings.console_argon2_time_cost, settings.console_argon2_memory_kib,
                   settings.console_argon2_parallelism)

    @property
    def hasher(self) -> PasswordHasher:
        return _hasher(self.time_cost, self.memory_kib, self.parallelism)


@functools.lru_cache(maxsize=8)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


DEFAULT_COST = Argon2Cost()
# verified when the name is unknown, so an unknown name costs the same time as a wrong password
_DUMMY_HASH = DEFAULT_COST.hasher.hash(secrets.token_urlsafe(16))


class OperatorError(ValueError):
    """An account change that cannot be done as asked (the text says why, never a secret)."""


class SignIn(StrEnum):
    OK = "ok"
    BAD_PASSWORD = "bad_password"
    NOW_LOCKED = "now_locked"  # this wrong password locked the account
    LOCKED = "locked"  # already locked: the password was not checked
    UNKNOWN = "unknown"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    name: str
    role: str
    must_change_password: bool
    disabled: bool
    locked_until: dt.datetime | None
    mpay_role: str | None = None  # the mobile payment API role (SPEC 6.4), one identity with the console
    hall: str | None = None  # the business hall of a counter clerk

    def may(self, role: str) -> bool:
        """True when this operator's role includes ``role`` (viewer < operator < admin)."""
        return _RANK[self.role] >= _RANK[role]

    @property
    def clerk(self) -> bool:
        """A business-hall clerk: the API role ``counter``, bound to a hall."""
        return self.mpay_role == "counter" and self.hall is not None


COLUMNS = "id, name, role, must_change_password, disabled, locked_until, mpay_role, hall"
MPAY_ROLES = ("boss", "counter", "cs", "ops")


def operator_from(row: asyncpg.Record) -> Operator:
    return Operator(*(row[c] for c in COLUMNS.split(", ")))


def one_time_password() -> str:
    """16 random URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


async def hash_password(password: str, cost: Argon2Cost = DEFAULT_COST) -> str:
    # argon2 takes tens of milliseconds of CPU: off the event loop
    return await asyncio.to_thread(cost.hasher.hash, password)


async def _verify(stored: str, password: str) -> bool:
    def check() -> bool:
        try:
            return bool(DEFAULT_COST.hasher.verify(stored, password))  # the hash names its own cost
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


def check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise OperatorError("an operator name is 1 to 32 letters, digits, '.', '_' or '-'")
    return name


def check_api_role(mpay_role: str | None, hall: str | None) -> None:
    """The API role and hall go together: a ``counter`` clerk has a hall, nobody else has one."""
    if mpay_role is not None and mpay_role not in MPAY_ROLES:
        raise OperatorError(f"the API role is one of {', '.join(MPAY_ROLES)}")
    if (mpay_role == "counter") != bool(hall) or (hall is not None and not 1 <= len(hall) <= 32):
        raise OperatorError("a counter clerk is bound to a hall (1 to 32 characters); other roles have none")


async def add_operator(
    conn: asyncpg.Connection, name: str, role: str, *, actor: str, cost: Argon2Cost = DEFAULT_COST,
    password: str | None = None, mpay_role: str | None = None, hall: str | None = None,
) -> tuple[Operator, str]:
    """A new account with a one-time password (returned once, stored only as its hash); with
    ``mpay_role`` (and ``hall`` for a counter clerk) it may also call the mobile payment API."""
    check_name(name)
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}")
    check_api_role(mpay_role, hall or None)
    password = password or one_time_password()
    stored = await hash_password(password, cost)
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO operators (name, role, password_hash, mpay_role, hall) VALUES ($1, $2, $3, $4, $5)"
                f" RETURNING {COLUMNS}", name, role, stored, mpay_role, hall or None,
            )
        except asyncpg.UniqueViolationError:
            raise OperatorError(f"operator {name} already exists") from None
        await record_action(conn, actor, "operator_add", name, "operator request", role=role, mpay_role=mpay_role,
                            hall=hall or None)
    assert row is not None
    return operator_from(row), password


async def set_api_role(conn: asyncpg.Connection, name: str, mpay_role: str | None, hall: str | None, *, actor: str,
                       reason: str) -> None:
    """Give an operator the mobile payment API role (and hall), or take it away (``None``)."""
    check_api_role(mpay_role, hall or None)
    async with conn.transaction():
        found = await conn.fetchval("UPDATE operators SET mpay_role = $2, hall = $3 WHERE name = $1 RETURNING id",
                                    name, mpay_role, hall or None)
        if found is None:
            raise OperatorError(f"operator {name} does not exist")
        await record_action(conn, actor, "operator_api_role", name, reason or "operator request",
                            mpay_role=mpay_role, hall=hall or None)


async def reset_password(
    conn: asyncpg.Connection, name: str, *, actor: str, reason: str, cost: Argon2Cost = DEFAULT_COST,
    password: str | None = None,
) -> str:
    """A new one-time password for ``name`` (lock lifted, sessions ended); returned once."""
    password = password or one_time_password()
    stored = await hash_password(password, cost)
    async with conn.transaction():
        operator_id = await conn.fetchval(
            "UPDATE operators SET password_hash = $2, must_change_password = true, failed_attempts = 0,"
            " locked_until = NULL, password_peppered = false WHERE name = $1 RETURNING id", name, stored,
        )
        if operator_id is None:
            raise OperatorError(f"operator {name} does not exist")
        await conn.execute("DELETE FROM operator_sessions WHERE operator_id = $1", operator_id)
        await record_action(conn, actor, "operator_password_reset", name, reason or "operator request")
    return password


async def set_disabled(conn: asyncpg.Connection, name: str, disabled: bool, *, actor: str, reason: str) -> None:
    """Disable (sessions ended, sign-in refused) or enable an account."""
    async with conn.transaction():
        operator_id = await conn.fetchval(
            "UPDATE operators SET disabled = $2 WHERE name = $1 RETURNING id", name, disabled
        )
        if operator_id is None:
            raise OperatorError(f"operator {name} does not exist")
        if disabled:
            await conn.execute("DELETE FROM operator_sessions WHERE operator_id = $1", operator_id)
        await record_action(conn, actor, "operator_disable" if disabled else "operator_enable", name,
                      reason or "operator request")


async def list_operators(conn: asyncpg.Connection) -> list[Operator]:
    return [operator_from(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM operators ORDER BY name")]


async def get_operator(conn: asyncpg.Connection, operator_id: int) -> Operator | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM operators WHERE id = $1", operator_id)
    return operator_from(row) if row else None


Peppered = Callable[[str, str], Awaitable[bool]]


async def authenticate(
    conn: asyncpg.Connection, name: str, password: str, *, max_failures: int, lock_s: int, remote: str = "",
    peppered: Peppered | None = None,
) -> tuple[SignIn, Operator | None]:
    """Check a sign-in, one attempt per operator at a time (the row stays locked meanwhile).

    ``peppered`` verifies a hash carried over from the mobile payment operators (migration
    0710); once it matches, the password is stored again as the console's argon2id."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {COLUMNS}, password_hash, password_peppered, failed_attempts, now() AS now FROM operators"
            " WHERE name = $1 FOR UPDATE", name,
        )
        outcome = await _check(conn, row, password, max_failures, lock_s, peppered)
        await conn.execute(
            "INSERT INTO operator_signins (name, operator_id, outcome, remote) VALUES ($1, $2, $3, $4)",
            name[:64], row["id"] if row else None, outcome.value, remote[:64],
        )
    if outcome is not SignIn.OK or row is None:
        return outcome, None
    return outcome, operator_from(row)


async def _matches(conn: asyncpg.Connection, row: asyncpg.Record, password: str, peppered: Peppered | None) -> bool:
    if not row["password_peppered"]:
        return await _verify(row["password_hash"], password)
    if peppered is None or not await peppered(row["password_hash"], password):
        return False
    await conn.execute("UPDATE operators SET password_hash = $2, password_peppered = false WHERE id = $1",
                       row["id"], await hash_password(password))
    return True


async def _check(
    conn: asyncpg.Connection, row: asyncpg.Record | None, password: str, max_failures: int, lock_s: int,
    peppered: Peppered | None = None,
) -> SignIn:
    if row is None or len(password) > MAX_PASSWORD_CHARS:
        await _verify(_DUMMY_HASH, password[:MAX_PASSWORD_CHARS])
        return SignIn.UNKNOWN if row is None else SignIn.BAD_PASSWORD
    if row["disabled"]:
        return SignIn.DISABLED
    if row["locked_until"] is not None and row["locked_until"] > row["now"]:
        return SignIn.LOCKED
    if await _matches(conn, row, password, peppered):
        await conn.execute(
            "UPDATE operators SET failed_attempts = 0, locked_until = NULL, last_sign_in_at = now() WHERE id = $1",
            row["id"],
        )
        return SignIn.OK
    failures = row["failed_attempts"] + 1
    if failures >= max_failures:
        await conn.execute(
            "UPDATE operators SET failed_attempts = 0, locked_until = now() + make_interval(secs => $2)"
            " WHERE id = $1", row["id"], float(lock_s),
        )
        return SignIn.NOW_LOCKED
    await conn.execute("UPDATE operators SET failed_attempts = $2 WHERE id = $1", row["id"], failures)
    return SignIn.BAD_PASSWORD


async def change_password(
    conn: asyncpg.Connection, operator_id: int, old: str, new: str, *, min_length: int, keep_session: str | None,
    actor: str, cost: Argon2Cost = DEFAULT_COST,
) -> None:
    """Replace an operator's password after checking the old one; other sessions end.

    ``keep_session`` is the token hash of the session making the change (it stays open).
    """
    if len(new) < min_length or len(new) > MAX_PASSWORD_CHARS:
        raise OperatorError(f"a password has {min_length} to {MAX_PASSWORD_CHARS} characters")
    if new == old:
        raise OperatorError("the new password must differ from the old one")
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT name, password_hash FROM operators WHERE id = $1 FOR UPDATE", operator_id
        )
        if row is None:
            raise OperatorError("no such operator")
        if new.lower() == row["name"].lower():
            raise OperatorError("the password must not be the operator's name")
        if not await _verify(row["password_hash"], old):
            raise OperatorError("the current password is wrong")
        await conn.execute(
            "UPDATE operators SET password_hash = $2, must_change_password = false, password_changed_at = now(),"
            " password_peppered = false"
            " WHERE id = $1", operator_id, await hash_password(new, cost),
        )
        await conn.execute(
            "DELETE FROM operator_sessions WHERE operator_id = $1 AND token_hash IS DISTINCT FROM $2",
            operator_id, keep_session,
        )
        await record_action(conn, actor, "operator_password_change", row["name"], "own password")

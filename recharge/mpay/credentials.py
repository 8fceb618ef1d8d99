"""Passwords of a mobile payment account (SPEC 6.3): formats, hashing, checks, locks.

Three passwords per account — ``login`` (6–16 letters/digits), ``pay`` (6 digits, one for
the account and its wallet) and ``op`` (4–12 digits, off until enabled) — each stored as
argon2id (argon2-cffi) of HMAC-SHA256(pepper, password): salted by argon2, peppered by a
key-file key, so a stolen database alone cannot be brute-forced. Hashing runs in a worker
thread, never on the event loop.

C20: each password counts its consecutive wrong entries (``<kind>_failures``), zeroed by a
correct entry, a reset or a lock's end; the 5th wrong entry answers ``3003`` and locks that
password 24 h; while locked it is not checked. ``check`` must be called with the account
row locked (``SELECT … FOR UPDATE``) in the transaction that records the count, so
parallel guesses are counted one after the other and none slips past the limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from recharge.mpay.codes import Refused

FORMATS = {
    "login": re.compile(r"[A-Za-z0-9]{6,16}"),
    "pay": re.compile(r"[0-9]{6}"),
    "op": re.compile(r"[0-9]{4,12}"),
}
WRONG_CODE = {"login": "3001", "pay": "3002", "op": "3009"}
INITIAL_OP_PASSWORD = "1234"


class Hasher:
    """argon2id over the peppered password; ``hash``/``verify`` run in a thread."""

    def __init__(self, pepper: bytes, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._pepper = pepper
        self._argon = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)

    def __repr__(self) -> str:
        return "Hasher(<redacted>)"

    def _peppered(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()

    def hash_now(self, secret: str) -> str:
        return self._argon.hash(self._peppered(secret))

    def verify_now(self, stored: str, secret: str) -> bool:
        try:
            return bool(self._argon.verify(stored, self._peppered(secret)))
        except (VerificationError, InvalidHashError):
            return False

    async def hash(self, secret: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.hash_now, secret)

    async def verify(self, stored: str, secret: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(None, self.verify_now, stored, secret)


def generate(kind: str) -> str:
    """A new initial password: 8 letters/digits (login) or 6 digits (pay)."""
    if kind == "login":
        alphabet = string.ascii_letters + string.digits
        while True:
            word = "".join(secrets.choice(alphabet) for _ in range(8))
            if any(c.isalpha() for c in word) and any(c.isdigit() for c in word):
                return word
    return "".join(secrets.choice(string.digits) for _ in range(6))


def well_formed(kind: str, password: str) -> bool:
    return FORMATS[kind].fullmatch(password) is not None


@dataclass(frozen=True, slots=True)
class Policy:
    max_failures: int
    lock: dt.timedelta


def locked(row: asyncpg.Record, kind: str, now: dt.datetime) -> bool:
    until = row[f"{kind}_locked_until"]
    return until is not None and until > now


def ensure_usable(row: asyncpg.Record, kind: str, now: dt.datetime) -> None:
    """The state checks at a command word: ``3003`` while locked, ``3004`` for an initial pay password."""
    if locked(row, kind, now):
        raise Refused("3003")
    if kind == "pay" and row["pay_initial"]:
        raise Refused("3004")


async def check(
    conn: asyncpg.Connection, hasher: Hasher, policy: Policy, row: asyncpg.Record, kind: str, given: str,
    now: dt.datetime,
) -> None:
    """Verify ``given`` against the (locked) account row; count and lock on failure.

    Raises ``Refused`` with 3003 (locked, or this entry locked it) or the kind's wrong-password
    code with the tries left. A correct entry zeroes the count. Writes only the counter.
    """
    if locked(row, kind, now):
        raise Refused("3003")
    stored = row[f"{kind}_hash"]
    ok = stored is not None and well_formed(kind, given) and await hasher.verify(stored, given)
    failures = 0 if row[f"{kind}_locked_until"] is not None else int(row[f"{kind}_failures"])  # a lock's end zeroes
    if ok:
        if failures or row[f"{kind}_locked_until"] is not None:
            await _set_failures(conn, row["id"], kind, 0, None)
        return
    failures += 1
    if failures >= policy.max_failures:
        await _set_failures(conn, row["id"], kind, failures, now + policy.lock)
        raise Refused("3003")
    await _set_failures(conn, row["id"], kind, failures, None)
    raise Refused(WRONG_CODE[kind], None if kind == "login" else policy.max_failures - failures)


def tries_left(row: asyncpg.Record, kind: str, policy: Policy) -> int:
    """n of 3002/3009 for an entry that is not counted (a dialogue's non-password text)."""
    failures = 0 if row[f"{kind}_locked_until"] is not None else int(row[f"{kind}_failures"])
    return policy.max_failures - failures


async def _set_failures(
    conn: asyncpg.Connection, account: int, kind: str, failures: int, until: dt.datetime | None
) -> None:
    column = {"login": "login", "pay": "pay", "op": "op"}[kind]  # never a caller's text in SQL
    await conn.execute(
        f"UPDATE mpay_accounts SET {column}_failures = $2, {column}_locked_until = $3 WHERE id = $1",
        account,
        failures,
        until,
    )


async def replace(
    conn: asyncpg.Connection, hasher: Hasher, account: int, kind: str, new: str, *, initial: bool
) -> None:
    """Store a new password (a change, a reset): the count and any lock cleared."""
    column = {"login": "login", "pay": "pay", "op": "op"}[kind]
    initial_column = f", {column}_initial = {'true' if initial else 'false'}" if kind != "op" else ""
    await conn.execute(
        f"UPDATE mpay_accounts SET {column}_hash = $2, {column}_failures = 0, {column}_locked_until = NULL"
        f"{initial_column}, updated_at = now() WHERE id = $1",
        account,
        await hasher.hash(new),
    )


async def disable(conn: asyncpg.Connection, account: int, kind: str) -> None:
    """Turn an optional password off (the operation password, SPEC 6.3): no hash, no count, no lock."""
    column = {"op": "op"}[kind]  # only the operation password is optional
    await conn.execute(
        f"UPDATE mpay_accounts SET {column}_hash = NULL, {column}_failures = 0, {column}_locked_until = NULL,"
        " updated_at = now() WHERE id = $1",
        account,
    )

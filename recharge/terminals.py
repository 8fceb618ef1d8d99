"""DD recharge terminals' administration: register, enable or disable, unlock, sign-in history.

What ``rechargectl terminal …`` and the operator console share. Every change is recorded in
``operator_actions`` with who and why. A DD terminal is a ``terminals`` row with the PKI
number of its security module; the sign-in itself is the DD server's (``server.flows``).
"""

from __future__ import annotations

import re

import asyncpg

from recharge.operators.actions import record_action

_CODE_RE = re.compile(r"[0-9]{8}")
_MERCHANT_RE = re.compile(r"[0-9]{4}")


class TerminalError(ValueError):
    """A terminal change that cannot be done as asked; nothing changed."""


async def add_terminal(conn: asyncpg.Connection, *, code: str, merchant_code: str, pki_no: str,
                       actor: str = "operator") -> int:
    """Register a DD terminal of a merchant with its security module's PKI number."""
    if not _CODE_RE.fullmatch(code) or not _CODE_RE.fullmatch(pki_no) or not _MERCHANT_RE.fullmatch(merchant_code):
        raise TerminalError("a terminal code and a PKI number are 8 digits, a merchant code 4")
    async with conn.transaction():
        merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE code = $1", merchant_code)
        if merchant_id is None:
            raise TerminalError(f"merchant {merchant_code} not found")
        try:
            terminal_id = await conn.fetchval(
                "INSERT INTO terminals (code, merchant_id, kind, pki_no) VALUES ($1, $2, 'pos', $3) RETURNING id",
                code, merchant_id, pki_no,
            )
        except asyncpg.UniqueViolationError:
            raise TerminalError("a terminal with this code or PKI number already exists") from None
        await record_action(conn, actor, "terminal_add", code, "operator request", merchant=merchant_code, pki=pki_no)
    return int(terminal_id)


async def unlock_terminal(conn: asyncpg.Connection, *, code: str, actor: str, reason: str) -> bool:
    """Unlock a terminal locked by failed sign-ins or by an operator (the lock streak starts again);
    False when there is no such terminal."""
    status = await conn.execute(
        "UPDATE terminals SET locked = false, signin_failures = 0, signin_locks = 0, signin_locked_until = NULL"
        " WHERE code = $1", code,
    )
    if not status.endswith(" 1"):
        return False
    await record_action(conn, actor, "terminal_unlock", code, reason)
    return True


async def set_terminal_enabled(conn: asyncpg.Connection, *, code: str, enabled: bool, actor: str, reason: str) -> None:
    """Enable or disable a terminal (a disabled one cannot sign in nor trade)."""
    async with conn.transaction():
        status = await conn.execute("UPDATE terminals SET enabled = $2 WHERE code = $1", code, enabled)
        if not status.endswith(" 1"):
            raise TerminalError(f"terminal {code} not found")
        await record_action(conn, actor, "terminal_enable" if enabled else "terminal_disable", code, reason)


async def record_signin(conn: asyncpg.Connection, code: str, outcome: str) -> None:
    """One line of a terminal's sign-in history (``ok`` or the failure's reason)."""
    await conn.execute("INSERT INTO terminal_signins (terminal_code, outcome) VALUES ($1, $2)", code, outcome)


async def signin_history(conn: asyncpg.Connection, code: str, *, limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        "SELECT outcome, created_at FROM terminal_signins WHERE terminal_code = $1"
        " ORDER BY created_at DESC, id DESC LIMIT $2", code, limit,
    ))

"""Sequence numbers of STK cards and POS terminals (SPEC 7.2, 7.4): a request must carry a ``seq`` above the
highest accepted from its sender; a parsed-JSON-equal repeat of an accepted one gets its stored reply, byte for
byte; anything lower, or a stored ``seq`` with another body, is ``1002``. Gaps are allowed.

``claim`` and ``store`` run inside the caller's transaction, around the operation itself, so a reply is stored
exactly when the operation's effects commit. The sender's head row is locked: requests of one sender run one
at a time.

The body is kept ``without_secrets``: the values of the secret fields (a prepaid card's PIN, pay, operation and
new passwords) are replaced by their keyed MAC, so a repeat is still recognised field for field and no secret is
stored in clear (found by the chaos harness's secrets test: the STK card recharge kept its PIN).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg


class Verdict(StrEnum):
    NEW = "new"  # process it, then ``store`` its reply
    REPEAT = "repeat"  # answer ``reply`` again, change nothing
    REFUSED = "refused"  # 1002: lower than the highest accepted, or a stored seq with another body


@dataclass(frozen=True, slots=True)
class Claim:
    verdict: Verdict
    reply: bytes | None = None


SECRET_FIELDS = frozenset(("pin", "pay_password", "op_password", "old", "new"))


def without_secrets(body: Any, mac: Callable[[bytes], bytes]) -> Any:
    """``body`` with every secret field's value (at any depth) replaced by ``"mac:" + hex(mac(its JSON))``."""
    if isinstance(body, dict):
        return {k: "mac:" + mac(json.dumps(v).encode()).hex() if k in SECRET_FIELDS else without_secrets(v, mac)
                for k, v in body.items()}
    if isinstance(body, list):
        return [without_secrets(v, mac) for v in body]
    return body


async def claim(conn: asyncpg.Connection, sender: str, seq: int, body: Any) -> Claim:
    """Where ``seq`` from ``sender`` stands; locks the sender until the transaction ends."""
    await conn.execute(
        "INSERT INTO wallet_seq_heads (sender, last_seq) VALUES ($1, 0) ON CONFLICT DO NOTHING", sender
    )
    last = await conn.fetchval("SELECT last_seq FROM wallet_seq_heads WHERE sender = $1 FOR UPDATE", sender)
    if seq > last:
        return Claim(Verdict.NEW)
    row = await conn.fetchrow(
        "SELECT body = $3::jsonb AS same, reply FROM wallet_seq_replies WHERE sender = $1 AND seq = $2",
        sender, seq, body,
    )
    if row is None or not row["same"]:
        return Claim(Verdict.REFUSED)
    return Claim(Verdict.REPEAT, bytes(row["reply"]))


async def store(conn: asyncpg.Connection, sender: str, seq: int, body: Any, reply: bytes) -> None:
    """Keep the reply of an accepted ``seq`` and make it the sender's highest."""
    await conn.execute(
        "INSERT INTO wallet_seq_replies (sender, seq, body, reply) VALUES ($1, $2, $3::jsonb, $4)",
        sender, seq, body, reply,
    )
    await conn.execute("UPDATE wallet_seq_heads SET last_seq = $2 WHERE sender = $1", sender, seq)

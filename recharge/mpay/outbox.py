"""Outbound SMS as a transactional outbox (SPEC 6.8): notices written with their business change.

``enqueue`` adds an ``mpay_outbox`` row inside the caller's transaction, so a notice
exists exactly when its change committed. A sensitive text (passwords, OTPs) is stored only
encrypted (AES-256-GCM under the key file's outbox key) and erased once sent or failed.
A notice for a detached account's former MSISDN is kept ``suppressed`` (SPEC 6.2: shown on
the website, never sent). The dispatcher (``recharge.mpay.dispatcher``) delivers the rest.
"""

from __future__ import annotations

import uuid

import asyncpg
from Crypto.Cipher import AES
from Crypto.Random import get_random_bytes

from recharge.mpay.keyring import MpayKeys
from recharge.mpay.text import SHANGHAI

_NONCE = 12
_TAG = 16


def seal(keys: MpayKeys, text: str) -> bytes:
    nonce = get_random_bytes(_NONCE)
    cipher = AES.new(keys.outbox, AES.MODE_GCM, nonce=nonce)
    body, tag = cipher.encrypt_and_digest(text.encode("utf-8"))
    return nonce + tag + body


def unseal(keys: MpayKeys, blob: bytes) -> str:
    nonce, tag, body = blob[:_NONCE], blob[_NONCE:_NONCE + _TAG], blob[_NONCE + _TAG:]
    cipher = AES.new(keys.outbox, AES.MODE_GCM, nonce=nonce)
    return cipher.decrypt_and_verify(body, tag).decode("utf-8")


async def enqueue(
    conn: asyncpg.Connection,
    keys: MpayKeys,
    msisdn: str | None,
    text: str,
    *,
    sensitive: bool = False,
    account_id: int | None = None,
    suppressed: bool = False,
) -> uuid.UUID | None:
    """Queue one SMS (in the caller's transaction); None when there is no number to send to."""
    if msisdn is None:
        return None
    message_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO mpay_outbox (id, msisdn, account_id, text, text_enc, sensitive, state)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        message_id,
        msisdn,
        account_id,
        None if sensitive else text,
        seal(keys, text) if sensitive else None,
        sensitive,
        "suppressed" if suppressed else "pending",
    )
    return message_id


async def notify(conn: asyncpg.Connection, keys: MpayKeys, account: asyncpg.Record, text: str,
                 *, sensitive: bool = False) -> uuid.UUID | None:
    """A notice to an account's holder: its MSISDN, or kept suppressed when it is detached."""
    if account["msisdn"] is None:
        return await enqueue(conn, keys, account["former_msisdn"], text, sensitive=sensitive,
                             account_id=account["id"], suppressed=True)
    return await enqueue(conn, keys, account["msisdn"], text, sensitive=sensitive, account_id=account["id"])


def text_of(keys: MpayKeys, row: asyncpg.Record) -> str | None:
    """The clear text of an outbox row (decrypted when sensitive), None once erased."""
    if row["text_enc"] is not None:
        return unseal(keys, bytes(row["text_enc"]))
    return row["text"]


async def drain_sink(conn: asyncpg.Connection, keys: MpayKeys, msisdn: str) -> list[tuple[str, str, str]]:
    """The demo SMS sink (no Kannel configured): a number's pending notices, then marked sent
    (sensitive texts erased). Returns (id, created_at RFC 3339, text), oldest first."""
    rows = await conn.fetch(
        "SELECT id, created_at, text, text_enc FROM mpay_outbox WHERE msisdn = $1 AND state = 'pending'"
        " ORDER BY created_at, id FOR UPDATE",
        msisdn,
    )
    items = [(str(r["id"]), r["created_at"], text_of(keys, r) or "") for r in rows]
    if rows:
        await conn.execute(
            "UPDATE mpay_outbox SET state = 'sent', sent_at = now(), attempts = attempts + 1,"
            " text_enc = NULL WHERE id = ANY($1::uuid[])",
            [r["id"] for r in rows],
        )
    return [(i, t.astimezone(SHANGHAI).isoformat(timespec="seconds"), text) for i, t, text in items]

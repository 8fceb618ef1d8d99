"""Merchants of remote payments (SPEC 6.4): registration, keys, and their request signatures.

A merchant (``[A-Z0-9]{4,16}``, name ≤ 20 characters shown in texts, one category of 6.2)
signs each request with RSASSA-PKCS1-v1_5/SHA-256 over
``timestamp "\\n" METHOD "\\n" path "\\n" request id "\\n"`` + the raw body. Its money sits
in the ledger account ``MER/<id>`` (no overdraft).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

import asyncpg
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

from recharge.mpay import postings

CATEGORIES = ("DIGITAL", "LOTTERY", "INSURANCE", "EDUCATION", "UTILITY", "TICKETING", "GENERAL")
CARD_CATEGORIES = frozenset({"DIGITAL", "LOTTERY", "INSURANCE", "EDUCATION"})  # 001 L218
ID_RE = re.compile(r"[A-Z0-9]{4,16}")
MIN_RSA_BITS = 2048


class MerchantError(Exception):
    """A merchant could not be added (the text says why)."""


def parse_public_key(pem: str) -> RSA.RsaKey:
    try:
        key = RSA.import_key(pem)
    except (ValueError, IndexError, TypeError):
        raise MerchantError("not an RSA public key in PEM") from None
    if key.has_private() or key.size_in_bits() < MIN_RSA_BITS:
        raise MerchantError(f"a public RSA key of at least {MIN_RSA_BITS} bits is needed")
    return key


async def add(conn: asyncpg.Connection, merchant_id: str, name: str, category: str, public_key_pem: str) -> None:
    if not ID_RE.fullmatch(merchant_id):
        raise MerchantError("ID must be 4-16 of [A-Z0-9]")
    if not 1 <= len(name) <= 20:
        raise MerchantError("name must be 1-20 characters")
    if category not in CATEGORIES:
        raise MerchantError(f"category must be one of {', '.join(CATEGORIES)}")
    parse_public_key(public_key_pem)
    await conn.execute(
        "INSERT INTO mpay_merchants (id, name, category, public_key_pem) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO UPDATE SET name = $2, category = $3, public_key_pem = $4",
        merchant_id, name, category, public_key_pem,
    )


async def get(conn: asyncpg.Connection, merchant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM mpay_merchants WHERE id = $1", merchant_id)


def signed_message(timestamp: str, method: str, path: str, request_id: str, body: bytes) -> bytes:
    return f"{timestamp}\n{method}\n{path}\n{request_id}\n".encode() + body


def decode_sign(sign: str) -> bytes | None:
    """The signature bytes of a ``Sign`` header (standard base64), None if it is not base64."""
    try:
        return base64.b64decode(sign.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def verify(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    try:
        pkcs1_15.new(RSA.import_key(public_key_pem)).verify(SHA256.new(message), signature)
    except (ValueError, TypeError):
        return False
    return True


def sign(private_key_pem: str | bytes, message: bytes) -> str:
    """A ``Sign`` value (what a merchant computes; tests, the demo and Locust use it)."""
    key = RSA.import_key(private_key_pem)
    return base64.b64encode(pkcs1_15.new(key).sign(SHA256.new(message))).decode("ascii")


async def payout_all(conn: asyncpg.Connection, day: str, cutoff: dt.datetime) -> list[tuple[str, int]]:
    """The working day's merchant payout batch, once per ``day`` (the transfer id names merchant and
    day, so a re-run is a no-op): each merchant's available balance ``MER → PAYOUT``, less what was
    credited to it at or after ``cutoff`` (that day's 17:00: the next batch's money)."""
    paid = []
    payout = await postings.account_id(conn, "PAYOUT")
    for row in await conn.fetch("SELECT id FROM mpay_merchants ORDER BY id"):
        account = await postings.account_id(conn, f"MER/{row['id']}")
        late = await conn.fetchval("SELECT coalesce(sum(amount), 0)::bigint FROM transfers WHERE credit_account_id = $1"
                                   " AND kind IN ('single', 'post') AND created_at >= $2", account, cutoff)
        amount = (await postings.buckets(conn, account))[account].available - late
        transfer_id = f"mpay:merpayout:{row['id']}:{day}"
        if amount <= 0 or await conn.fetchval("SELECT 1 FROM transfers WHERE id = $1", transfer_id):
            continue
        await postings.must(conn, [postings.Move(transfer_id, account, payout, amount, "mpay_merchant_payout",
                                                 day)])
        paid.append((row["id"], amount))
    return paid

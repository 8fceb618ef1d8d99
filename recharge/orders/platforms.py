"""Third-party platforms of the order API: registration, their RSA public keys per
``crt_version``, key-pair generation for test clients, and the ``Sign`` check (SPEC 2).

``Sign`` is an RSA signature, PKCS#1 v1.5 over SHA-256, base64, of the text
``timestamp + version + platformRaw + crt_version + data`` (each value as its decimal or
string form, concatenated without separators, UTF-8).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

from recharge import merchants
from recharge.operators.actions import record_action


class PlatformError(Exception):
    """A platform or key could not be registered; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class OrderPlatform:
    id: int
    platform_raw: str
    name: str
    merchant_id: int
    enabled: bool
    pki_no: str | None


def is_platform_raw(text: str) -> bool:
    """platformRaw is an int in the seed: 1 to 9 decimal digits, no leading zero."""
    return text.isascii() and text.isdigit() and len(text) <= 9 and not (len(text) > 1 and text[0] == "0")


async def get_platform(conn: asyncpg.Connection, platform_raw: str) -> OrderPlatform | None:
    row = await conn.fetchrow(
        "SELECT id, platform_raw, name, merchant_id, enabled, pki_no FROM platforms WHERE platform_raw = $1",
        platform_raw,
    )
    return OrderPlatform(**dict(row)) if row else None


async def get_public_key_pem(conn: asyncpg.Connection, platform_id: int, crt_version: str) -> str | None:
    value = await conn.fetchval(
        "SELECT public_key_pem FROM platform_keys WHERE platform_id = $1 AND crt_version = $2 AND enabled",
        platform_id,
        crt_version,
    )
    return str(value) if value is not None else None


def parse_public_key(pem: str | bytes, *, min_bits: int) -> RSA.RsaKey:
    """An RSA public key from PEM; a private key is refused (it must never reach us)."""
    try:
        key = RSA.import_key(pem)
    except (ValueError, IndexError, TypeError):
        raise PlatformError("not an RSA public key in PEM form") from None
    if key.has_private():
        raise PlatformError("this is a private key; register the public key only")
    if key.size_in_bits() < min_bits:
        raise PlatformError(f"RSA key of {key.size_in_bits()} bits; at least {min_bits} required")
    return key


@functools.lru_cache(maxsize=256)
def _cached_key(pem: str) -> RSA.RsaKey:
    return RSA.import_key(pem)


def sign_message(timestamp: object, version: object, platform_raw: object, crt_version: object, data: str) -> bytes:
    return f"{timestamp}{version}{platform_raw}{crt_version}{data}".encode()


def signature_bytes(sign_b64: str) -> bytes | None:
    """The signature ``Sign`` spells, or None when it is not base64.

    Base64 leaves spare bits in its last character (a 256-byte signature ends in one byte,
    two characters and ``==``: 16 spellings of the same bytes), so anything that must
    recognise a signature again (replay detection) keys on these bytes, never on the text.
    """
    try:
        return base64.b64decode(sign_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def verify_sign(public_key_pem: str, message: bytes, sign_b64: str) -> bool:
    """True when ``sign_b64`` is a valid signature of ``message`` under the key."""
    signature = signature_bytes(sign_b64)
    if signature is None:
        return False
    key = _cached_key(public_key_pem)
    if len(signature) != (key.size_in_bits() + 7) // 8:
        return False
    try:
        pkcs1_15.new(key).verify(SHA256.new(message), signature)
    except ValueError:
        return False
    return True


def sign(private_key_pem: str | bytes, message: bytes) -> str:
    """What a client does: the base64 ``Sign`` of ``message`` (tests and the CLI use it)."""
    key = RSA.import_key(private_key_pem)
    return base64.b64encode(pkcs1_15.new(key).sign(SHA256.new(message))).decode("ascii")


def generate_key_pair(private_key_path: Path, *, bits: int = 2048) -> str:
    """Write a new private key (PEM, mode 0600; never overwrites) and return the public PEM."""
    key = RSA.generate(bits)
    private_key_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(private_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PlatformError(f"{private_key_path} exists; not overwriting a private key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_key("PEM"))
    return key.publickey().export_key("PEM").decode("ascii")


def public_key_of_private_file(private_key_path: Path) -> str:
    key = RSA.import_key(private_key_path.read_bytes())
    return key.publickey().export_key("PEM").decode("ascii")


async def register_platform(
    conn: asyncpg.Connection,
    *,
    platform_raw: str,
    name: str,
    merchant_code: str,
    merchant_name: str | None = None,
    pki_no: str | None = None,
) -> OrderPlatform:
    """Create the platform (and its merchant when missing), or return it when it matches."""
    if not is_platform_raw(platform_raw):
        raise PlatformError("platformRaw must be a decimal integer of 1 to 9 digits")
    if not (len(merchant_code) == 4 and merchant_code.isascii() and merchant_code.isdigit()):
        raise PlatformError("merchant code must be 4 digits")
    if pki_no is not None and not (len(pki_no) == 8 and pki_no.isascii() and pki_no.isdigit()):
        raise PlatformError("PKI number must be 8 digits")
    async with conn.transaction():
        merchant_id = await merchants.ensure_merchant(conn, merchant_code, merchant_name or name)
        existing = await get_platform(conn, platform_raw)
        if existing is not None:
            if existing.merchant_id != merchant_id:
                raise PlatformError(f"platform {platform_raw} is registered to another merchant")
            if pki_no is not None and existing.pki_no != pki_no:
                await conn.execute("UPDATE platforms SET pki_no = $2 WHERE id = $1", existing.id, pki_no)
                existing = await get_platform(conn, platform_raw)
            assert existing is not None
            return existing
        await conn.execute(
            "INSERT INTO platforms (platform_raw, name, merchant_id, pki_no) VALUES ($1, $2, $3, $4)",
            platform_raw,
            name,
            merchant_id,
            pki_no,
        )
        created = await get_platform(conn, platform_raw)
    assert created is not None
    return created


async def add_public_key(
    conn: asyncpg.Connection, platform_id: int, crt_version: str, public_key_pem: str, *, min_bits: int
) -> bool:
    """Register the key for ``crt_version``; True if added, False if that exact key was there.

    A different key under an existing ``crt_version`` is refused: a platform rotates keys by
    registering a new ``crt_version``.
    """
    if not (crt_version.isascii() and crt_version.isdigit() and len(crt_version) <= 9):
        raise PlatformError("crt_version must be a decimal integer")
    canonical = parse_public_key(public_key_pem, min_bits=min_bits).export_key("PEM").decode("ascii")
    existing = await conn.fetchval(
        "SELECT public_key_pem FROM platform_keys WHERE platform_id = $1 AND crt_version = $2",
        platform_id,
        crt_version,
    )
    if existing is not None:
        if existing == canonical:
            return False
        raise PlatformError(f"crt_version {crt_version} already has another key; register a new version")
    await conn.execute(
        "INSERT INTO platform_keys (platform_id, crt_version, public_key_pem) VALUES ($1, $2, $3)",
        platform_id,
        crt_version,
        canonical,
    )
    return True


async def register_with_key(
    conn: asyncpg.Connection, *, platform_raw: str, name: str, merchant_code: str, crt_version: str,
    public_key_pem: str, min_bits: int, actor: str, merchant_name: str | None = None, pki_no: str | None = None,
) -> tuple[OrderPlatform, bool]:
    """Register a platform (or find it) and its public key in one transaction, recorded in the
    audit trail; (the platform, whether the key was new)."""
    async with conn.transaction():
        platform = await register_platform(conn, platform_raw=platform_raw, name=name, merchant_code=merchant_code,
                                           merchant_name=merchant_name, pki_no=pki_no)
        added = await add_public_key(conn, platform.id, crt_version, public_key_pem, min_bits=min_bits)
        await record_action(conn, actor, "platform_register", platform_raw, "operator request",
                            crt_version=crt_version, key_added=added, merchant=merchant_code)
    return platform, added


async def set_enabled(
    conn: asyncpg.Connection, platform_raw: str, enabled: bool, *, actor: str, reason: str,
    crt_version: str | None = None,
) -> None:
    """Enable or disable a platform, or only one of its keys (``crt_version``). A disabled
    platform's requests answer ``unknown_platform``."""
    async with conn.transaction():
        platform = await get_platform(conn, platform_raw)
        if platform is None:
            raise PlatformError(f"platform {platform_raw} is not registered")
        if crt_version is None:
            await conn.execute("UPDATE platforms SET enabled = $2 WHERE id = $1", platform.id, enabled)
        else:
            status = await conn.execute(
                "UPDATE platform_keys SET enabled = $3 WHERE platform_id = $1 AND crt_version = $2",
                platform.id, crt_version, enabled,
            )
            if not status.endswith(" 1"):
                raise PlatformError(f"platform {platform_raw} has no key crt_version {crt_version}")
        what = "platform" if crt_version is None else "platform_key"
        await record_action(conn, actor, f"{what}_{'enable' if enabled else 'disable'}",
                            platform_raw if crt_version is None else f"{platform_raw}:{crt_version}", reason)

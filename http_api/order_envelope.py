"""The order-API envelope (SPEC 2, seed 004 3.2.1): seal and open ``data`` and its ``mac``.

Key: the 16 raw bytes of MD5(decimal timestamp text), a two-key 3DES key; ``data``: 3DES-ECB
of the UTF-8 plaintext, zero-padded to whole blocks, as hex; ``mac``: the last 8 hex digits,
upper case, of MD5 over the compact JSON of every field of the message but ``mac``, in the
order they travel (docs/PROTOCOL.md, "Order-API envelope"). The 3DES blocks come from
``core_ext``; everything else here is plain Python (nothing in it gains from compiling).

Each seal or open computes the mac exactly once, over the fields as they travel: the
platform sends ``timestamp`` first and ``data`` last; a client that puts ``Sign`` after
``data`` macs its fields in that order and is accepted too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from core_ext import des3_decrypt, des3_encrypt

BLOCK = 8


class EnvelopeError(ValueError):
    """An order-API envelope that does not decode: bad hex, bad padding, or a wrong mac."""


def _digits(timestamp: str) -> str:
    if not timestamp.isascii() or not timestamp.isdigit():
        raise EnvelopeError("timestamp must be decimal digits")
    return timestamp


def envelope_key(timestamp: str) -> bytes:
    """MD5 of the timestamp's decimal digits: the envelope's (public) 3DES key."""
    return hashlib.md5(_digits(timestamp).encode("ascii")).digest()


def envelope_mac(fields: Mapping[str, object]) -> str:
    """MD5 of the compact JSON of every field but ``mac``, in order; its last 8 hex digits, upper case."""
    text = json.dumps({k: v for k, v in fields.items() if k != "mac"}, separators=(",", ":"), ensure_ascii=False)
    return hashlib.md5(text.encode("utf-8")).hexdigest()[-8:].upper()


# The name the order API's callers know it by: the mac of a message as it travels.
wire_mac = envelope_mac


def encrypt_data(timestamp: str, plaintext: str, *, lowercase: bool = False) -> str:
    """``data`` alone: 3DES-ECB under MD5(timestamp), zero padding, hex (for a caller that macs later)."""
    key = envelope_key(timestamp)
    raw = plaintext.encode("utf-8")
    if raw.endswith(b"\x00"):
        raise EnvelopeError("plaintext may not end with NUL (zero padding)")
    data = des3_encrypt(key, raw + b"\x00" * (-len(raw) % BLOCK)).hex()
    return data if lowercase else data.upper()


def envelope_encrypt(
    timestamp: str, plaintext: str, *, clear: Mapping[str, object] | None = None, lowercase: bool = False
) -> tuple[str, str]:
    """(data, mac): the mac over timestamp, ``clear`` and data, in that order (the seed's reply order)."""
    data = encrypt_data(timestamp, plaintext, lowercase=lowercase)
    return data, envelope_mac({"timestamp": int(_digits(timestamp)), **(clear or {}), "data": data})


def open_envelope(message: Mapping[str, Any]) -> str:
    """The plaintext of a message's ``data``, its mac checked over its fields in wire order.

    ``message`` must hold an int ``timestamp`` and str ``data`` and ``mac``; EnvelopeError on a
    wrong mac, hex or padding.
    """
    return _open(str(message["timestamp"]), message["data"], message["mac"], message)


def envelope_decrypt(
    timestamp: str, data_hex: str, mac_hex: str, *, clear: Mapping[str, object] | None = None
) -> str:
    """The plaintext of an envelope whose fields are timestamp, ``clear``, data (in that order)."""
    fields = {"timestamp": int(_digits(timestamp)), **(clear or {}), "data": data_hex}
    return _open(timestamp, data_hex, mac_hex, fields)


def _open(timestamp: str, data_hex: str, mac_hex: str, fields: Mapping[str, object]) -> str:
    key = envelope_key(timestamp)
    if len(data_hex) % (2 * BLOCK) or not data_hex.isascii():
        raise EnvelopeError("data is not whole 3DES blocks of hex")
    try:
        raw = bytes.fromhex(data_hex)
    except ValueError:
        raise EnvelopeError("data is not hex") from None
    if 2 * len(raw) != len(data_hex):  # fromhex skips whitespace; the wire may not hold any
        raise EnvelopeError("data is not hex")
    if not hmac.compare_digest(envelope_mac(fields).encode("ascii"), mac_hex.upper().encode("ascii", "replace")):
        raise EnvelopeError("mac does not match")
    plain = des3_decrypt(key, raw)
    stripped = plain.rstrip(b"\x00")
    if len(plain) - len(stripped) >= BLOCK:
        raise EnvelopeError("bad padding")
    try:
        return stripped.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("plaintext is not UTF-8") from None

"""A client-side helper of the order API for tests, load tests and integrators: builds a
signed, enveloped request from the fields in clear and the fields to encrypt, and opens a
reply (checks its mac, decrypts its data). No I/O: send the body with any HTTP client."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from http_api.order_envelope import EnvelopeError, encrypt_data, envelope_mac, open_envelope, wire_mac
from recharge.orders.platforms import sign, sign_message


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    platform_raw: int
    crt_version: int
    private_key_pem: str
    version: str = "v2"


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def build_request(
    who: ClientIdentity,
    secret: dict[str, Any],
    *,
    timestamp: int | None = None,
    extra_clear: dict[str, Any] | None = None,
    plaintext: str | None = None,
) -> dict[str, Any]:
    """The request body: clear fields, ``data`` (``secret`` as compact JSON, or ``plaintext``
    verbatim), ``Sign`` and ``mac`` — in that order, which is the order the mac covers."""
    ts = timestamp if timestamp is not None else time.time_ns() // 1_000_000  # ms: distinct Signs
    text = plaintext if plaintext is not None else compact(secret)
    data = encrypt_data(str(ts), text)
    return seal(who, data, timestamp=ts, extra_clear=extra_clear)


def seal(
    who: ClientIdentity,
    data: str,
    *,
    timestamp: int,
    extra_clear: dict[str, Any] | None = None,
    sign_value: str | None = None,
) -> dict[str, Any]:
    """Sign and mac an already encrypted ``data`` (or any string standing in for it)."""
    body: dict[str, Any] = {
        "timestamp": timestamp,
        "version": who.version,
        "platformRaw": who.platform_raw,
        "crt_version": who.crt_version,
        **(extra_clear or {}),
    }
    body["Sign"] = sign_value if sign_value is not None else sign(
        who.private_key_pem, sign_message(timestamp, who.version, who.platform_raw, who.crt_version, data)
    )
    body["data"] = data
    return remac(body)


def remac(body: dict[str, Any]) -> dict[str, Any]:
    """Recompute ``mac`` over the body as the platform does: timestamp first, data last."""
    fields = {k: v for k, v in body.items() if k not in ("mac", "data")}
    ordered = {"timestamp": fields.pop("timestamp"), **fields, "data": body["data"]}
    return {**ordered, "mac": envelope_mac(ordered)}


def open_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply's clear fields merged with its decrypted ``data`` (mac checked)."""
    clear = {k: v for k, v in reply.items() if k not in ("timestamp", "data", "mac")}
    if "data" not in reply:
        if wire_mac(reply) != reply.get("mac"):
            raise EnvelopeError("mac does not match")
        return dict(clear)
    plaintext = open_envelope(reply)
    opened: dict[str, Any] = json.loads(plaintext)
    return {**clear, **opened}

"""Opening an order-API envelope as it arrived (seed 004 3.2.1): the mac is checked over the
message's fields in wire order, then ``data`` is decrypted by ``core_ext``.

``core_ext.envelope_decrypt`` computes the mac in the order timestamp, clear fields, data —
the order of every example in the seed, and of everything this platform sends. A client
that sends ``data`` before another clear field (``{"timestamp", "data", "Sign", "mac"}``)
macs its fields in that order; this module accepts that too, so the rule is simply "MD5 of
every field but mac, as sent".
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import core_ext


def wire_mac(message: Mapping[str, Any]) -> str:
    """The mac of a message: over every field but ``mac``, in the order they appear."""
    return core_ext.envelope_mac({k: v for k, v in message.items() if k != "mac"})


def open_envelope(message: Mapping[str, Any]) -> str:
    """The plaintext of ``data``; ``core_ext.EnvelopeError`` on a wrong mac, hex or padding.

    ``message`` must hold an int ``timestamp`` and str ``data`` and ``mac``.
    """
    timestamp, data, mac = message["timestamp"], message["data"], message["mac"]
    clear = {k: v for k, v in message.items() if k not in ("timestamp", "data", "mac")}
    if len(data) % 16 == 0 and data.isascii():  # otherwise core_ext names the hex problem
        if not hmac.compare_digest(wire_mac(message).encode(), mac.upper().encode("ascii", "replace")):
            raise core_ext.EnvelopeError("mac does not match")
        mac = core_ext.envelope_mac({"timestamp": timestamp, **clear, "data": data})
    return core_ext.envelope_decrypt(str(timestamp), data, mac, clear=clear)

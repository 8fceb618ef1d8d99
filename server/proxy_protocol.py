"""The PROXY protocol v2 header (HAProxy's ``send-proxy-v2``), read sans-IO from trusted peers only.

A load balancer in TCP mode hides the terminal's address; with ``send-proxy-v2`` it opens each
connection with a binary header naming the real source. That header is believed only from a
peer listed in ``trusted_proxies``: from anyone else it would let a terminal claim any address,
so the connection is refused. A trusted peer must send it (HAProxy's own health checks send
the ``LOCAL`` command, which keeps the peer's address).

Format (haproxy.org/download/2.6/doc/proxy-protocol.txt, section 2.2): a 12-byte signature,
one byte version (2) and command (0 LOCAL, 1 PROXY), one byte family and transport, a 16-bit
big-endian length, then the addresses (IPv4: 4+4+2+2 bytes, IPv6: 16+16+2+2) and optional
TLVs, which are skipped. A 60-line parser is simpler to audit than a dependency for it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER_FIXED = 16
# Addresses plus TLVs; HAProxy's own TLVs (unique id, SSL info) stay far below this.
MAX_ADDRESS_BLOCK = 512

_FAMILIES = {0x11: (4, "!4s4sHH"), 0x21: (16, "!16s16sHH")}  # TCP over IPv4 / IPv6


class ProxyHeaderError(ValueError):
    """The bytes are not a PROXY v2 header this server accepts."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the header said: the client's address, or None for LOCAL (the proxy's own check)."""

    source: tuple[str, int] | None
    consumed: int  # header bytes; what follows is the client's own stream


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while more bytes are needed."""
    if len(data) < HEADER_FIXED:
        if not SIGNATURE.startswith(data[: len(SIGNATURE)]):
            raise ProxyHeaderError("no PROXY v2 signature")
        return None
    if data[:12] != SIGNATURE:
        raise ProxyHeaderError("no PROXY v2 signature")
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command not in (0, 1):
        raise ProxyHeaderError(f"unsupported version/command byte {data[12]:#04x}")
    family = data[13]
    (length,) = struct.unpack_from("!H", data, 14)
    if length > MAX_ADDRESS_BLOCK:
        raise ProxyHeaderError(f"address block of {length} bytes")
    if len(data) < HEADER_FIXED + length:
        return None
    consumed = HEADER_FIXED + length
    if command == 0:
        return ProxyHeader(None, consumed)
    layout = _FAMILIES.get(family)
    if layout is None:
        raise ProxyHeaderError(f"unsupported family/transport {family:#04x}")
    size, fmt = layout
    if length < 2 * size + 4:
        raise ProxyHeaderError("address block too short")
    source, _dest, source_port, _dest_port = struct.unpack_from(fmt, data, HEADER_FIXED)
    return ProxyHeader((str(ipaddress.ip_address(source)), source_port), consumed)


def build(source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """A PROXY v2 header as HAProxy sends it (for tests and the chaos proxy)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(dest[0])
    family = 0x11 if src.version == 4 else 0x21
    size, fmt = _FAMILIES[family]
    block = struct.pack(fmt, src.packed, dst.packed, source[1], dest[1])
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block

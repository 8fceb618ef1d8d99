"""Client addresses: which peers are trusted proxies, the address a request really came from, and
whether two addresses lie in one network (the DD sign-in binding)."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``trusted_proxies``: comma-separated addresses or CIDR blocks ("" = none)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _address(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of a host text (an IPv4-mapped IPv6 address as IPv4), or None."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(host: str | None, networks: tuple[Network, ...]) -> bool:
    address = _address(host)
    return address is not None and any(address in network for network in networks)


def same_network(a: str | None, b: str | None, ipv4_prefix: int, ipv6_prefix: int) -> bool:
    """Whether two client addresses share their first ``ipv4_prefix`` / ``ipv6_prefix`` bits (0:
    any two addresses of that family do). An address that does not parse matches only itself."""
    if a == b:
        return True
    x, y = _address(a), _address(b)
    if x is None or y is None or x.version != y.version:
        return False
    prefix = max(0, min(ipv4_prefix if x.version == 4 else ipv6_prefix, x.max_prefixlen))
    shift = x.max_prefixlen - prefix
    return int(x) >> shift == int(y) >> shift

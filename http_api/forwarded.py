"""The client's real address behind a trusted proxy: X-Forwarded-For, believed only from ``trusted_proxies``.

HAProxy in HTTP mode (``option forwardfor``) appends the address it accepted the connection
from to ``X-Forwarded-For``. Only the right-most entry is the proxy's own observation; the
rest came from the client and proves nothing, so only that entry is taken, and only when the
TCP peer is a trusted proxy. From anyone else the header is ignored: ``request.remote`` stays
the TCP peer, which is what the KaKaTong license keys' allowed networks are checked against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from recharge.network import Network, is_trusted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_client(header: str) -> str | None:
    """The right-most address of an X-Forwarded-For value, or None when it is not an address."""
    last = header.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


def real_client_middleware(trusted: tuple[Network, ...]) -> Middleware:
    @web.middleware
    async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted and is_trusted(request.remote, trusted):
            header = request.headers.get("X-Forwarded-For")
            if header is not None:
                client = forwarded_client(header)
                if client is None:
                    raise web.HTTPBadRequest(text="malformed X-Forwarded-For\n")
                request = request.clone(remote=client)
        return await handler(request)

    return real_client

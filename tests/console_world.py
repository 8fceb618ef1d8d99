"""A console user for the HTTP tests: an aiohttp client with its cookies, signing in through
the real sign-in form and posting forms with the tokens the pages carry."""

from __future__ import annotations

import re
import secrets
from typing import Any

import aiohttp
import asyncpg

from recharge.operators import accounts

_HIDDEN = re.compile(r'name="(csrf|form_token|login_csrf)" value="([^"]*)"')
PASSWORD = "correct horse battery"


def hidden(html: str) -> dict[str, str]:
    """The hidden tokens of the first form on the page (csrf, form_token, login_csrf)."""
    found: dict[str, str] = {}
    for name, value in _HIDDEN.findall(html):
        found.setdefault(name, value)
    return found


class ConsoleUser:
    def __init__(self, base: str) -> None:
        self.base = base
        # cookies for 127.0.0.1 need the "unsafe" jar (an IP address, not a domain)
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, allow_redirects=kw.pop("follow", False), **kw) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str], *, follow: bool = False) -> tuple[int, str, Any]:
        async with self.session.post(self.base + path, data=data, allow_redirects=follow) as r:
            return r.status, await r.text(), r

    async def form(self, page: str, action: str, data: dict[str, str], **kw: Any) -> tuple[int, str, Any]:
        """Open ``page``, take its tokens, post ``data`` to ``action`` like a browser would."""
        status, html, _ = await self.get(page)
        assert status == 200, (page, status, html[:500])
        return await self.post(action, {**hidden(html), **data}, **kw)

    async def sign_in(self, name: str, password: str) -> tuple[int, str, Any]:
        _, html, _ = await self.get("/console/login")
        return await self.post("/console/login", {**hidden(html), "name": name, "password": password})

    async def signed_in(self, name: str, otp: str, new_password: str = PASSWORD) -> None:
        status, _, r = await self.sign_in(name, otp)
        assert status == 303 and r.headers["Location"] == "/console/password", status
        status, _, r = await self.form("/console/password", "/console/password",
                                       {"old": otp, "new": new_password, "again": new_password})
        assert status == 303, status


async def new_operator(conn: asyncpg.Connection, role: str) -> tuple[str, str]:
    name = f"{role[:3]}{secrets.token_hex(4)}"
    _, otp = await accounts.add_operator(conn, name, role, actor="test")
    return name, otp

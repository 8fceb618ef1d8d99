"""Signing in and out, the forced change of a one-time password, the language switch.

The sign-in form carries a double-submit token (a cookie and the same value in the form),
since there is no session yet to hold a CSRF token. A successful sign-in opens a new server-side
session (a new random token: no session fixation) and sets its cookie.
"""

from __future__ import annotations

import hmac
import secrets

from aiohttp import web

from http_api import edge
from http_api.console.web import (
    LANG_COOKIE,
    LOGIN_CSRF_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    Console,
    Refusal,
    action,
    language,
    page,
    see_other,
    set_cookie,
)
from http_api.context import platform_of
from recharge.operators import accounts, sessions
from recharge.operators.accounts import SignIn

_REFUSED = {
    SignIn.BAD_PASSWORD: "Wrong name or password.",
    SignIn.UNKNOWN: "Wrong name or password.",
    SignIn.DISABLED: "Wrong name or password.",
    SignIn.LOCKED: "Too many wrong passwords: this account is locked for a while. Try again later.",
    SignIn.NOW_LOCKED: "Too many wrong passwords: this account is locked for a while. Try again later.",
}


def safe_next(target: str) -> str:
    """Only a path inside the console (never another site) may be the place to go back to."""
    if target.startswith(PREFIX + "/") and "//" not in target and "\\" not in target and "@" not in target:
        return target
    return PREFIX + "/"


def _login_page(console: Console, *, status: int = 200, error: str = "", name: str = "") -> web.Response:
    token = console.request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not 20 <= len(token) <= 64:
        token = secrets.token_urlsafe(24)
    response = console.render("login.html", status=status, error=error, name=name, login_csrf=token,
                              next=safe_next(console.query("next", max_chars=300)))
    set_cookie(console.request, response, LOGIN_CSRF_COOKIE, token)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    ctx = platform_of(request)
    return _login_page(Console(request, ctx, language(request)))


async def login(request: web.Request) -> web.StreamResponse:
    ctx = platform_of(request)
    console = Console(request, ctx, language(request))
    try:
        console.form = await request.post()
    except edge.FORM_ERRORS:
        return _login_page(console, status=400, error=console.t("The form could not be read; nothing was changed."))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    given = console.field("login_csrf", max_chars=64)
    if not cookie or not hmac.compare_digest(cookie.encode(), given.encode()):
        return _login_page(console, status=403, error=console.t("The sign-in form expired; please try again."))
    name = console.field("name", max_chars=64)
    password = console.form.get("password", "")
    s = ctx.settings
    async with ctx.acquire() as conn:
        outcome, operator = await accounts.authenticate(
            conn, name, password if isinstance(password, str) else "", max_failures=s.console_password_max_failures,
            lock_s=s.console_password_lock_s, remote=request.remote or "",
        )
        if outcome is not SignIn.OK or operator is None:
            return _login_page(console, status=401, error=console.t(_REFUSED[outcome]), name=name)
        token = await sessions.open_session(conn, operator.id, idle_s=s.console_session_idle_s,
                                            max_s=s.console_session_max_s)
        await sessions.purge_expired(conn, limit=100, signin_history_days=s.console_signin_history_days)
    target = PREFIX + "/password" if operator.must_change_password else safe_next(console.field("next", max_chars=300))
    response = see_other(target)
    set_cookie(request, response, SESSION_COOKIE, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path=f"{PREFIX}/")
    return response


@page("viewer", while_password_must_change=True)
async def password_form(console: Console) -> web.StreamResponse:
    return console.render("password.html", min_length=console.platform.settings.console_password_min_length)


@action("viewer", once=False, while_password_must_change=True)
async def change_password(console: Console) -> web.StreamResponse:
    old = console.field("old", max_chars=accounts.MAX_PASSWORD_CHARS)
    new = console.field("new", max_chars=accounts.MAX_PASSWORD_CHARS)
    if new != console.field("again", max_chars=accounts.MAX_PASSWORD_CHARS):
        raise Refusal(400, "The two new passwords differ; nothing was changed.")
    assert console.session is not None
    async with console.platform.acquire() as conn:
        await accounts.change_password(
            conn, console.operator.id, old, new, min_length=console.platform.settings.console_password_min_length,
            keep_session=console.session.token_hash, actor=console.actor,
            cost=accounts.Argon2Cost.of(console.platform.settings),
        )
    return console.redirect("/", msg="password_changed")


@action("viewer", once=False, while_password_must_change=True)
async def logout(console: Console) -> web.StreamResponse:
    assert console.session is not None
    async with console.platform.acquire() as conn:
        await sessions.close_session(conn, console.session.token_hash)
    response = console.redirect("/login", msg="signed_out")
    response.del_cookie(SESSION_COOKIE, path=f"{PREFIX}/")
    return response


async def switch_language(request: web.Request) -> web.StreamResponse:
    """``/console/lang?to=en&next=…``: a preference cookie only; no server-side state changes."""
    to = request.query.get("to", "zh")
    response = see_other(safe_next(request.query.get("next", PREFIX + "/")))
    set_cookie(request, response, LANG_COOKIE, to if to in ("zh", "en") else "zh", max_age=365 * 24 * 3600)
    return response


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/login", login_form)
    r.add_post(f"{PREFIX}/login", login)
    r.add_get(f"{PREFIX}/password", password_form)
    r.add_post(f"{PREFIX}/password", change_password)
    r.add_post(f"{PREFIX}/logout", logout)
    r.add_get(f"{PREFIX}/lang", switch_language)

"""The console's request plumbing: who is signed in and what their role may do, CSRF and
one-time form tokens, the security headers, the language, templates and pagination.

Pages are ``page(role)`` handlers (GET), changes are ``action(role)`` handlers (POST). An
action runs only with a live session, the session's CSRF token, a role that includes
``role``, a reason when the action moves money, and a form token not used before (so a
double-submitted form runs once); anything else is answered with a clear page and changes
nothing. Domain refusals (``AdminError``, ``OrderError`` …, the mobile payment room's
``Refused`` with its SPEC 6.10 code and text) become a 400 page with their text.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
import asyncpg
from aiohttp import web
from multidict import MultiDictProxy

from http_api import edge
from http_api.console.i18n import LANGS, ZH, translate
from http_api.context import platform_of
from recharge.context import Platform
from recharge.kkt.cards import AdminError
from recharge.mpay.codes import Refused
from recharge.mpay.codes import en as mpay_en
from recharge.mpay.codes import zh as mpay_zh
from recharge.operators import sessions
from recharge.operators.accounts import Operator, OperatorError
from recharge.orders.model import OrderError
from recharge.orders.platforms import PlatformError
from recharge.terminals import TerminalError

PREFIX = "/console"
SESSION_COOKIE = "console_session"
LANG_COOKIE = "console_lang"
LOGIN_CSRF_COOKIE = "console_login_csrf"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DOMAIN_REFUSALS = (AdminError, OrderError, OperatorError, PlatformError, TerminalError)


class Refusal(Exception):
    """Answer with an explanation page (``status``) and change nothing."""

    def __init__(self, status: int, message: str, **values: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.values = values


@dataclass
class Console:
    """One console request: the platform, the language, the session and its form."""

    request: web.Request
    platform: Platform
    lang: str
    session: sessions.Session | None = None
    form: MultiDictProxy[Any] | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def operator(self) -> Operator:
        assert self.session is not None
        return self.session.operator

    @property
    def actor(self) -> str:
        """Who, in the audit trail: the channel and the operator's name."""
        return f"console:{self.operator.name}"

    def t(self, text: str, **values: object) -> str:
        return translate(self.lang, text, **values)

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        if "msg" in context and f"msg:{context['msg']}" not in ZH:
            context["msg"] = ""  # only the console's own notices, never text from a crafted link
        base = {
            "t": self.t, "lang": self.lang, "session": self.session, "path": self.request.path_qs,
            "form_token": new_form_token, "csrf": self.session.csrf_token if self.session else "",
            "operator": self.session.operator if self.session else None, "url": url, "console": self,
        }
        response = aiohttp_jinja2.render_template(template, self.request, {**base, **context}, status=status)
        return secure(response)

    def redirect(self, path: str, **query: object) -> web.Response:
        return see_other(url(path, **query))

    def field(self, name: str, *, max_chars: int = 200) -> str:
        """A form field, stripped; too long is refused."""
        value = self.form.get(name, "") if self.form is not None else ""
        if not isinstance(value, str):
            raise Refusal(400, "Field {name} is not text", name=name)
        value = value.strip()
        if len(value) > max_chars:
            raise Refusal(400, "Field {name} is too long", name=name)
        return value

    def query(self, name: str, *, max_chars: int = 64) -> str:
        return self.request.query.get(name, "").strip()[:max_chars]


def url(path: str, **query: object) -> str:
    """A console path with its query (empty values left out)."""
    given = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{PREFIX}{path}" + (f"?{urlencode(given)}" if given else "")


def see_other(location: str) -> web.Response:
    """303 to a console path (never another site: callers pass console paths only)."""
    return secure(web.Response(status=303, headers={"Location": location}))


def new_form_token() -> str:
    """A fresh one-time token for a changing form (claimed when the form is submitted)."""
    return secrets.token_urlsafe(24)


def secure(response: web.StreamResponse) -> Any:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def language(request: web.Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "zh")
    return lang if lang in LANGS else "zh"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, *,
               max_age: int | None = None) -> None:
    """Console cookies: HttpOnly, SameSite=Strict, Secure over TLS, only for /console/."""
    response.set_cookie(name, value, max_age=max_age, path=f"{PREFIX}/", httponly=True, samesite="Strict",
                        secure=request.secure)


async def _session(request: web.Request, ctx: Platform) -> sessions.Session | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    async with ctx.acquire() as conn:
        return await sessions.session_of(conn, token, idle_s=ctx.settings.console_session_idle_s)


PageHandler = Callable[[Console], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def mpay_refusal(console: Console, exc: Refused) -> Refusal:
    text = mpay_zh(exc.code, exc.n) if console.lang == "zh" else mpay_en(exc.code, exc.n)
    return Refusal(400, "Refused: {why}", why=f"{exc.code} {text}")


def _refused(console: Console, exc: Refusal) -> web.Response:
    return console.render("refused.html", status=exc.status, message=console.t(exc.message, **exc.values))


def page(role: str = "viewer", *, while_password_must_change: bool = False) -> Callable[[PageHandler], Handler]:
    """A GET page for operators whose role includes ``role``; others are sent to sign in."""

    def wrap(handler: PageHandler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            ctx = platform_of(request)
            console = Console(request, ctx, language(request), await _session(request, ctx))
            if console.session is None:
                return console.redirect("/login", next=request.path_qs)
            if console.operator.must_change_password and not while_password_must_change:
                return console.redirect("/password")
            try:
                if not console.operator.may(role):
                    raise Refusal(403, "Your role ({role}) may not see this page", role=console.t(console.operator.role))
                return await handler(console)
            except Refusal as exc:
                return _refused(console, exc)

        return run

    return wrap


ActionHandler = Callable[[Console], Awaitable[web.StreamResponse]]


def action(role: str = "operator", *, reason_required: bool = False, once: bool = True,
           while_password_must_change: bool = False) -> Callable[[ActionHandler], Handler]:
    """A POST that changes something; see the module docstring for what it checks first."""

    def wrap(handler: ActionHandler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            ctx = platform_of(request)
            console = Console(request, ctx, language(request), await _session(request, ctx))
            try:
                console.form = await request.post()
            except edge.FORM_ERRORS:
                console.form = None
            try:
                _check(console, role, reason_required, while_password_must_change)
                return await _run_once(console, handler) if once else await handler(console)
            except Refusal as exc:
                return _refused(console, exc)
            except DOMAIN_REFUSALS as exc:
                return _refused(console, Refusal(400, "Refused: {why}", why=str(exc)))
            except Refused as exc:  # the mobile payment room's refusal: its SPEC 6.10 code and text
                return _refused(console, mpay_refusal(console, exc))

        return run

    return wrap


def _check(console: Console, role: str, reason_required: bool, while_password_must_change: bool) -> None:
    if console.session is None:
        raise Refusal(401, "Your session has ended. Sign in again; nothing was changed.")
    if console.form is None:
        raise Refusal(400, "The form could not be read; nothing was changed.")
    given = console.form.get("csrf", "")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), console.session.csrf_token.encode()):
        raise Refusal(403, "This form is not from your session (CSRF check failed); nothing was changed.")
    if console.operator.must_change_password and not while_password_must_change:
        raise Refusal(403, "Change your one-time password first; nothing was changed.")
    if not console.operator.may(role):
        raise Refusal(403, "Your role ({role}) may not do this; nothing was changed.", role=console.t(console.operator.role))
    if reason_required and not console.field("reason", max_chars=500):
        raise Refusal(400, "A reason is required for this action; nothing was changed.")


async def _run_once(console: Console, handler: ActionHandler) -> web.StreamResponse:
    """Claim the form's one-time token, run the action; a refused action frees the token."""
    token = console.field("form_token", max_chars=64)
    if not 16 <= len(token) <= 64:
        raise Refusal(400, "The form could not be read; nothing was changed.")
    async with console.platform.acquire() as conn:
        claimed = await conn.fetchval(
            "INSERT INTO console_form_tokens (token, operator_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            " RETURNING true", token, console.operator.id,
        )
        await conn.execute("DELETE FROM console_form_tokens WHERE created_at < now() - interval '1 day'")
    if not claimed:
        raise Refusal(409, "This form was already submitted; it was not run a second time.")
    try:
        return await handler(console)
    except BaseException:
        async with console.platform.acquire() as conn:
            await conn.execute("DELETE FROM console_form_tokens WHERE token = $1", token)
        raise


# --- lists ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pager:
    page: int
    rows: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.rows))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.rows

    def link(self, console: Console, page: int) -> str:
        query: Mapping[str, str] = {k: v for k, v in console.request.query.items() if k != "page"}
        return url(console.request.path[len(PREFIX):], **query, page=page)


async def pager(console: Console, conn: asyncpg.Connection, count_sql: str, *args: Any) -> Pager:
    """The page asked for (``?page=N``, 1 … last), after counting the matching rows."""
    total = int(await conn.fetchval(count_sql, *args))
    rows = console.platform.settings.console_page_rows
    raw = console.query("page", max_chars=9)
    wanted = int(raw) if raw.isdigit() else 1
    return Pager(min(max(1, wanted), max(1, math.ceil(total / rows))), rows, total)

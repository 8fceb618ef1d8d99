"""Operators (admins add them — the one-time password is shown once — reset passwords, disable
and enable them, give them the mobile payment API role and a clerk's hall, through
``recharge.operators.accounts``) and the audit trail (``operator_actions``)."""

from __future__ import annotations

from aiohttp import web

from http_api.console.web import PREFIX, Console, action, page, pager
from recharge.operators import accounts


@page("admin")
async def operator_list(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn:
        rows = await accounts.list_operators(conn)
    return console.render("operators.html", title="Operators", rows=rows, roles=accounts.ROLES,
                          api_roles=accounts.MPAY_ROLES, msg=console.query("msg"))


@action("admin")
async def add_operator(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn:
        operator, password = await accounts.add_operator(conn, console.field("name", max_chars=32),
                                                         console.field("role", max_chars=10), actor=console.actor,
                                                         cost=accounts.Argon2Cost.of(console.platform.settings),
                                                         mpay_role=console.field("mpay_role", max_chars=10) or None,
                                                         hall=console.field("hall", max_chars=32) or None)
    return console.render("one_time_password.html", title="Operators", name=operator.name, password=password)


@action("admin")
async def change_operator(console: Console) -> web.StreamResponse:
    name, what = console.request.match_info["name"], console.request.match_info["what"]
    reason = console.field("reason", max_chars=500)
    async with console.platform.acquire() as conn:
        if what == "reset":
            password = await accounts.reset_password(conn, name, actor=console.actor, reason=reason,
                                                     cost=accounts.Argon2Cost.of(console.platform.settings))
            return console.render("one_time_password.html", title="Operators", name=name, password=password)
        await accounts.set_disabled(conn, name, what == "disable", actor=console.actor, reason=reason)
    return console.redirect("/operators", msg="saved")


@action("admin", reason_required=True)
async def set_api_role(console: Console) -> web.StreamResponse:
    """The mobile payment API role (and a clerk's hall) of an operator: one identity, both channels."""
    async with console.platform.acquire() as conn:
        await accounts.set_api_role(conn, console.request.match_info["name"],
                                    console.field("mpay_role", max_chars=10) or None,
                                    console.field("hall", max_chars=32) or None, actor=console.actor,
                                    reason=console.field("reason", max_chars=500))
    return console.redirect("/operators", msg="saved")


@page("viewer")
async def audit_trail(console: Console) -> web.StreamResponse:
    q = console.query("q")
    where = " FROM operator_actions WHERE ($1 = '' OR actor = $1 OR subject = $1 OR action = $1)"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + where, q)
        rows = await conn.fetch(f"SELECT *{where} ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                                q, pages.rows, pages.offset)
    return console.render("actions.html", title="Audit trail", rows=rows, pages=pages, q=q)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/operators", operator_list)
    r.add_post(f"{PREFIX}/operators", add_operator)
    r.add_post(PREFIX + "/operators/{name}/{what:reset|disable|enable}", change_operator)
    r.add_post(PREFIX + "/operators/{name}/api-role", set_api_role)
    r.add_get(f"{PREFIX}/actions", audit_trail)

"""DD terminals: the list (search, pages), register (code, merchant, PKI), a terminal's page with
its sign-in history, enable/disable and unlock — all through ``recharge.terminals``."""

from __future__ import annotations

from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, action, page, pager
from recharge import terminals

# locked: by an operator, or by failed sign-ins until signin_locked_until
_COLUMNS = ("t.code, m.code AS merchant, t.pki_no, t.enabled, t.signin_failures, t.signed_in_until, t.signin_locked_until,"
            " t.locked OR coalesce(t.signin_locked_until > now(), false) AS locked,"
            " t.created_at")


@page("viewer")
async def terminal_list(console: Console) -> web.StreamResponse:
    q = console.query("q")
    where = " WHERE t.pki_no IS NOT NULL AND ($1 = '' OR t.code = $1 OR m.code = $1 OR t.pki_no = $1)"
    joined = " FROM terminals t JOIN merchants m ON m.id = t.merchant_id"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + joined + where, q)
        rows = await conn.fetch(f"SELECT {_COLUMNS}{joined}{where} ORDER BY t.code LIMIT $2 OFFSET $3",
                                q, pages.rows, pages.offset)
    return console.render("terminals.html", title="DD terminals", rows=rows, pages=pages, q=q,
                          msg=console.query("msg"))


@page("viewer")
async def terminal_detail(console: Console) -> web.StreamResponse:
    code = console.request.match_info["code"]
    async with console.platform.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM terminals t JOIN merchants m ON m.id = t.merchant_id WHERE t.code = $1", code
        )
        if row is None:
            raise Refusal(404, "No terminal {code}", code=code[:20])
        history = await terminals.signin_history(conn, code, limit=console.platform.settings.console_page_rows)
        actions = await conn.fetch("SELECT * FROM operator_actions WHERE subject = $1 ORDER BY created_at DESC"
                                   " LIMIT 20", code)
    return console.render("terminal.html", title="DD terminal", t_row=row, history=history, actions=actions,
                          msg=console.query("msg"))


@action("operator")
async def register(console: Console) -> web.StreamResponse:
    code = console.field("code", max_chars=8)
    async with console.platform.acquire() as conn:
        await terminals.add_terminal(conn, code=code, merchant_code=console.field("merchant", max_chars=4),
                                     pki_no=console.field("pki", max_chars=8), actor=console.actor)
    return console.redirect(f"/terminals/{code}", msg="terminal_registered")


@action("operator")
async def change(console: Console) -> web.StreamResponse:
    code, what = console.request.match_info["code"], console.request.match_info["what"]
    reason = console.field("reason", max_chars=500) or "operator request"
    async with console.platform.acquire() as conn:
        if what == "unlock":
            async with conn.transaction():
                if not await terminals.unlock_terminal(conn, code=code, actor=console.actor, reason=reason):
                    raise Refusal(404, "No terminal {code}", code=code[:20])
        else:
            await terminals.set_terminal_enabled(conn, code=code, enabled=what == "enable", actor=console.actor,
                                                 reason=reason)
    return console.redirect(f"/terminals/{code}", msg=f"terminal_{what}")


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/terminals", terminal_list)
    app.router.add_post(f"{PREFIX}/terminals", register)
    app.router.add_get(PREFIX + "/terminals/{code}", terminal_detail)
    app.router.add_post(PREFIX + "/terminals/{code}/{what:unlock|enable|disable}", change)

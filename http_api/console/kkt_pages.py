"""KaKaTong reference data: merchants, service codes, license keys (allowed networks, expiry;
only a key's last four characters are ever shown) and user terminals — registered through the
form of seed 000 (管理员后台 → 用户终端管理 → 添加用户终端). Writes go through ``recharge.kkt.cards``."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, action, page, pager
from recharge.kkt import cards
from recharge.orders.model import LOCAL_TZ

SEED_000_KINDS = ("operator", "admin", "sms")  # 操作员终端 / 管理员终端 / 手机短信终端


@page("viewer")
async def merchants(console: Console) -> web.StreamResponse:
    q = console.query("q")
    where = " WHERE ($1 = '' OR code = $1 OR name LIKE '%' || $1 || '%')"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*) FROM merchants" + where, q)
        rows = await conn.fetch(f"SELECT * FROM merchants{where} ORDER BY code LIMIT $2 OFFSET $3",
                                q, pages.rows, pages.offset)
    return console.render("kkt_merchants.html", title="Merchants", rows=rows, pages=pages, q=q,
                          msg=console.query("msg"))


@action("operator")
async def save_merchant(console: Console) -> web.StreamResponse:
    def box(name: str) -> bool:
        return console.field(name, max_chars=3) == "on"

    async with console.platform.acquire() as conn, conn.transaction():
        await cards.upsert_merchant(conn, console.field("code", max_chars=4), console.field("name", max_chars=100),
                                    issuing=box("issuing"), consuming=box("consuming"), closed=box("closed"),
                                    actor=console.actor)
    return console.redirect("/kkt/merchants", msg="saved")


@page("viewer")
async def service_codes(console: Console) -> web.StreamResponse:
    q = console.query("q")
    joined = " FROM service_codes s JOIN merchants m ON m.id = s.merchant_id WHERE ($1 = '' OR m.code = $1)"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + joined, q)
        rows = await conn.fetch(f"SELECT m.code AS merchant, s.item_code, s.name{joined}"
                                " ORDER BY m.code, s.item_code LIMIT $2 OFFSET $3", q, pages.rows, pages.offset)
    return console.render("kkt_codes.html", title="Service codes", rows=rows, pages=pages, q=q,
                          msg=console.query("msg"))


@action("operator")
async def save_service_code(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn, conn.transaction():
        await cards.upsert_service_code(conn, console.field("merchant", max_chars=4), console.field("item", max_chars=8),
                                        console.field("name", max_chars=20), actor=console.actor)
    return console.redirect("/kkt/service-codes", msg="saved")


@page("viewer")
async def license_keys(console: Console) -> web.StreamResponse:
    q = console.query("q")
    joined = " FROM license_keys k JOIN merchants m ON m.id = k.merchant_id WHERE ($1 = '' OR m.code = $1)"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + joined, q)
        rows = await conn.fetch(
            "SELECT m.code AS merchant, right(k.license_key, 4) AS tail, k.enabled, k.valid_to, k.allowed_networks,"
            f" k.test_mode, k.created_at{joined} ORDER BY m.code, k.created_at LIMIT $2 OFFSET $3",
            q, pages.rows, pages.offset,
        )
    return console.render("kkt_keys.html", title="License keys", rows=rows, pages=pages, q=q,
                          msg=console.query("msg"))


@action("admin")
async def save_license_key(console: Console) -> web.StreamResponse:
    raw_to = console.field("valid_to", max_chars=20)
    try:
        valid_to = dt.datetime.fromisoformat(raw_to).replace(tzinfo=LOCAL_TZ) if raw_to else None
    except ValueError:
        raise Refusal(400, "Field {name} is not a date and time", name="valid_to") from None
    networks = [n.strip() for n in console.field("networks", max_chars=2000).replace(",", "\n").splitlines()
                if n.strip()]
    async with console.platform.acquire() as conn, conn.transaction():
        await cards.upsert_license_key(
            conn, console.field("key", max_chars=512), console.field("merchant", max_chars=4), valid_to=valid_to,
            networks=networks or None, enabled=console.field("enabled", max_chars=3) == "on",
            test_mode=console.field("test_mode", max_chars=3) == "on", actor=console.actor,
        )
    return console.redirect("/kkt/license-keys", msg="saved")


@page("viewer")
async def user_terminals(console: Console) -> web.StreamResponse:
    q = console.query("q")
    joined = (" FROM terminals t JOIN merchants m ON m.id = t.merchant_id"
              " LEFT JOIN merchants i ON i.id = t.issuing_merchant_id"
              " WHERE t.pki_no IS NULL AND ($1 = '' OR t.code = $1 OR m.code = $1 OR t.msisdn = $1)")
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + joined, q)
        rows = await conn.fetch(
            "SELECT t.code, t.kind, t.msisdn, t.enabled, m.code AS merchant, m.name AS merchant_name,"
            f" coalesce(i.code, m.code) AS issuer{joined} ORDER BY t.code LIMIT $2 OFFSET $3",
            q, pages.rows, pages.offset,
        )
    return console.render("kkt_terminals.html", title="User terminals", rows=rows, pages=pages, q=q,
                          msg=console.query("msg"))


@page("operator")
async def new_user_terminal(console: Console) -> web.StreamResponse:
    """Seed 000's form: issuing merchant, consuming merchant, terminal type, number (or phone)."""
    async with console.platform.acquire() as conn:
        issuers = await conn.fetch("SELECT code, name FROM merchants WHERE is_issuing AND NOT closed ORDER BY code")
        shops = await conn.fetch("SELECT code, name FROM merchants WHERE is_consuming AND NOT closed ORDER BY code")
    return console.render("kkt_terminal_new.html", title="Add user terminal", issuers=issuers, shops=shops,
                          kinds=SEED_000_KINDS)


@action("operator")
async def add_user_terminal(console: Console) -> web.StreamResponse:
    kind = console.field("kind", max_chars=10)
    if kind not in SEED_000_KINDS:
        raise Refusal(400, "Choose a terminal type")
    number = console.field("number", max_chars=16)
    async with console.platform.acquire() as conn, conn.transaction():
        # an SMS terminal is known by the operator's phone number (seed 000, step 2)
        await cards.upsert_terminal(
            conn, number, console.field("merchant", max_chars=4), kind, msisdn=number if kind == "sms" else None,
            issuing_merchant_code=console.field("issuer", max_chars=4), actor=console.actor,
        )
    return console.redirect("/kkt/terminals", q=number, msg="terminal_added")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/kkt/merchants", merchants)
    r.add_post(f"{PREFIX}/kkt/merchants", save_merchant)
    r.add_get(f"{PREFIX}/kkt/service-codes", service_codes)
    r.add_post(f"{PREFIX}/kkt/service-codes", save_service_code)
    r.add_get(f"{PREFIX}/kkt/license-keys", license_keys)
    r.add_post(f"{PREFIX}/kkt/license-keys", save_license_key)
    r.add_get(f"{PREFIX}/kkt/terminals", user_terminals)
    r.add_get(f"{PREFIX}/kkt/terminals/new", new_user_terminal)
    r.add_post(f"{PREFIX}/kkt/terminals", add_user_terminal)

"""Orders (find by order number, biz_serial_no, card or platform; an order's state history and
ledger transfers), settlement (run a day through ``recharge.orders.settlement``, list and
download its files) and order-API platforms (register with a public key, disable, enable)."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, action, page, pager, secure
from recharge.orders import model, platforms, settlement
from recharge.orders.model import LOCAL_TZ

_HISTORY = (("created_at", "created (01)"), ("paid_at", "paid (02)"), ("loading_since", "loading: MAC2 sent"),
            ("loaded_at", "loaded (03)"), ("confirmed_at", "confirmed (04)"), ("settled_at", "settled (05)"))


@page("viewer")
async def order_list(console: Console) -> web.StreamResponse:
    q, platform = console.query("q"), console.query("platform")
    where = (" FROM orders o LEFT JOIN platforms p ON p.id = o.platform_id WHERE ($1 = '' OR o.order_no = $1"
             " OR o.biz_serial_no = $1 OR o.card_no = $1) AND ($2 = '' OR p.platform_raw = $2)")
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + where, q, platform)
        rows = await conn.fetch(
            "SELECT o.order_no, o.biz_serial_no, o.card_no, o.amount_cents, o.state, o.loading, o.created_at,"
            f" p.platform_raw{where} ORDER BY o.order_no DESC LIMIT $3 OFFSET $4", q, platform, pages.rows,
            pages.offset,
        )
    return console.render("orders.html", title="Orders", rows=rows, pages=pages, q=q, platform=platform)


@page("viewer")
async def order_detail(console: Console) -> web.StreamResponse:
    order_no = console.request.match_info["order_no"]
    async with console.platform.acquire() as conn:
        order = await model.get_order(conn, order_no) if model.is_order_no(order_no) else None
        if order is None:
            raise Refusal(404, "No order {order_no}", order_no=order_no[:40])
        transfers = await conn.fetch(
            "SELECT * FROM transfers WHERE id = $1 OR pending_id = $1 ORDER BY created_at", order.pay_transfer_id
        ) if order.pay_transfer_id else []
        actions = await conn.fetch("SELECT * FROM operator_actions WHERE subject = $1 ORDER BY created_at", order_no)
    history = sorted(((getattr(order, f), label) for f, label in _HISTORY if getattr(order, f)), key=lambda h: h[0])
    return console.render("order.html", title="Order", order=order, history=history, transfers=transfers,
                          actions=actions, msg=console.query("msg"))


@page("viewer")
async def settlement_page(console: Console) -> web.StreamResponse:
    files = settlement.statement_files(console.platform.settings.data_dir / "settlement")
    yesterday = dt.datetime.now(LOCAL_TZ).date() - dt.timedelta(days=1)
    return console.render("settlement.html", title="Settlement", files=files[:200], yesterday=yesterday,
                          msg=console.query("msg"))


@action("operator", reason_required=True)
async def run_settlement(console: Console) -> web.StreamResponse:
    try:
        day = dt.date.fromisoformat(console.field("date", max_chars=10))
    except ValueError:
        raise Refusal(400, "Field {name} is not a date", name="date") from None
    if day > dt.datetime.now(LOCAL_TZ).date():
        raise Refusal(400, "A day in the future cannot be settled")
    async with console.platform.acquire(60.0) as conn:
        await settlement.run_settlement(conn, day, console.platform.settings.data_dir / "settlement",
                                        actor=console.actor, reason=console.field("reason", max_chars=500))
    return console.redirect("/settlement", msg="settled")


@page("viewer")
async def download(console: Console) -> web.StreamResponse:
    name = console.request.match_info["name"]
    path = settlement.statement_file(console.platform.settings.data_dir / "settlement", name)
    if path is None:
        raise Refusal(404, "No file {name}", name=name[:80])
    response = web.Response(body=path.read_bytes(), content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return secure(response)


@page("viewer")
async def platform_list(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*) FROM platforms")
        rows = await conn.fetch(
            "SELECT p.*, m.code AS merchant, coalesce(json_agg(json_build_object('v', k.crt_version, 'on', k.enabled)"
            " ORDER BY k.crt_version) FILTER (WHERE k.crt_version IS NOT NULL), '[]')::text AS keys"
            " FROM platforms p JOIN merchants m ON m.id = p.merchant_id"
            " LEFT JOIN platform_keys k ON k.platform_id = p.id GROUP BY p.id, m.code ORDER BY p.platform_raw"
            " LIMIT $1 OFFSET $2", pages.rows, pages.offset,
        )
    return console.render("platforms.html", title="Order-API platforms", rows=rows, pages=pages,
                          msg=console.query("msg"))


@action("admin")
async def register_platform(console: Console) -> web.StreamResponse:
    s = console.platform.settings
    async with console.platform.acquire() as conn:
        await platforms.register_with_key(
            conn, platform_raw=console.field("raw", max_chars=9), name=console.field("name", max_chars=100),
            merchant_code=console.field("merchant", max_chars=4), pki_no=console.field("pki", max_chars=8) or None,
            crt_version=console.field("crt_version", max_chars=9) or "1",
            public_key_pem=console.field("public_key", max_chars=16_000), min_bits=s.order_api_min_rsa_bits,
            actor=console.actor,
        )
    return console.redirect("/platforms", msg="saved")


@action("admin")
async def enable_platform(console: Console) -> web.StreamResponse:
    raw, what = console.request.match_info["raw"], console.request.match_info["what"]
    async with console.platform.acquire() as conn:
        await platforms.set_enabled(conn, raw, what == "enable", actor=console.actor,
                                    reason=console.field("reason", max_chars=500) or "operator request",
                                    crt_version=console.field("crt_version", max_chars=9) or None)
    return console.redirect("/platforms", msg="saved")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/orders", order_list)
    r.add_get(PREFIX + "/orders/{order_no}", order_detail)
    r.add_get(f"{PREFIX}/settlement", settlement_page)
    r.add_post(f"{PREFIX}/settlement", run_settlement)
    r.add_get(PREFIX + "/settlement/files/{name}", download)
    r.add_get(f"{PREFIX}/platforms", platform_list)
    r.add_post(f"{PREFIX}/platforms", register_platform)
    r.add_post(PREFIX + "/platforms/{raw}/{what:enable|disable}", enable_platform)

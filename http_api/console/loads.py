"""Loads awaiting customer service (orders *loading*: MAC2 sent, outcome unknown) and their
resolution, posted or voided with a reason, through ``recharge.orders.resolution.resolve_load``
— the very call of ``rechargectl load resolve``. A load DD21 already settled is refused."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, action, page, pager
from recharge.ledger import transfers as ledger
from recharge.orders import model, resolution


@page("viewer")
async def loads(console: Console) -> web.StreamResponse:
    card, terminal = console.query("card"), console.query("terminal")
    where = " WHERE loading AND ($1 = '' OR card_no = $1) AND ($2 = '' OR terminal_code = $2)"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*) FROM orders" + where, card, terminal)
        rows = await conn.fetch(
            "SELECT order_no, card_no, amount_cents, terminal_code, loading_since, balance_before_cents, online_serial"
            f" FROM orders{where} ORDER BY loading_since LIMIT $3 OFFSET $4",
            card, terminal, pages.rows, pages.offset,
        )
    return console.render("loads.html", title="Loads awaiting customer service", rows=rows, pages=pages,
                          card=card, terminal=terminal)


async def order_or_404(conn: asyncpg.Connection, order_no: str) -> model.Order:
    order = await model.get_order(conn, order_no) if model.is_order_no(order_no) else None
    if order is None:
        raise Refusal(404, "No order {order_no}", order_no=order_no[:40])
    return order


@page("viewer")
async def load(console: Console) -> web.StreamResponse:
    order_no = console.request.match_info["order_no"]
    async with console.platform.acquire() as conn:
        order = await order_or_404(conn, order_no)
        transfer = await ledger.get_transfer(conn, order.pay_transfer_id) if order.pay_transfer_id else None
    return console.render("load.html", title="Load", order=order, transfer=transfer)


@action("operator", reason_required=True)
async def resolve(console: Console) -> web.StreamResponse:
    order_no = console.request.match_info["order_no"]
    outcome = console.field("outcome", max_chars=10)
    async with console.platform.acquire() as conn:
        await order_or_404(conn, order_no)
        await resolution.resolve_load(conn, order_no=order_no, outcome=outcome, actor=console.actor,
                                      reason=console.field("reason", max_chars=500))
    return console.redirect(f"/orders/{order_no}", msg=f"resolved_{outcome}")


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/loads", loads)
    app.router.add_get(PREFIX + "/loads/{order_no}", load)
    app.router.add_post(PREFIX + "/loads/{order_no}/resolve", resolve)

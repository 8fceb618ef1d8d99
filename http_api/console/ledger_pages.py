"""The ledger, read only: accounts by owner (merchant code or card number) with posted and
pending balances, an account's transfers, and a transfer by id."""

from __future__ import annotations

from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, page, pager

_ACCOUNT = ("a.id, a.ledger, a.kind, a.card_no, m.code AS merchant, a.name, a.no_overdraft,"
            " a.credits_posted - a.debits_posted AS posted, a.credits_pending - a.debits_pending AS pending,"
            " a.debits_pending, a.credits_pending")


@page("viewer")
async def accounts(console: Console) -> web.StreamResponse:
    owner = console.query("owner")
    where = (" FROM accounts a LEFT JOIN merchants m ON m.id = a.merchant_id"
             " WHERE ($1 = '' OR a.card_no = $1 OR m.code = $1)")
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*)" + where, owner)
        rows = await conn.fetch(f"SELECT {_ACCOUNT}{where} ORDER BY a.id LIMIT $2 OFFSET $3",
                                owner, pages.rows, pages.offset)
    return console.render("ledger.html", title="Ledger", rows=rows, pages=pages, owner=owner)


@page("viewer")
async def account(console: Console) -> web.StreamResponse:
    raw = console.request.match_info["id"]
    async with console.platform.acquire() as conn:
        row = await conn.fetchrow(f"SELECT {_ACCOUNT} FROM accounts a LEFT JOIN merchants m ON m.id = a.merchant_id"
                                  " WHERE a.id = $1", int(raw)) if raw.isdigit() and len(raw) < 18 else None
        if row is None:
            raise Refusal(404, "No account {id}", id=raw[:20])
        where = " FROM transfers WHERE debit_account_id = $1 OR credit_account_id = $1"
        pages = await pager(console, conn, "SELECT count(*)" + where, row["id"])
        transfers = await conn.fetch(f"SELECT *{where} ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
                                     row["id"], pages.rows, pages.offset)
    return console.render("account.html", title="Account", account=row, transfers=transfers, pages=pages)


@page("viewer")
async def transfer(console: Console) -> web.StreamResponse:
    transfer_id = console.query("id", max_chars=100)
    row = None
    if transfer_id:
        async with console.platform.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
            resolution = await conn.fetchrow("SELECT * FROM transfers WHERE pending_id = $1", transfer_id)
        if row is None:
            raise Refusal(404, "No transfer {id}", id=transfer_id)
    return console.render("transfer.html", title="Transfer", transfer=row, transfer_id=transfer_id,
                          resolution=resolution if row else None)


def setup(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/ledger", accounts)
    app.router.add_get(PREFIX + "/ledger/accounts/{id}", account)
    app.router.add_get(f"{PREFIX}/ledger/transfer", transfer)

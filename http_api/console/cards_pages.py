"""KaKaTong cards: find by number or bound phone; a card's balance, points, history and operator
decisions; freeze/unfreeze, report lost, reset the password; card batches, generated in the
background with their progress shown while they run. All through ``recharge.kkt.cards``."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, action, page, pager, secure
from recharge.context import Platform
from recharge.kkt import cards

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.3  # how often a running batch writes its progress


@page("viewer")
async def card_search(console: Console) -> web.StreamResponse:
    q = console.query("q")
    where = " WHERE ($1 = '' OR card_no = $1 OR bound_mobile = $1)"
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*) FROM cards" + where, q)
        rows = await conn.fetch(f"SELECT card_no, kind, state, bound_mobile, created_at FROM cards{where}"
                                " ORDER BY card_no LIMIT $2 OFFSET $3", q, pages.rows, pages.offset)
    if len(rows) == 1 and q:
        return console.redirect(f"/kkt/cards/{rows[0]['card_no']}")
    return console.render("cards.html", title="Cards", rows=rows, pages=pages, q=q)


@page("viewer")
async def card_detail(console: Console) -> web.StreamResponse:
    card_no = console.request.match_info["card_no"]
    async with console.platform.acquire() as conn:
        info = await cards.card_summary(conn, card_no)
        if info is None:
            raise Refusal(404, "No card {card_no}", card_no=card_no[:20])
        history = await conn.fetch(
            "SELECT stance, terminal_code, trade_name, kind, amount_cents, points, purse_after_cents, points_after,"
            " created_at FROM kkt_trades WHERE card_no = $1 ORDER BY created_at DESC LIMIT $2",
            card_no, console.platform.settings.console_page_rows,
        )
        actions = await conn.fetch("SELECT * FROM operator_actions WHERE subject = $1 ORDER BY created_at DESC"
                                   " LIMIT 20", card_no)
    return console.render("card.html", title="Card", card=info, history=history, actions=actions,
                          msg=console.query("msg"))


@action("operator", reason_required=True)
async def card_state(console: Console) -> web.StreamResponse:
    card_no = console.request.match_info["card_no"]
    async with console.platform.acquire() as conn:
        await cards.change_card_state(conn, card_no, console.field("action", max_chars=10), actor=console.actor,
                                      reason=console.field("reason", max_chars=500))
    return console.redirect(f"/kkt/cards/{card_no}", msg="card_changed")


@action("operator", reason_required=True)
async def card_password(console: Console) -> web.StreamResponse:
    card_no = console.request.match_info["card_no"]
    s = console.platform.settings
    async with console.platform.acquire() as conn:
        await cards.reset_card_password(conn, card_no, console.field("password", max_chars=6),
                                        cards.password_pepper(console.platform.keys), s.kkt_password_hash_iterations,
                                        actor=console.actor, reason=console.field("reason", max_chars=500))
    return console.redirect(f"/kkt/cards/{card_no}", msg="password_reset")


# --- batches


@page("viewer")
async def batches(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn:
        pages = await pager(console, conn, "SELECT count(*) FROM card_batch_jobs")
        rows = await conn.fetch("SELECT * FROM card_batch_jobs ORDER BY id DESC LIMIT $1 OFFSET $2",
                                pages.rows, pages.offset)
        merchants = await conn.fetch("SELECT code, name FROM merchants WHERE is_issuing ORDER BY code")
    return console.render("batches.html", title="Card batches", rows=rows, pages=pages, merchants=merchants,
                          kinds=("both", "sv", "points"), max_cards=console.platform.settings.console_max_batch_cards)


async def _job(conn: asyncpg.Connection, console: Console) -> asyncpg.Record:
    raw = console.request.match_info["job"]
    row = await conn.fetchrow("SELECT * FROM card_batch_jobs WHERE id = $1", int(raw)) if raw.isdigit() and \
        len(raw) < 18 else None
    if row is None:
        raise Refusal(404, "No batch {job}", job=raw[:20])
    return row


@page("viewer")
async def batch(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn:
        job = await _job(conn, console)
    return console.render("batch.html", title="Card batch", job=job)


@page("viewer")
async def batch_progress(console: Console) -> web.StreamResponse:
    async with console.platform.acquire() as conn:
        job = await _job(conn, console)
    return secure(web.json_response({k: job[k] for k in ("done", "count", "state", "first_card", "last_card", "error")}))


@action("operator")
async def start_batch(console: Console) -> web.StreamResponse:
    raw = console.field("count", max_chars=9)
    count = int(raw) if raw.isdigit() else 0
    limit = console.platform.settings.console_max_batch_cards
    if not 1 <= count <= limit:
        raise Refusal(400, "A batch has 1 to {limit} cards", limit=limit)
    merchant, kind = console.field("merchant", max_chars=4), console.field("kind", max_chars=8)
    if kind not in cards.CARD_KINDS or kind == "cpu":
        raise Refusal(400, "Choose a card kind")
    async with console.platform.acquire() as conn:
        await cards.merchant_id_of(conn, merchant)
        job_id = await conn.fetchval(
            "INSERT INTO card_batch_jobs (merchant_code, count, kind, actor) VALUES ($1, $2, $3, $4) RETURNING id",
            merchant, count, kind, console.actor,
        )
    task = asyncio.create_task(_run_batch(console.platform, job_id, merchant, count, kind, console.actor))
    console.platform.background.add(task)
    task.add_done_callback(console.platform.background.discard)
    return console.redirect(f"/kkt/batches/{job_id}")


async def _run_batch(ctx: Platform, job_id: int, merchant: str, count: int, kind: str, actor: str) -> None:
    """Generate the cards (one transaction) while another connection writes the progress."""
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            async with ctx.acquire() as conn:
                await conn.execute("UPDATE card_batch_jobs SET done = $2 WHERE id = $1 AND state = 'running'",
                                   job_id, done)

    reporter = asyncio.create_task(report())
    state, first, last, error = "failed", None, None, None
    try:
        async with ctx.acquire(30.0) as conn:
            made = await cards.create_card_batch(conn, merchant, count, kind=kind, progress=progress,
                                                 max_count=ctx.settings.console_max_batch_cards, actor=actor)
        state, first, last, done = "done", made.first, made.last, made.count
    except cards.AdminError as exc:
        error = str(exc)
    except Exception:
        log.exception("card batch %d failed", job_id)
        error = "internal error (see the server log)"
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        async with ctx.acquire() as conn:
            await conn.execute(
                "UPDATE card_batch_jobs SET state = $2, done = $3, first_card = $4, last_card = $5, error = $6,"
                " finished_at = now() WHERE id = $1", job_id, state, done, first, last, error,
            )


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/kkt/cards", card_search)
    r.add_get(PREFIX + "/kkt/cards/{card_no}", card_detail)
    r.add_post(PREFIX + "/kkt/cards/{card_no}/state", card_state)
    r.add_post(PREFIX + "/kkt/cards/{card_no}/password", card_password)
    r.add_get(f"{PREFIX}/kkt/batches", batches)
    r.add_post(f"{PREFIX}/kkt/batches", start_batch)
    r.add_get(PREFIX + "/kkt/batches/{job}", batch)
    r.add_get(PREFIX + "/kkt/batches/{job}/progress", batch_progress)

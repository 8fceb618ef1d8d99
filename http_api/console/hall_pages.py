"""The business-hall counter (营业厅, SPEC 6.4, 6.6 and 7) in the console: a clerk finds a
customer by mobile number and sees the registry record, the account (status, balances, recent
transactions), the SIM wallet and the counter's own records; opens an account on the ID shown
and a one-time code sent to the phone, takes cash, closes an account the same way; binds a new
RFID-SIM (SIM swap, SPEC 7.6) and lets the hall's POS buy a wallet out (cancellation, 7.7).

Every step is the call the ``/mpay/v1/counter`` API makes (``recharge.mpay.counter``,
``recharge.wallet.swaps``, ``recharge.wallet.cancels``), in one
unit of work that keeps a refusal's attempt counters (``recharge.mpay.unit``); a refusal is a
page with its SPEC 6.10 code and text. Only a clerk works here: an operator whose API role is
``counter``, bound to a hall (one identity with the API); changes need the console role
``operator``, the session's CSRF token, a one-time form token and, for what changes a status or
moves money, a reason — written in ``operator_actions`` as ``console:<name>`` with the hall.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from http_api.console.web import PREFIX, Console, Refusal, action, page
from http_api.mpay_env import env_of_platform
from recharge.mpay import accounts, counter, history, registry, unit
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import day_start, mask_name, parse_yuan, today
from recharge.mpay.text import msisdn as read_msisdn
from recharge.wallet import cancels, swaps, wire

T = TypeVar("T")
HISTORY_ROWS = 10
NOT_A_CLERK = "Only a business-hall clerk (API role counter, bound to a hall) works at the counter; nothing was changed."


def clerk_of(console: Console) -> counter.Clerk:
    op = console.operator
    if not op.clerk or op.hall is None:
        raise Refusal(403, NOT_A_CLERK)
    return counter.Clerk(op.name, op.hall, console.actor)


def _number(raw: str) -> str:
    number = read_msisdn(raw)
    if number is None:
        raise Refusal(400, "Not a mobile number: {number}", number=raw[:20])
    return number


async def _customer(conn: asyncpg.Connection, number: str) -> dict[str, Any]:
    """What the counter shows of ``number``: registry, live account, balances, wallet, history."""
    sub = await registry.get(conn, number)
    account = await accounts.live_by_msisdn(conn, number)
    found: dict[str, Any] = {"number": number, "sub": sub, "name": mask_name(sub.name) if sub and sub.name else "",
                             "account": account, "figures": None, "wallet": None, "history": []}
    if account is not None:
        found["figures"] = await accounts.balances(conn, account)
        found["wallet"] = await conn.fetchrow(
            "SELECT w.state, w.card_no, w.limit_cents, w.opened_at FROM wallets w WHERE w.account_id = $1",
            account["id"])
        until = today() + dt.timedelta(days=1)
        found["history"] = await history.entries(conn, account, day_start(until - dt.timedelta(days=90)),
                                                 day_start(until), limit=HISTORY_ROWS)
    found["actions"] = await conn.fetch(
        "SELECT * FROM operator_actions WHERE subject = $1 ORDER BY created_at DESC, id DESC LIMIT 10", number)
    return found


@page("viewer")
async def hall(console: Console) -> web.StreamResponse:
    clerk = clerk_of(console)
    raw = console.query("msisdn", max_chars=20)
    found = None
    if raw:
        async with console.platform.acquire() as conn:
            found = await _customer(conn, _number(raw))
    return console.render("hall.html", title="Business hall counter", clerk=clerk, raw=raw, c=found,
                          id_types=registry.ID_TYPES, msg=console.query("msg"))


async def _unit(console: Console, work: Callable[[asyncpg.Connection, Env], Awaitable[T]]) -> T:
    """One unit of work of the mobile payment room: a refusal still commits its attempt counters."""
    env = env_of_platform(console.platform)
    async with console.platform.acquire() as conn:
        return await unit.atomic(conn, lambda: work(conn, env))


def _done(console: Console, number: str, msg: str) -> web.Response:
    return console.redirect("/hall", msisdn=number, msg=msg)


@action("operator")
async def send_otp(console: Console) -> web.StreamResponse:
    clerk_of(console)
    number, purpose = _number(console.field("msisdn", max_chars=20)), console.field("purpose", max_chars=10)
    await _unit(console, lambda conn, env: counter.send_otp(conn, env, number, purpose))
    return _done(console, number, "otp_sent")


def _identity(console: Console) -> tuple[str, str, str]:
    return console.field("id_type", max_chars=20), console.field("id_number", max_chars=32), \
        console.field("otp", max_chars=6)


@action("operator", reason_required=True)
async def open_account(console: Console) -> web.StreamResponse:
    clerk = clerk_of(console)
    number, reason = _number(console.field("msisdn", max_chars=20)), console.field("reason", max_chars=500)
    id_type, id_number, code = _identity(console)
    await _unit(console, lambda conn, env: counter.open_account(conn, env, clerk, number, id_type, id_number, code,
                                                                reason))
    return _done(console, number, "account_opened")


@action("operator", reason_required=True)
async def close_account(console: Console) -> web.StreamResponse:
    clerk = clerk_of(console)
    number, reason = _number(console.field("msisdn", max_chars=20)), console.field("reason", max_chars=500)
    id_type, id_number, code = _identity(console)
    await _unit(console, lambda conn, env: counter.close_account(conn, env, clerk, number, id_type, id_number, code,
                                                                 reason))
    return _done(console, number, "account_closed")


@action("operator", reason_required=True)
async def take_cash(console: Console) -> web.StreamResponse:
    clerk = clerk_of(console)
    number, reason = _number(console.field("msisdn", max_chars=20)), console.field("reason", max_chars=500)
    amount = parse_yuan(console.field("amount", max_chars=12))
    if amount is None:
        raise Refused("4001")
    key = f"console-{console.field('form_token', max_chars=64)}"  # one form, one cash movement
    await _unit(console, lambda conn, env: counter.take_cash(conn, env, clerk, number, amount, key, reason))
    return _done(console, number, "cash_taken")


# --- the SIM wallet at the counter (SPEC 7.6, 7.7): recharge.wallet's own steps, as /mpay/v1/counter calls them
def _card(raw: str) -> str:
    try:
        return wire.card16(raw)
    except wire.WireError:
        raise Refused("1001") from None


@action("operator", reason_required=True)
async def sim_swap(console: Console) -> web.StreamResponse:
    """② of SPEC 7.6: bind a stock RFID-SIM to the number (the ID checked, the handset not blacklisted)."""
    clerk = clerk_of(console)
    number, reason = _number(console.field("msisdn", max_chars=20)), console.field("reason", max_chars=500)
    new_card, model = _card(console.field("new_card", max_chars=16)), console.field("handset_model", max_chars=64)
    if not model:
        raise Refused("1001")
    id_type, id_number = console.field("id_type", max_chars=20), console.field("id_number", max_chars=32)

    async def work(conn: asyncpg.Connection, env: Env) -> None:
        event = await swaps.bind_new_card(conn, number, new_card, model, env.settings.wallet_handset_blacklist,
                                          id_type, id_number)
        await clerk.record(conn, "wallet_counter_sim_swap", number, reason, card_no=new_card, event=event)

    await _unit(console, work)
    return _done(console, number, "sim_swapped")


@action("operator", reason_required=True)
async def wallet_cancel(console: Console) -> web.StreamResponse:
    """SPEC 7.7 退订: the ID checked, then this hall's POS may buy the wallet out for a while."""
    clerk = clerk_of(console)
    number, reason = _number(console.field("msisdn", max_chars=20)), console.field("reason", max_chars=500)
    id_type, id_number = console.field("id_type", max_chars=20), console.field("id_number", max_chars=32)

    async def work(conn: asyncpg.Connection, env: Env) -> None:
        expires = await cancels.permit(conn, env, number, id_type, id_number, hall=clerk.hall, operator_id=clerk.name)
        await clerk.record(conn, "wallet_counter_cancel", number, reason, expires_at=expires.isoformat())

    await _unit(console, work)
    return _done(console, number, "wallet_cancel_permitted")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/hall", hall)
    r.add_post(f"{PREFIX}/hall/otp", send_otp)
    r.add_post(f"{PREFIX}/hall/open", open_account)
    r.add_post(f"{PREFIX}/hall/close", close_account)
    r.add_post(f"{PREFIX}/hall/cash", take_cash)
    r.add_post(f"{PREFIX}/hall/sim-swap", sim_swap)
    r.add_post(f"{PREFIX}/hall/wallet-cancel", wallet_cancel)

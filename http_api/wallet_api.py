"""The SIM wallet's POS endpoints (SPEC 7.4) under ``/mpay/v1/pos/…``: the exact body bytes checked field by
field (``1001``), by ``X-MAC`` under ``K_pos`` (``1002``) and by ``pos_seq`` (``1002``, repeats answered from
the stored reply), the terminal (``1004``), then the route's own rules in ``recharge.wallet.pos``. Every reply
is 6.12's envelope with ``X-MAC`` of its exact bytes whenever ``terminal_id`` is well formed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from http_api.context import platform_of
from recharge import db, metrics
from recharge.context import Busy
from recharge.mpay import codes
from recharge.wallet import books as wallet_books
from recharge.wallet import pos, sequence, terminals, wire
from recharge.wallet.crypto import WalletCrypto, body_mac, body_mac_ok

PREFIX = "/mpay/v1/pos"
JSON_TYPE = "application/json; charset=utf-8"
Route = Callable[[asyncpg.Connection, WalletCrypto, terminals.Terminal, dict[str, Any]], Awaitable[pos.Answer]]


def envelope(code: str, data: dict[str, Any] | None) -> bytes:
    """6.12's reply ``{code, msg_zh, msg_en, data}`` as compact UTF-8 JSON."""
    reply = {"code": code, "msg_zh": codes.zh(code), "msg_en": codes.en(code), "data": data}
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def answer_bytes(answer: pos.Answer, seq: int | None) -> bytes:
    """Success: the route's data plus ``pos_seq``; refusal: ``{pos_seq, text}`` (text = msg_zh)."""
    if answer.code == "0000" and answer.data is not None:
        return envelope(answer.code, {**answer.data, "pos_seq": seq})
    return envelope(answer.code, {"pos_seq": seq, "text": codes.zh(answer.code)})


def respond(body: bytes, key: bytes | None, status: int = 200) -> web.Response:
    headers = {"X-MAC": body_mac(key, body)} if key is not None else {}
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8",
                        headers=headers)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is longer than ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await request.content.read(limit + 1)
    return None if len(body) > limit else body


def _crypto(request: web.Request) -> WalletCrypto | None:
    wallet = platform_of(request).keys.wallet
    return WalletCrypto(wallet) if wallet is not None else None


def _seq_of(value: object) -> int | None:
    seq = value.get("pos_seq") if isinstance(value, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


async def _run_route(conn: asyncpg.Connection, crypto: WalletCrypto, route: str, parsed: dict[str, Any],
                     fields: dict[str, Any]) -> bytes:
    """Inside the transaction: the sequence claim, the terminal, the route, the stored reply."""
    sender, seq = f"pos:{fields['terminal_id']}", fields["pos_seq"]
    claim = await sequence.claim(conn, sender, seq, parsed)
    if claim.verdict == sequence.Verdict.REPEAT:
        assert claim.reply is not None
        return claim.reply
    if claim.verdict == sequence.Verdict.REFUSED:
        return answer_bytes(pos.Answer("1002"), seq)
    terminal = await terminals.find(conn, fields["terminal_id"])
    if terminal is None or not terminal.enabled:
        answer = pos.Answer(pos.NOT_PERMITTED)
    else:
        answer = await ROUTES[route](conn, crypto, terminal, fields)
    reply = answer_bytes(answer, seq)
    await sequence.store(conn, sender, seq, parsed, reply)
    return reply


async def _batch(conn: asyncpg.Connection, crypto: WalletCrypto, terminal: terminals.Terminal,
                 fields: dict[str, Any]) -> pos.Answer:
    return await pos.batch(conn, crypto, wallet_books.BOOKS, terminal, fields)


async def _return(conn: asyncpg.Connection, crypto: WalletCrypto, terminal: terminals.Terminal,
                  fields: dict[str, Any]) -> pos.Answer:
    return await pos.refund(conn, wallet_books.BOOKS, terminal, fields)


ROUTES: dict[str, Route] = {"batches": _batch, "returns": _return}


async def handle(request: web.Request, route: str) -> web.Response:
    ctx = platform_of(request)
    crypto = _crypto(request)
    body = await read_body(request, ctx.settings.wallet_max_body_bytes)
    if body is None:
        return respond(envelope("1001", None), None, status=413)
    try:
        parsed = wire.parse_json(body)
    except wire.WireError:
        return respond(envelope("1001", None), None, status=400)
    terminal_id = wire.pos_terminal(parsed)
    key = crypto.pos_key(terminal_id) if crypto is not None and terminal_id is not None else None
    if crypto is None:
        return _count(route, respond(envelope("1004", {"pos_seq": _seq_of(parsed), "text": codes.zh("1004")}),
                                     None), "1004")
    try:
        fields = wire.pos_request(route, parsed)
    except wire.WireError:
        return _count(route, respond(answer_bytes(pos.Answer("1001"), _seq_of(parsed)), key), "1001")
    assert key is not None
    if not body_mac_ok(key, body, request.headers.get("X-MAC")):
        return _count(route, respond(answer_bytes(pos.Answer("1002"), fields["pos_seq"]), key), "1002")
    try:
        reply = await db.retry_transaction(ctx.acquire, lambda conn: _run_route(conn, crypto, route, parsed, fields),
                                           policy=db.RetryPolicy.from_settings(ctx.settings))
    except Busy:
        return _count(route, respond(envelope("9001", None), key, status=503), "9001")
    return _count(route, respond(reply, key), json.loads(reply)["code"])


def _count(route: str, response: web.Response, code: str) -> web.Response:
    metrics.WALLET_REQUESTS.labels("pos", route, code).inc()
    return response


def _handler(route: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await handle(request, route)
    return handler


def setup(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_post(f"{PREFIX}/{route}", _handler(route))

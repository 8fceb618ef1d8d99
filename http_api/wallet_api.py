"""The SIM wallet's STK endpoint (SPEC 7.2, ``POST /mpay/v1/stk``) and POS endpoints (7.4, ``/mpay/v1/pos/…``).

One front door for both: the exact body bytes checked field by field (``1001``; a string the database cannot
keep, anywhere in the body, too), by ``X-MAC`` under the
sender's key (``K_stk`` of ``card_no``, ``K_pos`` of ``terminal_id``: ``1002``) and by sequence number
(``1002``; a repeat is answered from the stored reply), then the operation in ``recharge.wallet`` inside the
transaction that stores its reply. Every reply is 6.12's envelope with ``X-MAC`` of its exact bytes whenever
the sender's number is well formed."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from http_api import edge
from http_api.context import LANES_KEY, PLATFORM_KEY
from http_api.mpay_env import env_of_platform
from recharge import db, metrics
from recharge.context import Busy
from recharge.loads.lanes import LoadLanes
from recharge.mpay import codes
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.wallet import books as wallet_books
from recharge.wallet import cancels, pos, sequence, stk, stk_loads, swaps, terminals, wire
from recharge.wallet.crypto import WalletCrypto, body_mac, body_mac_ok


@dataclass(frozen=True, slots=True)
class Outcome:
    """A code, the op's data on success (the channel adds the sequence number), ``n`` for 3002/3009."""

    code: str
    data: dict[str, Any] | None = None
    n: int | None = None
    text: str | None = None


Run = Callable[[asyncpg.Connection, Env, WalletCrypto, Any, LoadLanes], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Door:
    channel: str  # "stk" or "pos": the sender prefix and the metric's channel
    seq_field: str
    key_of: Callable[[WalletCrypto, object], bytes | None]
    parse: Callable[[object], Any]  # WireError when malformed
    sender: Callable[[Any], str]
    seq: Callable[[Any], int]
    run: Run


def envelope(code: str, data: dict[str, Any] | None, n: int | None = None) -> bytes:
    """6.12's reply ``{code, msg_zh, msg_en, data}`` as compact UTF-8 JSON."""
    reply = {"code": code, "msg_zh": codes.zh(code, n), "msg_en": codes.en(code, n), "data": data}
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def reply_bytes(door: Door, outcome: Outcome, seq: int | None) -> bytes:
    """Success: the op's data plus the sequence number; refusal: ``{seq, text}`` (text = msg_zh)."""
    if outcome.code == "0000" and outcome.data is not None:
        return envelope(outcome.code, {door.seq_field: seq, **outcome.data})
    return envelope(outcome.code, {door.seq_field: seq, "text": outcome.text or codes.zh(outcome.code, outcome.n)},
                    outcome.n)


def respond(body: bytes, key: bytes | None, status: int = 200) -> web.Response:
    headers = {"X-MAC": body_mac(key, body)} if key is not None else {}
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8", headers=headers)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is longer than ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = await request.content.read(limit + 1)
    return None if len(body) > limit else body


def _loose_seq(value: object, name: str) -> int | None:
    seq = value.get(name) if isinstance(value, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


async def _transaction(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, door: Door, parsed: object,
                       request: Any, lanes: LoadLanes) -> bytes:
    """Inside one transaction: the sequence claim, the op, its stored reply."""
    sender, seq = door.sender(request), door.seq(request)
    kept = sequence.without_secrets(parsed, env.keys.kept_mac)
    claim = await sequence.claim(conn, sender, seq, kept)
    if claim.verdict == sequence.Verdict.REPEAT:
        assert claim.reply is not None
        return claim.reply
    if claim.verdict == sequence.Verdict.REFUSED:
        return reply_bytes(door, Outcome("1002"), seq)
    reply = reply_bytes(door, await door.run(conn, env, crypto, request, lanes), seq)
    await sequence.store(conn, sender, seq, kept, reply)
    return reply


async def serve(request: web.Request, door: Door, route: str) -> web.Response:
    ctx = request.config_dict[PLATFORM_KEY]  # mounted in the /mpay/v1 sub-application
    body = await read_body(request, ctx.settings.wallet_max_body_bytes)
    if body is None:
        return _count(door, route, respond(envelope("1001", None), None, status=413), "1001")
    try:
        parsed = wire.parse_json(body)
    except wire.WireError:
        return _count(door, route, respond(envelope("1001", None), None, status=400), "1001")
    seq = _loose_seq(parsed, door.seq_field)
    if "load_id" in request.match_info:  # /pos/loads/{load_id}/…: the id is part of what the seq covers
        if not isinstance(parsed, dict) or "load_id" in parsed:
            return _count(door, route, respond(envelope("1001", None), None, status=400), "1001")
        parsed = {**parsed, "load_id": request.match_info["load_id"]}
    if ctx.keys.wallet is None:  # the SIM wallet is off: no keys to answer with
        return _count(door, route, respond(reply_bytes(door, Outcome("1004"), seq), None), "1004")
    crypto = WalletCrypto(ctx.keys.wallet)
    key = door.key_of(crypto, parsed)
    try:
        parsed_request = door.parse(parsed)
        if not _storable(parsed):
            raise wire.WireError("a string no database keeps")
    except wire.WireError:
        return _count(door, route, respond(reply_bytes(door, Outcome("1001"), seq), key), "1001")
    assert key is not None
    if not body_mac_ok(key, body, request.headers.get("X-MAC")):
        return _count(door, route, respond(reply_bytes(door, Outcome("1002"), seq), key), "1002")
    env = env_of_platform(ctx)
    lanes = request.config_dict[LANES_KEY]
    try:
        reply = await db.retry_transaction(
            ctx.acquire, lambda conn: _transaction(conn, env, crypto, door, parsed, parsed_request, lanes),
            policy=db.RetryPolicy.from_settings(ctx.settings))
    except Busy:
        return _count(door, route, respond(envelope("9001", None), key, status=503), "9001")
    return _count(door, route, respond(reply, key), json.loads(reply)["code"])


def _storable(value: object) -> bool:
    """Whether every string of a parsed body, keys included, is one the database keeps (``edge.storable``:
    no NUL, no lone surrogate): the body is kept for its sequence number before the operation runs."""
    if isinstance(value, str):
        return edge.storable(value)
    if isinstance(value, dict):
        return all(edge.storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


def _count(door: Door, route: str, response: web.Response, code: str) -> web.Response:
    metrics.WALLET_REQUESTS.labels(door.channel, route, code).inc()
    return response


# --- POS ---------------------------------------------------------------------------------------------------------


def _pos_key(crypto: WalletCrypto, value: object) -> bytes | None:
    terminal_id = wire.pos_terminal(value)
    return crypto.pos_key(terminal_id) if terminal_id is not None else None


PosOp = Callable[[asyncpg.Connection, Env, WalletCrypto, terminals.Terminal, dict[str, Any]], Awaitable[pos.Answer]]


def _pos_door(route: str, op: PosOp | None = None, load_op: stk_loads.PosLoadOp | None = None) -> Door:
    async def run(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, fields: dict[str, Any],
                  lanes: LoadLanes) -> Outcome:
        terminal = await terminals.find(conn, fields["terminal_id"])
        if terminal is None or not terminal.enabled:
            return Outcome(pos.NOT_PERMITTED)
        if load_op is not None:  # the hall's loads (SPEC 7.3): hall terminals only
            if terminal.hall is None:
                return Outcome(pos.NOT_PERMITTED)
            answer = await stk_loads.at_hall(load_op, conn, env, crypto, lanes, terminal.terminal_id, fields)
        else:
            assert op is not None
            answer = await op(conn, env, crypto, terminal, fields)
        return Outcome(answer.code, answer.data, answer.n)

    return Door("pos", "pos_seq", _pos_key, lambda value: stk_loads.pos_request(route, value),
                lambda fields: f"pos:{fields['terminal_id']}", lambda fields: fields["pos_seq"], run)


async def _batch(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, terminal: terminals.Terminal,
                 fields: dict[str, Any]) -> pos.Answer:
    return await pos.batch(conn, env, crypto, wallet_books.BOOKS, terminal, fields)


async def _return(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, terminal: terminals.Terminal,
                  fields: dict[str, Any]) -> pos.Answer:
    return await pos.refund(conn, env, wallet_books.BOOKS, terminal, fields)


async def _wallet_open(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, terminal: terminals.Terminal,
                       fields: dict[str, Any]) -> pos.Answer:
    if terminal.hall is None:
        return pos.Answer(pos.NOT_PERMITTED)
    answer = await stk.open_at_hall(conn, env, crypto, fields["card"], fields["challenge"])
    if answer.code != "0000":
        return pos.Answer(answer.code, n=answer.n)
    return pos.Answer(answer.code, {"script": answer.script, "text": answer.text})


async def _swap(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, terminal: terminals.Terminal,
                fields: dict[str, Any]) -> pos.Answer:
    try:
        return pos.Answer("0000", await swaps.hall_swap(conn, crypto, wallet_books.BOOKS, terminal, fields["record"]))
    except Refused as refused:
        return pos.Answer(refused.code, n=refused.n)


async def _wallet_cancel(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, terminal: terminals.Terminal,
                         fields: dict[str, Any]) -> pos.Answer:
    try:
        return pos.Answer("0000", await cancels.hall_cancel(conn, env, crypto, wallet_books.BOOKS, terminal,
                                                            fields["record"], fields["challenge"]))
    except Refused as refused:
        return pos.Answer(refused.code, n=refused.n)


POS_DOORS = {"batches": _pos_door("batches", _batch), "returns": _pos_door("returns", _return),
             "wallet-opens": _pos_door("wallet-opens", _wallet_open), "swaps": _pos_door("swaps", _swap),
             "wallet-cancels": _pos_door("wallet-cancels", _wallet_cancel),
             "loads": _pos_door("loads", load_op=stk_loads.pos_load_op),
             "loads/{load_id}/continue": _pos_door("continue", load_op=stk_loads.pos_continue),
             "loads/{load_id}/recover": _pos_door("recover", load_op=stk_loads.pos_recover)}


# --- STK -----------------------------------------------------------------------------------------------------------


def _stk_key(crypto: WalletCrypto, value: object) -> bytes | None:
    card_no = value.get("card_no") if isinstance(value, dict) else None
    try:
        return crypto.stk_key(wire.card16(card_no))
    except wire.WireError:
        return None


async def _stk_run(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, request: stk.Request,
                   lanes: LoadLanes) -> Outcome:
    answer = await stk.handle(conn, env, crypto, request, dt.datetime.now(dt.UTC), lanes)
    if answer.code != "0000":
        return Outcome(answer.code, n=answer.n, text=answer.text)
    data: dict[str, Any] = {"text": answer.text}
    if answer.script is not None:
        data["script"] = answer.script
    if answer.load_id is not None:
        data["load_id"] = answer.load_id
    if answer.waiting is not None:
        data["waiting"] = answer.waiting
        if answer.waiting_load_id is not None:
            data["waiting_load_id"] = answer.waiting_load_id
    return Outcome("0000", data)


STK_DOOR = Door("stk", "seq", _stk_key, stk.parse, lambda r: f"stk:{r.card_no}", lambda r: r.seq, _stk_run)


# --- OpenAPI (SPEC 6.12: /mpay/v1/openapi.json covers 7.2 and 7.4) -----------------------------------------------

# What ``recharge.wallet.wire`` accepts, as far as JSON Schema says it (a date's day of its month, a batch
# record's own checks are the server's): a case valid by these passes the door and reaches the operation.
_CARD = {"type": "string", "pattern": "^[0-9]{16}$"}
_TERMINAL = {"type": "string", "pattern": "^[0-9]{12}$"}
_HEX = {"type": "string", "pattern": "^([0-9A-Fa-f]{2})*$"}
_HEX4 = {"type": "string", "pattern": "^[0-9A-Fa-f]{8}$"}
_CENTS = {"type": "integer", "minimum": 0, "maximum": wire.MAX_CENTS, "description": "integer cents"}
_POSITIVE = {**_CENTS, "minimum": 1}
_SERIAL = {"type": "integer", "minimum": 0, "maximum": 0xFFFF}
_SEQ = {"type": "integer", "minimum": 1, "maximum": wire.MAX_SEQ}
_PAY = {"type": "string", "pattern": "^[0-9]{6}$"}
_TEXT = {"type": "string", "maxLength": 64}
_LOAD_ID = {"type": "string", "pattern": "^L[0-9]{1,18}$"}
_RECORD = {"type": "object", "additionalProperties": False, "required": list(wire.RECORD_FIELDS), "properties": {
    "card": _CARD, "offline_serial": _SERIAL, "amount": _POSITIVE, "balance_after": _CENTS, "tts": _HEX4,
    "date": {"type": "string", "pattern": "^[1-9][0-9]{3}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])$"},
    "time": {"type": "string", "pattern": "^([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]$"}, "tac": _HEX4,
    "void": {"type": "boolean"}}}
_POS_FIELDS: dict[str, dict[str, Any]] = {
    "batches": {"batch_no": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
                "records": {"type": "array", "maxItems": wire.MAX_BATCH_RECORDS, "items": _RECORD}},
    "returns": {"card": _CARD, "offline_serial": _SERIAL, "amount": _POSITIVE},
    "wallet-opens": {"card": _CARD, "challenge": _HEX4},
    "swaps": {"record": _RECORD},
    "wallet-cancels": {"record": _RECORD, "challenge": _HEX4},
}
_LOAD_FIELDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # required, optional
    "loads": ({"card": _CARD}, {"amount": _POSITIVE}),
    "loads/{load_id}/continue": ({}, {"replies": _HEX, "challenge": _HEX4}),
    "loads/{load_id}/recover": ({}, {}),
}
STK_PARAMS: dict[str, list[dict[str, Any]]] = {  # each op's params, as stk.PARAMS and stk_loads check them
    "wallet.open": [{}], "wallet.pause": [{}], "wallet.resume": [{}], "account.balance": [{}],
    "wallet.limit": [{"amount": _POSITIVE, "pay_password": _PAY}],
    "wallet.cancel": [{"balance": _CENTS, "pay_password": _PAY}],
    "pwd.pay.change": [{"old": _TEXT, "new": _TEXT}], "pwd.op.change": [{"new": _TEXT}],
    "pwd.op.enable": [{"pay_password": _PAY}], "pwd.op.disable": [{"pay_password": _PAY}],
    "account.history": [{"from": {"type": "string", "format": "date"}}],
    "account.card_recharge": [{"pin": {"type": "string", "pattern": "^[0-9]{18}$"}}],
    "hf.self": [{"amount": _POSITIVE}],
    "hf.other": [{"target": {"type": "string", "pattern": "^[0-9]{11}$"}, "amount": _POSITIVE, "pay_password": _PAY}],
    "wallet.load.init": [{"amount": _POSITIVE, "pay_password": _PAY}, {"load_id": _LOAD_ID}],
    "wallet.load.continue": [{"load_id": _LOAD_ID, "replies": _HEX}],
    "wallet.load.recover": [{"load_id": _LOAD_ID}],
}


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": list(properties) if required is None
            else required, "properties": properties}


def _stk_body() -> dict[str, Any]:
    """One shape per op: its params, and the card's challenge on a write (``stk.parse``)."""
    shapes = []
    for op, params in sorted(STK_PARAMS.items()):
        for one in params:
            required = ["card_no", "seq", "op", "params", *(["challenge"] if op in stk.WRITE_OPS else [])]
            shapes.append(_closed({"card_no": _CARD, "seq": _SEQ, "op": {"const": op}, "params": _closed(one),
                                   "challenge": _HEX4, "op_password": {"type": "string", "pattern": "^[0-9]{4,12}$"}},
                                  required))
    return {"oneOf": shapes}


def _mac_operation(op_id: str, summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": op_id, "summary": summary, "security": [],
        "parameters": [{"name": "X-MAC", "in": "header", "required": True, "schema": {
            "type": "string", "pattern": "^[0-9A-Fa-f]{8}$"}, "description": "1.6's retail MAC of the exact body"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {status: {"description": text, "headers": {"X-MAC": {"schema": {"type": "string"}}},
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
                      for status, text in (("200", "a business answer (0000 or a refusal; X-MAC of the reply)"),
                                           ("400", "not JSON (1001)"), ("413", "body too large"),
                                           ("503", "busy (9001)"))},
    }


def openapi_paths() -> dict[str, dict[str, Any]]:
    """The STK and POS operations for the ``/mpay/v1`` OpenAPI document."""
    paths = {"/stk": {"post": _mac_operation("post_stk", "An STK request of the RFID-SIM's menu (SPEC 7.2)",
                                             _stk_body())}}
    for route, props in _POS_FIELDS.items():
        schema = {"type": "object", "additionalProperties": False, "required": ["terminal_id", "pos_seq", *props],
                  "properties": {"terminal_id": _TERMINAL, "pos_seq": _SEQ, **props}}
        paths[f"/pos/{route}"] = {"post": _mac_operation(f"post_pos_{route.replace('-', '_')}",
                                                         f"POS {route} (SPEC 7.4)", schema)}
    for route, (required, optional) in _LOAD_FIELDS.items():  # the hall's loads (SPEC 7.3)
        schema = {"type": "object", "additionalProperties": False, "required": ["terminal_id", "pos_seq", *required],
                  "properties": {"terminal_id": _TERMINAL, "pos_seq": _SEQ, **required, **optional}}
        operation = _mac_operation(f"post_pos_{route.replace('/', '_').replace('{load_id}', 'id')}",
                                   f"POS {route} (SPEC 7.3)", schema)
        if "{load_id}" in route:
            operation["parameters"].append({"name": "load_id", "in": "path", "required": True,
                                            "schema": _LOAD_ID})
        paths[f"/pos/{route}"] = {"post": operation}
    return paths


def _handler(door: Door, route: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await serve(request, door, route)
    return handler


def setup(sub: web.Application) -> None:
    """Add ``/stk`` and ``/pos/…`` to the ``/mpay/v1`` sub-application (``http_api.mpay_api``)."""
    sub.router.add_post("/stk", _handler(STK_DOOR, "stk"))
    for route, door in POS_DOORS.items():
        sub.router.add_post(f"/pos/{route}", _handler(door, route))

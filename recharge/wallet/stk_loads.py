"""The STK load ops of SPEC 7.2/7.3: ``wallet.load.init`` (空中充值 ``{amount, pay_password}``, or drive a waiting
load ``{load_id}``), ``wallet.load.continue {load_id, replies}`` and ``wallet.load.recover {load_id}``; the hall
POS's ``/pos/loads`` routes (POS转存, the oldest waiting load, continue, recover). Each runs 7.3's checks and
one round of recharge/wallet/driving.py in the caller's transaction, answering a code and the round."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg

from core_ext import Instruction
from recharge import metrics
from recharge.loads.lanes import LoadLanes
from recharge.mpay import accounts, matrix
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.wallet import driving, loads, pos, wire
from recharge.wallet.crypto import STATE_OPEN, WalletCrypto
from recharge.wallet.driving import Drive, Round

LOAD_OPS = ("wallet.load.init", "wallet.load.continue", "wallet.load.recover")
UNLOCKED_OPS = frozenset(("wallet.load.continue", "wallet.load.recover"))  # the lanes may need the account row
_LOAD_ID = re.compile(r"L[0-9]{1,18}")


def load_id(value: object) -> str:
    if not isinstance(value, str) or not _LOAD_ID.fullmatch(value):
        raise wire.WireError("load_id: L and 1-18 digits")
    return value


def parse_params(op: str, value: object) -> dict[str, Any]:
    """A load op's ``params`` (``WireError`` when malformed): init has two shapes."""
    if op == "wallet.load.init":
        if isinstance(value, dict) and "load_id" in value:
            return wire.fields(value, {"load_id": load_id})
        return wire.fields(value, {"amount": wire.positive_cents, "pay_password": wire.digits(6)})
    if op == "wallet.load.continue":
        return wire.fields(value, {"load_id": load_id, "replies": wire.replies_hex})
    return wire.fields(value, {"load_id": load_id})


def _count(path: str, result: str) -> None:
    metrics.WALLET_LOADS.labels(path, result).inc()


@contextlib.contextmanager
def _refusals_counted(path: str) -> Iterator[None]:
    """A refusal raised inside is counted with its code by ``path`` (``recharge_wallet_loads_total``)."""
    try:
        yield
    except Refused as refused:
        _count(path, refused.code)
        raise


async def stk_op(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes,
                 account: asyncpg.Record, card_no: str, op: str, params: dict[str, Any], now: dt.datetime) -> Round:
    """One STK load op for the wallet on ``card_no`` (the gate's checks passed); ``Refused`` otherwise. Every
    refusal is counted with its code (``recharge_wallet_loads_total``), and so is every creation and post."""
    drive = Drive(conn, env, crypto.load_keys(), lanes, "stk", driving.STK_TERMINAL, account["id"])
    if op == "wallet.load.init" and "load_id" not in params:
        new = loads.NewLoad("air", params["amount"], params["pay_password"])
        load = await _created(conn, env, account, new, now, "stk", card_no=card_no)
        return await _counted(conn, load.load_id, driving.start(drive, load))
    load_id = params["load_id"]
    if op == "wallet.load.init":
        return await _counted(conn, load_id, _start_waiting(drive, account, card_no, load_id))
    if op == "wallet.load.continue":
        return await _counted(conn, load_id, driving.proceed(drive, load_id, params["replies"]), ends=True)
    return await _counted(conn, load_id, driving.recover(drive, load_id))


async def _on_card(conn: asyncpg.Connection, account: asyncpg.Record, card_no: str) -> None:
    """STK's ``wallet.load.init``: the account's wallet open (``5001``, ``5002``) on the requesting card (``5007``)."""
    if loads.check_wallet(await loads.wallet_of(conn, account["id"]))["card_no"] != card_no:
        raise Refused(driving.WRONG_CARD)


async def _start_waiting(drive: Drive, account: asyncpg.Record, card_no: str, load_id: str) -> Round:
    """``wallet.load.init {load_id}``: the first round of the account's waiting load."""
    await _on_card(drive.conn, account, card_no)
    matrix.require(account, "recharge", "stk")  # a number suspended or lost: waiting loads wait (2004)
    load = await loads.get(drive.conn, load_id)
    if load is None or load.account_id != account["id"]:
        raise Refused(driving.ORDER_STATE)
    return await driving.start(drive, load)


async def _created(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, new: loads.NewLoad,
                   now: dt.datetime, channel: str, *, card_no: str | None = None) -> loads.Load:
    """7.3's creation (STK's: the wallet on ``card_no`` first), counted by the path: ``created`` or the refusal's
    code."""
    with _refusals_counted(new.path):
        if card_no is not None:
            await _on_card(conn, account, card_no)
        load = await loads.create_load(conn, env, account, new, now, channel=channel)
    _count(new.path, "created")
    return load


async def _counted(conn: asyncpg.Connection, load_id: str, round_: Awaitable[Round], *, ends: bool = False) -> Round:
    """A round of a drive (start or ``continue``) or a recover: a refusal counted with its code by the load's path
    (``unknown`` for a load id the platform does not know); a ``continue`` (``ends``) that ends the load, posted."""
    try:
        done = await round_
    except Refused as refused:
        load = await loads.get(conn, load_id)
        _count(load.path if load is not None else "unknown", refused.code)
        raise
    if ends and done.script is None:
        _count(done.load.path, "posted")
    return done


# --- the hall POS (SPEC 7.3, 7.4: /pos/loads …) ------------------------------------------------------------------


async def _card_account(conn: asyncpg.Connection, card_no: str) -> asyncpg.Record:
    """The live account of a bound card, locked (``5007`` for a stock or retired card, ``2003`` without one)."""
    card = await conn.fetchrow("SELECT status, msisdn FROM wallet_cards WHERE card_no = $1", card_no)
    if card is None or card["status"] != "bound":
        raise Refused(driving.WRONG_CARD)
    account = await accounts.live_by_msisdn(conn, card["msisdn"], lock=True)
    if account is None:
        raise Refused("2003")
    return account


async def pos_load(conn: asyncpg.Connection, env: Env, fields: dict[str, Any],
                   now: dt.datetime) -> dict[str, Any]:
    """``POST /pos/loads``: ``{card, amount}`` POS转存 from cash; ``{card}`` the card's oldest waiting load. A
    refusal is counted with its code: by ``pos`` for a creation, ``unknown`` for the pick (it names no load)."""
    if "amount" in fields:
        with _refusals_counted("pos"):
            account = await _card_account(conn, fields["card"])
        load = await _created(conn, env, account, loads.NewLoad("pos", fields["amount"]), now, "counter")
    else:
        with _refusals_counted("unknown"):
            account = await _card_account(conn, fields["card"])
            load = await _oldest_waiting(conn, account)
    queued = await loads.waiting(conn, account["id"])
    return {"load_id": load.load_id, "amount": load.amount, "waiting": sum(q.amount for q in queued)}  # cents


async def _oldest_waiting(conn: asyncpg.Connection, account: asyncpg.Record) -> loads.Load:
    loads.check_wallet(await loads.wallet_of(conn, account["id"]))
    queued = await loads.waiting(conn, account["id"])
    if not queued:
        raise Refused(driving.ORDER_STATE)
    return queued[0]


def _pos_drive(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes, terminal_id: str,
               account_id: int) -> Drive:
    return Drive(conn, env, crypto.load_keys(), lanes, f"pos:{terminal_id}", terminal_id, account_id)


async def pos_continue(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes,
                       terminal_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``POST /pos/loads/{id}/continue``: no ``replies`` starts the load (DD12's script), else the next round;
    counted as STK's rounds are."""
    round_ = _pos_round(conn, env, crypto, lanes, terminal_id, fields)
    return _round_data(await _counted(conn, fields["load_id"], round_, ends="replies" in fields))


async def _pos_round(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes,
                     terminal_id: str, fields: dict[str, Any]) -> Round:
    load = await loads.get(conn, fields["load_id"])
    if load is None:
        raise Refused(driving.ORDER_STATE)
    drive = _pos_drive(conn, env, crypto, lanes, terminal_id, load.account_id)
    if "replies" in fields:
        return await driving.proceed(drive, load.load_id, fields["replies"])
    account = await accounts.by_id(conn, load.account_id)
    if account is None or account["msisdn"] is None:
        raise Refused("2003")
    wallet = loads.check_wallet(await loads.wallet_of(conn, load.account_id))
    matrix.require(account, "recharge", "counter")
    return await driving.start(drive, load, state_write=await _swap_write(conn, crypto, load, wallet, fields))


async def _swap_write(conn: asyncpg.Connection, crypto: WalletCrypto, load: loads.Load, wallet: asyncpg.Record,
                      fields: dict[str, Any]) -> Instruction | None:
    """7.6 ③: a swap load's first round writes the new card's 0x17 (``01`` ‖ the wallet's limit) under the
    ``challenge`` sent with it (``1001`` without one), before DD12's four instructions."""
    if load.path != "swap":
        return None
    if "challenge" not in fields:
        raise Refused("1001")
    card = await driving.active_card(conn, load.account_id)
    if card is None:
        raise Refused(driving.WRONG_CARD)
    return crypto.state_write_instruction(card, fields["challenge"], STATE_OPEN, wallet["limit_cents"], next_ok=2)


async def pos_recover(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes,
                      terminal_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``POST /pos/loads/{id}/recover``: GET TRANSACTION PROVE for a load left *loading* (a refusal counted)."""

    async def recover() -> Round:
        load = await loads.get(conn, fields["load_id"])
        if load is None:
            raise Refused(driving.ORDER_STATE)
        return await driving.recover(_pos_drive(conn, env, crypto, lanes, terminal_id, load.account_id), load.load_id)

    return _round_data(await _counted(conn, fields["load_id"], recover()))


def _round_data(done: Round) -> dict[str, Any]:
    data: dict[str, Any] = {"load_id": done.load.load_id, "text": done.text}
    if done.script is not None:
        data["script"] = done.script
    return data


PosLoadOp = Callable[[asyncpg.Connection, Env, WalletCrypto, LoadLanes, str, dict[str, Any]],
                     Awaitable[dict[str, Any]]]


async def pos_load_op(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes,
                       terminal_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    return await pos_load(conn, env, fields, dt.datetime.now(dt.UTC))


async def at_hall(op: PosLoadOp, conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, lanes: LoadLanes,
                  terminal_id: str, fields: dict[str, Any]) -> pos.Answer:
    """A hall load route's answer: its data, or the refusal's code."""
    try:
        return pos.Answer("0000", await op(conn, env, crypto, lanes, terminal_id, fields))
    except Refused as refused:
        return pos.Answer(refused.code, n=refused.n)


def pos_request(route: str, value: object) -> dict[str, Any]:
    """A POS request of ``route``; the load routes' ``load_id`` comes from the URL (merged by the channel)."""
    if route not in ("continue", "recover"):
        return wire.pos_request(route, value)
    if not isinstance(value, dict):
        raise wire.WireError("expected an object")
    fields = wire.pos_request(route, {k: v for k, v in value.items() if k != "load_id"})
    return {**fields, "load_id": load_id(value.get("load_id"))}

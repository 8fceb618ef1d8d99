"""Driving a wallet load (SPEC 7.3) in rounds over STK or a hall POS: each round answers one script, whose reply
list comes back with the next round; the money and the *loading* safety are the load engine's
(recharge/loads/engine.py) through the process's shared group-commit lanes.

    start ─► DD12's read script ─► continue: the wallet's active card (5007), balance + amount ≤ cap (5003)
      ─► INITIALIZE FOR LOAD (terminal: the hall POS's, or 990000000001 for STK)
      ─► continue: MAC1 under DLK = diversify(MKW_load, card) ─► durably *loading* (the lanes) ─► CREDIT FOR LOAD
      ─► continue: TAC under MKW_tac ─► posted (the lanes), the text and SMS 钱包充值成功…
    recover (a lost outcome of a load *loading*) ─► GET TRANSACTION PROVE ─► continue: proven → posted,
      9406 → waiting, anything else → still loading

A failing card step answers ``5008``: before *loading*, or an error status word at CREDIT, the load waits again;
a bad TAC or proof leaves it *loading* for customer service. The bookkeeping of which script was sent last
(``step``) is written in the caller's transaction; the steps that move money or mark *loading* only through the
lanes — never both in one request, so the caller's transaction never holds a row the lanes need. A request whose
transaction runs again after the lanes committed its step (a retry, or a repeat whose reply was never stored) answers
as the first run: the same CREDIT FOR LOAD (``_credit_again``), the posted text, or ``5008`` for a release
(``_released_again``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from core_ext import Instruction, Reply, reply_encode, script_encode
from recharge.loads import engine, pboc
from recharge.loads.engine import Result
from recharge.loads.lanes import LoadLanes
from recharge.loads.pboc import CardStepError, InFlight, LoadKeys
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import yuan
from recharge.wallet import loads
from recharge.wallet.loads import Load, LoadRefused

STK_TERMINAL = "990000000001"
BAD_CARD, WRONG_CARD, CAP, BUSY, ORDER_STATE = "5008", "5007", "5003", "5006", "4011"


@dataclass(frozen=True, slots=True)
class Drive:
    """Who drives: ``driver`` ``stk`` or ``pos:<terminal id>``, with the terminal id of the cryptograms."""

    conn: asyncpg.Connection
    env: Env
    keys: LoadKeys
    lanes: LoadLanes
    driver: str
    terminal_id: str
    account_id: int


@dataclass(frozen=True, slots=True)
class Round:
    """One round's answer: a script to run (hex), or the final text."""

    load: Load
    script: str | None = None
    text: str = ""


def loaded_text(load: Load) -> str:
    assert load.balance_after is not None
    return loads.LOADED_TEXT.format(amt=yuan(load.amount), bal=yuan(load.balance_after))


async def _set_step(d: Drive, load: Load, step: str, **fields: object) -> None:
    """The script sent now (T1's bookkeeping; never a load the lanes change in this request)."""
    await d.conn.execute(
        "UPDATE wallet_loads SET step = $2, driver = $3, terminal_id = $4, card_no = coalesce($5, card_no),"
        " balance_before = coalesce($6, balance_before), updated_at = now() WHERE load_id = $1",
        load.load_id, step, d.driver, d.terminal_id, fields.get("card_no"), fields.get("balance_before"))


async def _mine(d: Drive, load_id: str) -> Load:
    load = await loads.get(d.conn, load_id)
    if load is None or load.account_id != d.account_id:
        raise Refused(ORDER_STATE)
    return load


async def start(d: Drive, load: Load, *, state_write: Instruction | None = None) -> Round:
    """Drive a waiting load from its first script — DD12's, after the 0x17 write (instruction 1) for the first
    round of a swap load (7.6: then DD12's are 2–5) —: the wallet open, no load of the account loading."""
    loads.check_wallet(await loads.wallet_of(d.conn, d.account_id))
    if load.state == loads.LOADING or await loads.any_loading(d.conn, d.account_id):
        raise Refused(BUSY)
    if load.state != loads.WAITING:
        raise Refused(ORDER_STATE)
    await _set_step(d, load, "read")
    script = (pboc.READ_CARD_SCRIPT if state_write is None
              else script_encode([state_write, *pboc.read_card_instructions(2)]))
    return Round(load, script.hex().upper())


async def proceed(d: Drive, load_id: str, replies: bytes) -> Round:
    """The reply list of the script sent last: the next round (``Refused`` with 7.3's code otherwise)."""
    load = await _mine(d, load_id)
    if load.state == loads.POSTED:
        return Round(load, text=loaded_text(load))
    if load.state == loads.WAITING and load.step == "read" and load.driver == d.driver:
        return await _read(d, load, replies)
    if load.state == loads.WAITING and load.step == "initialize" and load.driver == d.driver:
        return await _initialized(d, load, replies)
    if load.step in ("credit", "prove") and load.driver == d.driver:
        if load.state == loads.LOADING:
            return await _finished(d, load, replies)
        if load.state == loads.WAITING:
            raise Refused(_released_again(d, load, replies))
    raise Refused(BUSY if load.state == loads.LOADING else ORDER_STATE)


async def _back_to_waiting(d: Drive, load: Load, code: str) -> Refused:
    await d.conn.execute("UPDATE wallet_loads SET step = 'none', driver = NULL, updated_at = now()"
                         " WHERE load_id = $1 AND state = 'waiting'", load.load_id)
    return Refused(code)


async def active_card(conn: asyncpg.Connection, account_id: int) -> str | None:
    """The wallet's active card: the RFID-SIM bound to the account's number (after a swap's step ②, the new
    one: its waiting loads follow it)."""
    return await conn.fetchval("SELECT c.card_no FROM wallet_cards c JOIN mpay_accounts a ON a.msisdn = c.msisdn"
                               " WHERE a.id = $1 AND c.status = 'bound'", account_id)


async def _read(d: Drive, load: Load, replies: bytes) -> Round:
    """DD13: the wallet's active card, and room under the cap for the amount → INITIALIZE FOR LOAD."""
    try:
        read = pboc.read_card(_after_state_write(load, replies))
    except CardStepError:
        raise await _back_to_waiting(d, load, BAD_CARD) from None
    if await active_card(d.conn, d.account_id) != read.card_no:
        raise await _back_to_waiting(d, load, WRONG_CARD)
    if read.balance + load.amount > d.env.settings.wallet_cap_cents:
        raise await _back_to_waiting(d, load, CAP)
    await _set_step(d, load, "initialize", card_no=read.card_no, balance_before=read.balance)
    return Round(load, pboc.initialize_script(load.amount, d.terminal_id).hex().upper())


def _after_state_write(load: Load, replies: bytes) -> bytes:
    """The read's replies: a swap load's first round starts with the 0x17 write's (seq 1, ``9000``)."""
    found = pboc.replies(replies)
    if load.path != "swap" or len(found) != 5:
        return replies
    if found[0].seq != 1 or found[0].sw != pboc.SW_OK:
        raise CardStepError()
    return reply_encode([Reply(r.seq - 1, r.data) for r in found[1:]])


async def _initialized(d: Drive, load: Load, replies: bytes) -> Round:
    """DD15: MAC1 → the load durably *loading* through the lanes → CREDIT FOR LOAD."""
    assert load.card_no is not None
    try:
        made = engine.credit(d.keys, load.card_no, load.amount, d.terminal_id, replies, dt.datetime.now(dt.UTC))
    except CardStepError:
        raise await _back_to_waiting(d, load, BAD_CARD) from None
    marked = await engine.mark_loading(d.lanes, loads.book(d.env.keys), load.load_id, made, d.driver)
    if isinstance(marked, LoadRefused):
        raise Refused(marked.code)
    return Round(marked, made.script.hex().upper())


def in_flight(load: Load) -> InFlight:
    assert load.card_no is not None and load.terminal_id is not None and load.balance_before is not None
    assert load.online_serial is not None and load.load_date is not None and load.load_time is not None
    return InFlight(load.card_no, load.amount, load.terminal_id, load.balance_before, load.online_serial,
                    load.load_date, load.load_time, load.load_random)


async def _finished(d: Drive, load: Load, replies: bytes) -> Round:
    """DD17 (CREDIT's reply) or DD21 (the proof's): posted, waiting again, or still loading (``5008``)."""
    again = _credit_again(d, load, replies)
    if again is not None:
        return again
    book = loads.book(d.env.keys)
    if load.step == "prove":
        done = await engine.settle_proof(d.lanes, book, d.keys, load.load_id, in_flight(load), replies)
    else:
        try:
            done = await engine.finish(d.lanes, book, d.keys, load.load_id, in_flight(load), replies)
        except CardStepError:
            raise Refused(BAD_CARD) from None
    if done.result is not Result.POSTED:
        raise Refused(BAD_CARD)
    if isinstance(done.answer, LoadRefused) or done.answer is None:
        raise Refused(done.answer.code if done.answer is not None else ORDER_STATE)
    return Round(done.answer, text=loaded_text(done.answer))


def _credit_again(d: Drive, load: Load, replies: bytes) -> Round | None:
    """The INITIALIZE reply that made this load *loading*, sent again (the request's transaction ran again after
    the lanes committed, or its reply was lost): the same CREDIT FOR LOAD, recomputed from what was stored."""
    if load.step != "credit" or load.card_no is None or load.load_date is None or load.load_time is None:
        return None
    try:
        reply = pboc.single_reply(replies)
    except CardStepError:
        return None
    body = reply.body
    if reply.sw != pboc.SW_OK or len(body) != 16 or body[4:6] != (load.online_serial or 0).to_bytes(2, "big"):
        return None
    if body[8:12].hex().upper() != load.load_random:
        return None
    when = dt.datetime.strptime(load.load_date + load.load_time, "%Y%m%d%H%M%S").replace(tzinfo=pboc.LOCAL_TZ)
    try:
        made = engine.credit(d.keys, load.card_no, load.amount, load.terminal_id or d.terminal_id, replies, when)
    except CardStepError:
        return None
    return Round(load, made.script.hex().upper())


def _released_again(d: Drive, load: Load, replies: bytes) -> str:
    """A load the lanes released (back to waiting, its last step and driver kept) by the reply list of its CREDIT
    FOR LOAD or GET TRANSACTION PROVE: the same judgment of that reply list again — the request's transaction ran
    again after the lanes committed, or its reply was lost — answers as the first time (``5008``); any other
    reply list ``4011``."""
    judge = engine.judge_proof if load.step == "prove" else engine.judge_credit
    try:
        released = judge(d.keys, in_flight(load), replies) is Result.RELEASED
    except CardStepError:
        released = False
    return BAD_CARD if released else ORDER_STATE


async def recover(d: Drive, load_id: str) -> Round:
    """A lost outcome: GET TRANSACTION PROVE for the serial of a load *loading* (a posted one: its text)."""
    load = await _mine(d, load_id)
    if load.state == loads.POSTED:
        return Round(load, text=loaded_text(load))
    if load.state != loads.LOADING or load.online_serial is None:
        raise Refused(ORDER_STATE)
    await d.conn.execute("UPDATE wallet_loads SET step = 'prove', driver = $2, updated_at = now()"
                         " WHERE load_id = $1 AND state = 'loading'", load.load_id, d.driver)
    return Round(load, pboc.prove_script(load.online_serial).hex().upper())

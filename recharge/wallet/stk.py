"""The STK operations of SPEC 7.2 on the wallet, in the caller's transaction: the checks in the SPEC's order
(card bound to a number ``5007``, operation password ``3009``, number and account per 6.7, then the op's own,
passwords last) and the effects, each answering a SPEC 6.10 code and the reply's ``text``/``script``.

Write ops (``wallet.open``, ``wallet.pause``, ``wallet.resume``, ``wallet.limit``, ``wallet.cancel``) commit the wallet's new
state with their reply and send the 0x17 write as the script; repeating one re-sends it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from recharge.loads.lanes import LoadLanes
from recharge.mpay import (
    accounts,
    bills,
    cards,
    credentials,
    events,
    history,
    matrix,
    postings,
    profile,
    registry,
)
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.sms_commands import BALANCE
from recharge.mpay.text import day_start, today, yuan
from recharge.wallet import loads, stk_loads, wire
from recharge.wallet.books import BOOKS
from recharge.wallet.clearing import Posting, must_post
from recharge.wallet.crypto import STATE_CANCELLED, STATE_OPEN, STATE_PAUSED, WalletCrypto

DEFAULT_LIMIT_CENTS = 20_000
MIN_LIMIT_CENTS, MAX_LIMIT_CENTS = 100, 100_000
STATE_BYTE = {"open": STATE_OPEN, "paused": STATE_PAUSED, "cancelled": STATE_CANCELLED}
WRITE_OPS = frozenset(("wallet.open", "wallet.pause", "wallet.resume", "wallet.limit", "wallet.cancel"))
PARAMS: dict[str, dict[str, Callable[[object], Any]]] = {
    "wallet.open": {}, "wallet.pause": {}, "wallet.resume": {},
    "wallet.limit": {"amount": wire.positive_cents, "pay_password": wire.digits(6)},
    "wallet.cancel": {"balance": wire.cents, "pay_password": wire.digits(6)},
    "account.balance": {},
    "pwd.pay.change": {"old": wire.text, "new": wire.text},
    "pwd.op.enable": {"pay_password": wire.digits(6)},
    "pwd.op.disable": {"pay_password": wire.digits(6)},
    "pwd.op.change": {"new": wire.text},
    "account.history": {"from": wire.iso_date},
    "account.card_recharge": {"pin": wire.digits(18)},
    "hf.self": {"amount": wire.positive_cents},
    "hf.other": {"target": wire.digits(11), "amount": wire.positive_cents, "pay_password": wire.digits(6)},
}


@dataclass(frozen=True, slots=True)
class Request:
    card_no: str
    seq: int
    op: str
    params: dict[str, Any]
    challenge: bytes | None = field(default=None, repr=False)
    op_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Answer:
    code: str
    text: str = ""
    script: str | None = None
    waiting: int | None = None  # set (to anything) for an open wallet: ``handle`` counts its waiting loads
    n: int | None = None
    load_id: str | None = None
    waiting_load_id: str | None = None


@dataclass
class Context:
    conn: asyncpg.Connection
    env: Env
    crypto: WalletCrypto
    request: Request
    msisdn: str
    account: asyncpg.Record | None
    now: dt.datetime
    lanes: LoadLanes | None = None  # the process's load lanes (the load ops)

    async def wallet(self) -> asyncpg.Record | None:
        if self.account is None:
            return None
        return await self.conn.fetchrow("SELECT * FROM wallets WHERE account_id = $1 FOR UPDATE", self.account["id"])

    def script(self, state: str, limit: int) -> str:
        assert self.request.challenge is not None
        return self.crypto.state_write_script(self.request.card_no, self.request.challenge, STATE_BYTE[state], limit)

    async def set_state(self, state: str, limit: int) -> Answer:
        assert self.account is not None
        await self.conn.execute("UPDATE wallets SET state = $2, limit_cents = $3, updated_at = now()"
                                " WHERE account_id = $1", self.account["id"], state, limit)
        return Answer("0000", script=self.script(state, limit), waiting=0)


def parse(value: object) -> Request:
    """An STK body ``{card_no, seq, op, params, challenge?, op_password?}``; ``WireError`` when malformed
    (a write op without ``challenge`` included)."""
    fields = wire.fields(value, {"card_no": wire.card16, "seq": wire.integer(1, wire.MAX_SEQ), "op": _op,
                                 "params": _object}, {"challenge": wire.challenge4, "op_password": _op_password})
    op = fields["op"]
    params = (stk_loads.parse_params(op, fields["params"]) if op in stk_loads.LOAD_OPS
              else wire.fields(fields["params"], PARAMS[op]))
    if fields["op"] in WRITE_OPS and "challenge" not in fields:
        raise wire.WireError("a write needs the card's challenge")
    return Request(fields["card_no"], fields["seq"], fields["op"], params, fields.get("challenge"),
                   fields.get("op_password"))


def _op(value: object) -> str:
    if not isinstance(value, str) or (value not in PARAMS and value not in stk_loads.LOAD_OPS):
        raise wire.WireError("unknown op")
    return value


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or any(isinstance(v, dict | list) for v in value.values()):
        raise wire.WireError("params must be a flat object")
    return value


def _op_password(value: object) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or not 4 <= len(value) <= 12:
        raise wire.WireError("operation password: 4-12 digits")
    return value


async def _gate(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, request: Request,
                now: dt.datetime, *, hall: bool = False) -> Context:
    """The checks every op shares, in 7.2's order; the context of the op on success. At a hall POS there is no
    operation password, and ``wallet.open`` needs the account to exist."""
    card = await conn.fetchrow("SELECT status, msisdn FROM wallet_cards WHERE card_no = $1", request.card_no)
    if card is None or card["status"] != "bound":
        raise Refused("5007")
    account = await accounts.live_by_msisdn(conn, card["msisdn"], lock=request.op not in stk_loads.UNLOCKED_OPS)
    if account is not None and account["op_hash"] is not None and not hall:
        await credentials.check(conn, env.hasher, env.policy, account, "op", request.op_password or "", now)
    sub = await registry.get(conn, card["msisdn"])
    if sub is None or sub.status == "cancelled":
        raise Refused("2008")
    if account is None and (request.op != "wallet.open" or hall):
        raise Refused("2003")
    if account is not None:
        matrix.require(account, "sms_stk", "stk")
    return Context(conn, env, crypto, request, card["msisdn"], account, now)


async def _open(ctx: Context) -> Answer:
    if ctx.account is None:
        ctx.account = (await accounts.open_account(ctx.conn, ctx.env, ctx.msisdn)).account
    wallet = await ctx.wallet()
    card_no = ctx.request.card_no
    if wallet is not None and wallet["card_no"] == card_no and wallet["state"] in ("open", "paused"):
        answer = Answer("0000", script=ctx.script(wallet["state"], wallet["limit_cents"]), waiting=0)
    elif wallet is None:
        await ctx.conn.execute("INSERT INTO wallets (account_id, card_no, state, limit_cents) VALUES ($1, $2, 'open',"
                               " $3)", ctx.account["id"], card_no, DEFAULT_LIMIT_CENTS)
        answer = Answer("0000", script=ctx.script("open", DEFAULT_LIMIT_CENTS), waiting=0)
    else:
        await _retire_lost_card(ctx, wallet["card_no"])
        await ctx.conn.execute("UPDATE wallets SET card_no = $2 WHERE account_id = $1", ctx.account["id"], card_no)
        answer = await ctx.set_state("open", DEFAULT_LIMIT_CENTS)
    await ctx.conn.execute("UPDATE wallet_cards SET account_id = $2 WHERE card_no = $1", card_no, ctx.account["id"])
    return Answer(answer.code, "钱包开通成功。", answer.script, answer.waiting)


async def _retire_lost_card(ctx: Context, old_card: str) -> None:
    """SPEC 7.6, lost or unreadable card: at the reopening W's balance posts to ``RETIRED`` (not recoverable)
    and the old card's late records debit ``RETIRED`` from now on."""
    assert ctx.account is not None
    shadow = await postings.account_id(ctx.conn, f"W/{ctx.account['id']}")
    balance = (await postings.buckets(ctx.conn, shadow))[shadow].posted
    if balance > 0:
        await must_post(BOOKS, ctx.conn, [Posting(f"wretire:{ctx.account['id']}:{old_card}", f"W/{ctx.account['id']}",
                                                  "RETIRED", balance, "wallet_retired")])
    await ctx.conn.execute("UPDATE wallet_cards SET debits_retired = true WHERE card_no = $1", old_card)


async def _open_wallet(ctx: Context) -> asyncpg.Record:
    wallet = await ctx.wallet()
    if wallet is None or wallet["state"] not in ("open", "paused") or wallet["card_no"] != ctx.request.card_no:
        raise Refused("5001")
    return wallet


async def _pause(ctx: Context) -> Answer:
    wallet = await _open_wallet(ctx)
    answer = await ctx.set_state("paused", wallet["limit_cents"])
    return Answer(answer.code, "钱包已暂停。", answer.script, answer.waiting)


async def _resume(ctx: Context) -> Answer:
    wallet = await _open_wallet(ctx)
    answer = await ctx.set_state("open", wallet["limit_cents"])
    return Answer(answer.code, "钱包已恢复。", answer.script, answer.waiting)


async def _limit(ctx: Context) -> Answer:
    wallet = await _open_wallet(ctx)
    amount = ctx.request.params["amount"]
    if not MIN_LIMIT_CENTS <= amount <= MAX_LIMIT_CENTS:
        raise Refused("4001")
    assert ctx.account is not None
    credentials.ensure_usable(ctx.account, "pay", ctx.now)
    await credentials.check(ctx.conn, ctx.env.hasher, ctx.env.policy, ctx.account, "pay",
                            ctx.request.params["pay_password"], ctx.now)
    answer = await ctx.set_state(wallet["state"], amount)
    return Answer(answer.code, f"单次消费限额已设为{yuan(amount)}元。", answer.script, answer.waiting)


async def _cancel(ctx: Context) -> Answer:
    """C4 (001): the card empty (``5005``), nothing pending (``2013``), cash = card = 0 (``2012``), the pay
    password; cancels the wallet **and** the account (the closure SMS)."""
    wallet = await _open_wallet(ctx)
    assert ctx.account is not None
    matrix.require(ctx.account, "pay_reset_close", "stk")
    credentials.ensure_usable(ctx.account, "pay", ctx.now)
    if ctx.request.params["balance"] != 0:
        raise Refused("5005")
    if not await accounts.nothing_pending(ctx.conn, ctx.account):
        raise Refused("2013")
    figures = await accounts.balances(ctx.conn, ctx.account)
    if figures.cash != 0 or figures.card != 0:
        raise Refused("2012")
    await credentials.check(ctx.conn, ctx.env.hasher, ctx.env.policy, ctx.account, "pay",
                            ctx.request.params["pay_password"], ctx.now)
    answer = await ctx.set_state("cancelled", wallet["limit_cents"])
    await events.close(ctx.conn, ctx.env, ctx.account)
    return Answer(answer.code, "钱包及手机支付账户已注销。", answer.script)


async def _balance(ctx: Context) -> Answer:
    assert ctx.account is not None
    matrix.require(ctx.account, "query_login", "stk")
    figures = await accounts.balances(ctx.conn, ctx.account)
    wallet = await ctx.wallet()
    waiting = 0 if wallet is not None and wallet["state"] in ("open", "paused") else None
    text = BALANCE.format(cash=yuan(figures.cash), card=yuan(figures.card), avail=yuan(figures.available))
    return Answer("0000", text, waiting=waiting)


async def _pay_password(ctx: Context) -> None:
    """The security-settings cell of 6.7, the pay password's state, the pay password."""
    assert ctx.account is not None
    matrix.require(ctx.account, "pay_change_security", "stk")
    credentials.ensure_usable(ctx.account, "pay", ctx.now)
    await credentials.check(ctx.conn, ctx.env.hasher, ctx.env.policy, ctx.account, "pay",
                            ctx.request.params["pay_password"], ctx.now)


async def _pay_change(ctx: Context) -> Answer:
    assert ctx.account is not None
    matrix.require(ctx.account, "pay_change_security", "stk")
    await profile.change(ctx.conn, ctx.env, ctx.account, "pay", ctx.request.params["old"], ctx.request.params["new"])
    return Answer("0000", "支付密码修改成功。")


async def _op_enable(ctx: Context) -> Answer:
    await _pay_password(ctx)
    assert ctx.account is not None
    await credentials.replace(ctx.conn, ctx.env.hasher, ctx.account["id"], "op", credentials.INITIAL_OP_PASSWORD,
                              initial=False)
    return Answer("0000", "操作密码已启用。")


async def _op_disable(ctx: Context) -> Answer:
    await _pay_password(ctx)
    assert ctx.account is not None
    await credentials.disable(ctx.conn, ctx.account["id"], "op")
    return Answer("0000", "操作密码已关闭。")


async def _op_change(ctx: Context) -> Answer:
    """The operation password (checked at the gate, being enabled) replaced by ``new``: 4–12 digits, not the
    current one (``3005``); with none enabled there is nothing to change (``4011``)."""
    assert ctx.account is not None
    matrix.require(ctx.account, "pay_change_security", "stk")
    if ctx.account["op_hash"] is None:
        raise Refused("4011")
    new = ctx.request.params["new"]
    if not credentials.well_formed("op", new) or await ctx.env.hasher.verify(ctx.account["op_hash"], new):
        raise Refused("3005")
    await credentials.replace(ctx.conn, ctx.env.hasher, ctx.account["id"], "op", new, initial=False)
    return Answer("0000", "操作密码修改成功。")


async def _history(ctx: Context) -> Answer:
    """6.5's CXLS from ``from`` (a day after today: ``7003``, as CXLS answers every date)."""
    assert ctx.account is not None
    matrix.require(ctx.account, "query_login", "stk")
    day: dt.date = ctx.request.params["from"]
    if day > today(ctx.now):
        raise Refused("7003")
    items = await history.entries(ctx.conn, ctx.account, day_start(day), ctx.now + dt.timedelta(seconds=1), limit=3)
    return Answer("0000", history.cxls_reply(items, day.strftime("%Y%m%d")))


async def _card_recharge(ctx: Context) -> Answer:
    assert ctx.account is not None
    done = await cards.recharge(ctx.conn, ctx.env, ctx.account, ctx.msisdn, ctx.request.params["pin"], "stk")
    return Answer("0000", done.reply)


async def _hf(ctx: Context) -> Answer:
    """HF of the own number (no password, C22) or of another (``pay_password``)."""
    assert ctx.account is not None
    params = ctx.request.params
    target, password = (params["target"], params["pay_password"]) if "target" in params else (ctx.msisdn, None)
    paid = await bills.pay(ctx.conn, ctx.env, ctx.account, target, params["amount"], "stk", password)
    return Answer("0000", paid.reply)


async def _load(ctx: Context) -> Answer:
    """``wallet.load.init`` · ``continue`` · ``recover`` (SPEC 7.3): one round of the load engine."""
    assert ctx.account is not None and ctx.lanes is not None
    done = await stk_loads.stk_op(ctx.conn, ctx.env, ctx.crypto, ctx.lanes, ctx.account, ctx.request.card_no,
                                  ctx.request.op, ctx.request.params, ctx.now)
    return Answer("0000", done.text, done.script, waiting=0, load_id=done.load.load_id)


OPS: dict[str, Callable[[Context], Awaitable[Answer]]] = {
    "wallet.load.init": _load, "wallet.load.continue": _load, "wallet.load.recover": _load,
    "wallet.open": _open, "wallet.pause": _pause, "wallet.resume": _resume, "wallet.limit": _limit,
    "wallet.cancel": _cancel, "account.balance": _balance, "pwd.pay.change": _pay_change,
    "pwd.op.enable": _op_enable, "pwd.op.disable": _op_disable, "pwd.op.change": _op_change,
    "account.history": _history, "account.card_recharge": _card_recharge, "hf.self": _hf, "hf.other": _hf,
}


async def handle(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, request: Request,
                 now: dt.datetime | None = None, lanes: LoadLanes | None = None) -> Answer:
    """Run one STK op; a refusal is ``Answer(code, text)`` (its writes are only attempt counters and a load's
    bookkeeping: which script it waits for)."""
    try:
        ctx = await _gate(conn, env, crypto, request, now or dt.datetime.now(dt.UTC))
        ctx.lanes = lanes
        return await _with_waiting(ctx, await OPS[request.op](ctx))
    except Refused as refused:
        return Answer(refused.code, refused.zh, n=refused.n)


async def _with_waiting(ctx: Context, answer: Answer) -> Answer:
    """7.2: every success for an open wallet carries ``waiting`` and, if not 0, the oldest ``waiting_load_id`` —
    whatever the op (a write op's answer marks it; the others: the wallet open or paused now)."""
    if answer.code != "0000" or ctx.account is None:
        return answer
    if answer.waiting is None:
        wallet = await loads.wallet_of(ctx.conn, ctx.account["id"])
        if wallet is None or wallet["state"] not in ("open", "paused"):
            return answer
    queued = await loads.waiting(ctx.conn, ctx.account["id"])
    return dataclasses.replace(answer, waiting=sum(load.amount for load in queued),  # cents (6.12's field types)
                               waiting_load_id=queued[0].load_id if queued else None)


async def open_at_hall(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, card_no: str, challenge: bytes,
                       now: dt.datetime | None = None) -> Answer:
    """``POST /pos/wallet-opens`` (SPEC 7.4): ``wallet.open`` at a hall POS, the account existing."""
    request = Request(card_no, 0, "wallet.open", {}, challenge)
    try:
        return await _open(await _gate(conn, env, crypto, request, now or dt.datetime.now(dt.UTC), hall=True))
    except Refused as refused:
        return Answer(refused.code, refused.zh, n=refused.n)

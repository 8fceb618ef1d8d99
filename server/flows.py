"""The DD flows: one small step function per request stage, over an explicit per-connection state.

Sign-in DD01–DD08 (SPEC 1.3), recharge DD11–DD20 (1.4), result query and recovery DD21/DD22,
card deposit DD73/DD74 (1.7). A step checks the request in the order the spec lists, does
its database work in one transaction and returns the ``Response``; a refusal is raised as
``Refuse(info_code)`` and becomes an ending error answer. The recharge steps' writes (pay,
DD13's card balance, DD15's *loading*, DD17's post or release, DD19's confirm) are steps of
the service's group-commit batchers (``DDContext.batched``): they share a transaction and a
commit with other terminals' steps, and are answered only once that commit is durable. Their
checks that only read run on a pool connection without a transaction. ``handle`` is the only entry point; ``handle_sync`` answers the few requests that
need no database (DD01 with the terminal cached) without a task.

Security: the master keys are only ever passed to ``core_ext``; nothing here logs a key, a
cryptogram or a session key, and every cryptogram check compares in constant time.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from core_ext import (
    INFO_AMOUNT,
    INFO_APP_TYPE,
    INFO_BUSY,
    INFO_CARD_ERROR,
    INFO_CARD_MISMATCH,
    INFO_FUND_EMPTY,
    INFO_INTERNAL,
    INFO_LENGTH,
    INFO_NOT_LOADABLE,
    INFO_NOT_SIGNED_IN,
    INFO_OK,
    INFO_PKI,
    INFO_PURSE_TYPE,
    INFO_REVERSAL_FAILED,
    INFO_REVERSAL_OK,
    INFO_UNKNOWN_ORDER,
    Frame,
    Instruction,
    Reply,
    bcd_decode,
    bcd_encode,
    be_decode,
    be_encode,
    card_div_data,
    constant_time_eq,
    deposit_update_mac,
    diversify,
    pboc_mac2,
    pboc_seslk,
    reply_decode,
    script_encode,
    signin_cryptogram,
    signin_pki_key,
    signin_proof,
    signin_wrap_session_key,
    terminal_id_bytes,
    verify_mac1_make_mac2,
    verify_tac,
)
from recharge import metrics
from recharge.context import Busy, Platform
from recharge.ledger.group_commit import SINGLY, Batcher, Group
from recharge.orders import lifecycle as orders
from recharge.orders.lifecycle import LOCAL_TZ, Order, OrderError, OrderErrorCode
from server import store
from server.session import NO_PKI, Flow, Request, Response

log = logging.getLogger(__name__)

SW_OK = b"\x90\x00"
SW_NO_PROOF = b"\x94\x06"  # GET TRANSACTION PROVE: no load with that serial completed
APP_MERCHANT_LOAD = 0x00
CARD_TYPE_CPU = 0x01
DEPOSIT_OPEN, DEPOSIT_CLOSE = 0x01, 0x02

# DD02: R-INIT, literally as in the seed.
R_INIT = bytes.fromhex("BB10000000")
# DD12: SELECT DDF1, SELECT ADF1, READ BINARY SFI 0x15 (issuer file), GET BALANCE.
READ_CARD_SCRIPT = script_encode([
    Instruction(1, bytes.fromhex("00A4000002DDF1"), SW_OK, 2, 0),
    Instruction(2, bytes.fromhex("00A4000002ADF1"), SW_OK, 3, 0),
    Instruction(3, bytes.fromhex("00B095001E"), SW_OK, 4, 0),
    Instruction(4, bytes.fromhex("805C000204"), SW_OK, 0, 0),
])
ISSUER_FILE_SIZE = 30


class Refuse(Exception):
    """End the flow with this info code. ``counts``: a failed sign-in for the lockout."""

    def __init__(self, code: int, *, counts: bool = False) -> None:
        super().__init__(f"refused 0x{code:02X}")
        self.code = code
        self.counts = counts


@dataclass
class FlowState:
    """What one connection's flow has learned so far (one flow per connection)."""

    code: str = ""
    terminal: store.Terminal | None = None
    pki: bytes = NO_PKI
    k_pki: bytes = field(default=b"", repr=False)
    rt: bytes = field(default=b"", repr=False)
    rp: bytes = field(default=b"", repr=False)
    sk: bytes = field(default=b"", repr=False)
    order: Order | None = None
    pay_at_card: bool = False  # an unpaid order naming no card is paid once the card is read
    order_card_kind: str | None = None  # DD11: the kind of the card the order names (None: unknown)
    card_no: str = ""
    balance_before: int = 0
    online_serial: int = 0
    load_date: bytes = b""
    load_time: bytes = b""


class TerminalCache:
    """Terminal rows by code for DD01, each kept ``ttl_s`` (so a DD01 needs no database)."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._rows: dict[str, tuple[float, store.Terminal | None]] = {}

    def get(self, code: str) -> tuple[bool, store.Terminal | None]:
        hit = self._rows.get(code)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, code: str, terminal: store.Terminal | None) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._rows) >= self.max_entries:
            self._rows.clear()  # crude but bounded; entries are cheap to reload
        self._rows[code] = (time.monotonic() + self.ttl_s, terminal)

    def forget(self, code: str) -> None:
        self._rows.pop(code, None)


@dataclass
class DDContext:
    """What every flow step may use: the platform (settings, pool, keys) and the caches."""

    platform: Platform
    terminals: TerminalCache
    batcher: Batcher  # group commit of the recharge steps that lock no shared row (recharge.ledger.group_commit)
    fund_batcher: Batcher  # group commit of the steps that lock a merchant's recharge fund (pay, post)
    record_ids: store.RecordIds  # DD20 receipt record ids, from blocks of dd_record_seq
    post_group: Group  # DD17's posts merged in a batch (they take ids from ``record_ids``)

    @classmethod
    def create(cls, platform: Platform) -> DDContext:
        s = platform.settings

        def batcher() -> Batcher:
            return Batcher(
                platform.acquire, max_batch=s.ledger_batch_max, max_wait_ms=s.ledger_batch_max_wait_ms,
                queue_depth=s.ledger_batch_queue_depth, pipeline=s.ledger_batch_pipeline,
                max_retries=s.ledger_max_retries, linger_ms=s.ledger_batch_linger_ms,
                max_readers=s.ledger_batch_max_readers, read_wait_s=s.pool_acquire_timeout_s,
                lookup_runners=s.ledger_batch_lookup_runners,
            )

        record_ids = store.RecordIds()
        return cls(
            platform, TerminalCache(s.dd_terminal_cache_ttl_s, s.dd_max_connections), batcher(), batcher(),
            record_ids, _dd17_group(record_ids),
        )

    async def batched(
        self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, fund: bool = False, group: Group | None = None,
        item: object = None,
    ) -> T:
        """``work`` as a step of a group commit, once committed. ``fund``: it locks a recharge fund.

        The two kinds run in separate batches (two lanes, each its own pipeline): the fund row
        serialises the batches of its lane, and the other steps need not wait for it.
        ``group``/``item``: the batch may do it in one statement with its batch-mates of that group.
        """
        return await (self.fund_batcher if fund else self.batcher).run(work, hot=fund, group=group, item=item)


T = TypeVar("T")
Step = Callable[[DDContext, FlowState, Frame], Awaitable[Response]]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _terminal_code(user_id: bytes) -> str:
    try:
        return user_id.decode("ascii")
    except UnicodeDecodeError:
        return ""


def _need_length(frame: Frame, size: int) -> None:
    if len(frame.info) != size:
        raise Refuse(INFO_LENGTH)


def _bcd(data: bytes) -> str | None:
    try:
        return bcd_decode(data)
    except ValueError:
        return None


# --- sign-in (SPEC 1.3) ----------------------------------------------------------------------


def _dd01_answer(st: FlowState, terminal: store.Terminal | None) -> Response:
    if terminal is None or not terminal.enabled or terminal.pki_no is None or terminal.locked:
        raise Refuse(INFO_PKI)
    st.terminal = terminal
    return Response(info=R_INIT)


def dd01_sync(dd: DDContext, st: FlowState, frame: Frame) -> Response | None:
    """DD01 from the terminal cache; None when the database must be asked."""
    if frame.info:
        raise Refuse(INFO_LENGTH)
    st.code = _terminal_code(frame.user_id)
    known, terminal = dd.terminals.get(st.code)
    return _dd01_answer(st, terminal) if known else None


async def dd01(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    if frame.info:
        raise Refuse(INFO_LENGTH)
    st.code = _terminal_code(frame.user_id)
    async with dd.platform.acquire() as conn:
        terminal = await store.get_terminal(conn, st.code) if st.code else None
    dd.terminals.put(st.code, terminal)
    return _dd01_answer(st, terminal)


async def dd03(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-INIT response: PKI ‖ RT. Answer R-AC-Login1: RP ‖ 3DES(K_pki, RT)."""
    _need_length(frame, 12)
    async with dd.platform.acquire() as conn:
        terminal = await store.get_terminal(conn, st.code)
    if terminal is None or terminal.locked or not terminal.enabled:
        raise Refuse(INFO_PKI)
    st.terminal = terminal
    pki4, st.rt = frame.info[:4], frame.info[4:]
    pki_no = _bcd(pki4)
    if pki_no is None or pki_no != terminal.pki_no or not terminal.pki_enabled:
        metrics.SIGNIN_FAILURES.labels("pki").inc()
        raise Refuse(INFO_PKI, counts=True)
    st.pki = pki4
    st.k_pki = signin_pki_key(dd.platform.keys.signin, pki4)
    st.rp = secrets.token_bytes(8)
    return Response(info=st.rp + signin_cryptogram(st.k_pki, st.rt), pki=pki4)


def _same_pki(st: FlowState, frame: Frame) -> None:
    if not constant_time_eq(frame.pki, st.pki):
        metrics.SIGNIN_FAILURES.labels("pki").inc()
        raise Refuse(INFO_PKI, counts=True)


async def dd05(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-AC-Login1 response: 3DES(K_pki, RP). Answer R-AC-Login2: the wrapped session key."""
    _same_pki(st, frame)
    _need_length(frame, 8)
    if not constant_time_eq(frame.info, signin_cryptogram(st.k_pki, st.rp)):
        metrics.SIGNIN_FAILURES.labels("cryptogram").inc()
        raise Refuse(INFO_CARD_ERROR, counts=True)
    st.sk = secrets.token_bytes(16)
    return Response(info=signin_wrap_session_key(st.k_pki, st.sk))


async def dd07(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-AC-Login2 response: MAC(SK, PKI ‖ RT ‖ RP). Persist the sign-in; DD08 ends the flow."""
    _same_pki(st, frame)
    _need_length(frame, 4)
    if not constant_time_eq(frame.info, signin_proof(st.sk, st.pki, st.rt, st.rp)):
        metrics.SIGNIN_FAILURES.labels("proof").inc()
        raise Refuse(INFO_CARD_ERROR, counts=True)
    assert st.terminal is not None
    terminal = st.terminal
    until = store.signin_expiry(_now(), dd.platform.settings.signin_business_day_end_hour)
    pki_no = bcd_decode(st.pki)
    async with dd.platform.acquire() as conn:
        serial = await store.record_signin_success(conn, terminal.id, pki_no, until)
    dd.terminals.forget(st.code)
    if serial is None:  # locked or disabled by an operator during the handshake
        raise Refuse(INFO_PKI)
    expiry = until.astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
    return Response(info=bcd_encode(serial, 8) + bcd_encode(expiry, 7), end=True)


async def _count_signin_failure(dd: DDContext, st: FlowState) -> None:
    if st.terminal is None:
        return
    async with dd.platform.acquire() as conn:
        terminal = await store.record_signin_failure(
            conn, st.terminal.id, dd.platform.settings.signin_max_failures
        )
    dd.terminals.forget(st.code)
    if terminal.locked and not st.terminal.locked:
        log.warning("terminal %s locked after %d failed sign-ins", st.code, terminal.signin_failures)


# --- the checks every recharge / query / deposit starts with (SPEC 1.2) ----------------------


async def _signed_in(conn: asyncpg.Connection, st: FlowState, frame: Frame) -> store.Terminal:
    st.code = _terminal_code(frame.user_id)
    terminal = await store.get_terminal(conn, st.code) if st.code else None
    return _check_signed_in(st, frame, terminal)


def _check_signed_in(st: FlowState, frame: Frame, terminal: store.Terminal | None) -> store.Terminal:
    if terminal is None or not terminal.signed_in(_now()):
        raise Refuse(INFO_NOT_SIGNED_IN)
    if terminal.signin_pki is None or _bcd(frame.pki) != terminal.signin_pki:
        raise Refuse(INFO_PKI)
    st.terminal, st.pki = terminal, frame.pki
    return terminal


def _order_no(data: bytes) -> str:
    order_no = _bcd(data)
    if order_no is None or not orders.is_order_no(order_no):
        raise Refuse(INFO_UNKNOWN_ORDER)
    return order_no


def _order_error(exc: OrderError) -> Refuse:
    code = {
        OrderErrorCode.NOT_FOUND: INFO_UNKNOWN_ORDER,
        OrderErrorCode.FUND_EMPTY: INFO_FUND_EMPTY,
        OrderErrorCode.CARD_MISMATCH: INFO_CARD_MISMATCH,
        OrderErrorCode.CARD_INVALID: INFO_CARD_MISMATCH,
    }.get(exc.code, INFO_NOT_LOADABLE)
    return Refuse(code)


def _loadable(order: Order, now: dt.datetime) -> bool:
    expired = order.expires_at is not None and order.expires_at <= now
    return order.state in (orders.SUBMITTED, orders.PAID) and not order.loading and not expired


def _single_reply(info: bytes) -> Reply:
    try:
        replies = reply_decode(info)
    except ValueError:
        raise Refuse(INFO_CARD_ERROR) from None
    if len(replies) != 1 or replies[0].seq != 1:
        raise Refuse(INFO_CARD_ERROR)
    return replies[0]


# --- recharge (SPEC 1.4) ---------------------------------------------------------------------


def _first_of_each(keys: list[str]) -> list[int]:
    """Indexes of the first occurrence of each key (a merged statement names each row once)."""
    seen: dict[str, int] = {}
    for index, key in enumerate(keys):
        seen.setdefault(key, index)
    return sorted(seen.values())


async def _dd13_all(conn: asyncpg.Connection, items: list[tuple[str, int, Order]]) -> list[object]:
    firsts = _first_of_each([card for card, _, _ in items])
    done = await store.record_cpu_card_balances(conn, [items[i][:2] for i in firsts])
    return [items[i][2] if i in firsts and items[i][0] in done else SINGLY for i in range(len(items))]


async def _dd15_all(conn: asyncpg.Connection, items: list[tuple[str, dict[str, object]]]) -> list[object]:
    firsts = _first_of_each([no for no, _ in items])
    done = await orders.mark_loading_many(conn, [items[i] for i in firsts])
    return [None if i in firsts and items[i][0] in done else SINGLY for i in range(len(items))]


def _dd17_group(record_ids: store.RecordIds) -> Group:
    async def run_all(conn: asyncpg.Connection, items: list[tuple[str, int]]) -> list[object]:
        """(order, balance after) each: the orders marked loaded with their record ids, and their posts."""
        firsts = _first_of_each([no for no, _ in items])
        ids = await record_ids.take(conn, len(firsts), _now())
        loaded = {
            o.order_no: o for o in await orders.mark_loaded_many(
                conn, [(items[i][0], items[i][1], rid) for i, rid in zip(firsts, ids, strict=True)]
            )
        }
        return [loaded[items[i][0]] if i in firsts and items[i][0] in loaded else SINGLY for i in range(len(items))]

    return Group("dd17_post", run_all)


async def _dd19_all(conn: asyncpg.Connection, items: list[str]) -> list[object]:
    done = await orders.confirm_orders(conn, sorted(set(items)))
    return [done.get(no, SINGLY) for no in items]


# What a batch's first run may do in one statement for all its steps of a kind (ledger_batch.Group).
DD13_CARDS = Group("dd13_card_balance", _dd13_all)
DD15_LOADING = Group("dd15_loading", _dd15_all)
DD19_CONFIRM = Group("dd19_confirm", _dd19_all)


async def _pay(conn: asyncpg.Connection, order_no: str, card_no: str | None = None) -> Order:
    try:
        return await orders.pay_order(conn, order_no, card_no=card_no)
    except OrderError as exc:
        raise _order_error(exc) from None


# DD11's reads (terminal, order, card kind) of concurrent terminals in one statement (Batcher.lookup).
DD11_READS = Group("dd11_reads", store.terminals_and_orders)


async def dd11(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """app type ‖ amount ‖ order number: checks BB, A1, A6, 99, 96, 97, A7; pays an unpaid order.

    The checks only read (no transaction, no commit): one lookup, shared with the DD11s of
    other terminals waiting at that moment (``Batcher.lookup``); paying an unpaid order naming
    its card is a batched step (``DDContext.batched``), answered once committed.
    """
    _need_length(frame, 15)
    info = frame.info
    st.code = _terminal_code(frame.user_id)
    order_no = _bcd(info[5:15])
    wanted = order_no if order_no is not None and orders.is_order_no(order_no) else None
    terminal, order, st.order_card_kind = await dd.batcher.lookup(DD11_READS, (st.code, wanted))
    # The checks refuse in the spec's order.
    _check_signed_in(st, frame, terminal)
    if info[0] != APP_MERCHANT_LOAD:
        raise Refuse(INFO_APP_TYPE)
    amount = be_decode(info[1:5])
    _order_no(info[5:15])
    if order is None:
        raise Refuse(INFO_UNKNOWN_ORDER)
    if not _loadable(order, _now()):
        raise Refuse(INFO_NOT_LOADABLE)
    if amount != order.amount_cents:
        raise Refuse(INFO_AMOUNT)
    pay_at_card = order.state == orders.SUBMITTED and order.card_no is None
    if pay_at_card:
        merchant_id = order.merchant_id
        if await dd.batcher.read(lambda conn: store.fund_available(conn, merchant_id)) < order.amount_cents:
            raise Refuse(INFO_FUND_EMPTY)
    elif order.state == orders.SUBMITTED:
        to_pay = order.order_no
        order = await dd.batched(lambda conn: _pay(conn, to_pay), fund=True)
    st.order, st.pay_at_card = order, pay_at_card
    return Response(info=READ_CARD_SCRIPT)


def _read_card(info: bytes) -> tuple[str, int]:
    """DD13's reply list → (logical card number, balance). Refuse AA / A3 per SPEC 1.4."""
    try:
        replies = reply_decode(info)
    except ValueError:
        raise Refuse(INFO_CARD_ERROR) from None
    if [r.seq for r in replies] != [1, 2, 3, 4] or any(r.sw != SW_OK for r in replies):
        raise Refuse(INFO_CARD_ERROR)
    issuer, balance = replies[2].body, replies[3].body
    if len(issuer) != ISSUER_FILE_SIZE or len(balance) != 4:
        raise Refuse(INFO_CARD_ERROR)
    if issuer[4] != CARD_TYPE_CPU:
        raise Refuse(INFO_PURSE_TYPE)
    card_no = _bcd(issuer[8:16])
    if card_no is None:
        raise Refuse(INFO_CARD_ERROR)
    return card_no, be_decode(balance)


def _dd13_card(st: FlowState, frame: Frame) -> tuple[str, int]:
    """DD13's card number and balance, checked against the order (AA, A3, 98)."""
    card_no, balance = _read_card(frame.info)
    assert st.order is not None and st.terminal is not None
    if st.order.card_no is not None and st.order.card_no != card_no:
        raise Refuse(INFO_CARD_MISMATCH)
    return card_no, balance


def _initialize_for_load(st: FlowState, card_no: str, balance: int) -> Response:
    assert st.order is not None and st.terminal is not None
    st.card_no, st.balance_before = card_no, balance
    apdu = (
        bytes.fromhex("805000020B01") + be_encode(st.order.amount_cents, 4)
        + terminal_id_bytes(st.terminal.code) + b"\x10"
    )
    return Response(info=script_encode([Instruction(1, apdu, SW_OK, 0, 0)]))


def dd13_sync(dd: DDContext, st: FlowState, frame: Frame) -> Response | None:
    """DD13 of a paid order's own CPU card, whose row DD11 read: nothing to check in or write to
    the database (INITIALIZE FOR LOAD moves no money), so no task and no commit to wait for; DD15
    stores the balance the card reports with the order's *loading* mark (balance before).
    None when ``dd13`` must run: an order paid at the card, a card seen for the first time, an
    order naming no card."""
    card_no, balance = _dd13_card(st, frame)
    assert st.order is not None
    if st.pay_at_card or st.order.card_no != card_no or st.order_card_kind != "cpu":
        return None
    return _initialize_for_load(st, card_no, balance)


async def dd13(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """The card's files and balance: checks AA, A3, 98; answers INITIALIZE FOR LOAD.

    Runs when ``dd13_sync`` cannot answer: the card row is created (or its balance noted)
    when the platform has not seen it as the order's CPU card; an order naming no card is
    paid here."""
    card_no, balance = _dd13_card(st, frame)
    order, pay_at_card = st.order, st.pay_at_card
    assert order is not None

    async def work(conn: asyncpg.Connection) -> Order:
        if not await store.record_cpu_card_balance(conn, card_no, balance):
            raise Refuse(INFO_PURSE_TYPE)
        return await _pay(conn, order.order_no, card_no) if pay_at_card else order

    if pay_at_card:  # paying locks the merchant's fund row: a hot step, done on its own
        st.order = await dd.batched(work, fund=True)
    else:  # a card seen for the first time, or an order naming no card
        st.order = await dd.batched(work, group=DD13_CARDS, item=(card_no, balance, order))
    return _initialize_for_load(st, card_no, balance)


async def dd15(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """INITIALIZE FOR LOAD reply: verify MAC1, durably mark *loading*, answer CREDIT FOR LOAD."""
    reply = _single_reply(frame.info)
    body = reply.body
    if reply.sw != SW_OK or len(body) != 16 or body[6] != 0x01 or body[7] != 0x00:
        raise Refuse(INFO_CARD_ERROR)
    order, terminal = st.order, st.terminal
    assert order is not None and terminal is not None
    balance, serial, random4, mac1 = be_decode(body[0:4]), be_decode(body[4:6]), body[8:12], body[12:16]
    now_local = _now().astimezone(LOCAL_TZ)
    date4, time3 = bcd_encode(now_local.strftime("%Y%m%d"), 4), bcd_encode(now_local.strftime("%H%M%S"), 3)
    dlk = diversify(dd.platform.keys.load, card_div_data(st.card_no))
    tid = terminal_id_bytes(terminal.code)
    mac2 = verify_mac1_make_mac2(dlk, random4, serial, balance, order.amount_cents, tid, mac1, date4, time3)
    if mac2 is None:
        raise Refuse(INFO_CARD_ERROR)
    if order.expires_at is not None and order.expires_at <= _now():
        raise Refuse(INFO_NOT_LOADABLE)

    load: dict[str, Any] = {
        "terminal_code": terminal.code, "online_serial": serial, "balance_before_cents": balance,
        "load_date": date4.hex(), "load_time": time3.hex(), "load_random": random4.hex().upper(),
    }

    async def work(conn: asyncpg.Connection) -> None:
        try:
            await orders.mark_loading_in_transaction(conn, order.order_no, **load)
        except OrderError as exc:
            raise _order_error(exc) from None

    await dd.batched(work, group=DD15_LOADING, item=(order.order_no, load))  # committed before MAC2 leaves
    st.balance_before, st.online_serial, st.load_date, st.load_time = balance, serial, date4, time3
    apdu = bytes.fromhex("805200000B") + date4 + time3 + mac2 + b"\x04"
    return Response(info=script_encode([Instruction(1, apdu, SW_OK, 0, 0)]))


async def dd17(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """CREDIT FOR LOAD reply: a verified TAC posts; an error SW goes back to paid; else stays loading."""
    order = st.order
    assert order is not None and st.terminal is not None
    try:
        reply = _single_reply(frame.info)
    except Refuse:
        metrics.RECHARGES.labels("loading").inc()
        raise
    if reply.sw != SW_OK:
        async def release(conn: asyncpg.Connection) -> None:
            await orders.release_loading(conn, order.order_no)

        await dd.batched(release)
        metrics.RECHARGES.labels("card_refused").inc()
        raise Refuse(INFO_CARD_ERROR)
    balance_after = st.balance_before + order.amount_cents
    dtk = diversify(dd.platform.keys.tac, card_div_data(st.card_no))
    tid = terminal_id_bytes(st.terminal.code)
    if len(reply.body) != 4 or not verify_tac(
        dtk, balance_after, st.online_serial, order.amount_cents, tid, st.load_date, st.load_time, reply.body
    ):
        metrics.RECHARGES.labels("loading").inc()
        log.warning("order %s: TAC did not verify; left loading for customer service", order.order_no)
        raise Refuse(INFO_CARD_ERROR)

    async def post(conn: asyncpg.Connection) -> Order:
        # The merchant's fund row is the hot lock every post takes: take it last, hold it shortest
        # (and the batch runs hot steps after its other steps).
        (record_id,) = await dd.record_ids.take(conn, 1, _now())
        return await orders.mark_loaded_in_transaction(
            conn, order.order_no, balance_after_cents=balance_after, record_id=record_id
        )

    st.order = await dd.batched(  # committed before DD18 leaves
        post, fund=True, group=dd.post_group, item=(order.order_no, balance_after)
    )
    metrics.RECHARGES.labels("loaded").inc()
    return Response(end=True)


def _receipt(order: Order, pki: bytes, *, amount: int, balance: int) -> bytes:
    """DD20/DD22 info: record id ‖ PKI ‖ logical card number ‖ amount ‖ balance after."""
    return (
        bcd_encode(order.record_id or "0" * 20, 10) + pki + bcd_encode(order.card_no or "0" * 16, 8)
        + be_encode(amount, 4) + be_encode(max(balance, 0), 4)
    )


async def dd19(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """Receipt request after a successful DD18: the order is confirmed (04)."""
    _need_length(frame, 10)
    order = st.order
    assert order is not None
    if _order_no(frame.info) != order.order_no:
        raise Refuse(INFO_UNKNOWN_ORDER)

    async def work(conn: asyncpg.Connection) -> Order:
        return await orders.confirm_order(conn, order.order_no)

    confirmed = await dd.batched(work, group=DD19_CONFIRM, item=order.order_no)
    return Response(
        info=_receipt(confirmed, st.pki, amount=confirmed.amount_cents, balance=confirmed.balance_after_cents or 0),
        end=True,
    )


# --- result query and recovery (DD21/DD22) ---------------------------------------------------


async def _not_credited(conn: asyncpg.Connection, order: Order, pki: bytes) -> Response:
    """DD22 of a load that did not happen: the card's balance is the one it reported before it
    (DD15), or the newest the platform knows for a flow that never got that far."""
    balance = order.balance_before_cents
    if balance is None:
        balance = await store.last_known_balance(conn, order.card_no)
    return Response(result=INFO_REVERSAL_OK, info=_receipt(order, pki, amount=0, balance=balance), end=True)


async def _settled_answer(conn: asyncpg.Connection, order: Order, pki: bytes) -> Response | None:
    """The DD22 of an order that is not loading; None when it is loading."""
    if order.state in (orders.LOADED, orders.CONFIRMED, orders.SETTLED):
        if order.state == orders.LOADED:
            order = await orders.confirm_order(conn, order.order_no)
        return Response(
            info=_receipt(order, pki, amount=order.amount_cents, balance=order.balance_after_cents or 0), end=True
        )
    if order.loading:
        return None
    return await _not_credited(conn, order, pki)


async def dd21_query(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """Step 0x00: the outcome of an order; a *loading* one gets GET TRANSACTION PROVE."""
    _need_length(frame, 10)

    async def work(conn: asyncpg.Connection) -> Response:
        await _signed_in(conn, st, frame)
        order = await orders.get_order(conn, _order_no(frame.info))
        if order is None:
            raise Refuse(INFO_UNKNOWN_ORDER)
        st.order = order
        answer = await _settled_answer(conn, order, st.pki)
        if answer is not None:
            return answer
        apdu = bytes.fromhex("805A000202") + be_encode(order.online_serial or 0, 2) + b"\x08"
        return Response(info=script_encode([Instruction(1, apdu, SW_OK, 0, 0)]))

    return await store.run_transaction(dd.platform, work)


def _proof_verifies(dd: DDContext, order: Order, random4: bytes | None, body: bytes) -> bool:
    if random4 is None or len(body) != 8 or order.card_no is None or order.terminal_code is None:
        return False
    if order.online_serial is None or order.balance_before_cents is None or not order.load_date or not order.load_time:
        return False
    div = card_div_data(order.card_no)
    tid = terminal_id_bytes(order.terminal_code)
    date4, time3 = bytes.fromhex(order.load_date), bytes.fromhex(order.load_time)
    seslk = pboc_seslk(diversify(dd.platform.keys.load, div), random4, order.online_serial)
    mac2_ok = constant_time_eq(body[:4], pboc_mac2(seslk, order.amount_cents, tid, date4, time3))
    tac_ok = verify_tac(
        diversify(dd.platform.keys.tac, div), order.balance_before_cents + order.amount_cents,
        order.online_serial, order.amount_cents, tid, date4, time3, body[4:8],
    )
    return mac2_ok and tac_ok


async def dd21_recover(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """Step 0x01: order ‖ the card's GET TRANSACTION PROVE reply: posted, back to paid, or A4."""
    if len(frame.info) < 10:
        raise Refuse(INFO_LENGTH)
    known = st.order
    assert known is not None
    if _order_no(frame.info[:10]) != known.order_no:
        raise Refuse(INFO_UNKNOWN_ORDER)
    try:
        reply: Reply | None = _single_reply(frame.info[10:])
    except Refuse:
        reply = None

    async def work(conn: asyncpg.Connection) -> Response:
        order = await orders.get_order(conn, known.order_no, for_update=True)
        assert order is not None
        answer = await _settled_answer(conn, order, st.pki)
        if answer is not None:  # settled meanwhile (an operator, another terminal)
            return answer
        if reply is not None and reply.sw == SW_NO_PROOF:
            released = await orders.release_loading(conn, order.order_no)
            metrics.RECHARGES.labels("recovered_not_credited").inc()
            return await _not_credited(conn, released, st.pki)
        random4 = await store.get_load_random(conn, order.order_no)
        if reply is None or reply.sw != SW_OK or not _proof_verifies(dd, order, random4, reply.body):
            metrics.RECHARGES.labels("recovery_failed").inc()
            return Response.refuse(INFO_REVERSAL_FAILED)
        assert order.card_no is not None and order.balance_before_cents is not None
        balance_after = order.balance_before_cents + order.amount_cents
        (record_id,) = await dd.record_ids.take(conn, 1, _now())
        await orders.mark_loaded(conn, order.order_no, balance_after_cents=balance_after, record_id=record_id)
        loaded = await orders.confirm_order(conn, order.order_no)
        metrics.RECHARGES.labels("recovered_loaded").inc()
        return Response(info=_receipt(loaded, st.pki, amount=loaded.amount_cents, balance=balance_after), end=True)

    return await store.run_transaction(dd.platform, work)


# --- card deposit (SPEC 1.7) -----------------------------------------------------------------


async def dd73(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """operation ‖ card ‖ deposit ‖ challenge: move the deposit, answer the secured UPDATE BINARY."""
    _need_length(frame, 17)
    info = frame.info
    operation, amount, challenge = info[0], be_decode(info[9:13]), info[13:17]

    async def work(conn: asyncpg.Connection) -> None:
        terminal = await _signed_in(conn, st, frame)
        if operation not in (DEPOSIT_OPEN, DEPOSIT_CLOSE):
            raise Refuse(INFO_APP_TYPE)
        card_no = _bcd(info[1:9])
        if card_no is None:
            raise Refuse(INFO_CARD_MISMATCH)
        st.card_no = card_no
        if amount <= 0 or amount > dd.platform.settings.dd_max_deposit_cents:
            raise Refuse(INFO_AMOUNT)
        try:
            await store.move_deposit(
                conn, card_no=card_no, merchant_id=terminal.merchant_id, open_=operation == DEPOSIT_OPEN, amount=amount
            )
        except store.DepositRefused as exc:
            raise Refuse(
                {"purse_type": INFO_PURSE_TYPE, "amount": INFO_AMOUNT}.get(exc.reason, INFO_CARD_ERROR)
            ) from None

    await store.run_transaction(dd.platform, work)
    flag = 0x01 if operation == DEPOSIT_OPEN else 0x00
    damk = diversify(dd.platform.keys.maint, card_div_data(st.card_no))
    apdu = bytes.fromhex("04D6960005") + bytes((flag,)) + deposit_update_mac(damk, challenge, flag)
    return Response(info=script_encode([Instruction(1, apdu, SW_OK, 0, 0)]), end=True)


# --- dispatch --------------------------------------------------------------------------------

STEPS: dict[tuple[int, int], Step] = {
    (0x01, 0): dd01, (0x03, 1): dd03, (0x05, 1): dd05, (0x07, 1): dd07,
    (0x11, 0): dd11, (0x13, 1): dd13, (0x15, 1): dd15, (0x17, 1): dd17, (0x19, 1): dd19,
    (0x21, 0): dd21_query, (0x21, 1): dd21_recover,
    (0x73, 0): dd73,
}
_TRANSIENT_DB_ERRORS = (
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.QueryCanceledError,
)


# The steps that can often answer at once, without a task: None from one means "run STEPS' step".
SYNC_STEPS: dict[tuple[int, int], Callable[[DDContext, FlowState, Frame], Response | None]] = {
    (0x01, 0): dd01_sync, (0x13, 1): dd13_sync,
}


def handle_sync(dd: DDContext, st: FlowState, request: Request) -> Response | None:
    """Answer without the database when possible (DD01 with the terminal cached, DD13 of a known
    card), else None: ``handle`` runs the step in a task."""
    frame = request.frame
    step = SYNC_STEPS.get((frame.stage, frame.step))
    if step is None:
        return None
    try:
        return step(dd, st, frame)
    except Refuse as refused:
        return Response.refuse(refused.code)
    except Exception:  # a defect: answer 0xEE, as a step run in a task would
        log.exception("stage 0x%02X: unexpected error", frame.stage)
        return Response.refuse(INFO_INTERNAL)


async def handle(dd: DDContext, st: FlowState, request: Request) -> Response:
    """Run the step for a request; errors become values here (an info code), never escape."""
    frame = request.frame
    step = STEPS[(frame.stage, frame.step)]
    try:
        return await step(dd, st, frame)
    except Refuse as refused:
        if refused.counts and request.flow is Flow.SIGNIN:
            await _count_failure_safely(dd, st)
        return Response.refuse(refused.code)
    except Busy:
        metrics.BUSY_ANSWERS.labels("dd").inc()
        return Response.refuse(INFO_BUSY)
    except _TRANSIENT_DB_ERRORS as exc:
        metrics.BUSY_ANSWERS.labels("dd").inc()
        log.warning("stage 0x%02X: database saturated (%s)", frame.stage, type(exc).__name__)
        return Response.refuse(INFO_BUSY)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, OrderError, ValueError) as exc:
        log.error("stage 0x%02X failed: %s", frame.stage, type(exc).__name__)
        return Response.refuse(INFO_INTERNAL)


async def _count_failure_safely(dd: DDContext, st: FlowState) -> None:
    try:
        await _count_signin_failure(dd, st)
    except (Busy, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.error("could not record a failed sign-in of %s: %s", st.code, type(exc).__name__)


assert INFO_OK == 0

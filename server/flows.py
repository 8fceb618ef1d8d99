"""The DD flows after sign-in: one small step function per request stage, over the connection's
``FlowState`` (server/flow_state.py), and the service-wide ``DDContext`` every step uses.

Recharge DD11–DD20 (SPEC 1.4), result query and recovery DD21/DD22, card deposit DD73/DD74
(1.7); sign-in DD01–DD08 is server/signin.py, and which step answers which stage is the
stage table of server/dispatch.py. A step checks the request in the order the spec lists,
does its database work and returns the ``Response``; a refusal is raised as
``Refuse(info_code)`` and becomes an ending error answer. The recharge steps' writes (pay,
DD13's card balance, DD15's *loading*, DD17's post or release, DD19's confirm, DD21's post or
release from the card's proof and its confirm) are items handed
to their groups of the service's group commit (``DDContext.commit``, server/dd_context.py): they
share a transaction, a statement and a commit with other terminals' items, and are answered —
the order, or its refusal as a value — only once that commit is durable. Their checks that only
read go through the read gate (``DDContext.reads``), outside any transaction.

Security: the master keys are only ever passed to ``core_ext``; nothing here logs a key or a
session key, and every cryptogram check compares in constant time.
"""

from __future__ import annotations

import datetime as dt
import logging

import asyncpg

from core_ext import (
    Frame,
    Instruction,
    bcd_encode,
    be_decode,
    be_encode,
    card_div_data,
    deposit_update_mac,
    diversify,
    script_encode,
)
from recharge import metrics
from recharge.loads import engine, pboc
from recharge.loads.engine import Result
from recharge.loads.pboc import READ_CARD_SCRIPT, SW_NO_PROOF, SW_OK, CardStepError, InFlight, LoadKeys
from recharge.orders.lifecycle import Payment
from recharge.orders.model import (
    DONE,
    LOADED,
    PAID,
    SUBMITTED,
    Order,
    OrderError,
    OrderErrorCode,
    get_order,
    is_order_no,
)
from server import store
from server.dd_context import (
    CARD_BALANCES,
    CONFIRM,
    DD11_READS,
    PAY,
    PAY_AT_CARD,
    DDContext,
)
from server.flow_state import (
    FlowState,
    Refuse,
    bcd_or_none,
    check_signed_in,
    need_length,
    signed_in,
    terminal_code,
    utc_now,
)
from server.session import Response
from server.stages import (
    INFO_AMOUNT,
    INFO_APP_TYPE,
    INFO_CARD_ERROR,
    INFO_CARD_MISMATCH,
    INFO_FUND_EMPTY,
    INFO_LENGTH,
    INFO_NOT_LOADABLE,
    INFO_PURSE_TYPE,
    INFO_REVERSAL_FAILED,
    INFO_REVERSAL_OK,
    INFO_UNKNOWN_ORDER,
)

log = logging.getLogger(__name__)

APP_MERCHANT_LOAD = 0x00
DEPOSIT_OPEN, DEPOSIT_CLOSE = 0x01, 0x02
# The DD12 script, SW_OK, SW_NO_PROOF: the load engine's (recharge/loads/pboc.py), re-exported for clients.
__all__ = ["READ_CARD_SCRIPT", "SW_NO_PROOF", "SW_OK"]


def _order_no(data: bytes) -> str:
    order_no = bcd_or_none(data)
    if order_no is None or not is_order_no(order_no):
        raise Refuse(INFO_UNKNOWN_ORDER)
    return order_no


def _order_error(exc: OrderError) -> Refuse:
    """The DD info code of an order refusal."""
    code = {
        OrderErrorCode.NOT_FOUND: INFO_UNKNOWN_ORDER,
        OrderErrorCode.FUND_EMPTY: INFO_FUND_EMPTY,
        OrderErrorCode.CARD_MISMATCH: INFO_CARD_MISMATCH,
        OrderErrorCode.CARD_INVALID: INFO_CARD_MISMATCH,
    }.get(exc.code, INFO_NOT_LOADABLE)
    return Refuse(code)


def _loadable(order: Order, now: dt.datetime) -> bool:
    expired = order.expires_at is not None and order.expires_at <= now
    return order.state in (SUBMITTED, PAID) and not order.loading and not expired


def _keys(dd: DDContext) -> LoadKeys:
    """The DD recharge's load keys: the platform's MK_load and MK_tac (SPEC 1.6)."""
    return LoadKeys(dd.platform.keys.load, dd.platform.keys.tac)


# --- recharge (SPEC 1.4) ---------------------------------------------------------------------


def _answered(answer: Order | OrderError) -> Order:
    """A group's answer for a step's item: the order, or its refusal raised as the DD info code."""
    if isinstance(answer, OrderError):
        raise _order_error(answer)
    return answer


async def dd11(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """app type ‖ amount ‖ order number: checks BB, A1, A6, 99, 96, 97, A7; pays an unpaid order.

    The checks only read (no transaction, no commit): one lookup, shared with the DD11s of
    other terminals waiting at that moment (``ReadGate.lookup``); paying an unpaid order naming
    its card is an item of the group commit (``DDContext.commit``), answered once committed.
    """
    need_length(frame, 15)
    info = frame.info
    st.code = terminal_code(frame.user_id)
    order_no = bcd_or_none(info[5:15])
    wanted = order_no if order_no is not None and is_order_no(order_no) else None
    terminal, order, st.order_card_kind = await dd.reads.lookup(DD11_READS, (st.code, wanted))
    # The checks refuse in the spec's order.
    check_signed_in(dd.platform.settings, st, frame, terminal)
    if info[0] != APP_MERCHANT_LOAD:
        raise Refuse(INFO_APP_TYPE)
    amount = be_decode(info[1:5])
    _order_no(info[5:15])
    if order is None:
        raise Refuse(INFO_UNKNOWN_ORDER)
    if not _loadable(order, utc_now()):
        raise Refuse(INFO_NOT_LOADABLE)
    if amount != order.amount_cents:
        raise Refuse(INFO_AMOUNT)
    pay_at_card = order.state == SUBMITTED and order.card_no is None
    if pay_at_card:
        merchant_id = order.merchant_id
        if await dd.reads.read(lambda conn: store.fund_available(conn, merchant_id)) < order.amount_cents:
            raise Refuse(INFO_FUND_EMPTY)
    elif order.state == SUBMITTED:
        order = _answered(await dd.commit(PAY, Payment(order.order_no)))
    st.order, st.pay_at_card = order, pay_at_card
    return Response(info=READ_CARD_SCRIPT)


def _read_card(info: bytes) -> tuple[str, int]:
    """DD13's reply list → (logical card number, balance). Refuse AA / A3 per SPEC 1.4."""
    try:
        read = pboc.read_card(info)
    except CardStepError as exc:
        raise Refuse(INFO_PURSE_TYPE if exc.reason == "purse_type" else INFO_CARD_ERROR) from None
    return read.card_no, read.balance


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
    return Response(info=pboc.initialize_script(st.order.amount_cents, st.terminal.code))


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
    assert st.order is not None
    if st.pay_at_card:  # paying locks the merchant's fund row: the fund lane
        paid = await dd.commit(PAY_AT_CARD, (card_no, balance, Payment(st.order.order_no, card_no)))
        if paid is None:
            raise Refuse(INFO_PURSE_TYPE)
        st.order = _answered(paid)
    elif not await dd.commit(CARD_BALANCES, (card_no, balance)):  # a card seen for the first time
        raise Refuse(INFO_PURSE_TYPE)
    return _initialize_for_load(st, card_no, balance)


async def dd15(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """INITIALIZE FOR LOAD reply: verify MAC1, durably mark *loading*, answer CREDIT FOR LOAD (the load
    engine's steps, recharge/loads/engine.py)."""
    order, terminal = st.order, st.terminal
    assert order is not None and terminal is not None
    try:
        made = engine.credit(_keys(dd), st.card_no, order.amount_cents, terminal.code, frame.info, utc_now())
    except CardStepError:
        raise Refuse(INFO_CARD_ERROR) from None
    if order.expires_at is not None and order.expires_at <= utc_now():
        raise Refuse(INFO_NOT_LOADABLE)
    # where MAC2 goes (DD17 and DD19 come on this connection too); committed before MAC2 leaves
    _answered(await engine.mark_loading(dd.lanes, dd.book, order.order_no, made, st.peer))
    load = made.load
    st.balance_before, st.online_serial = load.balance_before, load.serial
    st.load_date, st.load_time = bytes.fromhex(load.load_date), bytes.fromhex(load.load_time)
    return Response(info=made.script)


async def dd17(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """CREDIT FOR LOAD reply: a verified TAC posts; an error SW goes back to paid; else stays loading."""
    order, terminal = st.order, st.terminal
    assert order is not None and terminal is not None
    load = InFlight(st.card_no, order.amount_cents, terminal.code, st.balance_before, st.online_serial,
                    st.load_date.hex(), st.load_time.hex())
    try:
        # The merchant's fund row is the hot lock every post takes: the fund lane, last in its batch.
        done = await engine.finish(dd.lanes, dd.book, _keys(dd), order.order_no, load, frame.info)
    except CardStepError:
        metrics.RECHARGES.labels("loading").inc()
        raise Refuse(INFO_CARD_ERROR) from None
    if done.result is Result.RELEASED:
        if isinstance(done.answer, OrderError):  # settled meanwhile by an operator: answered as an internal error
            raise done.answer
        metrics.RECHARGES.labels("card_refused").inc()
        raise Refuse(INFO_CARD_ERROR)
    if done.result is Result.LOADING:
        metrics.RECHARGES.labels("loading").inc()
        log.warning("order %s: TAC did not verify; left loading for customer service", order.order_no)
        raise Refuse(INFO_CARD_ERROR)
    assert done.answer is not None
    st.order = _answered(done.answer)  # committed before DD18
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
    need_length(frame, 10)
    order = st.order
    assert order is not None
    if _order_no(frame.info) != order.order_no:
        raise Refuse(INFO_UNKNOWN_ORDER)

    confirmed = _answered(await dd.commit(CONFIRM, order.order_no))
    return Response(
        info=_receipt(confirmed, st.pki, amount=confirmed.amount_cents, balance=confirmed.balance_after_cents or 0),
        end=True,
    )


# --- result query and recovery (DD21/DD22) ---------------------------------------------------


async def _not_credited(dd: DDContext, order: Order, pki: bytes) -> Response:
    """DD22 of a load that did not happen: the card's balance is the one it reported before it
    (DD15), or the newest the platform knows for a flow that never got that far."""
    balance = order.balance_before_cents
    if balance is None:
        card_no = order.card_no
        balance = await store.run_transaction(dd.platform, lambda conn: store.last_known_balance(conn, card_no))
    return Response(result=INFO_REVERSAL_OK, info=_receipt(order, pki, amount=0, balance=balance), end=True)


async def _settled(dd: DDContext, order: Order, pki: bytes) -> Response | None:
    """The DD22 of an order that is not loading (a loaded one is confirmed, as DD19 does: the CONFIRM group
    of the lanes); None when it is loading."""
    if order.state in DONE:
        if order.state == LOADED:
            confirmed = await dd.commit(CONFIRM, order.order_no)
            if isinstance(confirmed, OrderError):  # settled meanwhile by an operator: an internal error
                raise confirmed
            order = confirmed
        return Response(
            info=_receipt(order, pki, amount=order.amount_cents, balance=order.balance_after_cents or 0), end=True
        )
    if order.loading:
        return None
    return await _not_credited(dd, order, pki)


async def dd21_query(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """Step 0x00: the outcome of an order; a *loading* one gets GET TRANSACTION PROVE."""
    need_length(frame, 10)

    async def look(conn: asyncpg.Connection) -> Order:
        await signed_in(dd.platform.settings, conn, st, frame)
        order = await get_order(conn, _order_no(frame.info))
        if order is None:
            raise Refuse(INFO_UNKNOWN_ORDER)
        return order

    st.order = order = await store.run_transaction(dd.platform, look)
    answer = await _settled(dd, order, st.pki)
    if answer is not None:
        return answer
    return Response(info=pboc.prove_script(order.online_serial or 0))


def _in_flight(order: Order, random4: bytes | None) -> InFlight | None:
    """What the order's proof covers, as DD16 stored it (None when a field is missing)."""
    if random4 is None or order.card_no is None or order.terminal_code is None or order.online_serial is None:
        return None
    if order.balance_before_cents is None or not order.load_date or not order.load_time:
        return None
    return InFlight(order.card_no, order.amount_cents, order.terminal_code, order.balance_before_cents,
                    order.online_serial, order.load_date, order.load_time, random4.hex().upper())


async def dd21_recover(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """Step 0x01: order ‖ the card's GET TRANSACTION PROVE reply: posted, back to paid, or A4 — settled by the
    load engine through the lanes (``engine.settle_proof`` with the orders' book), as DD17 settles a load."""
    if len(frame.info) < 10:
        raise Refuse(INFO_LENGTH)
    known = st.order
    assert known is not None
    if _order_no(frame.info[:10]) != known.order_no:
        raise Refuse(INFO_UNKNOWN_ORDER)
    proof = frame.info[10:]

    async def look(conn: asyncpg.Connection) -> tuple[Order, InFlight | None]:
        order = await get_order(conn, known.order_no)
        assert order is not None
        if order.state in DONE or not order.loading:
            return order, None
        await store.record_recovery_peer(conn, order.order_no, st.peer)
        return order, _in_flight(order, await store.get_load_random(conn, order.order_no))

    order, load = await store.run_transaction(dd.platform, look)
    answer = await _settled(dd, order, st.pki)
    if answer is not None:  # settled meanwhile (an operator, another terminal)
        return answer
    done = await engine.settle_proof(dd.lanes, dd.book, _keys(dd), order.order_no, load, proof)
    if done.result is Result.LOADING:
        metrics.RECHARGES.labels("recovery_failed").inc()
        return Response.refuse(INFO_REVERSAL_FAILED)
    if not isinstance(done.answer, Order):  # refused: settled meanwhile (an operator, another terminal)
        again = await store.run_transaction(dd.platform, lambda conn: get_order(conn, order.order_no))
        assert again is not None
        return await _settled(dd, again, st.pki) or Response.refuse(INFO_REVERSAL_FAILED)
    posted = done.result is Result.POSTED
    metrics.RECHARGES.labels("recovered_loaded" if posted else "recovered_not_credited").inc()
    settled = await _settled(dd, done.answer, st.pki)
    assert settled is not None, "the lanes answered it posted or released"
    return settled


# --- card deposit (SPEC 1.7) -----------------------------------------------------------------


async def dd73(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """operation ‖ card ‖ deposit ‖ challenge: move the deposit, answer the secured UPDATE BINARY."""
    need_length(frame, 17)
    info = frame.info
    operation, amount, challenge = info[0], be_decode(info[9:13]), info[13:17]

    async def work(conn: asyncpg.Connection) -> None:
        terminal = await signed_in(dd.platform.settings, conn, st, frame)
        if operation not in (DEPOSIT_OPEN, DEPOSIT_CLOSE):
            raise Refuse(INFO_APP_TYPE)
        card_no = bcd_or_none(info[1:9])
        if card_no is None:
            raise Refuse(INFO_CARD_MISMATCH)
        st.card_no = card_no
        if amount <= 0 or amount > dd.platform.settings.dd_max_deposit_cents:
            raise Refuse(INFO_AMOUNT)
        try:
            await store.move_deposit(
                conn, card_no=card_no, merchant_id=terminal.merchant_id, open_=operation == DEPOSIT_OPEN, amount=amount,
                peer=st.peer,
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



"""The DD sign-in flow, DD01–DD08 (SPEC 1.3): the mutual challenge-response between the platform
and the terminal's security module, and the failed sign-ins that lock a terminal.

Security: the master key is only ever passed to ``core_ext``; nothing here logs a key, a
cryptogram or a session key, and every cryptogram check compares in constant time.
"""

from __future__ import annotations

import logging
import secrets

import asyncpg

from core_ext import (
    Frame,
    bcd_decode,
    bcd_encode,
    constant_time_eq,
    signin_cryptogram,
    signin_pki_key,
    signin_proof,
    signin_wrap_session_key,
)
from recharge import metrics
from recharge.context import Busy
from recharge.orders.lifecycle import LOCAL_TZ
from server import store
from server.flow_state import FlowState, Refuse, bcd_or_none, need_length, terminal_code, utc_now
from server.flows import DDContext
from server.session import Response
from server.stages import INFO_CARD_ERROR, INFO_LENGTH, INFO_PKI

log = logging.getLogger(__name__)

# DD02: R-INIT, literally as in the seed.
R_INIT = bytes.fromhex("BB10000000")


def _dd01_answer(st: FlowState, terminal: store.Terminal | None) -> Response:
    if terminal is None or not terminal.enabled or terminal.pki_no is None or terminal.locked:
        raise Refuse(INFO_PKI)
    st.terminal = terminal
    return Response(info=R_INIT)


def dd01_sync(dd: DDContext, st: FlowState, frame: Frame) -> Response | None:
    """DD01 from the terminal cache; None when the database must be asked."""
    if frame.info:
        raise Refuse(INFO_LENGTH)
    st.code = terminal_code(frame.user_id)
    known, terminal = dd.terminals.get(st.code)
    return _dd01_answer(st, terminal) if known else None


async def dd01(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    if frame.info:
        raise Refuse(INFO_LENGTH)
    st.code = terminal_code(frame.user_id)
    async with dd.platform.acquire() as conn:
        terminal = await store.get_terminal(conn, st.code) if st.code else None
    dd.terminals.put(st.code, terminal)
    return _dd01_answer(st, terminal)


async def dd03(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-INIT response: PKI ‖ RT. Answer R-AC-Login1: RP ‖ 3DES(K_pki, RT)."""
    need_length(frame, 12)
    async with dd.platform.acquire() as conn:
        terminal = await store.get_terminal(conn, st.code)
    if terminal is None or terminal.locked or not terminal.enabled:
        raise Refuse(INFO_PKI)
    st.terminal = terminal
    pki4, st.rt = frame.info[:4], frame.info[4:]
    pki_no = bcd_or_none(pki4)
    if pki_no is None or pki_no != terminal.pki_no or not terminal.pki_enabled:
        raise await _failed(dd, st, INFO_PKI, "pki")
    st.pki = pki4
    st.k_pki = signin_pki_key(dd.platform.keys.signin, pki4)
    st.rp = secrets.token_bytes(8)
    return Response(info=st.rp + signin_cryptogram(st.k_pki, st.rt), pki=pki4)


async def _same_pki(dd: DDContext, st: FlowState, frame: Frame) -> None:
    if not constant_time_eq(frame.pki, st.pki):
        raise await _failed(dd, st, INFO_PKI, "pki")


async def dd05(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-AC-Login1 response: 3DES(K_pki, RP). Answer R-AC-Login2: the wrapped session key."""
    await _same_pki(dd, st, frame)
    need_length(frame, 8)
    if not constant_time_eq(frame.info, signin_cryptogram(st.k_pki, st.rp)):
        raise await _failed(dd, st, INFO_CARD_ERROR, "cryptogram")
    st.sk = secrets.token_bytes(16)
    return Response(info=signin_wrap_session_key(st.k_pki, st.sk))


async def dd07(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-AC-Login2 response: MAC(SK, PKI ‖ RT ‖ RP). Persist the sign-in; DD08 ends the flow."""
    await _same_pki(dd, st, frame)
    need_length(frame, 4)
    if not constant_time_eq(frame.info, signin_proof(st.sk, st.pki, st.rt, st.rp)):
        raise await _failed(dd, st, INFO_CARD_ERROR, "proof")
    assert st.terminal is not None
    terminal = st.terminal
    until = store.signin_expiry(utc_now(), dd.platform.settings.signin_business_day_end_hour)
    pki_no = bcd_decode(st.pki)
    async with dd.platform.acquire() as conn:
        serial = await store.record_signin_success(conn, terminal.id, pki_no, until)
    dd.terminals.forget(st.code)
    if serial is None:  # locked or disabled by an operator during the handshake
        raise Refuse(INFO_PKI)
    expiry = until.astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
    return Response(info=bcd_encode(serial, 8) + bcd_encode(expiry, 7), end=True)


async def _failed(dd: DDContext, st: FlowState, code: int, reason: str) -> Refuse:
    """A failed sign-in: counted (metric, and towards the lockout), then refused with ``code``."""
    metrics.SIGNIN_FAILURES.labels(reason).inc()
    try:
        await _count_signin_failure(dd, st)
    except (Busy, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.error("could not record a failed sign-in of %s: %s", st.code, type(exc).__name__)
    return Refuse(code)


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

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
from recharge.orders.model import LOCAL_TZ
from server import store
from server.dd_context import DDContext
from server.flow_state import FlowState, Refuse, bcd_or_none, need_length, terminal_code, utc_now
from server.session import Response
from server.stages import INFO_CARD_ERROR, INFO_LENGTH, INFO_PKI

log = logging.getLogger(__name__)

# DD02: R-INIT, literally as in the seed.
R_INIT = bytes.fromhex("BB10000000")


def _dd01_answer(st: FlowState, terminal: store.Terminal | None) -> Response:
    """R-INIT, or 0xA1 for every code that cannot sign in now — unknown, disabled, without a
    PKI number, locked — alike (SPEC 1.3 asks 0xA1 for an unknown user id)."""
    if terminal is None or not terminal.can_sign_in(utc_now()):
        metrics.SIGNIN_FAILURES.labels("unknown" if terminal is None else "refused", "false").inc()
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
    if terminal is None or not terminal.can_sign_in(utc_now()):
        raise Refuse(INFO_PKI)
    st.terminal = terminal
    pki4, st.rt = frame.info[:4], frame.info[4:]
    pki_no = bcd_or_none(pki4)
    if pki_no is None or pki_no != terminal.pki_no or not terminal.pki_enabled:
        raise await _unproven(dd, st, INFO_PKI, "pki")
    st.pki = pki4
    st.k_pki = signin_pki_key(dd.platform.keys.signin, pki4)
    st.rp = secrets.token_bytes(8)
    return Response(info=st.rp + signin_cryptogram(st.k_pki, st.rt), pki=pki4)


async def dd05(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-AC-Login1 response: 3DES(K_pki, RP). Answer R-AC-Login2: the wrapped session key.

    A cryptogram that verifies is the module's proof that it holds K_pki of the registered
    PKI number (RP is fresh): from here on a failure counts towards the lock."""
    if not constant_time_eq(frame.pki, st.pki):
        raise await _unproven(dd, st, INFO_PKI, "pki")
    need_length(frame, 8)
    if not constant_time_eq(frame.info, signin_cryptogram(st.k_pki, st.rp)):
        raise await _unproven(dd, st, INFO_CARD_ERROR, "cryptogram")
    st.sk = secrets.token_bytes(16)
    return Response(info=signin_wrap_session_key(st.k_pki, st.sk))


async def dd07(dd: DDContext, st: FlowState, frame: Frame) -> Response:
    """R-AC-Login2 response: MAC(SK, PKI ‖ RT ‖ RP). Persist the sign-in; DD08 ends the flow."""
    if not constant_time_eq(frame.pki, st.pki):
        raise await _proven(dd, st, INFO_PKI, "pki")
    need_length(frame, 4)
    if not constant_time_eq(frame.info, signin_proof(st.sk, st.pki, st.rt, st.rp)):
        raise await _proven(dd, st, INFO_CARD_ERROR, "proof")
    assert st.terminal is not None
    terminal = st.terminal
    until = store.signin_expiry(utc_now(), dd.platform.settings.signin_business_day_end_hour)
    pki_no = bcd_decode(st.pki)
    async with dd.platform.acquire() as conn:
        serial = await store.record_signin_success(conn, terminal.id, pki_no, until, st.peer)
    dd.terminals.forget(st.code)
    if serial is None:  # locked or disabled during the handshake
        raise Refuse(INFO_PKI)
    expiry = until.astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
    return Response(info=bcd_encode(serial, 8) + bcd_encode(expiry, 7), end=True)


# --- failed sign-ins (docs/PROTOCOL.md "Sign-in failures and the lockout") -------------------------


async def _unproven(dd: DDContext, st: FlowState, code: int, reason: str) -> Refuse:
    """A sign-in that failed before the module proved its key: anyone who saw the terminal's code
    and PKI number on the wire can cause it, so it never locks the terminal. Counted (metric,
    the terminal's window of probes) and logged with the source address; refused with ``code``."""
    metrics.SIGNIN_FAILURES.labels(reason, "false").inc()
    log.info("sign-in of terminal %r from %s failed before proof (%s)", st.code, st.peer, reason)
    s = dd.platform.settings
    assert st.terminal is not None
    try:
        async with dd.platform.acquire() as conn:
            probes = await store.record_signin_probe(conn, st.terminal.id, s.signin_probe_window_s)
    except _RECORDING_ERRORS as exc:
        log.error("could not record a failed sign-in of %r: %s", st.code, type(exc).__name__)
        return Refuse(code)
    if probes == s.signin_probe_alert:
        log.warning(
            "terminal %r: %d sign-ins failed before proof within %d s, the last from %s: someone who knows its"
            " code and PKI number is trying (it is not locked by this)", st.code, probes, s.signin_probe_window_s,
            st.peer,
        )
    return Refuse(code)


async def _proven(dd: DDContext, st: FlowState, code: int, reason: str) -> Refuse:
    """A sign-in that failed after the module proved its key (a broken module, or a relay between
    the terminal and the platform): counts towards the lock. Refused with ``code``."""
    metrics.SIGNIN_FAILURES.labels(reason, "true").inc()
    log.info("sign-in of terminal %r from %s failed after proof (%s)", st.code, st.peer, reason)
    s = dd.platform.settings
    policy = store.LockPolicy(s.signin_max_failures, s.signin_lock_base_s, s.signin_lock_max_s)
    assert st.terminal is not None
    try:
        async with dd.platform.acquire() as conn:
            terminal, locked = await store.record_signin_failure(conn, st.terminal.id, policy)
    except _RECORDING_ERRORS as exc:
        log.error("could not record a failed sign-in of %r: %s", st.code, type(exc).__name__)
        return Refuse(code)
    dd.terminals.forget(st.code)
    if locked:
        metrics.SIGNIN_LOCKOUTS.inc()
        log.warning("terminal %r locked until %s after %d failed sign-ins in a row after proof, the last from %s",
                    st.code, terminal.signin_locked_until, s.signin_max_failures, st.peer)
    return Refuse(code)


_RECORDING_ERRORS = (Busy, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

"""What every DD flow step works with: the connection's ``FlowState``, ``Refuse``, the terminal
cache that answers DD01 without the database, the small parsers of request fields, and the
checks every flow after sign-in starts with (signed in, from the sign-in's network, same PKI).

A step (server/flows.py, server/signin.py) reads and fills its connection's ``FlowState``; it
refuses by raising ``Refuse(info_code)``, which the dispatcher (server/dispatch.py) turns into
the ending error answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import asyncpg

from core_ext import Frame, bcd_decode
from recharge import metrics
from recharge.config import Settings
from recharge.network import same_network
from recharge.orders.model import Order
from server import store
from server.stages import INFO_LENGTH, INFO_NOT_SIGNED_IN, INFO_PKI, NO_PKI

log = logging.getLogger(__name__)


class Refuse(Exception):
    """End the flow with this info code (a step's refusal; ``handle`` turns it into the answer)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"refused 0x{code:02X}")
        self.code = code


@dataclass(slots=True)
class FlowState:
    """What one connection's flow has learned so far (one flow per connection)."""

    code: str = ""
    peer: str | None = None  # the terminal's address, as the protocol layer knows it (server.protocol)
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


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def terminal_code(user_id: bytes) -> str:
    """The user id field as the terminal code ("" when it is not ASCII: no terminal has that code)."""
    try:
        return user_id.decode("ascii")
    except UnicodeDecodeError:
        return ""


def need_length(frame: Frame, size: int) -> None:
    """Refuse ``0xCC`` unless the info has exactly ``size`` bytes."""
    if len(frame.info) != size:
        raise Refuse(INFO_LENGTH)


def bcd_or_none(data: bytes) -> str | None:
    """The digits of BCD ``data``, or None when a nibble is not a digit."""
    try:
        return bcd_decode(data)
    except ValueError:
        return None


# --- the checks every recharge / query / deposit starts with (SPEC 1.2) ----------------------


async def signed_in(settings: Settings, conn: asyncpg.Connection, st: FlowState, frame: Frame) -> store.Terminal:
    """The request's terminal, read on ``conn``, if ``check_signed_in`` lets it through."""
    st.code = terminal_code(frame.user_id)
    terminal = await store.get_terminal(conn, st.code) if st.code else None
    return check_signed_in(settings, st, frame, terminal)


def check_signed_in(settings: Settings, st: FlowState, frame: Frame, terminal: store.Terminal | None) -> store.Terminal:
    """SPEC 1.2: signed in (0xBB) — from the network the sign-in came from (docs/PROTOCOL.md "A
    sign-in is bound to its source") —, then the PKI number it signed in with (0xA1)."""
    if terminal is None or not terminal.signed_in(utc_now()):
        raise Refuse(INFO_NOT_SIGNED_IN)
    v4, v6 = settings.dd_signin_bind_ipv4_prefix, settings.dd_signin_bind_ipv6_prefix
    if (v4 or v6) and not same_network(terminal.signin_peer, st.peer, v4, v6):
        metrics.SIGNIN_BINDING_REFUSALS.inc()
        log.info("terminal %r: a request from %s, its sign-in from %s: 0xBB", st.code, st.peer, terminal.signin_peer)
        raise Refuse(INFO_NOT_SIGNED_IN)
    if terminal.signin_pki is None or bcd_or_none(frame.pki) != terminal.signin_pki:
        raise Refuse(INFO_PKI)
    st.terminal, st.pki = terminal, frame.pki
    return terminal

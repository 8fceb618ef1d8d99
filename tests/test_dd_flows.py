"""End to end: the real DD server on a free port against PostgreSQL; the tests speak to it as a
terminal (TerminalClient over a socket) with a virtual security module and virtual cards.

Happy paths of every flow (sign-in, recharge with receipt, query, deposit), the ledger and
order effects of each, and that the ledger audit balances after every test (``audited``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import pytest

from core_ext import bcd_decode, be_decode
from recharge import ledger, orders
from recharge.keys import MasterKeys
from server import fixtures
from server.terminal_client import TerminalClient
from tests.conftest import unique_digits

pytestmark = pytest.mark.usefixtures("audited")


@dataclass
class Term:
    """A registered DD terminal of a funded merchant, and how to reach the server."""

    code: str
    pki: str
    merchant_id: int
    port: int
    keys: MasterKeys

    def client(self) -> TerminalClient:
        return TerminalClient("127.0.0.1", self.port, self.code, self.pki, timeout_s=5.0)

    def module(self):  # type: ignore[no-untyped-def]
        return fixtures.virtual_module(self.keys, self.pki)


@pytest.fixture
async def term(platform, conn: asyncpg.Connection, test_keys) -> Term:  # type: ignore[no-untyped-def]
    merchant_code = unique_digits(4)
    merchant_id = await fixtures.funded_merchant(conn, merchant_code, 1_000_000)
    code, pki = unique_digits(8), unique_digits(8)
    await fixtures.dd_terminal(conn, merchant_id, code, pki)
    return Term(code, pki, merchant_id, platform.dd_port, test_keys[0])


async def in_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(fn, *args)


async def test_signin_happy_path_persists_signed_in_until_and_serial(term: Term, conn: asyncpg.Connection) -> None:
    dd08 = await in_thread(term.client().sign_in, term.module())
    assert dd08.stage == 0x08 and dd08.flow == 0xFF and dd08.result == 0
    assert len(dd08.info) == 15
    serial, expiry = bcd_decode(dd08.info[:8]), bcd_decode(dd08.info[8:])
    row = await conn.fetchrow("SELECT signin_serial, signed_in_until, signin_pki FROM terminals WHERE code = $1", term.code)
    assert row["signin_serial"] == serial and row["signin_pki"] == term.pki
    assert row["signed_in_until"].astimezone(orders.LOCAL_TZ).strftime("%Y%m%d%H%M%S") == expiry


async def test_recharge_happy_path_posts_transfer_and_returns_receipt(term: Term, conn: asyncpg.Connection) -> None:
    await in_thread(term.client().sign_in, term.module())
    card_no = "1680" + unique_digits(12)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card_no, 1234)
    card = fixtures.virtual_card(term.keys, card_no, 500)
    dd20 = await in_thread(term.client().recharge, card, order_no, 1234)
    assert dd20.stage == 0x20 and dd20.result == 0 and dd20.flow == 0xFF
    assert card.balance == 1734
    info = dd20.info
    assert bcd_decode(info[14:22]) == card_no and be_decode(info[22:26]) == 1234 and be_decode(info[26:30]) == 1734
    order = await orders.get_order(conn, order_no)
    assert order is not None and order.state == orders.CONFIRMED and not order.loading
    assert bcd_decode(info[:10]) == order.record_id
    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=card_no)
    assert (await ledger.get_balance(conn, purse)).posted == 1234

"""Set-up for tests, the terminal simulator and the benchmark: funded merchants, DD terminals,
orders, virtual cards and security modules. Nothing here runs in the server itself.

The virtual card and module need the master keys (the simulator reads the platform's key
file): they are a test tool, never something to point at real cards.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import asyncpg

from app import demo
from core_ext.virtual_card import VirtualCard
from core_ext.virtual_sam import VirtualSAM
from recharge import merchants
from recharge.keys import MasterKeys
from recharge.orders import lifecycle as orders
from server.terminal_client import TerminalClient, load_until_credit


def random_digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


async def fresh_merchant_code(conn: asyncpg.Connection) -> str:
    """A 4-digit merchant code no merchant has yet."""
    while True:
        code = random_digits(4)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM merchants WHERE code = $1)", code):
            return code


async def funded_merchant(conn: asyncpg.Connection, code: str, fund_cents: int, *, name: str = "") -> int:
    """A merchant (created if missing) whose recharge fund receives ``fund_cents`` more."""
    merchant_id = await merchants.ensure_merchant(conn, code, name or f"merchant {code}")
    if fund_cents > 0:
        async with conn.transaction():
            await demo.fund_recharge_fund(conn, merchant_id, fund_cents, f"fund:{code}:{secrets.token_hex(8)}")
    return merchant_id


async def dd_terminal(conn: asyncpg.Connection, merchant_id: int, code: str, pki: str) -> int:
    """A DD terminal with its security module's PKI number (replaced if the code exists)."""
    terminal_id = await conn.fetchval(
        "INSERT INTO terminals (code, merchant_id, kind, pki_no) VALUES ($1, $2, 'pos', $3)"
        " ON CONFLICT (code) DO UPDATE SET merchant_id = EXCLUDED.merchant_id, pki_no = EXCLUDED.pki_no,"
        " locked = false, signin_failures = 0 RETURNING id",
        code,
        merchant_id,
        pki,
    )
    return int(terminal_id)


async def register_cpu_cards(conn: asyncpg.Connection, card_nos: list[str]) -> None:
    """CPU cards known to the platform, as their issuer's card file or a first terminal read
    registers them (the order API orders only known cards). Existing numbers are left alone."""
    await conn.execute(
        "INSERT INTO cards (card_no, kind) SELECT unnest($1::text[]), 'cpu' ON CONFLICT (card_no) DO NOTHING",
        card_nos,
    )


async def paid_order(
    conn: asyncpg.Connection, merchant_id: int, card_no: str | None, amount_cents: int, *,
    pay: bool = True, expires_in_s: int = 3600,
) -> str:
    """A new order (paid unless ``pay=False``); its 20-digit number."""
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in_s)
    created = await orders.create_order(
        conn, merchant_id=merchant_id, amount_cents=amount_cents, card_no=card_no, pay=pay, expires_at=expires
    )
    return created.order.order_no


def virtual_card(keys: MasterKeys, card_no: str, balance_cents: int = 0, **knobs: object) -> VirtualCard:
    return VirtualCard(card_no, balance_cents, keys.load, keys.tac, keys.maint, **knobs)  # type: ignore[arg-type]


def virtual_module(keys: MasterKeys, pki: str) -> VirtualSAM:
    return VirtualSAM.from_master(pki, keys.signin)


@dataclass
class SimTerminal:
    """A registered DD terminal of a funded merchant, and how to reach the server."""

    code: str
    pki: str
    merchant_id: int
    host: str
    port: int
    keys: MasterKeys

    def client(self, timeout_s: float = 5.0, *, source: str | None = None) -> TerminalClient:
        """A blocking client of this terminal (connecting from the local address ``source``)."""
        return TerminalClient(self.host, self.port, self.code, self.pki, timeout_s=timeout_s, source=source)

    def module(self) -> VirtualSAM:
        return virtual_module(self.keys, self.pki)

    def card(self, card_no: str | None = None, balance_cents: int = 0, **knobs: object) -> VirtualCard:
        return virtual_card(self.keys, card_no or "1680" + random_digits(12), balance_cents, **knobs)


async def sim_terminal(
    conn: asyncpg.Connection, host: str, port: int, keys: MasterKeys, *, fund_cents: int = 10_000_000
) -> SimTerminal:
    """A new merchant with a funded recharge fund and one DD terminal (random codes)."""
    merchant_id = await funded_merchant(conn, await fresh_merchant_code(conn), fund_cents)
    code, pki = random_digits(8), random_digits(8)
    await dd_terminal(conn, merchant_id, code, pki)
    return SimTerminal(code, pki, merchant_id, host, port, keys)


def recharge_until_dd16(client: TerminalClient, card: VirtualCard, order_no: str, amount_cents: int) -> bytes:
    """DD11–DD15 on an open connection; the DD16 script (CREDIT FOR LOAD) the card has not run yet."""
    return client.run(load_until_credit(client.messages, card, order_no, amount_cents)).info

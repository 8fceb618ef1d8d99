"""Test support for the SMS channel tests: an operator phone, cardholder phones, and a
snapshot of everything a refused SMS must leave unchanged.

Builds on ``tests.kkt_world``: each ``SmsWorld`` has its own merchant (fresh 4-digit code),
an SMS terminal registered to a fresh operator number, and sends SMS as the gateway does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from recharge.kkt import cards, sms
from tests.kkt_world import World, make_world

SECRET = "test-sms-secret"  # tests/conftest.py settings.sms_shared_secret
SERVICE_NUMBER = "10658000"


def new_mobile() -> str:
    return "13" + "".join(secrets.choice("0123456789") for _ in range(9))


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    content_type: str


@dataclass
class SmsWorld:
    world: World
    operator: str  # the operator's mobile number
    sms_terminal: str

    @property
    def pool(self) -> asyncpg.Pool:
        return self.world.pool

    @property
    def url(self) -> str:
        return f"{self.world.base}/sms/inbound"

    async def send(self, text: str, sender: str | None = None, **extra: str) -> str:
        """One SMS through the gateway hook; asserts a 200 text/plain reply that fits one SMS."""
        reply = await send_raw(self.url, {"secret": SECRET, "from": sender or self.operator,
                                          "to": SERVICE_NUMBER, "text": text, **extra})
        assert reply.status == 200, reply
        assert reply.content_type == "text/plain; charset=utf-8", reply
        assert reply.text and sms.sms_chars(reply.text) <= 70, reply.text
        return reply.text

    async def card(self, **kwargs: Any) -> str:
        return await self.world.new_card(**kwargs)

    async def state(self, card_no: str) -> dict[str, Any]:
        """What a refused command must not change: ledger balances of the card, the
        operator's merchant's fund, its trade journal, serial, and the card's row."""
        async with self.pool.acquire() as conn:
            purse, points = await cards.card_balances(conn, card_no)
            row = await conn.fetchrow(
                "SELECT state, password_hash, password_failures, locked_until, bound_mobile, bound_id_no"
                " FROM cards WHERE card_no = $1", card_no)
            fund = await conn.fetchval(
                "SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM accounts WHERE merchant_id = $1",
                self.world.merchant_id)
            return {
                "purse": purse, "points": points, "merchant_accounts": fund,
                "trades": await conn.fetchval("SELECT count(*) FROM kkt_trades WHERE card_no = $1", card_no),
                "transfers": await conn.fetchval(
                    "SELECT count(*) FROM transfers t JOIN accounts a ON a.id IN (t.debit_account_id,"
                    " t.credit_account_id) WHERE a.card_no = $1", card_no),
                "stance_seq": await conn.fetchval("SELECT stance_seq FROM merchants WHERE id = $1",
                                                  self.world.merchant_id),
                "card": dict(row) if row else None,
            }

    async def bind(self, card_no: str, mobile: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute("UPDATE cards SET bound_mobile = $2 WHERE card_no = $1", card_no, mobile)

    async def password_is(self, card_no: str, password: str) -> bool:
        async with self.pool.acquire() as conn:
            stored = await conn.fetchval("SELECT password_hash FROM cards WHERE card_no = $1", card_no)
        md5 = cards.normalise_password(password)
        assert md5 is not None
        return cards.verify_password(stored, md5, cards.password_pepper(self.world.keys))


async def send_raw(url: str, params: dict[str, str], *, method: str = "GET", data: Any = None,
                   headers: dict[str, str] | None = None) -> Reply:
    async with aiohttp.ClientSession() as session, session.request(
        method, url, params=params, data=data, headers=headers
    ) as resp:
        return Reply(resp.status, await resp.text(), resp.headers.get("Content-Type", ""))


async def make_sms_world(pool: asyncpg.Pool, keys: Any, http_port: int) -> SmsWorld:
    world = await make_world(pool, keys, http_port)
    operator = new_mobile()
    terminal = f"S{world.merchant_code}{secrets.randbelow(10_000):04d}"
    async with pool.acquire() as conn:
        await cards.upsert_terminal(conn, terminal, world.merchant_code, "sms", msisdn=operator, actor="test")
    return SmsWorld(world, operator, terminal)

"""Test support for the KaKaTong tests: a merchant of its own with terminal, key and cards.

Each ``World`` has a fresh 4-digit merchant code, so tests sharing the run's database never
touch each other's cards, serials or limits.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from defusedxml import ElementTree

from app.demo import fund_recharge_fund
from recharge.keys import MasterKeys
from recharge.kkt import cards
from recharge.ledger import transfers as ledger

PASSWORD = "111111"
RESERVED_MERCHANTS = {"1155", "1072"} | {f"{7000 + i}" for i in range(64)}  # demo, PHP example, bench
PASSWORD_MD5 = hashlib.md5(PASSWORD.encode()).hexdigest()


@dataclass
class World:
    pool: asyncpg.Pool
    keys: MasterKeys
    http_port: int
    merchant_code: str
    merchant_id: int
    terminal: str
    license_key: str
    next_seq: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def new_card(
        self, *, state: str = "active", kind: str = "both", password: str | None = PASSWORD,
        balance: int = 0, points: int = 0, merchant_id: int | None = None, **columns: Any,
    ) -> str:
        card_no = cards.card_no_for(self.merchant_code, self.next_seq)
        self.next_seq += 1
        pepper = cards.password_pepper(self.keys)
        md5 = cards.normalise_password(password) if password else None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO cards (card_no, merchant_id, kind, state, password_hash) VALUES ($1,$2,$3,$4,$5)",
                card_no, merchant_id or self.merchant_id, kind, state,
                cards.hash_password(md5, pepper, 10) if md5 else None,
            )
            for name, value in columns.items():
                await conn.execute(f"UPDATE cards SET {name} = $2 WHERE card_no = $1", card_no, value)
            if balance:
                fund = await fund_recharge_fund(conn, self.merchant_id, balance, f"test:fund:{card_no}")
                purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE,
                                                    card_no=card_no)
                load = ledger.NewTransfer(f"test:load:{card_no}", fund, purse, balance)
                (await ledger.create_transfers(conn, [load]))[0].check("load")
            if points:
                issued = await ledger.ensure_account(conn, ledger="PTS", kind=ledger.AccountKind.POINTS_ISSUED,
                                                     merchant_id=self.merchant_id, no_overdraft=False)
                acct = await ledger.ensure_account(conn, ledger="PTS", kind=ledger.AccountKind.CARD_POINTS,
                                                   card_no=card_no)
                grant = ledger.NewTransfer(f"test:points:{card_no}", issued, acct, points)
                (await ledger.create_transfers(conn, [grant]))[0].check("points")
        return card_no

    async def get(self, method: str, **params: str) -> tuple[int, str]:
        query = urllib.parse.urlencode({"method": method, **params})
        async with aiohttp.ClientSession() as session, session.get(f"{self.base}/s/get?{query}") as resp:
            return resp.status, await resp.text()

    async def ct(self, **params: str) -> dict[str, str]:
        """A cTRequest with this world's key and terminal; the first record as a dict."""
        base = {"LICENSEKEY": self.license_key, "POSCODE": self.terminal, "CARDPWD": PASSWORD_MD5}
        status, body = await self.get("cTRequest", **{**base, **params})
        assert status == 200, body
        return first_record(body)

    async def balance(self, card_no: str) -> tuple[int, int]:
        async with self.pool.acquire() as conn:
            return await cards.card_balances(conn, card_no)


async def accept(issuer: World, merchant: World) -> None:
    """Let ``merchant``'s terminals serve ``issuer``'s cards (else they answer 52)."""
    async with issuer.pool.acquire() as conn, conn.transaction():
        await cards.set_acceptance(conn, issuer.merchant_code, merchant.merchant_code, actor="test")


def records(body: str) -> list[dict[str, str]]:
    root = ElementTree.fromstring(body.encode("utf-8"))
    assert root.tag == "TradeResult", body
    return [{child.tag: child.text or "" for child in record} for record in root.findall("Record")]


def first_record(body: str) -> dict[str, str]:
    found = records(body)
    assert found, body
    return found[0]


async def new_merchant(conn: asyncpg.Connection, *, name: str = "测试商户") -> tuple[str, int]:
    while True:
        code = f"{secrets.randbelow(9000) + 1000}"
        if code in RESERVED_MERCHANTS:
            continue
        # A batch numbers its cards after the highest 1680‖code… card already there: other tests'
        # random card numbers (1680 + 12 digits) can fall in a fresh code's range, so skip those.
        if await conn.fetchval("SELECT EXISTS (SELECT FROM cards WHERE card_no LIKE '1680' || $1 || '%')", code):
            continue
        merchant_id = await conn.fetchval(
            "INSERT INTO merchants (code, name) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING RETURNING id", code, name
        )
        if merchant_id is not None:
            return code, int(merchant_id)


async def make_world(pool: asyncpg.Pool, keys: MasterKeys, http_port: int, *, fund: int = 10_000_000,
                     terminal_kind: str = "pos") -> World:
    async with pool.acquire() as conn, conn.transaction():
        code, merchant_id = await new_merchant(conn)
        terminal = f"{code}{secrets.randbelow(10_000):04d}"
        await conn.execute("INSERT INTO terminals (code, merchant_id, kind) VALUES ($1,$2,$3)",
                           terminal, merchant_id, terminal_kind)
        key = "K" + secrets.token_hex(12)
        await conn.execute("INSERT INTO license_keys (license_key, merchant_id) VALUES ($1,$2)", key, merchant_id)
        await conn.execute("INSERT INTO points_rules (merchant_id, cents_per_point) VALUES ($1, 100)", merchant_id)
        if fund:
            await fund_recharge_fund(conn, merchant_id, fund, f"test:fund:{code}")
    return World(pool, keys, http_port, code, merchant_id, terminal, key)

"""Test support for the SIM wallet's loads (SPEC 7.3): subscribers with a bound RFID-SIM in a virtual handset,
wallets opened over STK, cash in the mobile payment account, hall POS terminals, and the drive of a load through
the real endpoints round by round (the handset and the POS relay the platform's scripts to the virtual card)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import asyncpg

from core_ext.virtual_handset import Outcome, VirtualHandset
from core_ext.virtual_pos import SignedRequest, VirtualPOS
from core_ext.virtual_sim import VirtualRfidSim
from recharge.keys import MasterKeys
from recharge.mpay import credentials, events, postings, registry
from recharge.mpay.env import Env
from recharge.wallet import cards, terminals
from recharge.wallet.terminals import Terminal
from tests.wallet_world import digits, virtual_keys

PAY_PASSWORD = "135790"


class LoadWorld:
    """One platform under test, seen by handsets and hall POS terminals over HTTP."""

    def __init__(self, http_port: int, pool: asyncpg.Pool, env: Env, keys: MasterKeys) -> None:
        self.url = f"http://127.0.0.1:{http_port}/mpay/v1"
        self.pool = pool
        self.env = env
        self.keys = virtual_keys(keys)

    async def handset(self, *, balance: int = 10_000, cash: int = 100_000) -> tuple[VirtualHandset, int]:
        """A bound RFID-SIM in a handset, its wallet opened over STK, ``cash`` in the account (a counter cash
        recharge: HALL → C) and a usable pay password; the account id."""
        msisdn, card_no = "139" + digits(8), "7310" + digits(12)
        body = {"province": "430000", "brand": "GOTONE", "status": "normal"}
        async with self.pool.acquire() as conn, conn.transaction():
            await events.set_subscribers(conn, self.env, [registry.validate(msisdn, body)], "test")
            await cards.add_stock(conn, [card_no])
            assert await cards.bind(conn, [(msisdn, card_no)]) == ["created"]
        phone = VirtualHandset(VirtualRfidSim(card_no, self.keys, balance=balance))
        opened = await self.exchange(phone, "wallet.open")
        assert opened.code == "0000" and opened.script_ok, opened
        async with self.pool.acquire() as conn, conn.transaction():
            account_id = int(await conn.fetchval("SELECT id FROM mpay_accounts WHERE msisdn = $1", msisdn))
            await credentials.replace(conn, self.env.hasher, account_id, "pay", PAY_PASSWORD, initial=False)
            if cash:
                await self.add_cash(conn, account_id, cash)
        return phone, account_id

    async def add_cash(self, conn: asyncpg.Connection, account_id: int, amount: int) -> None:
        hall = await postings.account_id(conn, "HALL/HN0001")
        cash = await postings.account_id(conn, f"C/{account_id}")
        await postings.must(conn, [postings.Move(f"test:cash:{account_id}:{digits(12)}", hall, cash, amount,
                                                 "mpay_cash", "HN0001")])

    async def hall_pos(self) -> VirtualPOS:
        tid = digits(12)
        async with self.pool.acquire() as conn:
            await terminals.register(conn, [Terminal(tid, hall="HN0001")])
        return VirtualPOS(tid, self.keys.purchase, self.keys.pos)

    async def post(self, request: SignedRequest) -> tuple[int, bytes, str | None]:
        async with aiohttp.ClientSession() as http, http.post(self.url + request.path, data=request.body,
                                                              headers=request.headers) as response:
            return response.status, await response.read(), response.headers.get("X-MAC")

    async def exchange(self, phone: VirtualHandset, op: str, params: dict[str, Any] | None = None) -> Outcome:
        status, body, mac = await self.post(phone.request(op, params))
        return phone.receive(status, body, mac)

    async def drive_stk(self, phone: VirtualHandset, first: Outcome, *, rounds: int = 10) -> Outcome:
        """Send each script's replies back by ``wallet.load.continue`` until a reply carries no script."""
        out = first
        while out.code == "0000" and out.data is not None and out.data.get("script") and rounds:
            assert out.replies is not None
            out = await self.exchange(phone, "wallet.load.continue",
                                      {"load_id": out.data["load_id"], "replies": out.replies.hex().upper()})
            rounds -= 1
        return out

    async def pos_send(self, pos: VirtualPOS, request: SignedRequest) -> dict[str, Any]:
        status, body, mac = await self.post(request)
        assert status == 200 and pos.reply_ok(body, mac), body
        return dict(json.loads(body))

    async def drive_pos(self, pos: VirtualPOS, sim: VirtualRfidSim, load_id: str) -> dict[str, Any]:
        """The hall POS drives ``load_id``: continue without replies, then each script's replies."""
        reply = await self.pos_send(pos, pos.continue_request(load_id))
        while reply["code"] == "0000" and reply["data"].get("script"):
            replies = pos.run_script(sim, reply["data"]["script"])
            reply = await self.pos_send(pos, pos.continue_request(load_id, replies))
        return reply

    async def named(self, name: str) -> tuple[int, int]:
        """(posted balance, pending credits) of a SPEC 6.2 ledger account."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT credits_posted - debits_posted AS posted, credits_pending FROM accounts"
                                      " WHERE kind = 'mpay' AND card_no = $1", name)
        return (int(row["posted"]), int(row["credits_pending"])) if row is not None else (0, 0)

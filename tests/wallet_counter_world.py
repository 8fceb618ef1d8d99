"""Test support for the SIM wallet's counter and hall steps (SPEC 7.6, 7.7): real subscribers with real-name
data, RFID-SIMs bound by the counter's own endpoint, wallets opened over STK with a virtual handset, hall and
merchant POS terminals, all against the real server."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from core_ext.virtual_handset import Outcome, VirtualHandset
from core_ext.virtual_pos import SignedRequest, VirtualPOS
from core_ext.virtual_sim import VirtualRfidSim, WalletMasterKeys
from recharge.mpay import postings
from recharge.wallet import cards, terminals
from recharge.wallet.terminals import Terminal
from tests.conftest import unique_digits
from tests.mpay_world import Api, MpayWorld

ID = {"id_type": "id_card", "id_number": "430102199001011234"}
REASON = {"reason": "counter test"}


@dataclass
class WalletDesk:
    """A hall with its counter operator and hall POS, beside the mpay test world."""

    w: MpayWorld
    api: Api
    keys: WalletMasterKeys
    hall: str
    counter: str  # the counter operator's token
    pos: VirtualPOS

    async def stock(self) -> str:
        card_no = "7310" + unique_digits(12)
        async with self.w.pool.acquire() as conn:
            await cards.add_stock(conn, [card_no])
        return card_no

    async def terminal(self, *, hall: str | None = None, merchant: str | None = None) -> VirtualPOS:
        tid = unique_digits(12)
        async with self.w.pool.acquire() as conn:
            await terminals.register(conn, [Terminal(tid, merchant=merchant, hall=hall)])
        return VirtualPOS(tid, self.keys.purchase, self.keys.pos)

    async def swap(self, msisdn: str, card_no: str, *, model: str = "Galaxy S3", **ident: str) -> tuple[str, dict]:
        body = {"msisdn": msisdn, "new_card": card_no, "handset_model": model, **(ident or ID), **REASON}
        _, reply, _ = await self.api.call("POST", "/counter/sim-swap", body, token=self.counter)
        return reply["code"], reply["data"]

    async def exchange(self, phone: VirtualHandset, op: str, params: dict[str, Any] | None = None) -> Outcome:
        request = phone.request(op, params)
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.w.base}/mpay/v1{request.path}", data=request.body,
                headers={**request.headers, "X-MAC": request.mac}) as response:
            return phone.receive(response.status, await response.read(), response.headers.get("X-MAC"))

    async def send(self, pos: VirtualPOS, request: SignedRequest) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.w.base}/mpay/v1{request.path}", data=request.body,
                headers={**request.headers, "X-MAC": request.mac}) as response:
            raw = await response.read()
            assert response.status == 200 and pos.reply_ok(raw, response.headers.get("X-MAC"))
            return dict(json.loads(raw))

    async def wallet_phone(self, balance: int) -> tuple[VirtualHandset, str, int]:
        """A real-name subscriber whose SIM the counter bound, the wallet opened over STK, and ``balance`` on the
        card that the shadow ``W`` holds too (cash recharged at the counter and moved ``C → W`` as a posted load
        would leave it): (handset, msisdn, account id)."""
        msisdn = await self.w.subscriber()
        card_no = await self.stock()
        assert (await self.swap(msisdn, card_no))[0] == "0000"
        phone = VirtualHandset(VirtualRfidSim(card_no, self.keys, balance=balance))
        assert (await self.exchange(phone, "wallet.open")).script_ok
        account_id = int((await self.w.account(msisdn))["id"])
        if balance:
            await self.posted_load(account_id, balance)
        return phone, msisdn, account_id

    async def posted_load(self, account_id: int, amount: int) -> None:
        async with self.w.pool.acquire() as conn, conn.transaction():
            hall, cash, shadow = (await postings.account_id(conn, f"HALL/{self.hall}"),
                                  await postings.account_id(conn, f"C/{account_id}"),
                                  await postings.account_id(conn, f"W/{account_id}"))
            ref = unique_digits(10)
            await postings.must(conn, [postings.Move(f"test:cash:{ref}", hall, cash, amount, "mpay_cash")])
            await postings.must(conn, [postings.Move(f"test:load:{ref}", cash, shadow, amount, "wallet_load")])

    async def figure(self, name: str) -> tuple[int, int, int]:
        """(posted balance, pending debits, pending credits) of a ledger account by its SPEC 6.2 name."""
        async with self.w.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT credits_posted - debits_posted AS p, debits_pending, credits_pending"
                                      " FROM accounts WHERE kind = 'mpay' AND card_no = $1", name)
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    async def transfers(self) -> int:
        async with self.w.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM transfers"))

"""Kill -9 the server in the middle of the SIM wallet's counter and hall steps: buy-outs, SIM swaps and counter
cancellations lose nothing acknowledged, do nothing twice, and the books balance.

A seeded run (the seed is printed, so a failure can be replayed): each subscriber's wallet goes, concurrently with
the others, through a readable SIM swap (7.6: the hall POS buys the old card out with ``/pos/swaps``, the counter
binds the new card with ``/counter/sim-swap``, the hall POS drives the carried balance onto it with ``/pos/loads``)
or a counter cancellation (7.7: ``/counter/wallet-cancel``'s permit, then the buy-out by ``/pos/wallet-cancels``
and its ``0x17`` script run on the card); every subscriber has a hall POS of its own. The server process is
SIGKILLed after a seeded number of answers. Then, before anything is sent again, every step the platform
acknowledged is in the database; after a restart on the same data folder each device does what a clerk would:
sends its unanswered request again (the same ``pos_seq`` and body, the same ``X-Request-Id``: the stored reply,
or processed now), recovers a load left *loading* from the card's proof and drives a waiting one; a buy-out record
sent again under a new ``pos_seq`` is ``5011``. At the end every buy-out, swap and carried load exists exactly
once, every card holds what its shadow ``W`` says, the cash ``C`` what the buy-outs left, and the audit passes.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import PurchaseRecord, SignedRequest, VirtualPOS
from core_ext.virtual_sim import STATE_CANCELLED, STATE_OPEN, VirtualRfidSim
from recharge.config import Settings
from recharge.ledger.audit import audit
from recharge.mpay.env import Env
from tests.conftest import unique_digits
from tests.crash_world import FAST_HASHING, Progress, crash_rig
from tests.mpay_world import Api, MpayWorld
from tests.wallet_counter_world import ID, REASON, WalletDesk
from tests.wallet_world import virtual_keys

SUBSCRIBERS = 8
LOST = (aiohttp.ClientError, OSError, TimeoutError)


class Journey:
    """One subscriber's wallet on its way through a swap or a cancellation; ``acked`` the steps answered 0000."""

    def __init__(self, desk: WalletDesk, pos: VirtualPOS, phone: VirtualHandset, msisdn: str, account_id: int) -> None:
        self.desk, self.pos, self.sim, self.msisdn, self.account_id = desk, pos, phone.sim, msisdn, account_id
        self.amount = phone.sim.balance
        self.acked: set[str] = set()
        self.request: SignedRequest | None = None  # the buy-out as first sent (sent again as it was)
        self.record: PurchaseRecord | None = None
        self.rid = desk.api.rid()  # the counter step's X-Request-Id

    async def post(self, request: SignedRequest, progress: Progress | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.post(f"{self.desk.w.base}/mpay/v1{request.path}",
                                                              data=request.body, headers=request.headers) as resp:
            raw = await resp.read()
        assert resp.status == 200 and self.pos.reply_ok(raw, resp.headers.get("X-MAC")), raw
        if progress is not None:
            progress.tick()
        return dict(json.loads(raw))

    async def counter(self, path: str, body: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
        _, reply, _ = await self.desk.api.call("POST", path, body, token=self.desk.counter, rid=self.rid)
        if progress is not None:
            progress.tick()
        assert reply["code"] == "0000", reply
        return dict(reply["data"])

    async def buy_out(self, make: Callable[[PurchaseRecord], SignedRequest],
                      progress: Progress | None) -> dict[str, Any]:
        """The hall POS buys the card out (once on the card); the request, once made, is sent again as it was."""
        if self.request is None:
            self.record = self.pos.buy_out(self.sim)
            self.request = make(self.record)
        reply = await self.post(self.request, progress)
        assert reply["code"] == "0000", reply
        self.acked.add("buy_out")
        return dict(reply["data"])

    async def duplicate_refused(self, make: Callable[[PurchaseRecord], SignedRequest]) -> None:
        assert self.record is not None
        assert (await self.post(make(self.record)))["code"] == "5011", "the same record under a new pos_seq"


class Swap(Journey):
    """7.6 readable: ① the old card bought out, ② the new card bound, ③ the carried balance driven onto it."""

    def __init__(self, *args: Any, new_card: str) -> None:
        super().__init__(*args)
        self.new = VirtualRfidSim(new_card, self.desk.keys)
        self.load_id: str | None = None

    async def run(self, progress: Progress | None) -> None:
        if "buy_out" not in self.acked:
            self.load_id = (await self.buy_out(self.pos.swap_request, progress))["load_id"]
        if "bind" not in self.acked:
            body = {"msisdn": self.msisdn, "new_card": self.new.card_no, "handset_model": "Galaxy S3", **ID, **REASON}
            await self.counter("/counter/sim-swap", body, progress)
            self.acked.add("bind")
        if "load" not in self.acked:
            await self.drive(progress)
            self.acked.add("load")

    async def drive(self, progress: Progress | None) -> None:
        """The load from its first round (the 0x17 write under a fresh challenge), or from the card's proof when
        the platform holds it *loading*, until it is posted."""
        assert self.load_id is not None
        if await self.load_state() == "loading":
            step = await self.post(self.pos.recover_request(self.load_id), progress)
            assert step["code"] == "0000", step
            step = await self.post(self.pos.continue_request(self.load_id, self.pos.run_script(
                self.new, step["data"]["script"])), progress)
            assert step["code"] in ("0000", "5008"), step  # 5008: the card was never credited, the load waits
        if await self.load_state() == "waiting":
            challenge = self.pos.challenge(self.new)
            step = await self.post(self.pos.continue_request(self.load_id, challenge=challenge), progress)
            while step["code"] == "0000" and step["data"].get("script"):
                replies = self.pos.run_script(self.new, step["data"]["script"])
                step = await self.post(self.pos.continue_request(self.load_id, replies), progress)
            assert step["code"] == "0000", step
        assert await self.load_state() == "posted"

    async def load_state(self) -> str:
        async with self.desk.w.pool.acquire() as conn:
            return str(await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", self.load_id))

    async def resume(self) -> None:
        if self.request is not None:  # the buy-out again, as first sent: its stored reply, or processed now
            self.acked.discard("buy_out")
            self.load_id = (await self.buy_out(self.pos.swap_request, None))["load_id"]
            await self.duplicate_refused(self.pos.swap_request)
        await self.run(None)

    async def present_once(self, conn: asyncpg.Connection) -> None:
        _once_if(await _count(conn, "SELECT count(*) FROM wallet_purchases WHERE card_no = $1 AND kind = 'swap'",
                              self.sim.card_no), "buy_out" in self.acked)
        if "buy_out" in self.acked:
            assert await _count(conn, "SELECT count(*) FROM wallet_loads WHERE account_id = $1 AND path = 'swap'",
                                self.account_id) == 1
        if "bind" in self.acked:
            assert await conn.fetchval("SELECT card_no FROM wallets WHERE account_id = $1",
                                       self.account_id) == self.new.card_no
        if "load" in self.acked:
            assert await self.load_state() == "posted"

    async def settled(self, conn: asyncpg.Connection) -> None:
        await self.present_once(conn)
        assert await _count(conn, "SELECT count(*) FROM wallet_swaps WHERE account_id = $1", self.account_id) == 1
        assert (self.sim.balance, self.new.balance, self.new.state) == (0, self.amount, STATE_OPEN)
        assert await _figure(conn, f"W/{self.account_id}") == (self.new.balance, 0, 0), "the shadow is the card"
        assert await _figure(conn, f"C/{self.account_id}") == (0, 0, 0), "the cash moved back onto the card"


class Cancel(Journey):
    """7.7 at the counter: the permit, then the hall POS's buy-out and its 0x17 script (state 03)."""

    async def run(self, progress: Progress | None) -> None:
        if "permit" not in self.acked:
            await self.counter("/counter/wallet-cancel", {"msisdn": self.msisdn, **ID, **REASON}, progress)
            self.acked.add("permit")
        if "buy_out" not in self.acked:
            data = await self.buy_out(self._request, progress)
            assert data["amount"] == self.amount
            assert self.sim.run_script(bytes.fromhex(data["script"]))[-2:] == b"\x90\x00"

    def _request(self, record: PurchaseRecord) -> SignedRequest:
        # the card's challenge is taken once, with the record: the request is sent again with it, card untouched
        return self.pos.wallet_cancel_request(record, self.pos.challenge(self.sim))

    async def resume(self) -> None:
        await self.run(None)  # an unanswered buy-out again as first sent, its script under the card's challenge
        await self.duplicate_refused(lambda r: self.pos.wallet_cancel_request(r, "00000000"))

    async def present_once(self, conn: asyncpg.Connection) -> None:
        bought = await _count(conn, "SELECT count(*) FROM wallet_purchases WHERE card_no = $1 AND kind = 'cancel'",
                              self.sim.card_no)
        _once_if(bought, "buy_out" in self.acked)
        state = await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", self.account_id)
        assert state == ("cancelled" if bought else "open")
        if "permit" in self.acked and not bought:
            assert await _count(conn, "SELECT count(*) FROM wallet_cancel_permits WHERE account_id = $1",
                                self.account_id) == 1

    async def settled(self, conn: asyncpg.Connection) -> None:
        await self.present_once(conn)
        assert (self.sim.balance, self.sim.state) == (0, STATE_CANCELLED)
        assert await _figure(conn, f"W/{self.account_id}") == (0, 0, 0), "the shadow is the card"
        assert await _figure(conn, f"C/{self.account_id}") == (self.amount, 0, 0), "the balance went to cash"


def _once_if(found: int, acknowledged: bool) -> None:
    """An acknowledged step is there exactly once; one whose reply was lost at most once."""
    assert found == 1 if acknowledged else found <= 1, (found, acknowledged)


async def _count(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    return int(await conn.fetchval(sql, *args))


async def _figure(conn: asyncpg.Connection, name: str) -> tuple[int, int, int]:
    row = await conn.fetchrow("SELECT credits_posted - debits_posted, debits_pending, credits_pending FROM accounts"
                              " WHERE kind = 'mpay' AND card_no = $1", name)
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


async def _until_lost(run: Callable[[Progress], Awaitable[None]], progress: Progress) -> None:
    try:
        await run(progress)
    except LOST:
        return  # the server died under us: the journey resumes after the restart


@pytest.mark.parametrize("seed", [20261203, 5])
async def test_sigkill_during_buy_outs_and_counter_steps_loses_and_repeats_nothing(
        empty_database: str, tmp_path: Path, seed: int, settings: Settings) -> None:
    print(f"wallet counter crash-safety seed: {seed}")
    rng = random.Random(seed)
    async with crash_rig(empty_database, tmp_path, settings=settings, env=FAST_HASHING) as rig, \
            aiohttp.ClientSession() as session:
        conn, pool = rig.conn, rig.pool
        assert pool is not None
        w = MpayWorld(pool, Env.of(settings, rig.keys), f"http://127.0.0.1:{rig.served.http_port}", session)
        api = Api(w)
        hall = "H" + unique_digits(6)
        desk = WalletDesk(w, api, virtual_keys(rig.keys), hall, await api.operator("counter", hall),
                          VirtualPOS("0", b"\0" * 16, b"\0" * 16))
        kinds = ["swap", "cancel"] * (SUBSCRIBERS // 2)
        rng.shuffle(kinds)
        journeys: list[Swap | Cancel] = []
        for kind in kinds:
            phone, msisdn, account_id = await desk.wallet_phone(rng.randrange(100, 20_001))  # a buy-out is one purchase: ≤ the limit
            pos = await desk.terminal(hall=hall)
            journeys.append(Swap(desk, pos, phone, msisdn, account_id, new_card=await desk.stock()) if kind == "swap"
                            else Cancel(desk, pos, phone, msisdn, account_id))
        progress = Progress(kill_after_answers=rng.randint(SUBSCRIBERS, SUBSCRIBERS * 3))
        runs = [asyncio.create_task(_until_lost(j.run, progress)) for j in journeys]
        await rig.kill_when(progress, runs)
        done = sum(len(j.acked) for j in journeys)
        print(f"steps acknowledged before the kill: {done}; journeys finished:"
              f" {sum(1 for j in journeys if len(j.acked) == (3 if isinstance(j, Swap) else 2))} of {SUBSCRIBERS}")
        for j in journeys:  # nothing sent again yet: what was acknowledged is there, once
            await j.present_once(conn)

        w.base = f"http://127.0.0.1:{rig.restart().http_port}"
        for j in journeys:
            await j.resume()
        for j in journeys:
            await j.settled(conn)
        assert await conn.fetchval("SELECT count(*) FROM wallet_loads WHERE state = 'loading'") == 0
        assert await conn.fetchval("SELECT count(*) FROM transfers WHERE id LIKE 'wb:%'") == SUBSCRIBERS
        report = await audit(conn)
        assert report.ok, report.render()

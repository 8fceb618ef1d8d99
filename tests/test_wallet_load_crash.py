"""Kill -9 the server in the middle of SIM wallet air recharges and batch uploads: nothing acknowledged is lost,
nothing is counted twice, the books balance.

A seeded run (the seed is printed, so a failure can be replayed): virtual handsets air-recharge their RFID-SIMs
over STK while a merchant POS uploads their purchases in batches, all concurrently, and the server process is
SIGKILLed after a seeded number of answers. After a restart, every load the platform acknowledged (钱包充值成功)
is posted; every load left *loading* is settled by ``wallet.load.recover`` with the card's own proof (posted, or
waiting again when the card was never credited); every batch whose reply was lost is sent again (its stored reply,
or processed now) and every purchase is cleared exactly once; then every SIM's change equals its shadow ``W``
(loads posted − purchases uploaded), nothing is left loading, and the audit passes.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SignedRequest, VirtualPOS
from recharge.config import Settings
from recharge.ledger.audit import audit
from recharge.mpay.env import Env
from recharge.wallet import terminals
from tests.conftest import unique_digits
from tests.crash_world import FAST_HASHING, Progress, crash_rig
from tests.wallet_loads_world import PAY_PASSWORD, LoadWorld

HANDSETS = 10
AMOUNT = 500
PURCHASE = 120
START_BALANCE = 10_000


async def _air_recharge(world: LoadWorld, phone: VirtualHandset, acknowledged: set[str], progress: Progress) -> None:
    """One air recharge, round by round; records the load when the platform acknowledged it posted."""
    try:
        out = await world.exchange(phone, "wallet.load.init", {"amount": AMOUNT, "pay_password": PAY_PASSWORD})
        progress.tick()
        while out.code == "0000" and out.data is not None and out.data.get("script"):
            assert out.replies is not None
            out = await world.exchange(phone, "wallet.load.continue",
                                       {"load_id": out.data["load_id"], "replies": out.replies.hex()})
            progress.tick()
        if out.code == "0000" and out.data is not None and out.shown[-1].startswith("钱包充值成功"):
            acknowledged.add(out.data["load_id"])
    except (aiohttp.ClientError, OSError, TimeoutError):
        return  # the server died under us: what happened is settled by the recovery below


async def _upload(world: LoadWorld, batches: list[SignedRequest], answered: set[int], progress: Progress) -> None:
    """The merchant POS's batches, one after the other; records which ones the platform answered."""
    try:
        for k, batch in enumerate(batches):
            status, _, _ = await world.post(batch)
            assert status == 200
            answered.add(k)
            progress.tick()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return


async def _settle(world: LoadWorld, phone: VirtualHandset, conn: asyncpg.Connection, account_id: int) -> None:
    """Recover every load of the account left loading, from the card's proof."""
    for load_id in [r["load_id"] for r in await conn.fetch(
            "SELECT load_id FROM wallet_loads WHERE account_id = $1 AND state = 'loading'", account_id)]:
        prove = await world.exchange(phone, "wallet.load.recover", {"load_id": load_id})
        assert prove.code == "0000" and prove.replies is not None, prove
        out = await world.drive_stk(phone, prove)
        assert out.code in ("0000", "5008"), out
        state = await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", load_id)
        assert state == ("posted" if out.code == "0000" else "waiting"), (load_id, out, state)


@pytest.mark.parametrize("seed", [20261203, 11])
async def test_sigkill_during_air_recharges_loses_no_acknowledged_load(
        empty_database: str, tmp_path: Path, seed: int, settings: Settings) -> None:
    print(f"wallet crash-safety seed: {seed}")
    rng = random.Random(seed)
    async with crash_rig(empty_database, tmp_path, settings=settings, env=FAST_HASHING) as rig:
        conn, pool = rig.conn, rig.pool
        assert pool is not None
        world = LoadWorld(rig.served.http_port, pool, Env.of(settings, rig.keys), rig.keys)
        phones = [await world.handset(balance=START_BALANCE, cash=10_000) for _ in range(HANDSETS)]
        shop = VirtualPOS(unique_digits(12), world.keys.purchase, world.keys.pos)
        async with pool.acquire() as c:
            await terminals.register(c, [terminals.Terminal(shop.terminal_code, merchant="M" + unique_digits(7))])
        for phone, _ in phones:  # offline purchases, uploaded two records a batch during the recharges
            shop.purchase(phone.sim, PURCHASE)
        batches = [shop.batch(limit=2) for _ in range(HANDSETS // 2)]
        acknowledged: set[str] = set()
        answered: set[int] = set()
        progress = Progress(kill_after_answers=rng.randint(HANDSETS * 2, HANDSETS * 4 - 2))
        runs = [asyncio.create_task(_air_recharge(world, phone, acknowledged, progress)) for phone, _ in phones]
        runs.append(asyncio.create_task(_upload(world, batches, answered, progress)))
        await rig.kill_when(progress, runs)
        states = await conn.fetch("SELECT state, count(*) FROM wallet_loads GROUP BY state")
        print(f"acknowledged before the kill: {len(acknowledged)} of {HANDSETS}; loads: {dict(states)}")
        assert len(acknowledged) < HANDSETS, "the kill came after every load: nothing was tested"

        world.url = f"http://127.0.0.1:{rig.restart().http_port}/mpay/v1"
        for load_id in acknowledged:
            assert await conn.fetchval("SELECT state FROM wallet_loads WHERE load_id = $1", load_id) == "posted"
        print(f"batches answered before the kill: {len(answered)} of {len(batches)}")
        for batch in batches:  # every batch again: a repeat of an accepted one gets its stored reply
            status, body, _ = await world.post(batch)
            assert status == 200 and b'"code":"0000"' in body, body
        assert await conn.fetchval("SELECT count(*) FROM wallet_purchases WHERE terminal_id = $1",
                                   shop.terminal_code) == HANDSETS, "every purchase exactly once"
        for phone, account_id in phones:
            await _settle(world, phone, conn, account_id)
            posted, _pending = await world.named(f"W/{account_id}")
            assert phone.sim.balance - START_BALANCE == posted, (phone.sim.card_no, phone.sim.balance, posted)
            assert (await world.named(f"W/{account_id}"))[1] == 0 or await conn.fetchval(
                "SELECT count(*) FROM wallet_loads WHERE account_id = $1 AND state = 'waiting'", account_id) == 1
        assert await conn.fetchval("SELECT count(*) FROM wallet_loads WHERE state = 'loading'") == 0
        report = await audit(conn)
        assert report.ok, report.render()

"""The SIM wallet's money at the end of the line (SPEC 7.4, 7.6): the merchants' daily settlement through the
payout batch, and the lost cards' value written off after 24 idle months — through the real CLI entry point, on
wallets driven through the real server with virtual SIMs, handsets and POS terminals."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from app.cli import main
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SHANGHAI
from core_ext.virtual_sim import VirtualRfidSim
from recharge.wallet import retired
from tests.conftest import unique_digits
from tests.wallet_counter_world import WalletDesk

pytestmark = pytest.mark.usefixtures("audited", "key_file")
WHEN = dt.datetime(2026, 1, 5, 10, 0, 0, tzinfo=SHANGHAI)


async def cli(database_url: str, tmp: Path, *argv: str) -> int:
    depth = 3 if argv[0] == "mpay" else 2
    return await asyncio.to_thread(main, [*argv[:depth], "--database-url", database_url, "--data-dir", str(tmp),
                                          *argv[depth:]])


async def test_months_before() -> None:
    assert retired.months_before(dt.date(2026, 3, 31), 24) == dt.date(2024, 3, 31)
    assert retired.months_before(dt.date(2026, 2, 28), 24) == dt.date(2024, 2, 28)
    assert retired.months_before(dt.date(2026, 5, 31), 3) == dt.date(2026, 2, 28)
    assert retired.months_before(dt.date(2026, 1, 15), 1) == dt.date(2025, 12, 15)


async def test_merchant_daily_settlement_pays_out_once(desk: WalletDesk, database_url: str, tmp_path: Path) -> None:
    phone, _, _ = await desk.wallet_phone(20_000)
    merchant = "S" + unique_digits(7)
    shop = await desk.terminal(merchant=merchant)
    sale = shop.purchase(phone.sim, 10_000, WHEN)
    shop.purchase(phone.sim, 5_000, WHEN)
    shop.void(shop.purchase(phone.sim, 1_000, WHEN))
    assert [r["code"] for r in (await desk.send(shop, shop.batch()))["data"]["results"]] == ["0000"] * 3
    assert (await desk.send(shop, shop.return_request(sale, 2_000)))["code"] == "0000"
    net = 15_000 - 90 - 2_000  # sales less 0.60 % commission (60 + 30) less the return
    assert await desk.figure(f"MER/{merchant}") == (net, 0, 0)
    day = dt.datetime.now(SHANGHAI).date().isoformat()
    payout_before = (await desk.figure("PAYOUT"))[0]
    assert await cli(database_url, tmp_path, "wallet", "settle", "--date", day, "--force") == 0
    assert await desk.figure(f"MER/{merchant}") == (0, 0, 0)
    assert (await desk.figure("PAYOUT"))[0] - payout_before >= net
    csv = (tmp_path / "settlement" / f"wallet_{day.replace('-', '')}.csv").read_text(encoding="utf-8")
    line = next(x for x in csv.splitlines() if f",{merchant}," in x)
    assert line == f"{day},{merchant},2,15000,90,1,1000,2000,{net},wallet:merpayout:{merchant}:{day}"
    transfers = await desk.transfers()
    assert await cli(database_url, tmp_path, "wallet", "settle", "--date", day, "--force") == 0
    assert await desk.transfers() == transfers, "a day is settled once"
    assert line in (tmp_path / "settlement" / f"wallet_{day.replace('-', '')}.csv").read_text(encoding="utf-8")


async def test_lost_card_value_is_written_off_after_24_idle_months(desk: WalletDesk, database_url: str,
                                                                   tmp_path: Path) -> None:
    phone, msisdn, acct = await desk.wallet_phone(3_000)
    shop = await desk.terminal(merchant="R" + unique_digits(7))
    shop.purchase(phone.sim, 1_000, WHEN)  # spent offline, uploaded only after the card was lost
    new_card = await desk.stock()
    assert (await desk.swap(msisdn, new_card))[0] == "0000"
    handset = VirtualHandset(VirtualRfidSim(new_card, desk.keys))
    assert (await desk.exchange(handset, "wallet.open")).script_ok, "the lost-card reopening: W → RETIRED"
    assert (await desk.send(shop, shop.batch()))["data"]["results"][0]["code"] == "0000"
    old_card = phone.sim.card_no
    fee_before = (await desk.figure("FEE"))[0]
    assert await cli(database_url, tmp_path, "mpay", "wallet", "writeoff") == 0
    async with desk.w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM wallet_writeoffs WHERE card_no = $1", old_card) == 0
        await conn.execute(  # nothing has moved the card's retired value for 25 months
            "UPDATE transfers SET created_at = created_at - interval '25 months' WHERE id LIKE $1 OR id IN"
            " (SELECT transfer_id FROM wallet_purchases WHERE card_no = $2)", f"wretire:{acct}:{old_card}", old_card)
    assert await cli(database_url, tmp_path, "wallet", "writeoff") == 0
    async with desk.w.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT amount, transfer_id FROM wallet_writeoffs WHERE card_no = $1", old_card)
    assert tuple(row) == (2_000, f"wwriteoff:{old_card}:1"), "retired 30.00, 10.00 of it spent by a late record"
    assert (await desk.figure("FEE"))[0] - fee_before >= 2_000
    transfers = await desk.transfers()
    assert await cli(database_url, tmp_path, "mpay", "wallet", "writeoff") == 0
    async with desk.w.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM wallet_writeoffs WHERE card_no = $1", old_card) == 1
    assert await desk.transfers() == transfers

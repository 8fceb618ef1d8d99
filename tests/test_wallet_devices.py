"""``rechargectl wallet card|stk|pos``: the virtual devices driven from the command line against the real server,
their state kept between commands (the demo walkthrough of docs/OPERATIONS.md "SIM wallet")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from tests.conftest import unique_digits
from tests.mpay_world import Api, MpayWorld
from tests.wallet_counter_world import ID

pytestmark = pytest.mark.usefixtures("audited", "key_file")


async def test_a_wallet_opened_paused_and_read_from_the_command_line(w: MpayWorld, platform: Any, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from recharge.wallet import cards, terminals

    api = Api(w)
    msisdn, card_no, hall_pos = await w.subscriber(), "7310" + unique_digits(12), unique_digits(12)
    async with w.pool.acquire() as conn:
        await cards.add_stock(conn, [card_no])
        await terminals.register(conn, [terminals.Terminal(hall_pos, hall="HN0001")])
    counter = await api.operator("counter", "HN0001")
    await api.ok("POST", "/counter/sim-swap", {"msisdn": msisdn, "new_card": card_no, "handset_model": "Galaxy S3",
                                               **ID, "reason": "demo"}, token=counter)
    common = ["--url", w.base, "--data-dir", str(tmp_path)]

    async def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        status = await asyncio.to_thread(main, ["wallet", argv[0], *common, *argv[1:]])
        return status, capsys.readouterr().out

    status, out = await run("stk", card_no, "wallet.open")
    assert status == 0 and out.splitlines()[:3] == ["钱包开通请求发送成功!", "钱包开通成功。", "code 0000, script ran: 9000"]
    status, out = await run("stk", card_no, "wallet.pause")
    assert status == 0 and "钱包已暂停。" in out
    status, out = await run("card", card_no)
    assert out.startswith(f"card {card_no}: balance 0.00, state paused, limit 200.00") and "STK seq 2" in out
    status, out = await run("pos", hall_pos, "purchase", card_no, "100")
    assert status == 1 and "6985" in out, "a paused card refuses to pay"
    assert (await run("stk", card_no, "wallet.resume"))[0] == 0
    status, out = await run("stk", card_no, "account.balance")
    assert status == 0 and "现金账户余额:0元" in out
    status, out = await run("stk", card_no, "wallet.limit", "amount=50", "pay_password=000000")
    assert status == 1 and "code 4001" in out
    status, out = await run("pos", hall_pos, "open", card_no)
    assert status == 0 and "script ran on the card: " in out and "钱包开通成功。" in out
    status, out = await run("pos", hall_pos, "batch")
    assert status == 1 and "code 1004" in out, "a hall's terminal uploads no batches"
    assert "state open, limit 200.00" in (await run("card", card_no))[1]
    await api.ok("POST", "/counter/cash", {"msisdn": msisdn, "amount": 10_000, "reason": "demo"}, token=counter)
    status, out = await run("pos", hall_pos, "load", card_no, "6000")
    assert status == 0 and "钱包充值成功,充值60元,钱包余额60元。" in out, out
    merchant_pos = unique_digits(12)
    async with w.pool.acquire() as conn:
        await terminals.register(conn, [terminals.Terminal(merchant_pos, merchant="DEV" + unique_digits(5))])
    assert (await run("pos", merchant_pos, "purchase", card_no, "1234"))[0] == 0
    status, out = await run("pos", merchant_pos, "batch")
    assert status == 0 and '"code": "0000", "commission": 7' in out
    status, out = await run("card", card_no)
    newest, older = (line.split() for line in out.splitlines()[1:3])
    assert "balance 47.66" in out and newest[3:5] == ["purchase", "12.34"] and older[3:5] == ["load", "60.00"], out
    new_card = "7310" + unique_digits(12)
    async with w.pool.acquire() as conn:
        await cards.add_stock(conn, [new_card])
    status, out = await run("pos", hall_pos, "swap", card_no)
    assert status == 0 and '"amount": 4766' in out
    await api.ok("POST", "/counter/sim-swap", {"msisdn": msisdn, "new_card": new_card, "handset_model": "Galaxy S3",
                                               **ID, "reason": "demo"}, token=counter)
    status, out = await run("pos", hall_pos, "load", new_card)
    assert status == 0 and "钱包余额47.66元" in out, out
    await api.ok("POST", "/counter/wallet-cancel", {"msisdn": msisdn, **ID, "reason": "demo"}, token=counter)
    status, out = await run("pos", hall_pos, "cancel", new_card)
    assert status == 0 and "余额47.66元已转入手机支付现金账户" in out
    assert "balance 0.00, state cancelled" in (await run("card", new_card))[1]


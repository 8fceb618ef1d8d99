"""Seed 000's example messages, every one as the seed prints it, sent through the real hook.

The examples use merchant 1001 and card 1680100100000001, numbers other tests of the run may
pick at random, so they run against a platform of their own on a fresh database: merchant
1001 (卡卡通) with an SMS operator terminal, a points rule, service codes 012 and 888, and the
card (password 123456, 10,000.00 yuan, 100 points). In the seed's order, except that the
password reset (MMCZ, → 111111) runs before the change (MMXG, 111111 → 123456) whose
example needs it. Where the seed's examples are wrong the test pins our documented answer
(docs/PROTOCOL.md "SMS channel").
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.demo import fund_recharge_fund
from app.runtime import RunningPlatform
from recharge import db
from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.kkt import cards, sms
from recharge.ledger import transfers as ledger
from recharge.ledger.audit import audit
from tests.kkt_world import World
from tests.sms_world import SmsWorld

CARD = "1680100100000001"
OPERATOR = "13900001001"
HOLDER = "13811111111"
START_PURSE = 1_000_000  # 10,000.00 yuan: the seed's second consume example takes 10000 yuan
START_POINTS = 100


async def _seed(conn: asyncpg.Connection, keys: MasterKeys) -> None:
    merchant_id = await cards.upsert_merchant(conn, "1001", "卡卡通", actor="test")
    await cards.upsert_terminal(conn, "10010001", "1001", "sms", msisdn=OPERATOR, actor="test")
    await cards.upsert_points_rule(conn, "1001", 100, actor="test")
    await cards.upsert_service_code(conn, "1001", "012", "会员充值", actor="test")
    await cards.upsert_service_code(conn, "1001", "888", "洗车", actor="test")
    fund = await fund_recharge_fund(conn, merchant_id, 10_000_000, "test:fund:1001")
    md5 = cards.normalise_password("123456")
    assert md5 is not None
    await conn.execute(
        "INSERT INTO cards (card_no, merchant_id, kind, state, password_hash, activated_at)"
        " VALUES ($1, $2, 'both', 'active', $3, now())",
        CARD, merchant_id, cards.hash_password(md5, cards.password_pepper(keys), 10),
    )
    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE, card_no=CARD)
    load = ledger.NewTransfer("test:load:seed000", fund, purse, START_PURSE)
    (await ledger.create_transfers(conn, [load]))[0].check("load")
    issued = await ledger.ensure_account(conn, ledger="PTS", kind=ledger.AccountKind.POINTS_ISSUED,
                                         merchant_id=merchant_id, no_overdraft=False)
    points = await ledger.ensure_account(conn, ledger="PTS", kind=ledger.AccountKind.CARD_POINTS, card_no=CARD)
    grant = ledger.NewTransfer("test:points:seed000", issued, points, START_POINTS)
    (await ledger.create_transfers(conn, [grant]))[0].check("points")


@pytest.fixture(scope="module")
async def seed_platform(server_url: str, settings: Settings, test_keys: Any) -> AsyncIterator[SmsWorld]:
    """A platform on a fresh database holding only seed 000's merchant, operator and card."""
    name = f"recharge_sms_seed_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = db.with_database(server_url, name)
    running = None
    try:
        conn = await asyncpg.connect(url)
        try:
            await db.migrate(conn)
            async with conn.transaction():
                await _seed(conn, test_keys[0])
        finally:
            await conn.close()
        running = RunningPlatform(settings.replace(database_url=url), url)
        await running.start()
        async with running.ctx.pool.acquire() as conn:
            merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE code = '1001'")
        world = World(running.ctx.pool, test_keys[0], running.http_port, "1001", merchant_id, "10010001", "")
        yield SmsWorld(world, OPERATOR, "10010001")
        async with running.ctx.pool.acquire() as check:
            report = await audit(check)
        assert report.ok, report.render()
    finally:
        if running is not None:
            await running.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def balances(w: SmsWorld) -> tuple[int, int]:
    async with w.pool.acquire() as conn:
        return await cards.card_balances(conn, CARD)


async def test_every_example_message_of_seed_000(seed_platform: SmsWorld) -> None:
    w = seed_platform
    examples = [  # (message exactly as the seed prints it, the reply, (purse, points) after)
        ("2929*1680100100000001*10.5*123456*12",
         "交易成功！卡尾号0001储值充值10.50元，余额10010.50元，流水00000001", (1_001_050, 100)),
        ("CZCZ*00000001* 100*123456*12",
         "交易成功！卡尾号0001储值充值100.00元，余额10110.50元，流水00000002", (1_011_050, 100)),
        ("2993*1680100100000001*10.5*123456*888",
         "交易成功！卡尾号0001储值消费10.50元，余额10100.00元，流水00000003", (1_010_000, 100)),
        # the seed's prose says 100.00 yuan but the message says 10000: amounts are yuan (SPEC 3.3)
        ("CZXF*00000001* 10000*123456*888",
         "交易成功！卡尾号0001储值消费10000.00元，余额100.00元，流水00000004", (10_000, 100)),
        ("5355*1680100100000001*10.5*888",
         "交易成功！卡尾号0001积分累加10分，积分余额110分，流水00000005", (10_000, 110)),
        ("5393*1680100100000001*50*888",
         "交易成功！卡尾号0001积分消费50分，积分余额60分，流水00000006", (10_000, 60)),
        # serial 00000001 is the first example's recharge: its cancel
        ("5929*1680100100000001*00000001",
         "交易成功！卡尾号0001充值撤销10.50元，余额89.50元，流水00000007", (8_950, 60)),
        # the seed's query examples print a 17-digit card number: refused, nothing changes
        ("9329*16801001000000001", "卡号输入错误！卡号为16位或8位数字", (8_950, 60)),
        ("YECX*16801001000000001", "卡号输入错误！卡号为16位或8位数字", (8_950, 60)),
        ("5329*16801001000000001", "卡号输入错误！卡号为16位或8位数字", (8_950, 60)),
        ("JFCX*16801001000000001", "卡号输入错误！卡号为16位或8位数字", (8_950, 60)),
        # ... and with the card's 16 digits they answer
        ("9329*1680100100000001", "交易成功！卡尾号0001余额89.50元，流水00000008", (8_950, 60)),
        ("JFCX*1680100100000001", "交易成功！卡尾号0001积分余额60分，流水00000009", (8_950, 60)),
        ("4623*1680100100000001*123456*13811111 111",
         "卡尾号0001绑定成功:被绑定手机/身份证号码：13811111111！", (8_950, 60)),
        ("2329*1680100100000001*123456*13811111 111", "卡尾号0001绑定撤销成功！", (8_950, 60)),
        ("6629*1680100100000001*111111", "卡尾号0001密码重置成功!", (8_950, 60)),
        ("6694*1680100100000001*111111*123456", "卡尾号0001密码修改成功!", (8_950, 60)),
    ]
    for message, reply, after in examples:
        assert await w.send(message) == reply, message
        assert await balances(w) == after, message
    assert await w.password_is(CARD, "123456")
    async with w.pool.acquire() as conn:
        rows = await conn.fetch("SELECT stance, item_code, trade_name, terminal_code FROM kkt_trades"
                                " WHERE card_no = $1 ORDER BY id", CARD)
    assert [r["stance"] for r in rows] == [f"{n:08d}" for n in range(1, 10)]
    assert {r["terminal_code"] for r in rows} == {"10010001"}
    # the seed's two-digit service code 12 is the 3-digit ITEMCODE 012 (seed 002: 3–8 digits)
    assert [(r["item_code"], r["trade_name"]) for r in rows[:4]] == [
        ("012", "会员充值"), ("012", "会员充值"), ("888", "洗车"), ("888", "洗车")]


async def test_seed_000_applies_to_cardholders_too(seed_platform: SmsWorld) -> None:
    """The same guide serves cardholders: once the card is bound to their phone (the seed's
    HMBD example), its owner queries it; unbound again, the answer is refused."""
    w = seed_platform
    assert await w.send("YECX*1680100100000001", sender=HOLDER) == "此卡未绑定本手机号码，不能办理"
    assert "绑定成功" in await w.send("4623*1680100100000001*123456*13811111 111")
    before = await balances(w)
    reply = await w.send("YECX*1680100100000001", sender=HOLDER)
    assert reply.startswith(f"交易成功！卡尾号0001余额{sms.yuan(before[0])}元，流水"), reply
    assert f"积分余额{before[1]}分" in await w.send("5329*00000001", sender=HOLDER)
    assert "须由商户操作员办理" in await w.send("CZXF*00000001*1*123456", sender=HOLDER)
    assert await balances(w) == before
    assert "绑定撤销成功" in await w.send("2329*1680100100000001*123456*13811111 111", sender=HOLDER)
    assert await w.send("9329*1680100100000001", sender=HOLDER) == "此卡未绑定本手机号码，不能办理"

"""Every info code of SPEC 1.5 a terminal can provoke, each in its own test, end to end.

``0xEE`` (internal error) is not here: no terminal input may provoke it — the server maps
every refusal to its documented code; a defect would show as 0xEE and fail the other tests.
Each test also checks that the refusal changed nothing it must not change.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import Frame, bcd_encode, be_decode, frame_encode
from recharge import db
from recharge.context import Platform
from recharge.orders import model
from server.service import DDService
from server.terminal_client import TerminalClient

pytestmark = pytest.mark.usefixtures("audited")


def one_request(term: SimTerminal, data: bytes) -> Frame:
    with term.client().connect() as client:
        client.send_raw(data)
        return client.receive()


def dd11(term: SimTerminal, amount: int, order_no: str, app_type: int = 0) -> Frame:
    with term.client().connect() as client:
        answer = client.dd11(amount, order_no, app_type)
        assert client.closed_by_peer() == (answer.result != 0)
        return answer


def assert_refused(answer: Frame, stage: int, code: int) -> None:
    assert (answer.stage, answer.flow, answer.result) == (stage, 0xFF, code), answer


async def order_state(conn: asyncpg.Connection, order_no: str) -> model.Order:
    order = await model.get_order(conn, order_no)
    assert order is not None
    return order


async def test_info_A0_stage_out_of_order(signed_in: SimTerminal) -> None:
    answer = await asyncio.to_thread(one_request, signed_in,
                                     signed_in.client().messages.dd13(b"\x01\x02\x90\x00"))
    assert_refused(answer, 0x14, 0xA0)


async def test_info_A1_unknown_user_id_at_dd01(term: SimTerminal) -> None:
    stranger = TerminalClient("127.0.0.1", term.port, "9" + fixtures.random_digits(9), term.pki)
    answer = await asyncio.to_thread(lambda: stranger.connect().dd01())
    assert_refused(answer, 0x02, 0xA1)


async def test_info_A1_pki_not_registered_to_terminal_at_dd03(term: SimTerminal, conn: asyncpg.Connection) -> None:
    wrong = fixtures.virtual_module(term.keys, fixtures.random_digits(8))

    def talk() -> Frame:
        with term.client().connect() as client:
            client.dd01()
            return client.dd03(wrong.r_init())

    assert_refused(await asyncio.to_thread(talk), 0x04, 0xA1)
    row = await conn.fetchrow(
        "SELECT signin_failures, signin_probes, signed_in_until FROM terminals WHERE code = $1", term.code
    )
    # Counted as a failure before proof (issue 14 item 2: never towards the lock), not signed in.
    assert (row["signin_failures"], row["signin_probes"], row["signed_in_until"]) == (0, 1, None)


async def test_info_A1_recharge_pki_differs_from_signed_in_pki(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, signed_in.card().card_no, 100)
    other = TerminalClient("127.0.0.1", signed_in.port, signed_in.code, fixtures.random_digits(8))
    answer = await asyncio.to_thread(lambda: other.connect().dd11(100, order_no))
    assert_refused(answer, 0x12, 0xA1)


async def test_info_A2_checksum_wrong(signed_in: SimTerminal) -> None:
    data = bytearray(signed_in.client().messages.dd11(100, "0" * 20))
    data[-2] ^= 0x01
    answer = await asyncio.to_thread(one_request, signed_in, bytes(data))
    assert_refused(answer, 0x12, 0xA2)
    assert answer.user_id == signed_in.code.encode()


async def test_info_A3_purse_type_unknown(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    card = signed_in.card(card_type=0x02)
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)

    def talk() -> Frame:
        with signed_in.client().connect() as client:
            return client.dd13(card.run_script(client.dd11(100, order_no).info))

    assert_refused(await asyncio.to_thread(talk), 0x14, 0xA3)
    assert (await order_state(conn, order_no)).state == model.PAID


async def test_info_A4_reversal_failed_when_proof_does_not_verify(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    card = signed_in.card()
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)

    def talk() -> Frame:
        with signed_in.client().connect() as client:
            fixtures.recharge_until_dd16(client, card, order_no, 100)  # then the connection drops
        with signed_in.client().connect() as client:
            assert client.dd21(order_no).flow == 0x00
            forged = b"\x01\x0a" + b"\x11" * 8 + b"\x90\x00"
            return client.dd21_reply(order_no, forged)

    assert_refused(await asyncio.to_thread(talk), 0x22, 0xA4)
    order = await order_state(conn, order_no)
    assert order.state == model.PAID and order.loading


async def test_info_A5_reversal_succeeded_when_card_was_not_credited(
    signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    card = signed_in.card(balance_cents=40)
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)

    def talk() -> Frame:
        with signed_in.client().connect() as client:
            fixtures.recharge_until_dd16(client, card, order_no, 100)
        with signed_in.client().connect() as client:
            return client.dd21_reply(order_no, card.run_script(client.dd21(order_no).info))

    answer = await asyncio.to_thread(talk)
    assert_refused(answer, 0x22, 0xA5)
    assert be_decode(answer.info[22:26]) == 0 and be_decode(answer.info[26:30]) == 40
    order = await order_state(conn, order_no)
    assert order.state == model.PAID and not order.loading and card.balance == 40


async def test_info_A6_app_type_unknown(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, signed_in.card().card_no, 100)
    assert_refused(await asyncio.to_thread(dd11, signed_in, 100, order_no, 0x01), 0x12, 0xA6)


async def test_info_A7_merchant_recharge_fund_is_empty(platform: Any, conn: asyncpg.Connection, test_keys: Any) -> None:
    poor = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0], fund_cents=50)
    await asyncio.to_thread(poor.client().sign_in, poor.module())
    order_no = await fixtures.paid_order(conn, poor.merchant_id, poor.card().card_no, 100, pay=False)
    assert_refused(await asyncio.to_thread(dd11, poor, 100, order_no), 0x12, 0xA7)
    order = await order_state(conn, order_no)
    assert order.state == model.SUBMITTED and order.pay_transfer_id is None


async def test_info_AA_wrong_signin_cryptogram(term: SimTerminal, conn: asyncpg.Connection) -> None:
    def talk() -> Frame:
        module = term.module()
        with term.client().connect() as client:
            client.dd01()
            client.dd03(module.r_init())
            return client.dd05(b"\x00" * 8)

    assert_refused(await asyncio.to_thread(talk), 0x06, 0xAA)
    row = await conn.fetchrow("SELECT signin_failures, signin_probes FROM terminals WHERE code = $1", term.code)
    assert (row["signin_failures"], row["signin_probes"]) == (0, 1)  # before proof: never towards the lock


async def test_info_AA_wrong_signin_proof_at_dd07(term: SimTerminal, conn: asyncpg.Connection) -> None:
    def talk() -> Frame:
        module = term.module()
        with term.client().connect() as client:
            client.dd01()
            dd04 = client.dd03(module.r_init())
            client.dd05(module.ac_login1(dd04.info))
            return client.dd07(b"\x01\x02\x03\x04")

    assert_refused(await asyncio.to_thread(talk), 0x08, 0xAA)
    row = await conn.fetchrow("SELECT signed_in_until, signin_failures FROM terminals WHERE code = $1", term.code)
    assert (row["signed_in_until"], row["signin_failures"]) == (None, 1)  # after proof: counts towards the lock


async def test_info_BB_terminal_not_signed_in(term: SimTerminal, conn: asyncpg.Connection) -> None:
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)
    assert_refused(await asyncio.to_thread(dd11, term, 100, order_no), 0x12, 0xBB)


async def test_info_BB_query_and_deposit_also_need_sign_in(term: SimTerminal) -> None:
    def talk() -> tuple[Frame, Frame]:
        with term.client().connect() as client:
            q = client.dd21("1" * 20)
        with term.client().connect() as client:
            d = client.dd73(0x01, "1680" + "0" * 12, 100, b"\x00" * 4)
        return q, d

    query, deposit = await asyncio.to_thread(talk)
    assert_refused(query, 0x22, 0xBB)
    assert_refused(deposit, 0x74, 0xBB)


async def test_info_CC_length_field_disagrees_with_info_length(signed_in: SimTerminal) -> None:
    good = signed_in.client().messages.dd11(100, "0" * 20)
    body = bytearray(good[5:-4])
    body[-16] = 14  # the info length byte; the length field still says 15 bytes of info
    data = good[:5] + bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "big")
    assert_refused(await asyncio.to_thread(one_request, signed_in, data), 0x12, 0xCC)


async def test_info_CC_info_of_wrong_size_for_the_stage(signed_in: SimTerminal) -> None:
    data = signed_in.client().messages.frame(0x11, b"\x00" * 14)
    assert_refused(await asyncio.to_thread(one_request, signed_in, data), 0x12, 0xCC)


async def _side_service(platform: Any, pool: asyncpg.Pool, **changes: Any) -> DDService:
    ctx = platform.ctx
    side = Platform(settings=ctx.settings.replace(**changes), pool=pool, keys=ctx.keys, dsn=ctx.dsn)
    return DDService(side)


@pytest.fixture
async def tiny_pool(database_url: str, settings: Any) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, settings.replace(pool_min_size=1, pool_max_size=1))
    yield pool
    await pool.close()


async def test_info_DD_system_busy_when_db_tasks_saturated(
    platform: Any, signed_in: SimTerminal, pool: asyncpg.Pool
) -> None:
    service = await _side_service(platform, pool, dd_max_inflight_db_tasks=0)
    port = await service.start()
    try:
        client = TerminalClient("127.0.0.1", port, signed_in.code, signed_in.pki)
        answer = await asyncio.to_thread(lambda: client.connect().dd11(100, "1" * 20))
    finally:
        await service.stop(1.0)
    assert_refused(answer, 0x12, 0xDD)


async def test_info_DD_system_busy_when_pool_exhausted(
    platform: Any, signed_in: SimTerminal, tiny_pool: asyncpg.Pool
) -> None:
    service = await _side_service(platform, tiny_pool, pool_acquire_timeout_s=0.2)
    port = await service.start()
    try:
        async with tiny_pool.acquire():  # the only connection is taken
            client = TerminalClient("127.0.0.1", port, signed_in.code, signed_in.pki)
            answer = await asyncio.to_thread(lambda: client.connect().dd11(100, "1" * 20))
    finally:
        await service.stop(1.0)
    assert_refused(answer, 0x12, 0xDD)


async def test_info_96_order_not_loadable_when_already_loaded(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    card = signed_in.card()
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, card.card_no, 100)
    await asyncio.to_thread(signed_in.client().recharge, card, order_no, 100)
    assert_refused(await asyncio.to_thread(dd11, signed_in, 100, order_no), 0x12, 0x96)


async def test_info_96_order_not_loadable_when_expired(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, signed_in.card().card_no, 100, pay=False)
    await conn.execute("UPDATE orders SET expires_at = now() - interval '1 second' WHERE order_no = $1", order_no)
    assert_refused(await asyncio.to_thread(dd11, signed_in, 100, order_no), 0x12, 0x96)


async def test_info_97_amount_differs_from_order(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, signed_in.card().card_no, 100)
    assert_refused(await asyncio.to_thread(dd11, signed_in, 101, order_no), 0x12, 0x97)


async def test_info_98_card_differs_from_order(signed_in: SimTerminal, conn: asyncpg.Connection) -> None:
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, signed_in.card().card_no, 100)
    other_card = signed_in.card()

    def talk() -> Frame:
        with signed_in.client().connect() as client:
            return client.dd13(other_card.run_script(client.dd11(100, order_no).info))

    assert_refused(await asyncio.to_thread(talk), 0x14, 0x98)
    order = await order_state(conn, order_no)
    assert order.state == model.PAID and not order.loading


async def test_info_99_order_number_unknown(signed_in: SimTerminal) -> None:
    assert_refused(await asyncio.to_thread(dd11, signed_in, 100, "2" * 20), 0x12, 0x99)


async def test_info_99_query_of_unknown_order(signed_in: SimTerminal) -> None:
    def talk() -> Frame:
        with signed_in.client().connect() as client:
            return client.dd21("3" * 20)

    assert_refused(await asyncio.to_thread(talk), 0x22, 0x99)


async def test_info_99_order_number_not_bcd(signed_in: SimTerminal) -> None:
    info = b"\x00" + (100).to_bytes(4, "big") + b"\xab" * 10
    data = frame_encode(Frame(stage=0x11, user_id=signed_in.code.encode(), pki=bcd_encode(signed_in.pki, 4), info=info))
    assert_refused(await asyncio.to_thread(one_request, signed_in, data), 0x12, 0x99)

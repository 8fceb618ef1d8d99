"""The DD server's store helpers that recharges lean on: receipt record ids handed out from
blocks of ``dd_record_seq``, and the card balance a DD22 falls back on."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg

from app import fixtures
from recharge.orders import model, receipts
from server import store


async def test_record_id_sequence_steps_by_the_block_the_allocator_assumes(conn: asyncpg.Connection) -> None:
    step = await conn.fetchval("SELECT increment_by FROM pg_sequences WHERE sequencename = 'dd_record_seq'")
    assert step == store.RECORD_ID_BLOCK


async def test_record_ids_of_two_services_and_many_blocks_never_repeat(pool: asyncpg.Pool) -> None:
    now = dt.datetime.now(dt.UTC)
    first, second = store.RecordIds(), store.RecordIds()  # two workers, say

    async def take(ids: store.RecordIds, count: int) -> list[str]:
        async with pool.acquire() as conn:
            return await ids.take(conn, count, now)

    batches = await asyncio.gather(*(take(ids, n) for n in (7, 600, 999, 1, 1200) for ids in (first, second)))
    taken = [rid for batch in batches for rid in batch]
    assert len(taken) == 2 * (7 + 600 + 999 + 1 + 1200) and len(set(taken)) == len(taken)
    day = now.astimezone(model.LOCAL_TZ).strftime("%Y%m%d")
    assert all(len(rid) == 20 and rid.startswith(day) and rid.isdigit() for rid in taken)
    async with pool.acquire() as conn:  # the one-off path (DD21, the operator) shares the sequence
        assert await receipts.new_record_id(conn, now) not in set(taken)


async def test_last_known_balance_prefers_the_latest_load_then_the_card_row(conn: asyncpg.Connection) -> None:
    card_no = fixtures.random_digits(16)
    assert await store.last_known_balance(conn, None) == 0
    assert await store.last_known_balance(conn, card_no) == 0
    await conn.execute("INSERT INTO cards (card_no, kind, last_balance_cents) VALUES ($1, 'cpu', 321)", card_no)
    assert await store.last_known_balance(conn, card_no) == 321
    merchant = await fixtures.funded_merchant(conn, await fixtures.fresh_merchant_code(conn), 10_000)
    for balance_after, loaded_at in ((700, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), (900, dt.datetime(2026, 2, 1, tzinfo=dt.UTC))):
        order_no = await fixtures.paid_order(conn, merchant, card_no, 100)
        await conn.execute(
            "UPDATE orders SET balance_after_cents = $2, loaded_at = $3 WHERE order_no = $1",
            order_no, balance_after, loaded_at,
        )
    assert await store.last_known_balance(conn, card_no) == 900


async def test_dd11_reads_of_several_terminals_in_one_statement_match_the_single_read(conn: asyncpg.Connection) -> None:
    """``terminals_and_orders`` answers each (terminal, order) pair exactly as ``terminal_and_order``
    would, in the order asked: known and unknown terminals, orders with and without a card row,
    unknown orders, no order asked, and the same pair twice."""
    merchant = await fixtures.funded_merchant(conn, await fixtures.fresh_merchant_code(conn), 10_000)
    code, card_no = fixtures.random_digits(8), fixtures.random_digits(16)
    await fixtures.dd_terminal(conn, merchant, code, fixtures.random_digits(8))
    with_card_row = await fixtures.paid_order(conn, merchant, card_no, 100)
    await conn.execute("INSERT INTO cards (card_no, kind) VALUES ($1, 'cpu')", card_no)
    without_card_row = await fixtures.paid_order(conn, merchant, fixtures.random_digits(16), 200)
    unknown_order = "9" * 20
    pairs: list[tuple[str, str | None]] = [
        (code, with_card_row), ("00000000", with_card_row), (code, without_card_row), (code, unknown_order),
        (code, None), ("00000000", None), (code, with_card_row),
    ]
    merged = await store.terminals_and_orders(conn, pairs)
    singles = [await store.terminal_and_order(conn, c, o) for c, o in pairs]
    assert merged == singles
    assert [(t is not None, o.order_no if o else None, kind) for t, o, kind in merged] == [
        (True, with_card_row, "cpu"), (False, with_card_row, "cpu"), (True, without_card_row, None),
        (True, None, None), (True, None, None), (False, None, None), (True, with_card_row, "cpu"),
    ]

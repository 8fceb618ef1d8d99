"""The card service on the group-commit path (recharge.kkt.trades.TRADES): concurrent trades share
one transaction and one commit, each answered as if it had run alone — refusals as values that
wrote nothing, a card's trades in order, a terminal's daily recharge limit, Stances without gaps."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.kkt import service as kkt
from recharge.kkt import trades
from recharge.ledger.connections import KeptConnections
from recharge.ledger.group_commit import GroupCommit
from tests.kkt_world import PASSWORD_MD5, World, make_world

pytestmark = pytest.mark.usefixtures("audited")


@pytest.fixture
async def w(pool: asyncpg.Pool, test_keys: Any) -> World:
    return await make_world(pool, test_keys[0], 0, fund=1_000_000)


def one_batch(pool: asyncpg.Pool, settings: Settings, keys: MasterKeys, size: int) -> kkt.Config:
    """A Config whose lane gathers ``size`` trades into one batch (it waits up to 2 s for them)."""
    lane = GroupCommit(KeptConnections(pool, max_kept=1), max_batch=size, max_wait_ms=2000, pipeline=1)
    return kkt.Config.of(settings, keys, lane)


def consume(w: World, card: str, cents: int, password: str = PASSWORD_MD5, **more: Any) -> kkt.TradeRequest:
    return kkt.TradeRequest(trade_type="0022", trade_mode="1", card_no=card, terminal_code=w.terminal,
                            password=password, amount=str(cents), **more)


async def run(pool: asyncpg.Pool, cfg: kkt.Config, reqs: list[kkt.TradeRequest]) -> list[kkt.TradeResult]:
    results = await asyncio.gather(*(kkt.trade(pool, req, cfg) for req in reqs))
    assert cfg.lane is not None
    await cfg.lane.wait_idle()
    return results


async def journal_rows(pool: asyncpg.Pool, merchant_id: int) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT card_no, stance, amount_cents, purse_after_cents, kind FROM kkt_trades"
                                " WHERE merchant_id = $1 ORDER BY id", merchant_id)


async def test_trades_of_different_cards_share_one_commit_and_a_refusal_writes_nothing(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any
) -> None:
    rich = [await w.new_card(balance=1_000) for _ in range(3)]
    poor = await w.new_card(balance=10)
    cfg = one_batch(pool, settings, test_keys[0], 5)
    results = await run(pool, cfg, [consume(w, rich[0], 100), consume(w, poor, 500), consume(w, rich[1], 200),
                                    consume(w, rich[2], 300, password="0" * 32), kkt.TradeRequest(
                                        trade_type="0011", trade_mode="0", card_no=rich[2],
                                        terminal_code=w.terminal, password=PASSWORD_MD5)])
    assert cfg.lane is not None and cfg.lane.stats.batches == 1 and cfg.lane.stats.steps == 5
    assert [r.code for r in results] == ["11", "08", "11", "07", "11"]
    assert (results[0].integral, results[2].integral, results[4].integral) == (900, 800, 1_000)
    rows = await journal_rows(pool, w.merchant_id)
    assert [(r["card_no"], r["amount_cents"], r["purse_after_cents"]) for r in rows] == [
        (rich[0], 100, 900), (rich[1], 200, 800), (rich[2], 0, 1_000)]  # nothing for the refused ones
    assert [r["stance"] for r in rows] == [results[0].stance, results[2].stance, results[4].stance]
    assert [int(r["stance"]) for r in rows] == list(range(int(rows[0]["stance"]), int(rows[0]["stance"]) + 3))
    assert await w.balance(poor) == (10, 0)


async def test_a_cards_trades_in_one_batch_take_effect_in_order(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any
) -> None:
    card = await w.new_card(balance=1_000)
    cfg = one_batch(pool, settings, test_keys[0], 4)
    results = await run(pool, cfg, [consume(w, card, 400), consume(w, card, 400), consume(w, card, 300),
                                    consume(w, card[-8:], 350)])
    assert [r.code for r in results] == ["11", "12", "11", "08"]  # the same amount again: a duplicate (12)
    assert [r.integral for r in results if r.code == "11"] == [600, 300]  # the short form names the same card
    assert await w.balance(card) == (300, 0)


async def test_wrong_passwords_in_one_batch_are_each_counted_and_lock_the_card(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any
) -> None:
    card = await w.new_card(balance=1_000)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE cards SET password_failures = 3 WHERE card_no = $1", card)
    cfg = one_batch(pool, settings, test_keys[0], 4)
    query = kkt.TradeRequest(trade_type="0011", trade_mode="0", card_no=card, terminal_code=w.terminal,
                             password="1" * 32)
    results = await run(pool, cfg, [query, consume(w, card, 100, password="2" * 32), consume(w, card, 101),
                                    consume(w, card, 102)])
    assert [r.code for r in results] == ["07"] * 4  # the fifth failure locked the card: the right ones too
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT password_failures, locked_until FROM cards WHERE card_no = $1", card)
    assert row["password_failures"] == 0 and row["locked_until"] is not None
    assert await w.balance(card) == (1_000, 0)


async def test_a_terminals_recharges_in_one_batch_respect_its_daily_limit(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any
) -> None:
    cards = [await w.new_card() for _ in range(3)]
    async with pool.acquire() as conn:
        await conn.execute("UPDATE terminals SET daily_recharge_limit_cents = 1000 WHERE code = $1", w.terminal)
    cfg = one_batch(pool, settings, test_keys[0], 3)
    reqs = [kkt.TradeRequest(trade_type="1100", trade_mode="0", card_no=card, terminal_code=w.terminal,
                             password=PASSWORD_MD5, amount="400") for card in cards]
    results = await run(pool, cfg, reqs)
    assert sorted(r.code for r in results) == ["11", "11", "58"]
    assert sum([(await w.balance(card))[0] for card in cards]) == 800


async def test_a_reqid_twin_in_the_same_batch_replays_the_first_answer(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any
) -> None:
    card = await w.new_card(balance=1_000)
    cfg = one_batch(pool, settings, test_keys[0], 2)
    first, twin = await run(pool, cfg, [consume(w, card, 100, req_id="R-1"), consume(w, card, 100, req_id="R-1")])
    assert first == twin and first.code == "11"
    assert await w.balance(card) == (900, 0)


async def test_cards_of_two_merchants_with_the_same_sequence_share_a_round(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await make_world(pool, test_keys[0], 0, fund=0)
    mine, theirs = await w.new_card(balance=1_000), await other.new_card(balance=1_000)
    assert mine[-8:] == theirs[-8:]  # their short numbers are the same; the cards are not
    rounds: list[list[int]] = []
    run_round = trades._run_round

    async def counted(conn: asyncpg.Connection, items: Any, now: list[int], *rest: Any) -> list[int]:
        rounds.append(list(now))
        return await run_round(conn, items, now, *rest)

    monkeypatch.setattr(trades, "_run_round", counted)
    cfg = one_batch(pool, settings, test_keys[0], 2)
    results = await run(pool, cfg, [consume(w, mine[-8:], 100), consume(other, theirs, 200)])
    assert [r.code for r in results] == ["11", "11"] and rounds == [[0, 1]]
    assert (await w.balance(mine), await other.balance(theirs)) == ((900, 0), (800, 0))


async def test_an_operators_sms_trade_holds_no_pool_connection_while_its_batch_runs(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contextlib import asynccontextmanager

    from recharge.kkt import cards, sms_channel
    from tests.sms_world import new_mobile

    operator = new_mobile()
    async with pool.acquire() as conn:
        await cards.upsert_terminal(conn, f"S{w.merchant_code}0001", w.merchant_code, "sms", msisdn=operator,
                                    actor="test")
    card = await w.new_card(balance=5_000)
    held, seen = [0], []

    @asynccontextmanager
    async def acquire() -> Any:  # what the HTTP hook hands the channel (Platform.acquire), counted
        async with pool.acquire() as conn:
            held[0] += 1
            try:
                yield conn
            finally:
                held[0] -= 1

    real = trades._run_round

    async def watched(*args: Any) -> Any:
        seen.append(held[0])
        return await real(*args)

    monkeypatch.setattr(trades, "_run_round", watched)
    cfg = one_batch(pool, settings, test_keys[0], 1)
    answer = await sms_channel.handle(acquire, cfg, operator, f"CZXF*{card}*10*111111")
    assert cfg.lane is not None
    await cfg.lane.wait_idle()
    assert answer.outcome == "11" and seen == [0] and held == [0]
    assert await w.balance(card) == (4_000, 0)


async def test_a_batch_looks_each_trades_terminal_up_once_and_refuses_as_alone(
    w: World, pool: asyncpg.Pool, settings: Settings, test_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = await w.new_card(balance=1_000)
    unknown_terminal = kkt.TradeRequest(trade_type="0022", trade_mode="1", card_no=card,
                                        terminal_code="NOSUCHTERMINAL", password=PASSWORD_MD5, amount="100")
    bad_card = consume(w, "12", 100)
    alone = kkt.Config.of(settings, test_keys[0])
    refusals = [await kkt.trade(pool, unknown_terminal, alone), await kkt.trade(pool, bad_card, alone)]
    looked: list[str | None] = []
    real = trades.gateway.terminal

    async def counted(conn: asyncpg.Connection, code: str | None, *rest: Any) -> Any:
        looked.append(code)
        return await real(conn, code, *rest)

    monkeypatch.setattr(trades.gateway, "terminal", counted)
    query = kkt.TradeRequest(trade_type="0011", trade_mode="0", card_no=card, terminal_code=w.terminal,
                             password=PASSWORD_MD5)
    cfg = one_batch(pool, settings, test_keys[0], 4)
    results = await run(pool, cfg, [consume(w, card, 100), unknown_terminal, bad_card, query])
    assert [r.code for r in results] == ["11", "70", "01", "11"] and results[1:3] == refusals
    assert results[3].integral == 900  # the card's second trade: a later round of the same batch
    assert sorted(looked, key=str) == sorted([w.terminal, "NOSUCHTERMINAL", w.terminal, w.terminal], key=str)

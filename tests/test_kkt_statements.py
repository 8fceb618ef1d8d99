"""The database statements one batch of card trades costs on the group-commit path, counted: a count,
not a speed, so that a change adding a statement (a round trip to PostgreSQL) to every batch of
trades cannot go in unnoticed (``tests/test_dd_statements.py`` does the same for a DD recharge).

The platform's own trade lane (``http_api.app``) runs the batches; every statement sent on the
connections it takes is logged with asyncpg's query logger. The trades of one batch are submitted
together, each of a card of its own, with the reference cache and the merchant's accounts warm:
what is left is the batch's own work. ``BEGIN`` and ``COMMIT`` count (the lane's first statement
carries the BEGIN); asyncpg's one-off type introspection does not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from http_api.context import KKT_LANE_KEY
from recharge.kkt import reference as kkt_reference
from recharge.kkt import service as kkt
from recharge.kkt.reference import ReferenceCache
from recharge.ledger.group_commit import GroupCommit
from tests.kkt_world import PASSWORD_MD5, World
from tests.statement_log import logged, without_introspection

pytestmark = pytest.mark.usefixtures("audited")

# A batch of consumes: BEGIN with the cards' locks, the cards with their limits' figures, the
# transfers, the journal rows (balances, Stances), COMMIT — however many trades it holds.
CONSUME_BATCH = 5
# A batch of balance queries (no REQID: the cards read without their locks): BEGIN, the cards,
# the journal rows, COMMIT.
QUERY_BATCH = 4
# Consumes and queries of other cards in one batch: the consumes' statements, the queries' cards
# read with them.
MIXED_BATCH = 5
TRADES = 4  # per batch

async def one_batch(platform: Any, lane: GroupCommit, requests: list[kkt.TradeRequest], cfg: kkt.Config) -> list[str]:
    """Submit the requests together (one batch), answer the batch's statements; every trade must answer 11."""
    await lane.wait_idle()  # no connection kept from before: the batch takes one anew (and logs it)
    before = lane.stats
    with logged([lane.connections]) as seen:
        results = await asyncio.gather(*[kkt.trade(platform.ctx.acquire, r, cfg) for r in requests])
        await lane.wait_idle()
        for _ in range(3):  # asyncpg calls its query loggers on the loop, soon after each statement
            await asyncio.sleep(0.01)
    assert [r.code for r in results] == ["11"] * len(requests), results
    assert (lane.stats.batches - before.batches, lane.stats.steps - before.steps) == (1, len(requests))
    return without_introspection(seen)


@pytest.fixture
async def warm(world: World, platform: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[GroupCommit, kkt.Config, list[str]]:
    """The lane, a Config on it whose reference entries outlive the test, and cards each traded once."""
    lane: GroupCommit | None = platform.http.runner.app[KKT_LANE_KEY]
    assert lane is not None, "the platform's trades go through its group commit"
    monkeypatch.setattr(kkt_reference, "CACHE", ReferenceCache())  # no quiet window left by other tests
    cfg = kkt.Config.of(platform.ctx.settings.replace(kkt_reference_cache_ttl_s=3600.0), platform.ctx.keys, lane)
    cards = [await world.new_card(balance=100_000) for _ in range(2 * TRADES)]
    for card in cards:  # the merchant's account opened, every cache warm
        assert (await kkt.trade(platform.ctx.acquire, consume(world, card, 1), cfg)).code == "11"
    return lane, cfg, cards


def consume(world: World, card: str, amount: int) -> kkt.TradeRequest:
    return kkt.TradeRequest("0022", "1", card, world.terminal, password=PASSWORD_MD5, amount=str(amount))


def query(world: World, card: str) -> kkt.TradeRequest:
    return kkt.TradeRequest("0011", "0", card, world.terminal, password=PASSWORD_MD5)


async def test_a_batch_of_consumes_costs_the_pinned_statements(world: World, platform: Any, warm: Any) -> None:
    lane, cfg, cards = warm
    statements = await one_batch(platform, lane, [consume(world, c, 2) for c in cards[:TRADES]], cfg)
    assert len(statements) == CONSUME_BATCH, statements
    assert statements[0].startswith("BEGIN; SELECT FROM cards") and statements[-1] == "COMMIT", statements


async def test_a_batch_of_queries_costs_the_pinned_statements(world: World, platform: Any, warm: Any) -> None:
    lane, cfg, cards = warm
    statements = await one_batch(platform, lane, [query(world, c) for c in cards[:TRADES]], cfg)
    assert len(statements) == QUERY_BATCH, statements


async def test_a_batch_of_consumes_and_queries_costs_the_pinned_statements(
    world: World, platform: Any, warm: Any
) -> None:
    lane, cfg, cards = warm
    requests = [consume(world, c, 3) for c in cards[:TRADES // 2]] + [query(world, c) for c in cards[TRADES // 2:TRADES]]
    statements = await one_batch(platform, lane, requests, cfg)
    assert len(statements) == MIXED_BATCH, statements

"""KaKaTong speed without changed answers: the reference cache (license keys, terminals,
service codes, points rules) applies an operator's change at once in this process and a
direct SQL edit within its TTL; a trade takes a bounded number of database round trips."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from recharge.kkt import reference as kkt_reference
from recharge.kkt import service as kkt
from recharge.kkt.reference import MISSING, ReferenceCache
from tests.conftest import settings_changed
from tests.kkt_world import PASSWORD_MD5, World

TOKEN = "test-admin-token"  # tests/conftest.py settings


async def admin_put(world: World, path: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Admin-Actor": "tester"}
    async with aiohttp.ClientSession() as session, session.put(f"{world.base}{path}", json=body,
                                                               headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def query(world: World, card: str) -> str:
    """A balance query's PayInForm, or the bare license code the gateway answers."""
    status, body = await world.get("cTRequest", LICENSEKEY=world.license_key, POSCODE=world.terminal,
                                   CARDPWD=PASSWORD_MD5, TRADETYPE="0011", TRADEMODE="0", CARDNO=card)
    assert status == 200, body
    if "<PayInForm>" not in body:
        return f"license {body}"
    return body.split("<PayInForm>")[1].split("<")[0]


# --- the cache itself -----------------------------------------------------------------------


class _Clock:
    """``time`` as recharge.kkt.reference reads it (``monotonic``), moved only by the test: what
    these tests prove of a TTL then holds however long the machine keeps the test waiting."""

    def __init__(self) -> None:
        self.now = 1024.0

    def monotonic(self) -> float:
        return self.now


TTL_S = 1 / 16  # binary fractions: the clock's arithmetic is exact


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(kkt_reference, "time", clock)
    return clock


def test_cache_entries_expire_after_their_ttl(clock: _Clock) -> None:
    cache = ReferenceCache()
    cache.put("k", 1, TTL_S, 10)
    assert cache.get("k", TTL_S) == 1
    start = clock.now
    clock.now = start + TTL_S - 1 / 1024
    assert cache.get("k", TTL_S) == 1
    clock.now = start + TTL_S
    assert cache.get("k", TTL_S) is MISSING


def test_cache_off_with_ttl_zero_and_bounded_in_entries() -> None:
    cache = ReferenceCache()
    cache.put("k", 1, 0, 10)
    assert cache.get("k", 0) is MISSING
    for i in range(5):
        cache.put(i, i, 10.0, 3)
    assert len(cache) == 3
    assert cache.get(0, 10.0) is MISSING and cache.get(4, 10.0) == 4


def test_invalidation_empties_the_cache_and_keeps_nothing_for_one_ttl(clock: _Clock) -> None:
    cache = ReferenceCache()
    cache.put("k", "old", TTL_S, 10)
    cache.invalidate()
    invalidated = clock.now
    assert cache.get("k", TTL_S) is MISSING
    # a row read while the operator's transaction may still be committing is not kept
    cache.put("k", "maybe old", TTL_S, 10)
    assert cache.get("k", TTL_S) is MISSING
    clock.now = invalidated + TTL_S - 1 / 1024
    cache.put("k", "maybe old", TTL_S, 10)
    assert cache.get("k", TTL_S) is MISSING
    clock.now = invalidated + TTL_S  # after one TTL, caching resumes
    cache.put("k", "fresh", TTL_S, 10)
    assert cache.get("k", TTL_S) == "fresh"


# --- operator changes through the admin API apply at once --------------------------------


async def test_a_key_revoked_through_the_admin_api_is_refused_at_once(world: World) -> None:
    card = await world.new_card(balance=100)
    assert await query(world, card) == "11"  # the key and terminal are now cached
    await admin_put(world, "/admin/kkt/license-keys",
                    {"key": world.license_key, "merchant": world.merchant_code, "enabled": False})
    assert await query(world, card) == "license 3"


async def test_a_terminal_disabled_through_the_admin_api_is_refused_at_once(world: World) -> None:
    card = await world.new_card(balance=100)
    assert await query(world, card) == "11"
    await admin_put(world, f"/admin/kkt/terminals/{world.terminal}",
                    {"merchant": world.merchant_code, "kind": "pos", "enabled": False})
    assert await query(world, card) == "70"


async def test_a_merchant_closed_through_the_admin_api_is_refused_at_once(world: World) -> None:
    card = await world.new_card(balance=100)
    assert await query(world, card) == "11"
    await admin_put(world, f"/admin/kkt/merchants/{world.merchant_code}", {"name": "closed", "closed": True})
    assert await query(world, card) == "60"


async def test_a_direct_sql_revocation_applies_within_the_ttl(world: World, platform: Any, pool: Any) -> None:
    card = await world.new_card(balance=100)
    with settings_changed(platform, kkt_reference_cache_ttl_s=0.3):
        kkt_reference.invalidate()
        await asyncio.sleep(0.31)  # past the quiet window of that invalidation
        assert await query(world, card) == "11"
        async with pool.acquire() as conn:
            await conn.execute("UPDATE license_keys SET enabled = false WHERE license_key = $1", world.license_key)
        await asyncio.sleep(0.31)
        assert await query(world, card) == "license 3"


async def test_without_the_cache_a_direct_sql_revocation_applies_at_once(
    world: World, platform: Any, pool: Any
) -> None:
    card = await world.new_card(balance=100)
    with settings_changed(platform, kkt_reference_cache_ttl_s=0):
        assert await query(world, card) == "11"
        async with pool.acquire() as conn:
            await conn.execute("UPDATE terminals SET enabled = false WHERE code = $1", world.terminal)
        assert await query(world, card) == "70"


# --- round trips ------------------------------------------------------------------------


@asynccontextmanager
async def statements_of(conn: asyncpg.Connection) -> AsyncIterator[list[str]]:
    """The statements this one connection sends while the block runs (asyncpg calls query
    loggers on the next loop turn, hence the sleeps)."""
    seen: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        seen.append(record.query)

    await asyncio.sleep(0)
    conn.add_query_logger(log)
    try:
        yield seen
        await asyncio.sleep(0)
    finally:
        conn.remove_query_logger(log)


async def test_a_consume_takes_six_statements_and_a_balance_query_two(
    world: World, platform: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kkt_reference, "CACHE", ReferenceCache())  # no quiet window left by other tests
    card = await world.new_card(balance=10_000)
    cfg = kkt.Config.of(platform.ctx.settings, platform.ctx.keys)

    def request(trade_type: str, mode: str, amount: str | None) -> kkt.TradeRequest:
        return kkt.TradeRequest(trade_type, mode, card, world.terminal, password=PASSWORD_MD5, amount=amount)

    async with platform.ctx.acquire() as conn:
        # first trades open the merchant's account and fill the caches
        assert (await kkt.trade(conn, request("0022", "1", "1"), cfg)).code == "11"
        async with statements_of(conn) as seen:
            result = await kkt.trade(conn, request("0022", "1", "2"), cfg)
        assert result.code == "11" and result.purse_cents == 10_000 - 3
        # BEGIN, card, limits, ledger transfer, balances+Stance+journal, COMMIT
        assert len(seen) == 6, seen
        async with statements_of(conn) as seen:
            result = await kkt.trade(conn, request("0011", "0", None), cfg)
        assert result.code == "11" and result.purse_cents == 10_000 - 3
        assert len(seen) == 2, seen  # card, balances+Stance+journal


# --- fewer statements, same answers under concurrency ------------------------------------


async def test_concurrent_twin_consumes_answer_11_once_and_12_to_the_rest(world: World, audited: None) -> None:
    """The duplicate rule is read after the card lock is held, in a statement of its own, so
    a twin that waited for the lock sees the trade that held it."""
    card = await world.new_card(balance=1000)
    answers = await asyncio.gather(*[
        world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT="100") for _ in range(6)
    ])
    assert sorted(a["PayInForm"] for a in answers) == ["11"] + ["12"] * 5
    assert await world.balance(card) == (900, 0)


async def test_queries_beside_consumes_answer_consistent_balances(world: World, audited: None) -> None:
    card = await world.new_card(balance=1000)
    calls = []
    for i in range(8):
        calls.append(world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=card, AMOUNT=str(10 + i)))
        calls.append(world.ct(TRADETYPE="0011", TRADEMODE="0", CARDNO=card))
    answers = await asyncio.gather(*calls)
    assert {a["PayInForm"] for a in answers} == {"11"}
    assert await world.balance(card) == (1000 - sum(10 + i for i in range(8)), 0)
    possible = {1000 - sum(10 + i for i in spent) for spent in _subsets(range(8))}
    assert all(int(a["Integral"]) in possible for a in answers[1::2])
    stances = [a["Stance"] for a in answers]
    assert len(set(stances)) == len(stances)


def _subsets(items: range) -> list[tuple[int, ...]]:
    from itertools import combinations

    return [c for n in range(len(items) + 1) for c in combinations(items, n)]


def test_a_requests_config_is_built_again_only_when_its_settings_keys_or_lane_change(
    settings: Any, test_keys: Any
) -> None:
    from types import SimpleNamespace

    from aiohttp import web

    from http_api.context import KKT_LANE_KEY, PLATFORM_KEY, kkt_config
    from recharge.context import Platform
    from recharge.keys import MasterKeys

    ctx = Platform(settings=settings, pool=None, keys=test_keys[0])
    app = web.Application()
    app[PLATFORM_KEY] = ctx
    request = SimpleNamespace(app=app)
    first = kkt_config(request)
    assert kkt_config(request) is first and first.lane is None
    ctx.settings = settings.replace(kkt_gateway_open=False)  # as an operator's change (settings_changed)
    closed = kkt_config(request)
    assert closed.settings is ctx.settings and not closed.settings.kkt_gateway_open
    ctx.keys = MasterKeys.generate(demo=True)
    assert kkt_config(request).pepper != closed.pepper
    lane = object()
    other = web.Application()
    other[PLATFORM_KEY] = ctx
    other[KKT_LANE_KEY] = lane
    assert kkt_config(SimpleNamespace(app=other)).lane is lane
    assert kkt_config(request).lane is None

"""The reference cache's reloads (``recharge.kkt.reference.refreshed``): the live license keys and
terminals are read again together, in one statement per TTL however many there are, and neither
the TTL's bound nor an operator's invalidation is loosened by it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from recharge.config import Settings
from recharge.kkt import gateway
from recharge.kkt import reference as kkt_reference
from recharge.kkt.messages import Refused
from recharge.kkt.reference import MISSING, ReferenceCache
from tests.kkt_world import World, make_world

TTL_S = 1 / 16  # binary fractions: the clock's arithmetic is exact
FAMILIES = ("license", "terminal")


class _Clock:
    """``time`` as recharge.kkt.reference reads it, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1024.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(kkt_reference, "time", clock)
    monkeypatch.setattr(kkt_reference, "CACHE", ReferenceCache())
    return clock


@pytest.fixture
def cache_settings(settings: Settings) -> Settings:
    return settings.replace(kkt_reference_cache_ttl_s=TTL_S, kkt_reference_cache_max_entries=1000)


class _Loads:
    """A ``load_all`` that records the keys of each call; ``gate`` (when set) holds every call."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[list[Hashable]] = []
        self.gate: asyncio.Event | None = None
        self.fail_first = fail_first

    async def __call__(self, keys: list[Hashable]) -> dict[Hashable, Any]:
        self.calls.append(list(keys))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_first and len(self.calls) == 1:
            raise ConnectionError("the first reload failed")
        return {k: f"{k[1]}@{len(self.calls)}" for k in keys if not str(k[1]).startswith("gone")}


async def ask(key: Hashable, settings: Settings, load: Callable[[list[Hashable]], Awaitable[dict[Hashable, Any]]]) -> Any:
    """What ``recharge.kkt.gateway`` does for one key: the cache, else a reload when it expired."""
    ttl_s = kkt_reference.limits(settings)[0]
    found = kkt_reference.CACHE.get(key, ttl_s)
    if found is not MISSING:
        return found
    assert kkt_reference.CACHE.stale(key, ttl_s)
    return (await kkt_reference.refreshed((key,), FAMILIES, settings, load)).get(key)


def _warm(keys: list[Hashable], clock: _Clock, settings: Settings) -> None:
    """Entries read at different moments and asked for since (as single reads leave them)."""
    for key in keys:
        kkt_reference.CACHE.put(key, f"{key[1]}@0", TTL_S, 1000)
        clock.now += 1 / 1024
        assert kkt_reference.CACHE.get(key, TTL_S) == f"{key[1]}@0"


async def _held_reload(key: Hashable, clock: _Clock, settings: Settings) -> tuple[_Loads, asyncio.Task[Any]]:
    """``key`` warmed, then expired, and one caller's reload of it begun and held at its gate."""
    _warm([key], clock, settings)
    clock.now += TTL_S
    loads = _Loads()
    loads.gate = asyncio.Event()
    reading = asyncio.create_task(ask(key, settings, loads))
    await asyncio.sleep(0)
    return loads, reading


# --- the mechanics, with a clock and reads the test controls ----------------------------------


async def test_n_live_keys_cost_one_read_per_ttl_and_expire_together(clock: _Clock, cache_settings: Settings) -> None:
    keys: list[Hashable] = [("license", f"key{i}") for i in range(10)] + [("terminal", f"t{i}") for i in range(10)]
    _warm(keys, clock, cache_settings)
    loads = _Loads()
    clock.now += TTL_S  # every entry has expired
    answers = await asyncio.gather(*[ask(k, cache_settings, loads) for k in keys])
    assert answers == [f"{k[1]}@1" for k in keys]
    assert len(loads.calls) == 1 and sorted(loads.calls[0]) == sorted(keys)  # type: ignore[type-var]
    began = clock.now
    for _ in range(3):  # one read per TTL, each keeping every entry exactly one TTL from when it began
        clock.now = began + TTL_S - 1 / 1024
        assert [await ask(k, cache_settings, loads) for k in keys] == [f"{k[1]}@{len(loads.calls)}" for k in keys]
        clock.now = began + TTL_S
        assert all(kkt_reference.CACHE.stale(k, TTL_S) for k in keys)
        calls = len(loads.calls)
        assert [await ask(k, cache_settings, loads) for k in keys] == [f"{k[1]}@{calls + 1}" for k in keys]
        assert len(loads.calls) == calls + 1
        began = clock.now


async def test_a_reload_keeps_its_entries_one_ttl_from_when_its_read_began(
    clock: _Clock, cache_settings: Settings
) -> None:
    key = ("license", "slow")
    loads, reading = await _held_reload(key, clock, cache_settings)
    began = clock.now
    clock.now += TTL_S / 2  # the statement takes half a TTL
    loads.gate.set()
    assert await reading == "slow@1"
    clock.now = began + TTL_S - 1 / 1024
    assert kkt_reference.CACHE.get(key, TTL_S) == "slow@1"
    clock.now = began + TTL_S
    assert kkt_reference.CACHE.get(key, TTL_S) is MISSING


async def test_keys_nobody_asked_for_are_not_read_again_and_rows_gone_are_forgotten(
    clock: _Clock, cache_settings: Settings
) -> None:
    asked, idle, gone = ("license", "asked"), ("license", "idle"), ("terminal", "gone1")
    _warm([asked, idle, gone], clock, cache_settings)
    loads = _Loads()
    clock.now += TTL_S
    assert await ask(asked, cache_settings, loads) == "asked@1"
    assert set(loads.calls[0]) == {asked, idle, gone}  # all three were asked for during their TTL
    assert kkt_reference.CACHE.get(gone, TTL_S) is MISSING and not kkt_reference.CACHE.stale(gone, TTL_S)
    clock.now += TTL_S  # ``idle`` was read again but nobody asked for it since
    assert await ask(asked, cache_settings, loads) == "asked@2"
    assert loads.calls[1] == [asked]
    assert kkt_reference.CACHE.get(idle, TTL_S) is MISSING and len(kkt_reference.CACHE) == 1


async def test_callers_wait_for_a_reload_under_way_instead_of_reading(clock: _Clock, cache_settings: Settings) -> None:
    keys: list[Hashable] = [("license", "a"), ("license", "b")]
    _warm(keys[1:], clock, cache_settings)
    loads, first = await _held_reload(keys[0], clock, cache_settings)
    second = asyncio.create_task(ask(keys[1], cache_settings, loads))
    await asyncio.sleep(0)
    loads.gate.set()
    assert (await first, await second) == ("a@1", "b@1")
    assert len(loads.calls) == 1


async def test_a_reload_begun_before_an_invalidation_is_neither_joined_nor_kept(
    clock: _Clock, cache_settings: Settings
) -> None:
    key = ("license", "k")
    loads, before = await _held_reload(key, clock, cache_settings)
    kkt_reference.invalidate()  # an operator's write: its answer must be seen at once
    after = asyncio.create_task(kkt_reference.refreshed((key,), FAMILIES, cache_settings, loads))
    await asyncio.sleep(0)
    assert len(loads.calls) == 2  # the caller after the invalidation read for itself
    loads.gate.set()
    await before
    assert (await after)[key] == "k@2"
    assert kkt_reference.CACHE.get(key, TTL_S) is MISSING  # nothing kept in the quiet window
    clock.now += TTL_S  # after it, a reload's answer is kept again
    assert (await kkt_reference.refreshed((key,), FAMILIES, cache_settings, loads))[key] == "k@3"
    assert kkt_reference.CACHE.get(key, TTL_S) == "k@3"


async def test_callers_waiting_for_a_failed_reload_read_for_themselves(clock: _Clock, cache_settings: Settings) -> None:
    keys: list[Hashable] = [("license", "a"), ("license", "b")]
    _warm(keys, clock, cache_settings)
    clock.now += TTL_S
    loads = _Loads(fail_first=True)
    loads.gate = asyncio.Event()
    first = asyncio.create_task(ask(keys[0], cache_settings, loads))
    await asyncio.sleep(0)
    second = asyncio.create_task(ask(keys[1], cache_settings, loads))
    await asyncio.sleep(0)
    loads.gate.set()
    with pytest.raises(ConnectionError):
        await first
    assert await second == "b@2"
    assert len(loads.calls) == 2


# --- the gateway on the real database: statements counted -----------------------------------


@asynccontextmanager
async def counted(pool: asyncpg.Pool, seen: list[str]) -> AsyncIterator[asyncpg.Connection]:
    """A pool connection whose statements are logged in ``seen`` (an acquire callable for ``authorize``)."""
    def log(record: Any) -> None:
        seen.append(record.query)

    async with pool.acquire() as conn:
        conn.add_query_logger(log)
        try:
            yield conn
        finally:
            conn.remove_query_logger(log)


def _reference_reads(seen: list[str]) -> list[str]:
    return [q for q in seen if "license_keys" in q or "FROM terminals" in q]


async def test_the_gateway_reads_n_live_keys_and_terminals_in_one_statement_per_ttl(
    clock: _Clock, cache_settings: Settings, pool: asyncpg.Pool, test_keys: Any
) -> None:
    worlds: list[World] = [await make_world(pool, test_keys[0], 0, fund=0) for _ in range(6)]
    seen: list[str] = []

    def db() -> Any:
        return counted(pool, seen)

    async def authorize_all(together: bool) -> None:
        calls = [gateway.authorize(db, w.license_key, "127.0.0.1", terminal_code=w.terminal, settings=cache_settings)
                 for w in worlds]
        answers = await asyncio.gather(*calls) if together else [await c for c in calls]
        assert [a.code for a in answers] == [0] * len(worlds)
        await asyncio.sleep(0)  # asyncpg calls its query loggers on the next loop turn

    await authorize_all(together=False)
    assert len(_reference_reads(seen)) == len(worlds)  # each key and terminal read on its first use
    for together in (True, False):
        seen.clear()
        clock.now += TTL_S
        await authorize_all(together)
        assert len(_reference_reads(seen)) == 1, seen
        seen.clear()
        clock.now += TTL_S / 2
        await authorize_all(together)
        async with db() as conn:
            for w in worlds:
                assert (await gateway.terminal(conn, w.terminal, frozenset({"pos"}), cache_settings)).code == w.terminal
        await asyncio.sleep(0)
        assert _reference_reads(seen) == []  # all fresh
    seen.clear()
    clock.now += TTL_S  # a trade's terminal check reloads them too, on the trade's own connection
    async with db() as conn:
        for w in worlds:
            assert (await gateway.terminal(conn, w.terminal, frozenset({"pos"}), cache_settings)).code == w.terminal
    await authorize_all(together=True)
    assert len(_reference_reads(seen)) == 1, seen


async def test_a_reload_sees_a_terminal_disabled_and_a_key_gone(
    clock: _Clock, cache_settings: Settings, pool: asyncpg.Pool, test_keys: Any
) -> None:
    worlds = [await make_world(pool, test_keys[0], 0, fund=0) for _ in range(2)]
    for w in worlds:
        assert (await gateway.authorize(pool, w.license_key, "127.0.0.1", terminal_code=w.terminal,
                                        settings=cache_settings)).code == 0
    async with pool.acquire() as conn:
        await conn.execute("UPDATE terminals SET enabled = false WHERE code = $1", worlds[0].terminal)
        await conn.execute("DELETE FROM license_keys WHERE license_key = $1", worlds[1].license_key)
        assert (await gateway.terminal(conn, worlds[0].terminal, frozenset({"pos"}), cache_settings)).code
        clock.now += TTL_S  # within the TTL the cache answered; after it, one reload sees both changes
        with pytest.raises(Refused) as refused:
            await gateway.terminal(conn, worlds[0].terminal, frozenset({"pos"}), cache_settings)
        assert refused.value.code == "70"
    assert (await gateway.authorize(pool, worlds[1].license_key, "127.0.0.1", terminal_code=worlds[1].terminal,
                                    settings=cache_settings)).code == 1

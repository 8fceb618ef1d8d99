"""In-process cache of the KaKaTong reference data every request reads: license keys,
terminals (with their merchant's state), service codes and points rules.

Entries live ``kkt_reference_cache_ttl_s`` from the moment their read began (0 turns the cache
off), so a change made behind this process's back — another process, the CLI, a direct SQL edit
— takes effect within that time. Operator writes through ``recharge.kkt.cards`` call
``invalidate()``, which empties the cache at once *and* stores nothing for one TTL afterwards:
the operator's transaction may still be committing, and a request that re-read the old row
meanwhile must not keep it for a whole TTL. Only rows that exist are cached for license keys and
terminals (an unknown key or terminal is asked again each time, as before), so creating one is
seen at once. The number of entries is bounded (``kkt_reference_cache_max_entries``; the oldest
go first). ``cached(key, settings, load)`` is the read-through of one entry.

``refreshed(asked, families, settings, load_all)`` reloads every *live* entry of some families at
once — the entries asked for since they were last read, the expired ones included — in one
``load_all`` call (one statement: ``recharge.kkt.gateway`` reloads the live license keys and
terminals together), so N keys in use cost one statement per TTL instead of N, and their entries
then expire together. Callers whose keys a reload already under way covers wait for it instead of
starting their own, unless it began before the last ``invalidate()``, during its quiet window, or
a TTL ago or more; if it fails they read for themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from recharge.config import Settings

_MISSING = object()
# An entry: [expires (monotonic seconds), value, asked for since it was read].
_EXPIRES, _VALUE, _USED = 0, 1, 2


@dataclass(eq=False, slots=True)
class _Reload:
    """A ``refreshed`` reload under way: what it reads, when it began, and its answer (None: it failed)."""

    keys: frozenset[Hashable]
    began: float
    generation: int
    answer: asyncio.Future[dict[Hashable, Any] | None] = field(repr=False)


class ReferenceCache:
    """Entries keyed by a tuple (its family first), each with its own expiry (monotonic seconds)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, list[Any]] = {}
        self._invalidated_at = float("-inf")
        self.generation = 0  # one more at each ``invalidate``
        self.reload: _Reload | None = None

    def get(self, key: Hashable, ttl_s: float) -> Any:
        """The cached value, or ``MISSING``. An expired entry that was asked for stays (expired)
        until the next reload of its family, which reads it again."""
        if ttl_s <= 0:
            return _MISSING
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        if time.monotonic() >= entry[_EXPIRES]:
            if not entry[_USED]:
                del self._entries[key]
            return _MISSING
        entry[_USED] = True
        return entry[_VALUE]

    def stale(self, key: Hashable, ttl_s: float) -> bool:
        """``key`` has an entry that expired: it is live, and a reload of its family is due."""
        entry = self._entries.get(key)
        return ttl_s > 0 and entry is not None and time.monotonic() >= entry[_EXPIRES]

    def quiet(self, ttl_s: float) -> bool:
        """Within one TTL of the last ``invalidate``: nothing may be stored."""
        return time.monotonic() - self._invalidated_at < ttl_s

    def put(self, key: Hashable, value: Any, ttl_s: float, max_entries: int, *, read_at: float | None = None,
            used: bool = True) -> None:
        """Keep ``value`` for one TTL from ``read_at`` (when its read began; default now)."""
        if ttl_s <= 0 or max_entries <= 0 or self.quiet(ttl_s):
            return  # an operator write may still be committing: do not keep what was read
        self._entries.pop(key, None)
        while len(self._entries) >= max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = [(time.monotonic() if read_at is None else read_at) + ttl_s, value, used]

    def live(self, families: Iterable[str]) -> list[Hashable]:
        """The keys of ``families`` asked for since they were read (expired or not); expired entries
        nobody asked for are forgotten on the way."""
        now = time.monotonic()
        wanted = set(families)
        keys: list[Hashable] = []
        for key, entry in list(self._entries.items()):
            if entry[_USED] and isinstance(key, tuple) and key[0] in wanted:
                keys.append(key)
            elif now >= entry[_EXPIRES]:
                del self._entries[key]
        return keys

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def invalidate(self) -> None:
        self._entries.clear()
        self._invalidated_at = time.monotonic()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)


MISSING = _MISSING
CACHE = ReferenceCache()


def clock() -> float:
    """The cache's clock (monotonic seconds): when a read began, for ``ReferenceCache.put``'s ``read_at``."""
    return time.monotonic()


def invalidate() -> None:
    """Forget every cached reference row now (and cache nothing for one TTL)."""
    CACHE.invalidate()


def limits(settings: Settings | None) -> tuple[float, int]:
    """(TTL in seconds, most entries) of the cache; without settings the cache is off."""
    if settings is None:
        return 0.0, 0
    return settings.kkt_reference_cache_ttl_s, settings.kkt_reference_cache_max_entries


async def cached(
    key: Hashable, settings: Settings | None, load: Callable[[], Awaitable[Any]], *, keep_none: bool = True
) -> Any:
    """``key``'s cached value when fresh, else ``load()``'s, kept for the TTL (a None only
    when ``keep_none``: an unknown key or terminal is asked again, so one created now is seen
    at once)."""
    ttl_s, max_entries = limits(settings)
    found = CACHE.get(key, ttl_s)
    if found is not MISSING:
        return found
    read_at = time.monotonic()
    value = await load()
    if value is not None or keep_none:
        CACHE.put(key, value, ttl_s, max_entries, read_at=read_at)
    return value


def _joinable(reload: _Reload | None, asked: tuple[Hashable, ...], ttl_s: float) -> bool:
    """A reload under way answers ``asked`` as a read of the caller's own would: it reads them all,
    began less than a TTL ago and after the last ``invalidate``, and not in its quiet window (an
    operator's write may have committed after it began)."""
    return (
        reload is not None and not reload.answer.done() and reload.generation == CACHE.generation
        and time.monotonic() - reload.began < ttl_s and not CACHE.quiet(ttl_s) and reload.keys.issuperset(asked)
    )


async def refreshed(
    asked: tuple[Hashable, ...], families: tuple[str, ...], settings: Settings | None,
    load_all: Callable[[list[Hashable]], Awaitable[dict[Hashable, Any]]],
) -> dict[Hashable, Any]:
    """The values of ``asked`` (a key absent: no such row), read together with every live entry
    of ``families`` by ONE ``load_all(keys)`` call — or by one already under way that reads them
    all; every entry read is kept for a TTL from when the read began, every entry it did not find
    is forgotten."""
    ttl_s, max_entries = limits(settings)
    if _joinable(CACHE.reload, asked, ttl_s):
        assert CACHE.reload is not None
        answer = await asyncio.shield(CACHE.reload.answer)
        if answer is not None:
            return answer
    keys = list(dict.fromkeys([*asked, *CACHE.live(families)]))
    reload = _Reload(frozenset(keys), time.monotonic(), CACHE.generation, asyncio.get_running_loop().create_future())
    CACHE.reload = reload
    found: dict[Hashable, Any] | None = None
    try:
        found = await load_all(keys)
        if reload.generation == CACHE.generation:
            for key in keys:
                if key in found:
                    CACHE.put(key, found[key], ttl_s, max_entries, read_at=reload.began, used=key in asked)
                else:
                    CACHE.forget(key)
        return found
    finally:
        reload.answer.set_result(found)  # None: the callers waiting read for themselves
        if CACHE.reload is reload:
            CACHE.reload = None

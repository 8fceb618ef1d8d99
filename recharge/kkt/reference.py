"""In-process cache of the KaKaTong reference data every request reads: license keys,
terminals (with their merchant's state), service codes and points rules.

Entries live ``kkt_reference_cache_ttl_s`` (0 turns the cache off), so a change made behind
this process's back — another process, the CLI, a direct SQL edit — takes effect within that
time. Operator writes through ``recharge.kkt.cards`` call ``invalidate()``, which empties the
cache at once *and* stores nothing for one TTL afterwards: the operator's transaction may
still be committing, and a request that re-read the old row meanwhile must not keep it for a
whole TTL. Only rows that exist are cached for license keys and terminals (an unknown key
or terminal is asked again each time, as before), so creating one is seen at once. The
number of entries is bounded (``kkt_reference_cache_max_entries``; the oldest go first).
``cached(key, settings, load)`` is the one read-through every cached lookup uses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from recharge.config import Settings

_MISSING = object()


class ReferenceCache:
    """Entries keyed by a tuple, each with its own expiry (monotonic seconds)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._invalidated_at = float("-inf")

    def get(self, key: Hashable, ttl_s: float) -> Any:
        """The cached value, or ``MISSING``."""
        if ttl_s <= 0:
            return _MISSING
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        expires, value = entry
        if time.monotonic() >= expires:
            self._entries.pop(key, None)
            return _MISSING
        return value

    def put(self, key: Hashable, value: Any, ttl_s: float, max_entries: int) -> None:
        if ttl_s <= 0 or max_entries <= 0:
            return
        now = time.monotonic()
        if now - self._invalidated_at < ttl_s:
            return  # an operator write may still be committing: do not keep what was read
        self._entries.pop(key, None)
        while len(self._entries) >= max_entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (now + ttl_s, value)

    def invalidate(self) -> None:
        self._entries.clear()
        self._invalidated_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)


MISSING = _MISSING
CACHE = ReferenceCache()


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
    value = await load()
    if value is not None or keep_none:
        CACHE.put(key, value, ttl_s, max_entries)
    return value

"""``IdleWheel``: the idle deadlines of every connection of a listener on one coarse timer.

A timer per connection costs a timer handle (and its libuv timer) per idle terminal and a
cancel + re-arm per answer. Here a connection only stores its deadline (a float, moved on every
answer); the wheel files it under the tick its deadline falls in and, when that tick comes, asks
it (``idle_check``) whether it is idle: it then closes itself, or names a later deadline and is
filed again under that one. So a busy connection is looked at about once per idle timeout, an
idle one once, and a closed one leaves the wheel at once (``forget``). A deadline is honoured at
the first tick at or after it: at most one tick (``tick_s``) late, never early.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol


class Watched(Protocol):
    """What the wheel needs from a connection."""

    idle_slot: int  # the tick it is filed under (the wheel's bookkeeping)

    def idle_check(self, now: float) -> float | None:
        """At or after its deadline: None when it closed (or is gone), else a deadline after ``now``."""
        ...


class IdleWheel:
    """Connections filed by the tick of their deadline; one timer, armed for the earliest tick."""

    __slots__ = ("_loop", "tick_s", "_slots", "_next", "_handle")

    def __init__(self, tick_s: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: the running one unless given (the tests give a virtual clock, so that what they
        prove of ticks does not depend on how busy the machine is)."""
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self._loop = loop or asyncio.get_running_loop()
        self.tick_s = tick_s
        self._slots: dict[int, set[Watched]] = {}
        self._next = math.floor(self._loop.time() / tick_s)  # the first tick not swept yet
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._slots.values())

    def watch(self, item: Watched, deadline: float) -> None:
        """Ask ``item`` at its deadline (at most one tick after it)."""
        slot = max(math.ceil(deadline / self.tick_s), self._next)
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = bucket = set()
        bucket.add(item)
        item.idle_slot = slot
        if self._handle is None or slot * self.tick_s < self._handle.when():
            self._arm(slot)

    def forget(self, item: Watched) -> None:
        """``item`` closed: drop it now rather than at its tick."""
        bucket = self._slots.get(item.idle_slot)
        if bucket is not None:
            bucket.discard(item)
            if not bucket:
                del self._slots[item.idle_slot]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._slots.clear()

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(slot * self.tick_s, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        now = self._loop.time()
        current = math.floor(now / self.tick_s)
        due: list[Watched] = []
        while self._next <= current:
            bucket = self._slots.pop(self._next, None)
            self._next += 1
            if bucket:
                due.extend(bucket)
        for item in due:
            later = item.idle_check(now)
            if later is not None:
                self.watch(item, max(later, (current + 1) * self.tick_s))
        if self._slots and self._handle is None:
            self._arm(min(self._slots))

"""The seeded fault schedule of a chaos run: when the server is killed, when the database restarts.

``schedule(seed, …)`` spreads the events over the run, one per slot (a slot is the run's length
divided by the number of events), at a random point of the slot's first half, in a random
order of kinds: the same seed gives the same schedule, which ``chaos.run`` prints at the start.
The proxy's faults are drawn per connection by the proxy itself (chaos/proxy.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KILL = "kill"  # SIGKILL of serve's whole process group, then serve again on the same data folder
DB_RESTART = "db_restart"  # pg_ctl stop -m immediate, down for a while, then start


@dataclass(frozen=True)
class Event:
    at_s: float  # seconds after the clients started
    kind: str
    down_s: float = 0.0  # how long the database stays down (db_restart)

    def describe(self) -> str:
        down = f", down {self.down_s:.1f} s" if self.kind == DB_RESTART else ""
        return f"{self.at_s:8.1f} s  {self.kind}{down}"


def schedule(seed: int, duration_s: float, kills: int, db_restarts: int) -> list[Event]:
    rng = random.Random(f"{seed}:faults")
    kinds = [KILL] * kills + [DB_RESTART] * db_restarts
    rng.shuffle(kinds)
    if not kinds:
        return []
    slot = duration_s / len(kinds)
    return [
        Event(round(i * slot + rng.uniform(0.1, 0.5) * slot, 2), kind,
              round(rng.uniform(1.0, 4.0), 2) if kind == DB_RESTART else 0.0)
        for i, kind in enumerate(kinds)
    ]

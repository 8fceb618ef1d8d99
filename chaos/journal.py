"""A chaos client's own journal: one JSON line per request and per acknowledged operation.

Every client process writes its journal alone (no sharing, no lock) and flushes and fsyncs each
acknowledgement before it goes on, so what the platform acknowledged survives whatever the
harness does to the platform. ``req`` lines record each request's outcome, time and latency
(the liveness figures); ``ack`` lines what the platform acknowledged; ``end`` lines the client's
final state (a DD client's chip balances).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaos.channels import Outcome


class Journal:
    def __init__(self, path: Path, client: str) -> None:
        self.path = path
        self.client = client
        self.acks = 0
        self._fh = path.open("a", encoding="utf-8")

    def _write(self, record: dict[str, Any], *, durable: bool = False) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        if durable:
            os.fsync(self._fh.fileno())

    def request(self, channel: str, outcome: Outcome, *, via_proxy: bool, started: float | None = None) -> None:
        """One request's outcome (``started``: wall-clock time it was sent; default now − its seconds)."""
        at = started if started is not None else time.time() - outcome.seconds
        record = {"type": "req", "ch": channel, "t": round(at, 3), "s": round(outcome.seconds, 4),
                  "st": outcome.status, "px": via_proxy}
        if outcome.status not in ("ok", "lost") and outcome.code:
            record["c"] = outcome.code[:40]  # why it was busy, refused or failed
        self._write(record)

    def ack(self, channel: str, **fields: Any) -> None:
        """An operation the platform acknowledged; durable before the client goes on."""
        self.acks += 1
        self._write({"type": "ack", "ch": channel, "client": self.client, "t": round(time.time(), 3), **fields},
                    durable=True)

    def note(self, kind: str, **fields: Any) -> None:
        self._write({"type": kind, "client": self.client, "t": round(time.time(), 3), **fields}, durable=True)

    def traffic(self, until: float, recover_until: float) -> bool:
        """Whether a client starts another operation: until ``until``; past it, while it has had nothing
        acknowledged yet (a loaded machine and the faults left it no turn), for half the recovery time —
        the faults are over by then, so a channel that still acknowledges nothing is broken."""
        now = time.time()
        return now < until or (self.acks == 0 and now < until + (recover_until - until) / 2)

    def close(self) -> None:
        self._fh.close()


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a journal; a last line cut short (a crash of the client) is skipped."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except ValueError:
                continue

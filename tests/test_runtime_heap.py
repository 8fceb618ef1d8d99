"""A worker freezes its start-up heap (``app.runtime.settle_heap``): full garbage collections
during traffic walk only what the traffic made, not the modules, pools and caches of start-up
(a 160 ms pause of every DD step in flight before, bench/notes.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from app import runtime
from tests.conftest import ROOT


def test_settle_heap_moves_what_is_alive_into_the_permanent_generation() -> None:
    code = ("import gc; from app.runtime import settle_heap; kept = [[i] for i in range(1000)];"
            " assert gc.get_freeze_count() == 0; settle_heap(); print(gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 1000  # a process of its own: freezing pytest's heap would outlive this test


async def test_a_worker_settles_its_heap_once_started_and_before_it_serves_until_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []

    class Started:
        dd_port = http_port = 0

        def __init__(self, settings: Any, dsn: str) -> None:
            pass

        async def start(self) -> None:
            events.append("started")
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)

        async def stop(self) -> None:
            events.append("stopped")

    monkeypatch.setattr(runtime, "RunningPlatform", Started)
    monkeypatch.setattr(runtime, "settle_heap", lambda: events.append("settled"))
    await asyncio.wait_for(runtime.worker_main(runtime.Settings(), ""), 10)
    assert events == ["started", "settled", "stopped"]

"""The chaos harness, short: the real platform, a few kills, one database restart, 10^4 fuzzed frames.

``make chaos`` is the long version (≥ 100 kills, ≥ 5 database restarts, 10^6 frames; its last
result is in docs/RELIABILITY.md). This one proves the harness and the platform's promises on
every ``make test``: nothing acknowledged lost or duplicated, the books balanced, each chip equal
to its ledger, no order left loading, every channel busy (not hanging) while the database is down.
A failure prints the seed; ``python -m chaos.run --seed N`` with the same options replays it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.server import ROOT

SHORT = ["--duration", "35", "--kills", "3", "--db-restarts", "1", "--frames", "10000", "--workers", "1",
         "--dd-clients", "2", "--kkt-clients", "1", "--sms-clients", "1", "--order-clients", "1",
         "--slow-clients", "1"]


@pytest.mark.timeout(600)
def test_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**31)
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "chaos.run", "--seed", str(seed), *SHORT, "--results", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, f"seed {seed}\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert results["ok"] and results["seed"] == seed
    assert results["kills_survived"] == 3 and results["db_restarts_survived"] == 1
    assert results["fuzz"]["frames"] >= 10_000
    assert all(results["acknowledged"].get(ch, 0) > 0 for ch in ("dd", "kkt", "sms", "order")), results["acknowledged"]
    assert results["proxy_faults_injected"] > 0
    assert all(c["ok"] for c in results["checks"]), [c for c in results["checks"] if not c["ok"]]

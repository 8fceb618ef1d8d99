"""The chaos harness, short: the real platform, a few kills, one database restart, 10^4 fuzzed frames.

``make chaos`` is the long version (≥ 100 kills, ≥ 5 database restarts, 10^6 frames; its last
result is in docs/RELIABILITY.md). This one proves the harness and the platform's promises on
every ``make test``: nothing acknowledged lost or duplicated on any channel (mobile payment, STK
and the SIM wallet's loads and purchases included), the books balanced, each chip (virtual cards and
virtual SIMs) equal to its ledger, no order or wallet load left loading, every
channel busy (not hanging, ``/readyz`` 503) while the database is down.

Deadlines are the platform's as written on a quiet machine and stretched by the load the machine
is under when the test starts (``--slack``, at most 8×): a loaded machine cannot fail the run by
timing alone, while a hang (no answer at all), a lost or duplicated operation, an error instead
of busy or an unbalanced ledger still does. Against a ``DATABASE_URL`` server the run cannot stop
the server (it is shared): the database fault is every connection of the run's database cut, and
its check is that every channel keeps answering (ok or busy), never failing or hanging.
A failure prints the seed; ``python -m chaos.run --seed N`` with the same options replays it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.server import ROOT
from tests.conftest import slack_for_this_machine

SHORT = ["--duration", "35", "--kills", "3", "--db-restarts", "1", "--frames", "10000", "--workers", "1",
         "--dd-clients", "2", "--kkt-clients", "1", "--sms-clients", "1", "--order-clients", "1",
         "--mpay-clients", "1", "--wallet-clients", "1", "--slow-clients", "1",
         "--api-examples", "0"]  # the HTTP fuzzing: tests/test_api_fuzz.py
CHANNELS = ("dd", "kkt", "sms", "order", "mpay", "wallet_load", "wallet_purchase")


def expected_checks(shared_database: bool) -> set[str]:
    """Checks every run must report (by the start of their names): a harness that stopped checking fails."""
    found = {"dd: no acknowledged load lost", "dd: each chip equals its ledger balance",
             "kkt: no acknowledged trade lost", "sms: no acknowledged trade lost",
             "order api: every acknowledged order exists once", "mpay: no acknowledged operation lost",
             "mpay: cards redeemed and bills paid are exactly the acknowledged ones",
             "mpay: each account's ledger balance", "wallet: no acknowledged load lost",
             "wallet: every posted load acknowledged, none twice",
             "wallet: every acknowledged purchase cleared exactly once",
             "wallet: each SIM's chip equals its ledger shadow W", "wallet: no load left loading",
             "audit: every account equals its transfers",
             "rechargectl audit exits 0", "every operation got a definite answer", "fuzz: every legal frame answered",
             "fuzz: memory flat", "fuzz: the ledger did not move", "liveness: every direct request answered",
             "no direct request answered 0xEE", "clients: every client process exited cleanly",
             "database back: every channel works within"}
    found.add("database connections cut: every channel answered" if shared_database
              else "database down: every channel answered busy quickly, /readyz 503")
    return found


@pytest.mark.timeout(900)
def test_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(2**31)
    out = tmp_path / "results.json"
    slack = slack_for_this_machine()
    command = [sys.executable, "-m", "chaos.run", "--seed", str(seed), *SHORT, "--slack", str(slack),
               "--results", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, f"seed {seed}, slack {slack}\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
    results = json.loads(out.read_text())
    why = f"seed {seed}, slack {slack}\n{done.stdout[-3000:]}"
    assert results["ok"] and results["seed"] == seed and results["config"]["slack"] == slack, why
    shared = bool(os.environ.get("DATABASE_URL"))
    assert results["database"] == ("DATABASE_URL" if shared else "embedded PostgreSQL"), why
    assert results["kills_survived"] == 3 and results["db_restarts_survived"] == 1, why
    assert [f["kind"] for f in results["faults"] if f["kind"] != "kill"] == [
        "db_connections_cut" if shared else "db_restart"], why
    assert results["fuzz"]["frames"] >= 10_000 and results["fuzz"]["legal_frames"] > 0, why
    assert all(results["acknowledged"].get(ch, 0) > 0 for ch in CHANNELS), why
    assert results["proxy_faults_injected"] > 0, why
    measured = sum(q["n"] for kind, q in results["recovery_s"].items() if kind.startswith("proxy "))
    assert measured + results["proxy_faults_unrecovered"] + results["proxy_faults_during_kills"] == results[
        "proxy_faults_injected"], why  # every fault the proxy counted is in the recovery figures, or set apart
    names = [c["name"] for c in results["checks"]]
    missing = [want for want in expected_checks(shared) if not any(n.startswith(want) for n in names)]
    assert not missing, f"checks not run: {missing}\n{why}"
    assert all(c["ok"] for c in results["checks"]), [c for c in results["checks"] if not c["ok"]]


def test_the_database_fault_and_its_check_follow_the_database() -> None:
    """The embedded server is stopped (busy expected); a shared one only has its connections cut."""
    from chaos.channels import BUSY, LOST, OK, Outcome
    from chaos.harness import _verdict_while_down
    from chaos.run import database_checks

    busy = {"dd": Outcome(BUSY, seconds=0.1), "readyz": Outcome(BUSY, seconds=0.1)}
    answered = {"dd": Outcome(OK, seconds=0.1), "readyz": Outcome(OK, seconds=0.1)}
    hung = {"dd": Outcome(LOST, seconds=10.0), "readyz": Outcome(BUSY, seconds=0.1)}
    assert _verdict_while_down("db_restart", busy, 10.0) == {"busy_while_down": True}
    assert _verdict_while_down("db_restart", answered, 10.0) == {"busy_while_down": False}
    assert _verdict_while_down("db_connections_cut", answered, 10.0) == {"answered_while_cut": True}
    assert _verdict_while_down("db_connections_cut", hung, 10.0) == {"answered_while_cut": False}
    stopped = [{"kind": "db_restart", "recovery_s": 1.0, "while_down": {}, "busy_while_down": True}]
    cut = [{"kind": "db_connections_cut", "recovery_s": 6.0, "while_down": {}, "answered_while_cut": True}]
    assert [(c.name.split(":")[0], c.ok) for c in database_checks(stopped, 5.0)] == [
        ("database down", True), ("database back", True)]
    assert [(c.name.split(":")[0], c.ok) for c in database_checks(cut, 5.0)] == [
        ("database connections cut", True), ("database back", False)]


def test_recovery_after_a_proxy_fault_is_until_its_client_next_got_a_definite_answer(tmp_path: Path) -> None:
    """The proxy's fault log names the client by its source address; its journal says when it next got an answer
    (ok or refused: busy and lost ones do not count); a fault whose span until then met a kill is set apart."""
    from chaos.report import proxy_recovery

    faults = [{"t": 100.0, "peer": "127.0.1.1", "route": "http", "kind": "cut_bytes", "dir": "up"},
              {"t": 200.0, "peer": "127.0.1.2", "route": "dd", "kind": "stall", "dir": "down"},
              {"t": 300.0, "peer": "127.0.1.1", "route": "http", "kind": "delay", "dir": "down"},
              {"t": 500.0, "peer": "127.0.1.1", "route": "http", "kind": "delay", "dir": "up"},
              {"t": 405.0, "peer": "127.0.1.2", "route": "dd", "kind": "cut_stage", "dir": "up"}]
    (tmp_path / "proxy-faults.jsonl").write_text("".join(json.dumps(f) + "\n" for f in faults))
    one = [{"type": "req", "t": 99.9, "s": 0.5, "st": "lost"}, {"type": "req", "t": 100.5, "s": 0.2, "st": "busy"},
           {"type": "req", "t": 101.0, "s": 2.0, "st": "refused"}, {"type": "req", "t": 300.0, "s": 0.25, "st": "ok"}]
    two = [{"type": "req", "t": 199.5, "s": 4.0, "st": "ok"}, {"type": "req", "t": 420.0, "s": 1.0, "st": "ok"}]
    for name, records in (("journal-kkt0.jsonl", one), ("journal-dd0.jsonl", two)):
        (tmp_path / name).write_text("".join(json.dumps({"ch": "x", "px": True, **r}) + "\n" for r in records))
    found = proxy_recovery(tmp_path, {"127.0.1.1": "journal-kkt0.jsonl", "127.0.1.2": "journal-dd0.jsonl"},
                           windows=[(410.0, 415.0)])
    assert {k: [round(v, 3) for v in vs] for k, vs in found.items()} == {
        "proxy http:cut_bytes": [3.0], "proxy dd:stall": [3.5], "proxy http:delay": [0.25],
        "proxy unrecovered": [0.0], "proxy during a kill": [16.0]}


async def test_a_proxy_cut_cuts_both_sides_at_once() -> None:
    """A cut after N bytes resets the client's and the platform's connections at once (it used to wait, both
    sides blocked reading, until the client's own timeout: a cut looked like a 10 s hang)."""
    import asyncio

    from chaos.proxy import Fault, Proxy

    ended = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:  # answers nothing: a server waiting for the rest of a request
            await reader.read()
        except ConnectionResetError:
            pass
        ended.set()

    upstream = await asyncio.start_server(silent, "127.0.0.1", 0)
    target = upstream.sockets[0].getsockname()[1]
    proxy = Proxy(seed=1, rate=0.0)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await proxy.relay(reader, writer, target, Fault("cut_bytes", "up", at=5), "http")

    front = await asyncio.start_server(accept, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
    writer.write(b"GET / HTTP/1.1\r\n")
    await writer.drain()
    try:
        assert await asyncio.wait_for(reader.read(), 2.0) == b""
    except ConnectionResetError:
        pass
    await asyncio.wait_for(ended.wait(), 2.0)  # the platform's side was cut too
    writer.close()
    front.close()
    upstream.close()


def test_the_proxy_holds_a_relay_whose_client_left_and_its_close_leaves_nothing_pending() -> None:
    """The client gone, the platform's side open and silent: nothing but the relay itself referred to its task
    (asyncio holds tasks weakly), so the garbage collector destroyed it mid-run — "Task was destroyed but it is
    pending!" in make chaos's output, the platform's connection left open. The proxy holds its tasks, and
    ``close`` cuts the connections still relayed and awaits their tasks. On the proxy's own loop (asyncio's)."""
    import asyncio

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        errors, pending, cut = runner.run(_relay_left_by_its_client())
    assert not [e["message"] for e in errors], errors
    assert pending == [] and cut


async def _relay_left_by_its_client() -> tuple[list[dict[str, object]], list[object], bool]:
    """What the loop reported, the proxy's tasks left after ``close``, and whether the platform's side was cut."""
    import asyncio
    import contextlib
    import gc

    from chaos.proxy import Proxy

    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
    held: list[asyncio.StreamWriter] = []  # the platform's side of the connection
    got_eof, proxy_closed, cut = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def ignores_half_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # the client's end, passed on by the proxy; the platform keeps its side open
        got_eof.set()
        await proxy_closed.wait()
        for _ in range(100):  # writing meets the proxy's reset once it has cut the connection
            try:
                writer.write(b"x")
                await writer.drain()
            except OSError:
                cut.set()
                return
            await asyncio.sleep(0.02)

    platform = await asyncio.start_server(ignores_half_close, "127.0.0.1", 0)
    proxy = Proxy(seed=1, rate=0.0)
    front = await proxy.serve(0, platform.sockets[0].getsockname()[1], "http")
    _, client = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
    client.write(b"GET / HTTP/1.1\r\n\r\n")
    client.close()  # the client leaves without an answer
    await asyncio.wait_for(got_eof.wait(), 5.0)
    await asyncio.sleep(0.1)
    gc.collect()  # the old proxy's relay, referred to by nothing, was destroyed here
    await asyncio.sleep(0.1)
    await proxy.close()
    proxy_closed.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(cut.wait(), 5.0)
    left = [t for t in proxy.tasks if not t.done()]
    platform.close()
    for writer in held:
        writer.close()
    return errors, left, cut.is_set()

"""``make cluster-test``: DD recharges and card trades through HAProxy while a node dies, a node drains and the primary dies.

A fresh cluster (three nodes, two PostgreSQL members) is started in a folder of its own on
its own ports. Simulated terminals load virtual cards through HAProxy without pause; each
keeps the orders the platform acknowledged (DD18 ``0x00``); merchants trade on KaKaTong
demo cards over REST, keeping each trade answered ``11``. The faults come one after the
other, with load before, during and after each: a node SIGKILLed (then restarted), a node
drained with SIGTERM (then restarted), the PostgreSQL primary's machine "lost" (its Patroni
and postmaster SIGKILLed: Patroni promotes the synchronous standby; the old primary then
comes back as a standby, rewound). Every load whose outcome a terminal missed is settled
with DD21 and the card's proof. The run fails unless every acknowledged order is loaded
exactly once, every trade answered 11 is journaled exactly once, each chip's balance equals its ledger balance, no order is left *loading* and
the audit balances. Figures (unavailability per fault, busy answers, throughput with 1, 2
and 3 nodes) go to bench/results.json and docs/SCALING.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from app import demo, fixtures
from cluster import control, processes
from cluster.topology import HOST, MEMBERS, ROOT, Topology
from core_ext.virtual_card import VirtualCard
from recharge import db
from recharge.keys import load_keys
from recharge.kkt import cards
from recharge.ledger.audit import audit
from recharge.orders import lifecycle as orders
from server.terminal_client import AsyncTerminalClient, ConnectionClosed, FlowFailed

TERMINALS = 8
AMOUNT_CENTS = 100
ORDERS_AHEAD = 600  # paid orders each terminal has waiting; topped up as it uses them
ORDERS_PER_COMMIT = 10  # paying locks the merchant's fund row: a short hold per commit
FUND_CENTS = 10**11  # the merchant's recharge fund: far more than any run loads
CLIENT_TIMEOUT_S = 5.0
FAILOVER_TIMEOUT_S = 90.0
INFO_BUSY = 0xDD
KKT_TRADES_PER_CARD = 90  # under the card service's default of 100 trades per card per day
KKT_PAUSE_S = 1.0
SMS_SUBSCRIBER, SMS_SERVICE_NUMBER, SMS_PAUSE_S = "13800138000", "10658888", 0.5  # SPEC 5's demo registry
KKT_PASSWORD_MD5 = hashlib.md5(cards.DEMO_PASSWORD.encode()).hexdigest()


@dataclass
class Timeline:
    """Every request's end, success or failure, to measure unavailability around each fault."""

    events: list[tuple[float, bool, str]] = field(default_factory=list)  # (time, ok, how it failed)

    def add(self, ok: bool, kind: str = "") -> None:
        self.events.append((time.monotonic(), ok, kind))

    def outage_after(self, start: float, end: float) -> dict[str, float]:
        """Seconds from the first failed request after ``start`` to the next success; busy answers in it."""
        window = [e for e in self.events if start <= e[0] <= end]
        first_fail = next((t for t, ok, _ in window if not ok), None)
        if first_fail is None:
            return {"unavailable_s": 0.0, "failed_requests": 0.0}
        recovered = next((t for t, ok, _ in window if ok and t > first_fail), end)
        failed = [e for e in window if not e[1] and first_fail <= e[0] <= recovered]
        kinds = {f"failed_{kind}": float(sum(1 for e in failed if e[2] == kind)) for kind in sorted({e[2] for e in failed})}
        return {"unavailable_s": round(recovered - first_fail, 3), "failed_requests": float(len(failed)), **kinds}


@dataclass
class Terminal:
    sim: fixtures.SimTerminal
    card: VirtualCard
    orders: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    next_order: int = 0

    async def top_up(self, database_url: str, paused: Callable[[], bool] = lambda: False) -> None:
        """Pay orders ahead of use (the database may be failing over: then it waits for the next round)."""
        try:
            conn = await asyncpg.connect(database_url, timeout=CLIENT_TIMEOUT_S)
        except db.BACKGROUND_ERRORS:
            return
        try:
            while not paused() and len(self.orders) - self.next_order < ORDERS_AHEAD:
                async with conn.transaction():  # a commit per chunk, not per order
                    chunk = [await fixtures.paid_order(conn, self.sim.merchant_id, self.card.card_no, AMOUNT_CENTS)
                             for _ in range(ORDERS_PER_COMMIT)]
                self.orders.extend(chunk)
        except db.BACKGROUND_ERRORS:  # a failover under it, in whatever form (the next round tries again)
            return
        finally:
            conn.terminate()  # no goodbye round trip on a connection a failover may have broken

    async def feed(self, database_url: str, running: Callable[[], bool], paused: Callable[[], bool]) -> None:
        """Keep paid orders ahead of the terminal while the load runs (beside it; paused while throughput
        is measured, since paying an order locks the fund row the terminal's posts need)."""
        while running():
            if not paused() and len(self.orders) - self.next_order < ORDERS_AHEAD // 2:
                await self.top_up(database_url, paused)
            await asyncio.sleep(0.2)


class Load:
    """Terminals recharging through HAProxy until stopped."""

    def __init__(self, terminals: list[Terminal], topo: Topology, timeline: Timeline) -> None:
        self.terminals, self.topo, self.timeline = terminals, topo, timeline
        self.running = False
        self.feeding_paused = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.running = True
        self.tasks = [asyncio.create_task(self._run(t)) for t in self.terminals]
        self.tasks += [asyncio.create_task(t.feed(self.topo.database_url(), lambda: self.running,
                                                  lambda: self.feeding_paused))
                       for t in self.terminals]

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)

    def acknowledged(self) -> int:
        return sum(len(t.acknowledged) for t in self.terminals)

    def orders_waiting(self) -> int:
        return sum(len(t.orders) - t.next_order for t in self.terminals)

    def _client(self, t: Terminal) -> AsyncTerminalClient:
        return AsyncTerminalClient(HOST, self.topo.dd_port, t.sim.code, t.sim.pki, timeout_s=CLIENT_TIMEOUT_S)

    async def _run(self, t: Terminal) -> None:
        while self.running:
            if t.next_order >= len(t.orders):  # the feeder is behind (or the database is failing over)
                await asyncio.sleep(0.1)
                continue
            if t.unsettled and not await self._settle(t, t.unsettled[0]):
                await asyncio.sleep(0.2)
                continue
            order_no = t.orders[t.next_order]
            t.next_order += 1
            try:
                await self._client(t).recharge(t.card, order_no, AMOUNT_CENTS, receipt=False)
            except (FlowFailed, ConnectionClosed, OSError, TimeoutError) as exc:
                self.timeline.add(False, failure_kind(exc))
                t.unsettled.append(order_no)
                await asyncio.sleep(0.1)
            else:
                self.timeline.add(True)
                t.acknowledged.append(order_no)

    async def _settle(self, t: Terminal, order_no: str) -> bool:
        """DD21 for an order whose outcome the terminal missed; True once the platform settled it."""
        result = await recover(self._client(t), t.card, order_no)
        self.timeline.add(result in (0x00, 0xA5), "no_answer" if result is None else f"dd22_{result:02x}")
        if result in (0x00, 0xA5):
            t.unsettled.remove(order_no)
            return True
        return False


def failure_kind(exc: BaseException) -> str:
    """How a request failed: ``busy`` (0xDD), ``code_xx``, ``closed`` (cut or refused) or ``timeout``."""
    if isinstance(exc, FlowFailed):
        return "busy" if exc.result == INFO_BUSY else f"code_{exc.result:02x}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "closed"


@dataclass
class KktCard:
    """A demo KaKaTong card traded over REST through HAProxy: recharges and consumes of unique amounts
    (the card service refuses a repeat of the same trade and amount within a day as a duplicate)."""

    card_no: str
    acknowledged: list[str] = field(default_factory=list)  # Stance of every trade answered 11
    trades: int = 0


class KktLoad:
    """Merchants trading on demo cards (SPEC 3.1 REST) while the faults happen; each keeps what was answered 11."""

    def __init__(self, topo: Topology, timeline: Timeline) -> None:
        self.topo, self.timeline = topo, timeline
        self.cards = [KktCard(card_no) for card_no in cards.DEMO_CARDS[1:8]]
        self.running = False
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.running = True
        self.tasks = [asyncio.create_task(self._run(c)) for c in self.cards]

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)

    async def _run(self, card: KktCard) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as http:
            while self.running and card.trades < KKT_TRADES_PER_CARD:
                card.trades += 1
                trade = ("1100", "0") if card.trades % 2 else ("0022", "1")  # recharge, then consume as much
                params = {"method": "cTRequest", "LICENSEKEY": demo.DEMO_LICENSE_KEY, "POSCODE": demo.DEMO_TERMINAL,
                          "CARDNO": card.card_no, "CARDPWD": KKT_PASSWORD_MD5, "TRADETYPE": trade[0],
                          "TRADEMODE": trade[1], "AMOUNT": str(100 + (card.trades + 1) // 2)}
                try:
                    async with http.get(f"http://{HOST}:{self.topo.http_port}/s/get", params=params) as response:
                        body = await response.text()
                    form = re.search(r"<PayInForm>(\d+)</PayInForm>", body)
                    stance = re.search(r"<Stance>(\d{8})</Stance>", body)
                    if form and form.group(1) == "11" and stance:
                        card.acknowledged.append(stance.group(1))
                        self.timeline.add(True)
                    else:
                        self.timeline.add(False, f"kkt_{form.group(1) if form else response.status}")
                except (aiohttp.ClientError, TimeoutError):
                    self.timeline.add(False, "kkt_no_answer")
                await asyncio.sleep(KKT_PAUSE_S)


class SmsLoad:
    """The SMS gateway relaying a subscriber's balance query (CX to 10658888) through HAProxy: a 200 reply is an answer."""

    def __init__(self, topo: Topology, timeline: Timeline) -> None:
        self.topo, self.timeline = topo, timeline
        self.answered = 0
        self.running = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.running = True
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.running = False
        if self.task is not None:
            await self.task

    async def _run(self) -> None:
        secret = self.topo.secrets()["sms_secret"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as http:
            while self.running:
                params = {"from": SMS_SUBSCRIBER, "to": SMS_SERVICE_NUMBER, "text": "CX"}
                try:
                    async with http.get(f"http://{HOST}:{self.topo.http_port}/sms/inbound", params=params,
                                        headers={"X-SMS-Secret": secret}) as response:
                        await response.text()
                    if response.status == 200:
                        self.answered += 1
                        self.timeline.add(True)
                    else:
                        self.timeline.add(False, f"sms_{response.status}")
                except (aiohttp.ClientError, TimeoutError):
                    self.timeline.add(False, "sms_no_answer")
                await asyncio.sleep(SMS_PAUSE_S)


async def recover(client: AsyncTerminalClient, card: VirtualCard, order_no: str) -> int | None:
    """DD21, and the card's proof when the platform asks for it: the final result (None: no answer)."""
    m = client.messages
    try:
        await client.connect()
        dd22 = await client.call(m.dd21(order_no))
        if dd22.result == 0 and dd22.flow == 0x00:  # still loading: prove it with the card
            dd22 = await client.call(m.dd21_reply(order_no, card.run_script(dd22.info)))
        return int(dd22.result)
    except (ConnectionClosed, OSError, TimeoutError):
        return None
    finally:
        await client.close()


async def provision(topo: Topology) -> list[Terminal]:
    keys = load_keys(topo.key_file)
    conn = await asyncpg.connect(topo.database_url())
    try:
        first = await fixtures.sim_terminal(conn, HOST, topo.dd_port, keys, fund_cents=FUND_CENTS)
        terminals = [Terminal(first, first.card())]
        for _ in range(TERMINALS - 1):
            code, pki = fixtures.random_digits(8), fixtures.random_digits(8)
            await fixtures.dd_terminal(conn, first.merchant_id, code, pki)
            sim = fixtures.SimTerminal(code, pki, first.merchant_id, HOST, topo.dd_port, keys)
            terminals.append(Terminal(sim, sim.card()))
    finally:
        await conn.close()
    await asyncio.gather(*(t.top_up(topo.database_url()) for t in terminals))
    for t in terminals:
        await AsyncTerminalClient(HOST, topo.dd_port, t.sim.code, t.sim.pki, timeout_s=10).sign_in(t.sim.module())
    return terminals


def haproxy_command(topo: Topology, command: str) -> str:
    """One command on HAProxy's runtime API (its stats socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(topo.run_dir / "haproxy.sock"))
        sock.sendall(command.encode() + b"\n")
        return sock.recv(65536).decode()


async def throughput(load: Load, topo: Topology, seconds: float) -> dict[str, float]:
    """Acknowledged recharges/s with 1, 2, … nodes in HAProxy's DD backend."""
    figures = {}
    for active in range(1, topo.nodes + 1):
        for i in range(topo.nodes):
            haproxy_command(topo, f"{'enable' if i < active else 'disable'} server dd_nodes/node{i + 1}")
        await asyncio.sleep(1.0)
        # Measure the nodes, not the feeder; if it cannot get ahead in time, measure anyway (the figure is
        # information, not a verdict: this test judges correctness).
        with contextlib.suppress(AssertionError):
            await wait_for("the feeder getting ahead", lambda: load.orders_waiting() >= TERMINALS * ORDERS_AHEAD // 2,
                           FAILOVER_TIMEOUT_S / 3)
        load.feeding_paused = True
        before = load.acknowledged()
        await asyncio.sleep(seconds)
        load.feeding_paused = False
        figures[f"{active}_nodes"] = round((load.acknowledged() - before) / seconds, 1)
    return figures


def kill_primary_machine(topo: Topology) -> int:
    """SIGKILL the primary's Patroni and postmaster together: its leader key expires, the standby takes over."""
    primary = control.primary_member(topo)
    assert primary is not None, "no primary to kill"
    postmaster = int((topo.member_dir(primary) / "postmaster.pid").read_text().split()[0])
    patroni = processes.pid_of(f"patroni-{MEMBERS[primary]}", topo.run_dir)
    for pid in (patroni, postmaster):
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    return primary


async def wait_for(what: str, ready: object, timeout_s: float) -> float:
    started = time.monotonic()
    ok = await asyncio.to_thread(processes.wait_until, ready, timeout_s, 0.5)  # type: ignore[arg-type]
    if not ok:
        raise AssertionError(f"{what}: not within {timeout_s} s")
    return time.monotonic() - started


async def faults(load: Load, topo: Topology, timeline: Timeline, seconds: float) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}

    async def phase(name: str, act: object) -> None:
        start = time.monotonic()
        await act()  # type: ignore[operator]
        await asyncio.sleep(seconds)
        figures[name] = timeline.outage_after(start, time.monotonic())
        print(f"  {name}: {figures[name]}", flush=True)

    async def node_kill() -> None:
        os.kill(processes.pid_of("node1", topo.run_dir) or 0, signal.SIGKILL)
        await asyncio.sleep(seconds / 2)
        control.start_node(topo, 0)
        await wait_for("node1 back", lambda: control.node_ready(topo, 0), 60)

    async def node_drain() -> None:
        await asyncio.to_thread(processes.stop, "node2", topo.run_dir)
        control.start_node(topo, 1)
        await wait_for("node2 back", lambda: control.node_ready(topo, 1), 60)

    async def primary_failover() -> None:
        old = kill_primary_machine(topo)
        figures["primary_failover_promotion"] = {"seconds": round(await wait_for(
            "a new primary", lambda: control.primary_member(topo) not in (None, old), FAILOVER_TIMEOUT_S), 3)}
        control.start_member(topo, old)  # comes back as a standby (pg_rewind)
        figures["old_primary_rejoined"] = {"seconds": round(await wait_for(
            "the old primary as a synchronous standby",
            lambda: control.member_role(topo, old).get("role") in ("replica", "sync_standby")
            and control.http_status(f"http://{HOST}:{topo.member_rest_port(old)}/sync") == 200,
            FAILOVER_TIMEOUT_S), 3)}

    for name, act in (("node_sigkill", node_kill), ("node_sigterm_drain", node_drain),
                      ("primary_failover", primary_failover)):
        await phase(name, act)
    return figures


async def check_kkt(conn: asyncpg.Connection, kkt: KktLoad) -> dict[str, int]:
    """Every trade answered 11 is in the journal exactly once."""
    lost = duplicated = 0
    for card in kkt.cards:
        for stance in card.acknowledged:
            found = await conn.fetchval("SELECT count(*) FROM kkt_trades WHERE card_no = $1 AND stance = $2",
                                        card.card_no, stance)
            lost += found == 0
            duplicated += found > 1
    return {"kkt_acknowledged": sum(len(c.acknowledged) for c in kkt.cards), "kkt_lost": lost,
            "kkt_duplicated": duplicated}


async def check(topo: Topology, terminals: list[Terminal], kkt: KktLoad) -> dict[str, object]:
    """Settle what is left, then the promises: acknowledged = loaded once, chip = ledger, nothing loading, audit."""
    for t in terminals:
        for order_no in list(t.unsettled):
            client = AsyncTerminalClient(HOST, topo.dd_port, t.sim.code, t.sim.pki, timeout_s=10)
            result = await recover(client, t.card, order_no)
            assert result in (0x00, 0xA5), f"order {order_no}: DD22 {result}"
            t.unsettled.remove(order_no)
    conn = await asyncpg.connect(topo.database_url())
    try:
        lost = []
        for t in terminals:
            for order_no in t.acknowledged:
                order = await orders.get_order(conn, order_no)
                if order is None or order.state not in (orders.LOADED, orders.CONFIRMED):
                    lost.append(order_no)
        mismatched = []
        for t in terminals:
            posted = await conn.fetchval(
                "SELECT credits_posted - debits_posted FROM accounts WHERE card_no = $1 AND kind = 'card_purse'",
                t.card.card_no,
            )
            if (posted or 0) != t.card.balance:
                mismatched.append((t.card.card_no, t.card.balance, posted))
        loading = await conn.fetchval("SELECT count(*) FROM orders WHERE loading")
        trades = await check_kkt(conn, kkt)
        report = await audit(conn)
    finally:
        await conn.close()
    acknowledged = sum(len(t.acknowledged) for t in terminals)
    return {
        "acknowledged": acknowledged, "acknowledged_lost": len(lost), "chip_ledger_mismatches": len(mismatched),
        "orders_left_loading": int(loading), "audit_ok": report.ok, **trades,
        "ok": not lost and not mismatched and not loading and report.ok and acknowledged > 0
        and trades["kkt_acknowledged"] > 0 and not trades["kkt_lost"] and not trades["kkt_duplicated"],
        "details": {"lost": lost[:20], "mismatched": mismatched[:20], "audit": None if report.ok else report.render()},
    }


def node_errors(topo: Topology) -> dict[str, int]:
    """Steps the nodes answered 0xEE (a defect, not a busy answer), by the line they logged."""
    found: Counter[str] = Counter()
    for i in range(topo.nodes):
        path = topo.log_dir / f"node{i + 1}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if "unexpected error" in line or re.search(r"stage 0x[0-9A-F]{2} failed", line):
                found[line.split(": ", 1)[-1].strip()] += 1
    return dict(found)


async def run(topo: Topology, seconds: float) -> dict[str, object]:
    print(f"cluster-test: starting a cluster under {topo.base_dir} (ports {topo.port_base}+)", flush=True)
    await asyncio.to_thread(control.up, topo)
    terminals = await provision(topo)
    timeline = Timeline()
    load = Load(terminals, topo, timeline)
    load.start()
    kkt = KktLoad(topo, timeline)
    sms = SmsLoad(topo, timeline)
    print("  measuring throughput with 1..N nodes", flush=True)
    scaling = await throughput(load, topo, seconds / 2)
    load_average = round(os.getloadavg()[0], 1)  # what else the machine was doing while it was measured
    print(f"  recharges/s: {scaling}", flush=True)
    kkt.start()
    sms.start()
    fault_figures = await faults(load, topo, timeline, seconds)
    await asyncio.gather(load.stop(), kkt.stop(), sms.stop())
    result = await check(topo, terminals, kkt)
    result["sms_answered"] = sms.answered
    result["ok"] = bool(result["ok"]) and sms.answered > 0
    return {"throughput_recharges_per_s": scaling, "load_average_1m": load_average, "faults": fault_figures, "node_errors": node_errors(topo), **result}


def write_figures(results: dict[str, object]) -> None:
    path = ROOT / "bench" / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    scaling = results["throughput_recharges_per_s"]
    assert isinstance(scaling, dict)
    one = scaling.get("1_nodes") or 0
    data["cluster"] = {k: v for k, v in results.items() if k != "details"}
    if one:
        data["cluster_throughput_ratio_2_vs_1_node"] = round(scaling.get("2_nodes", 0) / one, 3)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")  # as make bench writes it


def figures_markdown(results: dict[str, object]) -> str:
    scaling = results["throughput_recharges_per_s"]
    faults = results["faults"]
    assert isinstance(scaling, dict) and isinstance(faults, dict)
    lines = [
        f"Last `make cluster-test` ({time.strftime('%Y-%m-%d')}, {TERMINALS} terminals recharging and "
        f"{len(cards.DEMO_CARDS[1:8])} KaKaTong cards trading through HAProxy, "
        "three nodes, two PostgreSQL members, everything on this machine's two cores):",
        "",
        "| fault | unavailable (first failed request → next success) | failed requests in it (by kind) |",
        "|---|---|---|",
    ]
    for name in ("node_sigkill", "node_sigterm_drain", "primary_failover"):
        f = faults.get(name, {})
        kinds = ", ".join(f"{k.removeprefix('failed_')} {int(v)}" for k, v in f.items() if k.startswith("failed_") and k != "failed_requests")
        lines.append(f"| {name.replace('_', ' ')} | {f.get('unavailable_s', 0):.2f} s | {int(f.get('failed_requests', 0))} ({kinds or '–'}) |")
    promote = faults.get("primary_failover_promotion", {}).get("seconds", 0)
    rejoin = faults.get("old_primary_rejoined", {}).get("seconds", 0)
    lines += [
        "",
        f"Patroni promoted the standby {promote:.1f} s after the primary's machine died; the old primary was back as "
        f"a synchronous standby (rewound) {rejoin:.1f} s later.",
        f"Acknowledged recharges: {results['acknowledged']}; lost {results['acknowledged_lost']}; chip ≠ ledger "
        f"{results['chip_ledger_mismatches']}; orders left loading {results['orders_left_loading']}; audit "
        f"{'balanced' if results['audit_ok'] else 'NOT balanced'}. KaKaTong trades over REST answered 11: "
        f"{results['kkt_acknowledged']}; missing from the journal {results['kkt_lost']}; duplicated {results['kkt_duplicated']}. "
        f"SMS balance queries answered: {results['sms_answered']}.",
        "",
        "| nodes in HAProxy's DD backend | acknowledged recharges/s |",
        "|---|---|",
        *(f"| {k.split('_')[0]} | {v} |" for k, v in scaling.items()),
        "",
        f"The machine's 1-minute load average at the end of these throughput phases was "
        f"{results.get('load_average_1m', '?')} on its two cores: above 2, other work shared the cores and the "
        "figures are lower than the cluster alone would give.",
        "",
        "`cluster_throughput_ratio_2_vs_1_node` is in bench/results.json. With every process on two shared cores a "
        "second node cannot add capacity — it adds a process competing for the same cores — so the ratio stays "
        "near 1; on separate machines the nodes' CPU work (framing, MACs, HTTP) scales with their number until "
        "the primary's commits are the limit.",
    ]
    return "\n".join(lines)


def write_scaling_doc(results: dict[str, object]) -> None:
    path = ROOT / "docs" / "SCALING.md"
    text = path.read_text()
    start, end = "<!-- cluster-test figures -->", "<!-- /cluster-test figures -->"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    path.write_text(f"{before}{start}\n{figures_markdown(results)}\n{end}{after}")


def main(*, seconds: float = 20.0, keep: bool = False) -> int:
    """A cluster of its own in a temporary folder (removed when the run passes; kept, with its logs, when not)."""
    base = Path(tempfile.mkdtemp(prefix="recharge-cluster-test-"))
    topo = Topology(base, port_base=int(os.environ.get("CLUSTER_TEST_PORT_BASE", "29000")), nodes=3)
    results: dict[str, object] = {"ok": False}
    try:
        results = asyncio.run(run(topo, seconds))
        write_figures(results)
        write_scaling_doc(results)
    finally:
        control.down(topo)
        print(json.dumps(results, indent=2, ensure_ascii=False, default=str))
        if results["ok"] and not keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"cluster-test {'passed' if results['ok'] else 'FAILED'}; logs kept under {topo.log_dir}")
    return 0 if results["ok"] else 1

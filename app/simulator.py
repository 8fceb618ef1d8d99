"""``rechargectl terminal simulate``: simulated terminals recharging virtual cards against a
running DD server — a test and demonstration tool, not part of the server.

It provisions what the run needs in the database (a funded merchant, N terminals with PKI
numbers, N × M paid orders), then runs N asyncio terminals concurrently: each signs in with
a virtual security module and loads M orders onto its virtual card (DD11 → DD20). It needs
the master keys (the platform's key file, ``settings.resolved_key_file``) to build the
virtual module and cards, exactly like the test suite; never point it at real keys.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from app import fixtures
from recharge.keys import MasterKeys
from server.terminal_client import AsyncTerminalClient, ConnectionClosed, FlowFailed, StageTimings


@dataclass
class SimPlan:
    """Who recharges what: terminals and, for each, its card and its orders."""

    host: str
    port: int
    keys: MasterKeys
    terminals: list[fixtures.SimTerminal]
    cards: list[str]  # per terminal: the logical number of its virtual card
    orders: list[list[str]]  # per terminal
    amount_cents: int


@dataclass
class SimReport:
    results: Counter[str] = field(default_factory=Counter)  # "00", "AA", ... or "closed"/"timeout"
    timings: StageTimings = field(default_factory=StageTimings)
    elapsed_s: float = 0.0
    recharges_ok: int = 0

    @property
    def recharges_per_s(self) -> float:
        return self.recharges_ok / self.elapsed_s if self.elapsed_s else 0.0

    def percentiles_ms(self) -> dict[str, dict[str, float]]:
        """p50/p90/p99 in milliseconds per request stage (``DD11`` …)."""
        out = {}
        for stage, values in sorted(self.timings.by_stage.items()):
            ordered = sorted(values)
            out[f"DD{stage:02X}"] = {
                "p50": _quantile(ordered, 0.50) * 1000,
                "p90": _quantile(ordered, 0.90) * 1000,
                "p99": _quantile(ordered, 0.99) * 1000,
                "n": float(len(ordered)),
            }
        return out

    def render(self) -> str:
        lines = [f"elapsed {self.elapsed_s:.2f} s; {self.recharges_ok} recharges loaded "
                 f"({self.recharges_per_s:.1f}/s)", "results by code:"]
        lines += [f"  {code}: {count}" for code, count in sorted(self.results.items())]
        lines.append("latency per stage (ms):   p50      p90      p99      n")
        for stage, p in self.percentiles_ms().items():
            lines.append(f"  {stage}              {p['p50']:8.2f} {p['p90']:8.2f} {p['p99']:8.2f} {int(p['n']):6d}")
        return "\n".join(lines)


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


async def _unused_code_and_pki(conn: asyncpg.Connection) -> tuple[str, str]:
    """A random terminal code and PKI number no terminal has: among thousands of simulated
    terminals two random 8-digit numbers meet often enough to matter (a code met would move
    another terminal to this merchant, a PKI number met is refused)."""
    while True:
        code, pki = fixtures.random_digits(8), fixtures.random_digits(8)
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM terminals WHERE code = $1 OR pki_no = $2)", code, pki):
            return code, pki


async def provision(
    conn: asyncpg.Connection, host: str, port: int, keys: MasterKeys, *, terminals: int, recharges: int,
    amount_cents: int,
) -> SimPlan:
    """A funded merchant, ``terminals`` DD terminals and ``recharges`` paid orders for each."""
    fund = terminals * recharges * amount_cents + 1
    first = await fixtures.sim_terminal(conn, host, port, keys, fund_cents=fund)
    sims = [first]
    for _ in range(terminals - 1):
        code, pki = await _unused_code_and_pki(conn)
        await fixtures.dd_terminal(conn, first.merchant_id, code, pki)
        sims.append(fixtures.SimTerminal(code, pki, first.merchant_id, host, port, keys))
    cards = ["1680" + fixtures.random_digits(12) for _ in sims]
    plan_orders = [
        [await fixtures.paid_order(conn, first.merchant_id, card_no, amount_cents) for _ in range(recharges)]
        for card_no in cards
    ]
    return SimPlan(host, port, keys, sims, cards, plan_orders, amount_cents)


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "00"
    if isinstance(exc, FlowFailed):
        return f"{exc.result:02X}"
    if isinstance(exc, ConnectionClosed):
        return "closed"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def _run_terminal(
    plan: SimPlan, index: int, report: SimReport, progress: Callable[[], None], timeout_s: float
) -> None:
    term = plan.terminals[index]
    client = AsyncTerminalClient(plan.host, plan.port, term.code, term.pki, timeout_s=timeout_s, timings=report.timings)
    try:
        await client.sign_in(term.module())
    except (FlowFailed, ConnectionClosed, OSError, TimeoutError) as exc:
        report.results["signin:" + _outcome(exc)] += 1
        for _ in plan.orders[index]:
            progress()
        return
    card = term.card(plan.cards[index], 0)
    for order_no in plan.orders[index]:
        error: BaseException | None = None
        try:
            await client.recharge(card, order_no, plan.amount_cents)
            report.recharges_ok += 1
        except (FlowFailed, ConnectionClosed, OSError, TimeoutError) as exc:
            error = exc
        report.results[_outcome(error)] += 1
        progress()


async def run(plan: SimPlan, *, progress: Callable[[], None] = lambda: None, timeout_s: float = 30.0) -> SimReport:
    """All terminals at once; the report of results and per-stage latencies."""
    report = SimReport()
    started = time.perf_counter()
    await asyncio.gather(*(_run_terminal(plan, i, report, progress, timeout_s) for i in range(len(plan.terminals))))
    report.elapsed_s = time.perf_counter() - started
    return report

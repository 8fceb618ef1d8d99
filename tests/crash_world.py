"""Test support for the kill -9 tests: a fresh database with its key file, the real server started as its own
process on that data folder (``rechargectl serve``), killed with SIGKILL at a seeded moment and started again,
and the progress counter that says when the moment has come; ``crash_rig`` holds them for one test."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from recharge import db
from recharge.config import Settings
from recharge.keys import MasterKeys, write_keys
from tests.conftest import ROOT

# the mobile payment passwords the tests set hash fast in the served process too (argon2id all the same)
FAST_HASHING = {"RECHARGE_MPAY_ARGON2_TIME_COST": "1", "RECHARGE_MPAY_ARGON2_MEMORY_KIB": "1024"}


@dataclass
class Served:
    """One ``serve`` process and the ports it listens on."""

    proc: subprocess.Popen[str]
    dd_port: int
    http_port: int

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye; waits until the process is gone."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM if it still runs (the test's cleanup)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


def serve(database_url: str, data_dir: Path, env: dict[str, str] | None = None) -> Served:
    """``rechargectl serve`` on free local ports over ``database_url``, keys and data in ``data_dir``; returns once
    it printed ``READY``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--dd-port", "0", "--http-port", "0",
         "--database-url", database_url, "--data-dir", str(data_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RECHARGE_DD_HOST": "127.0.0.1", "RECHARGE_HTTP_HOST": "127.0.0.1", **(env or {})},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY "):
            return Served(proc, int(line.split("dd_port=")[1].split()[0]), int(line.split("http_port=")[1].split()[0]))
    raise AssertionError("serve did not start")


async def prepared(database_url: str, data_dir: Path) -> tuple[MasterKeys, asyncpg.Connection]:
    """Fresh master keys in ``data_dir``'s key file and the database migrated; (keys, a connection to it)."""
    keys = MasterKeys.generate(demo=True)
    write_keys(data_dir / "keys.json", keys)
    conn = await asyncpg.connect(database_url)
    await db.init_connection(conn)
    await db.migrate(conn)
    return keys, conn


class Progress:
    """Counts answers received by all clients; fires when the seeded kill point is reached."""

    def __init__(self, kill_after_answers: int) -> None:
        self.answers = 0
        self.kill_after = kill_after_answers
        self.reached = asyncio.Event()

    def tick(self) -> None:
        self.answers += 1
        if self.answers >= self.kill_after:
            self.reached.set()


@dataclass
class CrashRig:
    """One kill -9 test's world: the keys, a connection to the database (and a pool, when asked for) and the
    server process currently serving it."""

    database_url: str
    data_dir: Path
    env: dict[str, str] | None
    keys: MasterKeys
    conn: asyncpg.Connection
    pool: asyncpg.Pool | None
    served: Served

    def restart(self) -> Served:
        """The server started again on the same database and data folder; returns once it is READY."""
        self.served = serve(self.database_url, self.data_dir, self.env)
        return self.served

    async def kill_when(self, progress: Progress, runs: list[asyncio.Task[None]], within_s: float = 60.0) -> None:
        """SIGKILL the server once ``progress`` reached its seeded point, then let every client run end."""
        await asyncio.wait_for(progress.reached.wait(), within_s)
        self.served.kill()
        await asyncio.gather(*runs)


@asynccontextmanager
async def crash_rig(database_url: str, data_dir: Path, *, settings: Settings | None = None,
                    env: dict[str, str] | None = None) -> AsyncIterator[CrashRig]:
    """``prepared`` keys and database, a pool when ``settings`` are given, the server started; all of it stopped
    and closed afterwards."""
    keys, conn = await prepared(database_url, data_dir)
    pool = None
    rig = None
    try:
        if settings is not None:
            pool = await db.create_pool(database_url, settings)
        rig = CrashRig(database_url, data_dir, env, keys, conn, pool, serve(database_url, data_dir, env))
        yield rig
    finally:
        if rig is not None:
            rig.served.stop()
        if pool is not None:
            await pool.close()
        await conn.close()

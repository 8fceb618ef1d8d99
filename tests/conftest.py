"""Shared fixtures: a real PostgreSQL, a fresh migrated database per test run, the platform.

By default the embedded PostgreSQL (``var/test-pgdata``) serves the tests; with
``DATABASE_URL`` set they use that server instead. Either way a new database
``recharge_test_<pid>`` is created, migrated, and dropped at the end, so runs never see each
other's data. ``platform`` starts the real DD server and HTTP app on free ports in the test's
event loop; ``audited`` checks after a test that the ledger still balances.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvloop

from recharge import db
from recharge.config import Settings, load_settings
from recharge.keys import MasterKeys, write_keys
from recharge.ledger.audit import audit

ROOT = Path(__file__).resolve().parent.parent

# Fixtures many modules share (w, api, desk, world, term, signed_in, ...): one plugin, not copies.
pytest_plugins = ["tests.shared_fixtures"]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Tests run on uvloop, the loop production runs on."""
    return {"uvloop": uvloop.new_event_loop}


_with_database = db.with_database  # the same server URL pointing at another database


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The PostgreSQL server the tests use: DATABASE_URL, or the embedded one."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    embedded = db.EmbeddedPostgres(ROOT / "var" / "test-pgdata")
    try:
        yield embedded.uri
    finally:
        embedded.cleanup()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test run, dropped afterwards."""
    name = f"recharge_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def create() -> None:
        await db.execute_once(server_url, f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(_with_database(server_url, name))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(create())
    try:
        yield _with_database(server_url, name)
    finally:
        asyncio.run(db.execute_once(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def empty_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database of its own (not migrated), dropped after the test."""
    name = f"recharge_empty_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
def ledger_balances_after_the_whole_run(database_url: str) -> Iterator[None]:
    """After every test of the run, `rechargectl audit`'s check must still pass."""
    yield

    async def check() -> str | None:
        conn = await asyncpg.connect(database_url)
        try:
            report = await audit(conn)
        finally:
            await conn.close()
        return None if report.ok else report.render()

    problem = asyncio.run(check())
    assert problem is None, problem


@pytest.fixture(scope="session")
def test_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[MasterKeys, Path]:
    """Random master keys for this run, in a key file (never the demo folder's)."""
    keys = MasterKeys.generate(demo=True)
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    write_keys(path, keys)
    return keys, path


@pytest.fixture(scope="session")
def settings(database_url: str, test_keys: tuple[MasterKeys, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = load_settings(None)
    return base.replace(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        key_file=test_keys[1],
        dd_host="127.0.0.1",
        dd_port=0,
        http_host="127.0.0.1",
        http_port=0,
        dd_idle_timeout_s=3.0,
        shutdown_grace_s=2.0,
        sweeper_interval_s=0.5,
        admin_token="test-admin-token",
        sms_shared_secret="test-sms-secret",
        mpay_argon2_time_cost=1,  # argon2id stays argon2id; the tests only need it fast
        mpay_argon2_memory_kib=1024,
        # The suite's many deliberate wrong passwords all come from 127.0.0.1: the per-address limit
        # would refuse later tests' logins within the minute. It has its own test (test_mpay_codes).
        mpay_auth_fail_per_ip=1_000_000,
    )


@pytest.fixture(scope="session")
async def pool(database_url: str, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, settings)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as c:
        yield c


@asynccontextmanager
async def platform_of_its_own(settings: Settings) -> AsyncIterator[Any]:
    """The real platform (DD server + HTTP app) on free ports over ``settings.database_url``, stopped afterwards:
    an ``app.runtime.RunningPlatform`` with ``dd_port``, ``http_port`` and ``ctx``."""
    from app.runtime import RunningPlatform

    running = RunningPlatform(settings, settings.database_url or "")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def platform(settings: Settings) -> AsyncIterator[object]:
    """The real platform on free ports, shared by the session's tests (``platform_of_its_own``)."""
    async with platform_of_its_own(settings) as running:
        yield running


@pytest.fixture
async def audited(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Fails the test if the ledger does not balance after it."""
    yield
    async with pool.acquire() as c:
        report = await audit(c)
    assert report.ok, report.render()


MAX_SLACK = 8.0


def slack_for_this_machine() -> float:
    """How far to stretch a bound that only turns a hang into a failure: 1 on an idle machine; 1 + the run queue
    per core under load (``MAX_SLACK`` at most)."""
    return round(min(MAX_SLACK, 1.0 + os.getloadavg()[0] / (os.cpu_count() or 1)), 2)


def unique_digits(n: int) -> str:
    """n random decimal digits, for codes and numbers that must not collide between tests."""
    return "".join(secrets.choice("0123456789") for _ in range(n))


@asynccontextmanager
async def scratch_table(pool: asyncpg.Pool, prefix: str, columns: str) -> AsyncIterator[str]:
    """A table of the test's own (``CREATE TABLE <prefix>_<digits> (<columns>)``), dropped afterwards."""
    name = f"{prefix}_{unique_digits(10)}"
    async with pool.acquire() as c:
        await c.execute(f"CREATE TABLE {name} ({columns})")
    try:
        yield name
    finally:
        async with pool.acquire() as c:
            await c.execute(f"DROP TABLE {name}")


@contextmanager
def settings_changed(platform: Any, **changes: Any) -> Iterator[None]:
    """Run a block with some settings of the running ``platform`` changed, then restore them."""
    before = platform.ctx.settings
    platform.ctx.settings = before.replace(**changes)
    try:
        yield
    finally:
        platform.ctx.settings = before


async def sweep_until(pool: asyncpg.Pool, done: Callable[[], Awaitable[bool]], *, timeout_s: float = 5.0) -> None:
    """Run the sweeper until ``done()``: a running platform's own sweeper may hold a row
    (SKIP LOCKED) and commit the same void itself a moment later."""
    from recharge.sweeper import sweep_once

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        await sweep_once(pool)
        if await done() or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, *, timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` holds (a coroutine's answer is awaited), looking every 10 ms. The bound
    is generous on purpose: it only turns a hang into a failure, and a loaded machine (four suites
    on two cores) must not trip it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        answer = check()
        if await answer if inspect.isawaitable(answer) else answer:
            return
        assert loop.time() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.01)

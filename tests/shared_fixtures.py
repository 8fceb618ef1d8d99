"""The fixtures many test modules share, as one pytest plugin (``pytest_plugins`` in tests/conftest.py).

Kept apart from conftest.py's database and platform fixtures; listed here rather than imported into
each module, because a test parameter named like an imported fixture trips ruff's F811, which is
why these used to be copied from module to module. A module that means something else by one of
these names (the SMS world ``w`` of test_sms_inbound.py, say) defines its own fixture of that name,
which overrides this one in that module: pytest's rule, on purpose.

- ``w``, ``api``: the mobile payment world (tests/mpay_world.py) on the running platform, and a
  ``/mpay/v1`` client that checks every reply against the served OpenAPI document;
- ``desk``: a SIM-wallet hall with its counter operator and hall POS (tests/wallet_counter_world.py);
- ``key_file``: RECHARGE_KEY_FILE pointing at the run's keys, for tests that run ``rechargectl``;
- ``world``: the KaKaTong card service's world (tests/kkt_world.py): a funded merchant, a terminal,
  a license key;
- ``term``, ``signed_in``: a DD terminal (app.fixtures.sim_terminal) on the running platform, and
  the same signed in;
- ``http``: an HTTP client session on the running platform's port;
- ``console_base``: the console's base URL, after the demo data is seeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from app import demo, fixtures
from app.fixtures import SimTerminal
from core_ext.virtual_pos import VirtualPOS
from recharge.mpay.env import Env
from tests.conftest import unique_digits
from tests.kkt_world import World, make_world
from tests.mpay_world import Api, MpayWorld
from tests.wallet_counter_world import WalletDesk
from tests.wallet_world import virtual_keys


@pytest.fixture
async def w(platform: Any, pool: asyncpg.Pool) -> AsyncIterator[MpayWorld]:
    async with aiohttp.ClientSession() as session:
        yield MpayWorld(pool, Env.of(platform.ctx.settings, platform.ctx.keys),
                        f"http://127.0.0.1:{platform.http_port}", session)


@pytest.fixture
def api(w: MpayWorld) -> Api:
    return Api(w)


@pytest.fixture
async def desk(w: MpayWorld, api: Api, platform: Any) -> WalletDesk:
    """A hall of its own (``H`` + 6 digits), its counter operator's token and its registered hall POS."""
    hall = "H" + unique_digits(6)
    counter = await api.operator("counter", hall)
    keys = virtual_keys(platform.ctx.keys)
    desk = WalletDesk(w, api, keys, hall, counter, VirtualPOS("0", keys.purchase, keys.pos))
    desk.pos = await desk.terminal(hall=hall)
    return desk


@pytest.fixture
def key_file(monkeypatch: pytest.MonkeyPatch, test_keys: Any) -> None:
    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))


@pytest.fixture
async def world(platform: Any, pool: asyncpg.Pool, test_keys: Any) -> World:
    return await make_world(pool, test_keys[0], platform.http_port)


@pytest.fixture
async def term(platform: Any, conn: asyncpg.Connection, test_keys: Any) -> SimTerminal:
    return await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])


@pytest.fixture
async def signed_in(term: SimTerminal) -> SimTerminal:
    await asyncio.to_thread(term.client().sign_in, term.module())
    return term


@pytest.fixture
async def http(platform: Any) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{platform.http_port}") as session:
        yield session


@pytest.fixture
async def console_base(platform: Any, conn: asyncpg.Connection, test_keys: Any, settings: Any) -> str:
    await demo.seed(conn, test_keys[0], settings.data_dir)
    return f"http://127.0.0.1:{platform.http_port}"

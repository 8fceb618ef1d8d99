"""Sign-in rules of SPEC 1.3 end to end: five failures in a row lock the terminal until an
operator unlocks it; an abandoned sign-in does not count; a success resets the count; a
failed sign-in leaves an earlier valid one in force; sign-ins expire at the business day's end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import Frame
from recharge import terminals
from recharge.orders.lifecycle import LOCAL_TZ
from server import store
from server.terminal_client import FlowFailed


@pytest.fixture
async def term(platform: Any, conn: asyncpg.Connection, test_keys: Any, audited: None) -> SimTerminal:
    """A fresh terminal; every test using it also checks the ledger audit afterwards."""
    return await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def fail_once(term: SimTerminal) -> Frame:
    """A sign-in whose DD05 cryptogram is wrong (0xAA)."""
    module = term.module()
    with term.client().connect() as client:
        client.dd01()
        client.dd03(module.r_init())
        return client.dd05(b"\xee" * 8)


def abandon(term: SimTerminal) -> None:
    module = term.module()
    with term.client().connect() as client:
        client.dd01()
        client.dd03(module.r_init())


async def failures(conn: asyncpg.Connection, term: SimTerminal) -> tuple[int, bool]:
    row = await conn.fetchrow("SELECT signin_failures, locked FROM terminals WHERE code = $1", term.code)
    return row["signin_failures"], row["locked"]


async def test_five_failed_signins_in_a_row_lock_the_terminal(
    term: SimTerminal, conn: asyncpg.Connection, settings: Any
) -> None:
    for _ in range(settings.signin_max_failures):
        assert (await in_thread(fail_once, term)).result == 0xAA
    assert await failures(conn, term) == (settings.signin_max_failures, True)
    with pytest.raises(FlowFailed) as refused:  # even the right keys are refused now
        await in_thread(term.client().sign_in, term.module())
    assert (refused.value.stage, refused.value.result) == (0x02, 0xA1)


async def test_operator_unlock_lets_the_terminal_sign_in_again(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any, settings: Any
) -> None:
    for _ in range(settings.signin_max_failures):
        await in_thread(fail_once, term)
    assert await terminals.unlock_terminal(conn, code=term.code, actor="alice", reason="test")
    platform.dd.dd.terminals.forget(term.code)  # the CLI runs in another process; the cache lives 1 s
    assert (await in_thread(term.client().sign_in, term.module())).result == 0
    assert await failures(conn, term) == (0, False)
    action = await conn.fetchrow(
        "SELECT actor, reason FROM operator_actions WHERE action = 'terminal_unlock' AND subject = $1", term.code
    )
    assert tuple(action) == ("alice", "test")


async def test_abandoned_signin_does_not_count(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await in_thread(abandon, term)
    await asyncio.sleep(0.1)
    assert await failures(conn, term) == (0, False)


async def test_successful_signin_resets_the_failure_count(term: SimTerminal, conn: asyncpg.Connection) -> None:
    for _ in range(3):
        await in_thread(fail_once, term)
    assert await failures(conn, term) == (3, False)
    await in_thread(term.client().sign_in, term.module())
    assert await failures(conn, term) == (0, False)


async def test_failed_signin_leaves_earlier_signin_in_force(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await in_thread(term.client().sign_in, term.module())
    before = await conn.fetchval("SELECT signed_in_until FROM terminals WHERE code = $1", term.code)
    await in_thread(fail_once, term)
    assert await conn.fetchval("SELECT signed_in_until FROM terminals WHERE code = $1", term.code) == before
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)
    with term.client().connect() as client:
        assert (await in_thread(client.dd11, 100, order_no)).result == 0


async def test_expired_signin_answers_BB(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await in_thread(term.client().sign_in, term.module())
    await conn.execute(
        "UPDATE terminals SET signed_in_until = now() - interval '1 second' WHERE code = $1", term.code
    )
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)
    with term.client().connect() as client:
        assert (await in_thread(client.dd11, 100, order_no)).result == 0xBB


@pytest.mark.parametrize(
    ("local_now", "end_hour", "expected"),
    [
        ("2026-11-21 10:00:00", 24, "2026-11-22 00:00:00"),
        ("2026-11-21 23:59:59", 24, "2026-11-22 00:00:00"),
        ("2026-11-21 01:00:00", 3, "2026-11-21 03:00:00"),
        ("2026-11-21 03:00:00", 3, "2026-11-22 03:00:00"),
    ],
)
def test_signin_expires_at_the_end_of_the_local_business_day(local_now: str, end_hour: int, expected: str) -> None:
    now = dt.datetime.fromisoformat(local_now).replace(tzinfo=LOCAL_TZ)
    until = store.signin_expiry(now.astimezone(dt.UTC), end_hour)
    assert until.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S") == expected

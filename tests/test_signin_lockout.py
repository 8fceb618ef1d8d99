"""Sign-in failures and the lockout (SPEC 1.3 as amended by issue 14 item 2; docs/PROTOCOL.md
"Sign-in failures and the lockout") end to end: only failures after the module proved its key
count; five of them in a row lock the terminal for a bounded time that doubles with each lock
in a row, up to a maximum; a stranger who knows the terminal's code and PKI number (both travel
in clear) cannot lock it; DD01 answers every code that cannot sign in alike; failures before the
proof are visible (metric, log line with the source address, the targeted-terminals gauge). An
abandoned sign-in does not count; a successful one resets the counts; a failed one leaves an
earlier valid sign-in in force; sign-ins expire at the business day's end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import Frame, bcd_encode
from recharge import terminals
from recharge.orders.model import LOCAL_TZ
from recharge.sweeper import export_signin_gauges, purge_terminal_signins
from server import store
from server.terminal_client import FlowFailed, TerminalClient
from tests.conftest import settings_changed


@pytest.fixture
async def term(term: SimTerminal, audited: None) -> SimTerminal:
    """The shared fresh terminal (tests/shared_fixtures.py); every test using it here also checks the
    ledger audit afterwards."""
    return term


def fail_before_proof(term: SimTerminal) -> Frame:
    """What a stranger can do: the terminal's code and PKI number (seen on the wire), a random
    module random RT, and a guessed cryptogram at DD05 (0xAA)."""
    with term.client().connect() as client:
        client.dd01()
        client.dd03(bcd_encode(term.pki, 4) + secrets.token_bytes(8))
        return client.dd05(secrets.token_bytes(8))


def wrong_pki(term: SimTerminal) -> Frame:
    """A stranger's DD03 with a PKI number that is not the terminal's (0xA1 at DD04)."""
    with term.client().connect() as client:
        client.dd01()
        return client.dd03(bcd_encode(fixtures.random_digits(8), 4) + secrets.token_bytes(8))


def fail_after_proof(term: SimTerminal) -> Frame:
    """The terminal's own module passes DD05 (the proof), then a wrong DD07 proof (0xAA)."""
    module = term.module()
    with term.client().connect() as client:
        client.dd01()
        dd04 = client.dd03(module.r_init())
        client.dd05(module.ac_login1(dd04.info))
        return client.dd07(b"\x01\x02\x03\x04")


def abandon(term: SimTerminal) -> None:
    module = term.module()
    with term.client().connect() as client:
        client.dd01()
        client.dd03(module.r_init())


async def failures(conn: asyncpg.Connection, term: SimTerminal) -> tuple[int, bool]:
    """(failed sign-ins in a row after proof, locked now)."""
    row = await conn.fetchrow(
        "SELECT signin_failures, locked OR coalesce(signin_locked_until > now(), false) AS locked"
        " FROM terminals WHERE code = $1",
        term.code,
    )
    return row["signin_failures"], row["locked"]


async def lock_seconds_left(conn: asyncpg.Connection, term: SimTerminal) -> float:
    return float(await conn.fetchval(
        "SELECT extract(epoch FROM signin_locked_until - now()) FROM terminals WHERE code = $1", term.code
    ))


async def let_the_lock_run_out(conn: asyncpg.Connection, platform: Any, term: SimTerminal) -> None:
    await conn.execute(
        "UPDATE terminals SET signin_locked_until = now() - interval '1 second' WHERE code = $1", term.code
    )
    platform.dd.dd.terminals.forget(term.code)  # the DD01 cache lives a second


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_stranger_who_knows_the_code_and_pki_cannot_lock_the_terminal_out(
    term: SimTerminal, conn: asyncpg.Connection, settings: Any
) -> None:
    """The attack of issue 14 item 2: three times the lock's worth of failed sign-ins by someone
    who only saw the terminal's code and PKI number; the terminal still signs in."""
    for _ in range(settings.signin_max_failures * 3 // 2):
        assert (await asyncio.to_thread(fail_before_proof, term)).result == 0xAA
        assert (await asyncio.to_thread(wrong_pki, term)).result == 0xA1
    assert await failures(conn, term) == (0, False)
    assert (await asyncio.to_thread(term.client().sign_in, term.module())).result == 0


async def test_five_failures_after_proof_lock_the_terminal_for_a_bounded_time(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any, settings: Any
) -> None:
    lockouts = counter("recharge_signin_lockouts_total")
    for _ in range(settings.signin_max_failures):
        assert (await asyncio.to_thread(fail_after_proof, term)).result == 0xAA
    assert await failures(conn, term) == (0, True)  # locked; the count starts again
    assert settings.signin_lock_base_s - 10 < await lock_seconds_left(conn, term) <= settings.signin_lock_base_s
    assert counter("recharge_signin_lockouts_total") == lockouts + 1
    with pytest.raises(FlowFailed) as refused:  # even the right keys are refused now
        await asyncio.to_thread(term.client().sign_in, term.module())
    assert (refused.value.stage, refused.value.result) == (0x02, 0xA1)
    await let_the_lock_run_out(conn, platform, term)  # no operator needed
    assert (await asyncio.to_thread(term.client().sign_in, term.module())).result == 0


async def test_each_lock_in_a_row_lasts_twice_as_long_up_to_the_maximum_and_a_success_resets_it(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any, settings: Any
) -> None:
    with settings_changed(platform, signin_lock_base_s=60, signin_lock_max_s=200):
        seen = []
        for _ in range(4):
            for _ in range(settings.signin_max_failures):
                await asyncio.to_thread(fail_after_proof, term)
            seen.append(await lock_seconds_left(conn, term))
            await let_the_lock_run_out(conn, platform, term)
        assert (await asyncio.to_thread(term.client().sign_in, term.module())).result == 0
        for _ in range(settings.signin_max_failures):
            await asyncio.to_thread(fail_after_proof, term)
        seen.append(await lock_seconds_left(conn, term))
    expected = [60, 120, 200, 200, 60]
    assert all(want - 10 < got <= want for got, want in zip(seen, expected, strict=True)), seen


async def test_operator_unlock_ends_a_lock_early(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any, settings: Any
) -> None:
    for _ in range(settings.signin_max_failures):
        await asyncio.to_thread(fail_after_proof, term)
    assert await terminals.unlock_terminal(conn, code=term.code, actor="alice", reason="test")
    platform.dd.dd.terminals.forget(term.code)  # the CLI runs in another process; the cache lives 1 s
    assert (await asyncio.to_thread(term.client().sign_in, term.module())).result == 0
    assert await failures(conn, term) == (0, False)
    action = await conn.fetchrow(
        "SELECT actor, reason FROM operator_actions WHERE action = 'terminal_unlock' AND subject = $1", term.code
    )
    assert tuple(action) == ("alice", "test")


async def test_dd01_answers_an_unknown_a_disabled_and_a_locked_code_alike(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any, test_keys: Any, settings: Any
) -> None:
    disabled = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    await conn.execute("UPDATE terminals SET enabled = false WHERE code = $1", disabled.code)
    for _ in range(settings.signin_max_failures):
        await asyncio.to_thread(fail_after_proof, term)
    unknown = TerminalClient("127.0.0.1", platform.dd_port, "9" + fixtures.random_digits(7), term.pki)

    def dd02(client: TerminalClient) -> tuple[Any, ...]:
        with client.connect():
            answer = client.dd01()
            return answer.stage, answer.flow, answer.result, answer.pki, answer.info, client.closed_by_peer()

    answers = {await asyncio.to_thread(dd02, c) for c in (unknown, disabled.client(), term.client())}
    assert answers == {(0x02, 0xFF, 0xA1, b"\xff" * 4, b"", True)}


async def test_failures_before_proof_are_counted_logged_and_make_the_terminal_targeted(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    before = counter("recharge_signin_failures_total", reason="cryptogram", proven="false")
    caplog.set_level(logging.INFO, logger="server.signin")
    with settings_changed(platform, signin_probe_alert=3):
        for _ in range(3):
            await asyncio.to_thread(fail_before_proof, term)
    assert counter("recharge_signin_failures_total", reason="cryptogram", proven="false") == before + 3
    assert any(term.code in r.getMessage() and "127.0.0.1" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)
    await export_signin_gauges(pool, 3, 600)
    assert (REGISTRY.get_sample_value("recharge_signin_targeted_terminals") or 0) >= 1
    assert await failures(conn, term) == (0, False)


async def test_abandoned_signin_does_not_count(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(abandon, term)
    await asyncio.sleep(0.1)
    assert await failures(conn, term) == (0, False)


async def test_successful_signin_resets_the_failure_count(term: SimTerminal, conn: asyncpg.Connection) -> None:
    for _ in range(3):
        await asyncio.to_thread(fail_after_proof, term)
    assert await failures(conn, term) == (3, False)
    await asyncio.to_thread(term.client().sign_in, term.module())
    assert await failures(conn, term) == (0, False)


async def test_failed_signin_leaves_earlier_signin_in_force(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    before = await conn.fetchval("SELECT signed_in_until FROM terminals WHERE code = $1", term.code)
    await asyncio.to_thread(fail_after_proof, term)
    await asyncio.to_thread(fail_before_proof, term)
    assert await conn.fetchval("SELECT signed_in_until FROM terminals WHERE code = $1", term.code) == before
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)
    with term.client().connect() as client:
        assert (await asyncio.to_thread(client.dd11, 100, order_no)).result == 0


async def test_expired_signin_answers_BB(term: SimTerminal, conn: asyncpg.Connection) -> None:
    await asyncio.to_thread(term.client().sign_in, term.module())
    await conn.execute(
        "UPDATE terminals SET signed_in_until = now() - interval '1 second' WHERE code = $1", term.code
    )
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)
    with term.client().connect() as client:
        assert (await asyncio.to_thread(client.dd11, 100, order_no)).result == 0xBB


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


async def test_the_signin_history_is_purged_past_its_retention(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    code = f"R{secrets.token_hex(5)}"
    await conn.executemany(
        "INSERT INTO terminal_signins (terminal_code, outcome, created_at) VALUES ($1, 'ok', now() - $2::interval)",
        [(code, dt.timedelta(days=d)) for d in (100, 95, 91, 89, 0.1)],
    )
    before = REGISTRY.get_sample_value("recharge_purged_rows_total", {"table": "terminal_signins"}) or 0.0
    assert await purge_terminal_signins(pool, 90, batch=2) >= 3  # three of this test, in batches of two
    kept = await conn.fetchval("SELECT count(*) FROM terminal_signins WHERE terminal_code = $1", code)
    assert kept == 2
    assert REGISTRY.get_sample_value("recharge_purged_rows_total", {"table": "terminal_signins"}) >= before + 3

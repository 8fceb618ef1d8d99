"""The DD operator commands through ``rechargectl``: terminal add/unlock, order create, load
resolve (posted and voided, recorded with who and why), and the terminal simulator against
the running server. Each runs the real CLI entry point against the test database.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from app import fixtures
from app.cli import main
from app.fixtures import SimTerminal
from recharge.ledger import transfers as ledger
from recharge.orders import model

pytestmark = pytest.mark.usefixtures("audited")


async def cli(database_url: str, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv[:2], "--database-url", database_url, *argv[2:]])


async def test_terminal_add_registers_a_terminal_that_can_sign_in(
    database_url: str, platform: Any, conn: asyncpg.Connection, test_keys: Any
) -> None:
    merchant_code = await fixtures.fresh_merchant_code(conn)
    merchant_id = await fixtures.funded_merchant(conn, merchant_code, 0)
    code, pki = fixtures.random_digits(8), fixtures.random_digits(8)
    assert await cli(database_url, "terminal", "add", "--code", code, "--merchant", merchant_code, "--pki", pki) == 0
    term = SimTerminal(code, pki, merchant_id, "127.0.0.1", platform.dd_port, test_keys[0])
    assert (await asyncio.to_thread(term.client().sign_in, term.module())).result == 0
    # the same code again is refused and changes nothing
    assert await cli(database_url, "terminal", "add", "--code", code, "--merchant", merchant_code, "--pki",
                     fixtures.random_digits(8)) == 1
    assert await conn.fetchval("SELECT pki_no FROM terminals WHERE code = $1", code) == pki


async def test_terminal_add_refuses_unknown_merchant_and_bad_pki(database_url: str, conn: asyncpg.Connection) -> None:
    code = fixtures.random_digits(8)
    absent = await fixtures.fresh_merchant_code(conn)
    assert await cli(database_url, "terminal", "add", "--code", code, "--merchant", absent, "--pki", "12345678") == 1
    assert not await conn.fetchval("SELECT count(*) FROM terminals WHERE code = $1", code)
    with pytest.raises(SystemExit) as bad:
        await cli(database_url, "terminal", "add", "--code", "12345678", "--merchant", "1155", "--pki", "12AB")
    assert bad.value.code == 2


async def test_terminal_unlock_command_unlocks_and_records_the_operator(
    database_url: str, signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    await conn.execute("UPDATE terminals SET locked = true, signin_failures = 5 WHERE code = $1", signed_in.code)
    assert await cli(database_url, "terminal", "unlock", "--code", signed_in.code, "--actor", "bob",
                     "--reason", "called the shop") == 0
    row = await conn.fetchrow("SELECT locked, signin_failures FROM terminals WHERE code = $1", signed_in.code)
    assert tuple(row) == (False, 0)
    assert await cli(database_url, "terminal", "unlock", "--code", "00000000") == 1


async def test_order_create_prints_a_paid_order_number(
    database_url: str, signed_in: SimTerminal, conn: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    merchant = await conn.fetchval("SELECT code FROM merchants WHERE id = $1", signed_in.merchant_id)
    card_no = "1680" + fixtures.random_digits(12)
    assert await cli(database_url, "order", "create", "--card", card_no, "--amount", "450", "--merchant", merchant) == 0
    order_no = capsys.readouterr().out.strip()
    assert len(order_no) == 20 and order_no.isdigit()
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.PAID and order.amount_cents == 450
    card = signed_in.card(card_no)
    assert (await asyncio.to_thread(signed_in.client().recharge, card, order_no, 450)).result == 0


async def test_order_create_unpaid_and_refusals(
    database_url: str, signed_in: SimTerminal, conn: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    merchant = await conn.fetchval("SELECT code FROM merchants WHERE id = $1", signed_in.merchant_id)
    card_no = "1680" + fixtures.random_digits(12)
    assert await cli(database_url, "order", "create", "--card", card_no, "--amount", "10", "--merchant", merchant,
                     "--unpaid") == 0
    order = await model.get_order(conn, capsys.readouterr().out.strip())
    assert order is not None and order.state == model.SUBMITTED
    too_much = str(10**9)
    assert await cli(database_url, "order", "create", "--card", card_no, "--amount", too_much, "--merchant",
                     merchant) == 1


async def _loading_order(term: SimTerminal, conn: asyncpg.Connection, *, credit: bool) -> tuple[str, Any]:
    card = term.card(balance_cents=100)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 200)

    def lose_connection_after_dd16() -> None:
        with term.client().connect() as client:
            script = fixtures.recharge_until_dd16(client, card, order_no, 200)
            if credit:
                card.run_script(script)

    await asyncio.to_thread(lose_connection_after_dd16)
    return order_no, card


async def test_load_resolve_posted_posts_the_reservation_and_records_why(
    database_url: str, signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    order_no, card = await _loading_order(signed_in, conn, credit=True)
    assert await cli(database_url, "load", "resolve", "--order", order_no, "--outcome", "posted",
                     "--actor", "carol", "--reason", "card shows 300") == 0
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.LOADED and not order.loading
    assert order.balance_after_cents == 300 == card.balance
    transfer = await ledger.get_transfer(conn, order.pay_transfer_id or "")
    assert transfer is not None and transfer.status == "posted"
    action = await conn.fetchrow(
        "SELECT actor, reason FROM operator_actions WHERE action = 'load_resolve_posted' AND subject = $1", order_no
    )
    assert tuple(action) == ("carol", "card shows 300")


async def test_load_resolve_voided_releases_the_reservation(
    database_url: str, signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    order_no, _ = await _loading_order(signed_in, conn, credit=False)
    assert await cli(database_url, "load", "resolve", "--order", order_no, "--outcome", "voided",
                     "--actor", "dave", "--reason", "card shows 100") == 0
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.VOIDED and not order.loading
    transfer = await ledger.get_transfer(conn, order.pay_transfer_id or "")
    assert transfer is not None and transfer.status == "voided"


async def test_load_resolve_refuses_an_order_that_is_not_loading(
    database_url: str, signed_in: SimTerminal, conn: asyncpg.Connection
) -> None:
    order_no = await fixtures.paid_order(conn, signed_in.merchant_id, signed_in.card().card_no, 10)
    assert await cli(database_url, "load", "resolve", "--order", order_no, "--outcome", "posted",
                     "--reason", "mistake") == 1
    order = await model.get_order(conn, order_no)
    assert order is not None and order.state == model.PAID
    assert not await conn.fetchval("SELECT count(*) FROM operator_actions WHERE subject = $1", order_no)


async def test_terminal_simulate_runs_terminals_and_reports_results(
    database_url: str, platform: Any, test_keys: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RECHARGE_KEY_FILE", str(test_keys[1]))
    status = await cli(database_url, "terminal", "simulate", "--terminals", "3", "--recharges", "2",
                       "--port", str(platform.dd_port))
    out = capsys.readouterr().out
    assert status == 0, out
    assert "00: 6" in out and "6 recharges loaded" in out
    for stage in ("DD01", "DD11", "DD17", "DD19"):
        assert stage in out

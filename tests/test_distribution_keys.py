"""Every hot-path statement names its distribution key (docs/SCALING.md, "Beyond one database: Citus").

A platform of its own logs every statement its pool runs while a terminal recharges a card
(DD11–DD19), a merchant trades on a KaKaTong card over REST, and an integrator signs in, creates
an order and queries it over the order API. Each statement that touches a
table the Citus plan distributes must filter by that table's key, so that it would run on one
shard; the few that do not are listed below with the reason, and anything new that does not
fails this test until it is keyed or listed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from app import fixtures
from recharge import db
from recharge.config import Settings
from server.terminal_client import AsyncTerminalClient
from tests.conftest import platform_of_its_own
from tests.kkt_world import PASSWORD_MD5, make_world

# table → its distribution key in the Citus plan (docs/SCALING.md)
DISTRIBUTED = {
    "cards": ("card_no",),
    "kkt_trades": ("card_no",),
    "orders": ("order_no",),
    "accounts": ("card_no",),
    "transfers": ("card_no",),
}

# Statements that touch a distributed table without its key (a pattern each), and why.
EXCEPTIONS: dict[str, str] = {
    r"FROM unnest\(.*FROM accounts WHERE id = ANY":
        "the ledger's batch statements (create_transfers, resolve_pending) find accounts and transfers by id; "
        "co-locating them by the owning card needs the card side's card_no on transfers (docs/SCALING.md) — "
        "until then each batch is a multi-shard (two-phase) transaction",
    r"UPDATE transfers t SET timeout_at = v.timeout_at FROM v":
        "the ledger setting or clearing pending transfers' timeouts (holding a load at DD15): transfers by id, "
        "as above",
    r"FROM accounts WHERE merchant_id IS NOT DISTINCT FROM \$1 AND kind = \$2 AND ledger = \$3 AND card_no IS NULL":
        "a merchant-side account (no card): the striped hot accounts of the plan, one per shard",
    r"FROM orders o .*JOIN.*cards|FROM .*orders.*cards c":
        "DD11's one lookup reads the order (by order_no) and the card kind (by card_no): two single-shard "
        "statements once distributed",
    r"FROM orders WHERE platform_id = \$1 AND biz_serial_no = \$2":
        "CreateAutoLoadOrder's idempotency lookup by the integrator's biz_serial_no: every shard is asked "
        "until a lookup table (platform_id, biz_serial_no) → order_no, distributed by its own key, makes it "
        "two single-shard reads (docs/SCALING.md)",
    r"FROM orders WHERE platform_id = \$1 AND card_no = \$2":
        "AcctQueryLNT by card number: an integrator's read-only query of a card's orders, not a step of a load; "
        "a router query across shards until an index table card_no → order_no co-located with cards serves it",
    r"FROM orders WHERE loading$":
        "the loading-age gauge (sweeper, every sweeper_interval_s): a background scan, not a request's",
    r"FROM accounts a WHERE a\.kind = 'mpay' AND a\.card_no LIKE 'W/%'":
        "the sweeper's gauge of negative SIM-wallet shadows (SPEC 7's audit): background, every sweeper_interval_s",
    r"FROM transfers WHERE status = 'pending' AND timeout_at IS NOT NULL":
        "the sweeper's timeout scan: background, every sweeper_interval_s",
}


@pytest.fixture
async def logged(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, list[str]]]:
    """A platform whose pool connections record every statement they run."""
    statements: list[str] = []
    original = db.init_connection

    async def init_and_log(conn: asyncpg.Connection) -> None:
        await original(conn)
        conn.add_query_logger(lambda record: statements.append(" ".join(record.query.split())))

    monkeypatch.setattr(db, "init_connection", init_and_log)
    async with platform_of_its_own(settings) as running:
        yield running, statements


def tables_in(statement: str) -> set[str]:
    found = set()
    for table in DISTRIBUTED:
        if re.search(rf"\b(FROM|JOIN|INTO|UPDATE)\s+{table}\b", statement, flags=re.IGNORECASE):
            found.add(table)
    return found


def filters_by(statement: str, key: str) -> bool:
    """Whether the statement picks its rows by ``key``: a predicate on it (``key = …``, ``… = x.key``,
    ``key = ANY(…)``, ``key IN …``) or an INSERT naming it. A key that is only selected or sorted
    on (``ORDER BY order_no``) does not make a statement single-shard."""
    if re.match(r"(WITH .*)?INSERT INTO", statement, flags=re.IGNORECASE) and re.search(rf"\b{key}\b", statement):
        return True
    predicate = rf"(\b{key}\s*(=|IN\b))|(=\s*(\w+\.)?{key}\b)"
    return re.search(predicate, statement, flags=re.IGNORECASE) is not None


def unkeyed(statements: list[str]) -> dict[str, set[str]]:
    """Statement → the distributed tables it touches without naming any of their keys."""
    missing: dict[str, set[str]] = {}
    for statement in statements:
        statement = re.sub(r"^BEGIN;\s*", "", statement)  # a statement sent with the BEGIN of its transaction
        if statement.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SELECT 1", "RESET", "SET")):
            continue
        tables = {t for t in tables_in(statement) if not any(filters_by(statement, key) for key in DISTRIBUTED[t])}
        if tables and not any(re.search(pattern, statement) for pattern in EXCEPTIONS):
            missing[statement] = tables
    return missing


async def test_dd_recharge_and_kkt_trades_run_single_shard_statements(logged: tuple[Any, list[str]],
                                                                      pool: asyncpg.Pool, test_keys: Any) -> None:
    running, statements = logged
    keys = test_keys[0]
    async with pool.acquire() as conn:
        terminal = await fixtures.sim_terminal(conn, "127.0.0.1", running.dd_port, keys)
        card = terminal.card()
        order_no = await fixtures.paid_order(conn, terminal.merchant_id, card.card_no, 500)
    world = await make_world(pool, keys, running.http_port)
    kkt_card = await world.new_card(balance=1000)
    client = AsyncTerminalClient("127.0.0.1", running.dd_port, terminal.code, terminal.pki, timeout_s=10)
    await client.sign_in(terminal.module())
    statements.clear()  # from here on: the hot paths only

    await AsyncTerminalClient("127.0.0.1", running.dd_port, terminal.code, terminal.pki,
                              timeout_s=10).recharge(card, order_no, 500)
    assert card.balance == 500
    consume = await world.ct(TRADETYPE="0022", TRADEMODE="1", CARDNO=kkt_card, AMOUNT="300", CARDPWD=PASSWORD_MD5)
    assert consume["PayInForm"] == "11"

    assert statements, "nothing was logged: the check saw nothing"
    assert any("cards" in tables_in(s) for s in statements) and any("orders" in tables_in(s) for s in statements)
    assert unkeyed(statements) == {}


def test_the_check_finds_a_statement_without_its_key() -> None:
    """The check itself: a scan of a distributed table by another column is reported."""
    assert unkeyed(["SELECT balance FROM cards WHERE merchant_id = $1"]) == {
        "SELECT balance FROM cards WHERE merchant_id = $1": {"cards"}
    }
    assert unkeyed(["SELECT state FROM cards WHERE card_no = $1"]) == {}
    assert unkeyed(["BEGIN; SELECT FROM cards WHERE merchant_id = 7 FOR UPDATE"]) == {
        "SELECT FROM cards WHERE merchant_id = 7 FOR UPDATE": {"cards"}
    }, "a statement sent with its BEGIN is checked too"
    shadows = ("SELECT count(*) AS negative FROM accounts a WHERE a.kind = 'mpay' AND a.card_no LIKE 'W/%'"
               " AND a.credits_posted - a.debits_posted < 0")
    assert unkeyed([shadows]) == {}, "the sweeper's gauge: a listed exception"
    sorted_only = "SELECT order_no FROM orders WHERE platform_id = $1 ORDER BY order_no DESC"
    assert unkeyed([sorted_only]) == {sorted_only: {"orders"}}
    assert unkeyed(["SELECT 1 FROM orders o JOIN x ON x.order_no = o.order_no WHERE o.order_no = ANY($1)"]) == {}


async def test_order_api_flow_runs_single_shard_statements(logged: tuple[Any, list[str]], pool: asyncpg.Pool,
                                                            tmp_path: Any) -> None:
    """An integrator's whole order-API flow (seed 004): sign in, create an order, query it by number and card."""
    from http_api.order_client import build_request, open_reply
    from tests.test_order_api import create_body, post, register, reqinfo_for

    running, statements = logged
    card = "1680" + fixtures.random_digits(12)
    async with pool.acquire() as conn:
        await fixtures.register_cpu_cards(conn, [card])
        api = await register(conn, tmp_path, int("9" + fixtures.random_digits(8)), 100_000)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{running.http_port}") as http:
        statements.clear()  # from here on: the integrator's requests only
        session = open_reply(await post(http, "APPLLogin", build_request(api.who, {
            "platform": api.who.platform_raw, "userinfo": '{"userid":"u1"}', "type": 5,
            "biz_serial_no": "L1", "money": 100, "mobile_imei": "860000000000000"})))
        order_no = open_reply(await post(http, "CreateAutoLoadOrder", create_body(api, card, 800)))["order"]
        query = {"platform": api.who.platform_raw, "userinfo": '{"userid":"u1"}', "pki": api.pki,
                 "serial": session["serial"], "step": 0, "reqinfo": reqinfo_for(card),
                 "qrycondition": "cardnum,orderstep", "orderstep": "02"}
        by_card = open_reply(await post(http, "AcctQueryLNT", build_request(api.who, query)))
        assert [r["orderseq"] for r in by_card["acctresult"]] == [order_no]

    assert any("orders" in tables_in(s) for s in statements)
    assert unkeyed(statements) == {}

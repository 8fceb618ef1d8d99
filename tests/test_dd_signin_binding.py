"""A sign-in is bound to the network it came from (issue 14 item 3; docs/PROTOCOL.md "A sign-in is
bound to its source"), and every money step records the address it came from.

The loopback network lets one test machine be several terminals' addresses: a client connects
from 127.0.0.x (``SimTerminal.client(source=...)``) to the server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from app import fixtures
from app.fixtures import SimTerminal
from core_ext import Frame
from recharge.network import same_network
from server import proxy_protocol
from server.terminal_client import TerminalClient, sign_in
from tests.conftest import platform_of_its_own, settings_changed

HOME, ELSEWHERE, OTHER_NET = "127.0.0.1", "127.0.0.2", "127.0.1.2"


@pytest.fixture
async def term(platform: Any, conn: asyncpg.Connection, test_keys: Any, audited: None) -> SimTerminal:
    """A terminal signed in from 127.0.0.1; every test using it also checks the ledger audit."""
    t = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    await asyncio.to_thread(t.client(source=HOME).sign_in, t.module())
    return t


async def dd11_from(term: SimTerminal, conn: asyncpg.Connection, source: str) -> Frame:
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)

    def talk() -> Frame:
        with term.client(source=source).connect() as client:
            return client.dd11(100, order_no)

    return await asyncio.to_thread(talk)


async def test_a_signed_in_terminals_code_and_pki_from_another_address_are_not_signed_in(
    term: SimTerminal, conn: asyncpg.Connection
) -> None:
    """The attack of issue 14 item 3: someone who saw the terminal's code and PKI number (both in
    clear) sends its requests from another address while it is signed in."""
    refusals = REGISTRY.get_sample_value("recharge_signin_binding_refusals_total") or 0
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)

    def attack() -> tuple[Frame, Frame, Frame]:
        with term.client(source=ELSEWHERE).connect() as client:
            recharge = client.dd11(100, order_no)
        with term.client(source=ELSEWHERE).connect() as client:
            query = client.dd21(order_no)
        with term.client(source=ELSEWHERE).connect() as client:
            deposit = client.dd73(0x01, term.card().card_no, 100, b"\x00" * 4)
        return recharge, query, deposit

    answers = await asyncio.to_thread(attack)
    assert [(a.stage, a.flow, a.result) for a in answers] == [(0x12, 0xFF, 0xBB), (0x22, 0xFF, 0xBB), (0x74, 0xFF, 0xBB)]
    assert REGISTRY.get_sample_value("recharge_signin_binding_refusals_total") == refusals + 3
    assert (await dd11_from(term, conn, HOME)).result == 0  # the terminal itself is unaffected


async def test_a_terminal_that_moved_signs_in_again_from_its_new_address(
    term: SimTerminal, conn: asyncpg.Connection
) -> None:
    assert (await dd11_from(term, conn, ELSEWHERE)).result == 0xBB
    await asyncio.to_thread(term.client(source=ELSEWHERE).sign_in, term.module())
    assert (await dd11_from(term, conn, ELSEWHERE)).result == 0
    assert (await dd11_from(term, conn, HOME)).result == 0xBB


async def test_a_prefix_binds_the_sign_in_to_a_network_and_zero_lets_terminals_roam(
    term: SimTerminal, conn: asyncpg.Connection, platform: Any
) -> None:
    with settings_changed(platform, dd_signin_bind_ipv4_prefix=24):
        assert (await dd11_from(term, conn, ELSEWHERE)).result == 0  # 127.0.0.0/24
        assert (await dd11_from(term, conn, OTHER_NET)).result == 0xBB
    with settings_changed(platform, dd_signin_bind_ipv4_prefix=0, dd_signin_bind_ipv6_prefix=0):
        assert (await dd11_from(term, conn, OTHER_NET)).result == 0


async def test_each_dd_step_that_changes_something_records_where_it_came_from(
    term: SimTerminal, conn: asyncpg.Connection
) -> None:
    assert await conn.fetchval("SELECT signin_peer FROM terminals WHERE code = $1", term.code) == HOME
    card = term.card(balance_cents=0)
    loaded = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 100)
    loading = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 100)

    def flows() -> None:
        term.client(source=HOME).recharge(card, loaded, 100)
        with term.client(source=HOME).connect() as client:
            fixtures.recharge_until_dd16(client, card, loading, 100)  # MAC2 sent, the connection drops
        term.client(source=ELSEWHERE).sign_in(term.module())  # the terminal moved, then recovers
        with term.client(source=ELSEWHERE).connect() as client:
            proof = client.dd21(loading)
            assert client.dd21_reply(loading, card.run_script(proof.info)).result == 0xA5
        with term.client(source=ELSEWHERE).connect() as client:
            assert client.dd73(0x01, card.card_no, 300, b"\x00" * 4).result == 0  # the challenge is the card's affair

    await asyncio.to_thread(flows)
    rows = {r["order_no"]: (r["load_peer"], r["recovery_peer"]) for r in await conn.fetch(
        "SELECT order_no, load_peer, recovery_peer FROM orders WHERE order_no = ANY($1::text[])", [loaded, loading]
    )}
    assert rows == {loaded: (HOME, None), loading: (HOME, ELSEWHERE)}
    assert await conn.fetchval("SELECT deposit_peer FROM cards WHERE card_no = $1", card.card_no) == ELSEWHERE


PROXY = "127.0.0.9"  # the load balancer's address in the test below


@pytest.fixture
async def behind_a_proxy(settings: Any) -> AsyncIterator[Any]:
    """A platform of its own that trusts 127.0.0.9 as its HAProxy (PROXY protocol v2)."""
    async with platform_of_its_own(settings.replace(trusted_proxies=PROXY)) as running:
        yield running


async def test_behind_a_proxy_the_sign_in_is_bound_to_the_address_the_proxy_names(
    behind_a_proxy: Any, conn: asyncpg.Connection, test_keys: Any
) -> None:
    term = await fixtures.sim_terminal(conn, "127.0.0.1", behind_a_proxy.dd_port, test_keys[0])
    order_no = await fixtures.paid_order(conn, term.merchant_id, term.card().card_no, 100)

    def via_proxy(client_address: str) -> TerminalClient:
        client = term.client(source=PROXY).connect()
        client.send_raw(proxy_protocol.build((client_address, 40001), ("127.0.0.1", behind_a_proxy.dd_port)))
        return client

    def talk() -> list[int]:
        with via_proxy("203.0.113.7") as client:
            client.run(sign_in(client.messages, term.module()))
        results = []
        for client in (via_proxy("198.51.100.9"), term.client(source=HOME).connect(), via_proxy("203.0.113.7")):
            with client:
                results.append(client.dd11(100, order_no).result)
        return results

    assert await asyncio.to_thread(talk) == [0xBB, 0xBB, 0x00]
    assert await conn.fetchval("SELECT signin_peer FROM terminals WHERE code = $1", term.code) == "203.0.113.7"


@pytest.mark.parametrize(
    ("a", "b", "v4", "v6", "same"),
    [
        ("10.1.2.3", "10.1.2.3", 32, 128, True),
        ("10.1.2.3", "10.1.2.4", 32, 128, False),
        ("10.1.2.3", "10.1.2.200", 24, 128, True),
        ("10.1.2.3", "10.1.3.3", 24, 128, False),
        ("10.1.2.3", "192.0.2.1", 0, 128, True),
        ("::ffff:10.1.2.3", "10.1.2.3", 32, 128, True),
        ("2001:db8::1", "2001:db8::2", 32, 64, True),
        ("2001:db8::1", "2001:db8:0:1::1", 32, 64, False),
        ("2001:db8::1", "10.1.2.3", 0, 0, False),
        (None, "10.1.2.3", 32, 128, False),
        (None, None, 32, 128, True),
        ("not an address", "10.1.2.3", 0, 0, False),
        ("10.1.2.3", "10.1.2.4", 99, 128, False),
    ],
)
def test_same_network(a: str | None, b: str | None, v4: int, v6: int, same: bool) -> None:
    assert same_network(a, b, v4, v6) is same

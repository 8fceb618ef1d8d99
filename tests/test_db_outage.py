"""PostgreSQL stops under the platform (``pg_ctl stop -m immediate``), then starts again.

While it is down every channel answers busy at once — DD ``0xDD``, the card service's 51 with
HTTP 503 (REST) or a 503 SOAP fault, the SMS busy text, the order API's 503 — and ``/readyz``
answers 503; within 5 s of the database being back every channel works again, without a
restart of the platform. ``rechargectl serve`` runs against a PostgreSQL of the test's own.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from app import fixtures
from app.demo import DEMO_LICENSE_KEY, DEMO_MERCHANT, DEMO_PKI, DEMO_TERMINAL, demo_private_key_path
from chaos import channels
from chaos.channels import BUSY, OK, Http, Outcome
from chaos.server import ROOT, Served
from chaos.trade_clients import card_reqinfo
from core_ext.virtual_card import VirtualCard
from http_api.order_client import ClientIdentity
from recharge import db
from recharge.keys import MasterKeys, load_keys
from recharge.kkt import cards
from recharge.ledger.audit import audit
from server.terminal_client import TerminalClient

SECRET = "outage-sms-secret"
OPERATOR = "13900001111"
KKT_CARD = "1680115500000126"  # a demo card: active, password 111111
BUSY_WITHIN_S = 3.0  # "quickly": well under a terminal's 10 s timeout
BACK_WITHIN_S = 5.0


@dataclass
class Outage:
    embedded: db.EmbeddedPostgres
    served: Served
    keys: MasterKeys

    @property
    def http(self) -> Http:
        return Http("127.0.0.1", self.served.http_port, timeout_s=10)

    def terminal(self) -> TerminalClient:
        return TerminalClient("127.0.0.1", self.served.dd_port, DEMO_TERMINAL, DEMO_PKI, timeout_s=10)


@pytest.fixture
def outage() -> Iterator[Outage]:
    # Not under pytest's tmp_path (another session resets it to 0700; PostgreSQL runs as another user).
    root = ROOT / "var" / "test-outage" / secrets.token_hex(4)
    embedded = db.EmbeddedPostgres(root / "pgdata")
    served = Served(root / "data", database_url=embedded.uri,
                    env={"RECHARGE_SMS_SHARED_SECRET": SECRET, "RECHARGE_POOL_ACQUIRE_TIMEOUT_S": "2"})
    try:
        served.start()
        asyncio.run(_register_sms_operator(embedded.uri))
        yield Outage(embedded, served, load_keys(root / "data" / "keys.json"))
    finally:
        served.stop()
        embedded.cleanup()
        shutil.rmtree(root, ignore_errors=True)


async def _register_sms_operator(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await cards.upsert_terminal(conn, "S11550001", DEMO_MERCHANT, "sms", msisdn=OPERATOR, actor="test")
    finally:
        await conn.close()


def every_channel(o: Outage, order_no: str, card: VirtualCard) -> dict[str, Callable[[], Outcome]]:
    """One request per channel that succeeds when the platform and its database are up."""
    who = ClientIdentity(7, 1, demo_private_key_path(o.served.data_dir).read_text())
    kkt_query = {"LICENSEKEY": DEMO_LICENSE_KEY, "TRADETYPE": "0011", "TRADEMODE": "0", "CARDNO": KKT_CARD,
                 "CARDPWD": "111111", "POSCODE": DEMO_TERMINAL}

    def dd() -> Outcome:  # DD21: a query of a loaded order (reads the database after the sign-in check)
        def call() -> Outcome:
            with o.terminal() as client:
                result = client.dd21(order_no).result
            return Outcome(channels.dd_result_status(result), f"{result:02X}")

        return channels.timed(call)

    return {
        "dd": dd,
        "kkt_rest": lambda: channels.kkt_rest(o.http, kkt_query),
        "kkt_soap": lambda: channels.kkt_soap(o.http, kkt_query),
        "sms": lambda: channels.sms_command(o.http, SECRET, OPERATOR, f"YECX*{KKT_CARD}", secrets.token_hex(6)),
        "order_api": lambda: channels.create_order(o.http, who, card.card_no, 100, "OUT-" + secrets.token_hex(6),
                                                   card_reqinfo(card)),
    }


def test_database_outage_answers_busy_then_every_channel_recovers_without_a_restart(outage: Outage) -> None:
    o = outage
    o.terminal().sign_in(fixtures.virtual_module(o.keys, DEMO_PKI))
    card = fixtures.virtual_card(o.keys, "1680" + fixtures.random_digits(12))
    order_no = asyncio.run(_paid_order(o.embedded.uri, card.card_no, 500))
    assert o.terminal().recharge(card, order_no, 500).result == 0
    probes = every_channel(o, order_no, card)
    before = {name: probe() for name, probe in probes.items()}
    assert all(r.status == OK for r in before.values()), before
    assert channels.readyz(o.http) == 200
    serving_pid = o.served.pids

    o.embedded.pg_ctl("stop", "-m", "immediate", "-w")
    during = {name: probe() for name, probe in probes.items()}
    slow = {name: round(r.seconds, 2) for name, r in during.items() if r.seconds > BUSY_WITHIN_S}
    assert all(r.status == BUSY for r in during.values()), during
    assert not slow, f"busy answers took too long: {slow}"
    assert channels.readyz(o.http) == 503
    assert o.http.request("GET", "/readyz/node")[0] == 200  # a balancer keeps the node: it answers busy

    o.embedded.revive()
    back_at = time.monotonic()
    recovered: dict[str, float] = {}
    while len(recovered) < len(probes) and time.monotonic() - back_at < 30:
        for name, probe in probes.items():
            if name not in recovered and probe().status == OK:
                recovered[name] = time.monotonic() - back_at
        time.sleep(0.1)
    print(f"recovered after the database came back (s): { {k: round(v, 2) for k, v in recovered.items()} }")
    assert set(recovered) == set(probes), recovered
    assert max(recovered.values()) <= BACK_WITHIN_S, recovered
    assert channels.readyz(o.http) == 200
    assert o.served.running() and o.served.pids == serving_pid, "the platform was not restarted"

    second = asyncio.run(_paid_order(o.embedded.uri, card.card_no, 700))
    assert o.terminal().recharge(card, second, 700).result == 0
    assert card.balance == 1200
    assert asyncio.run(_audit(o.embedded.uri)) is None


async def _paid_order(dsn: str, card_no: str, amount_cents: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE code = $1", DEMO_MERCHANT)
        return await fixtures.paid_order(conn, merchant_id, card_no, amount_cents)
    finally:
        await conn.close()


async def _audit(dsn: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        report = await audit(conn)
    finally:
        await conn.close()
    return None if report.ok else report.render()

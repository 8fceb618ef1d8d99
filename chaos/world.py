"""What the chaos clients work on, provisioned once before the faults start, saved as world.json.

The demo data (``serve --demo``) gives the card-service merchant 1155 with its license key and
POS terminal, and the order API's platform 7 with its key pair. On top of it, per client: a DD
terminal of a funded merchant of its own (its virtual cards live in the client process), a
range of KaKaTong cards activated through the REST gateway, and one SMS operator phone; per mobile
payment client a subscriber with an opened account (known login and pay passwords), an RFID-SIM bound to
its number and a stock of prepaid cards (SPEC 6-7); per SIM wallet client a few such subscribers with cash in
their accounts, a merchant POS and a hall POS terminal (SPEC 7).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app import fixtures
from app.demo import DEMO_LICENSE_KEY, DEMO_MERCHANT, DEMO_TERMINAL, demo_private_key_path
from chaos import channels
from chaos.channels import Http
from recharge.config import Settings
from recharge.keys import load_keys
from recharge.kkt import cards
from recharge.mpay import accounts, credentials, events, postings, registry
from recharge.mpay import cards as mpay_cards
from recharge.mpay.env import Env
from recharge.wallet import cards as sim_cards
from recharge.wallet import terminals
from server import store

PASSWORD = "111111"
SMS_SECRET = "chaos-sms-secret"  # the harness's own gateway secret, set on the platform it starts
SMS_OPERATOR_PREFIX = "1390000"
MPAY_PREFIX = "1390001"  # the mobile payment clients' numbers
MPAY_LOGIN, MPAY_PAY = "Chaos2login9", "246810"
MPAY_FACE_YUAN = 10
WALLET_PREFIX = "1390002"  # the SIM wallet clients' numbers
WALLET_SIMS = 2  # subscribers (each an account and its RFID-SIM) per wallet client
WALLET_CASH_CENTS = 10**9  # each wallet account's cash, what its loads draw on
WALLET_HALL = "HN0001"
ORDER_PLATFORM_RAW, ORDER_CRT_VERSION = 7, 1


@dataclass
class DDTerminal:
    code: str
    pki: str
    merchant_id: int


@dataclass
class World:
    database_url: str
    keys_file: str
    dd_port: int  # the platform's own ports
    http_port: int
    proxy_dd_port: int = 0  # the fault-injecting proxy in front of them (0: none)
    proxy_http_port: int = 0
    license_key: str = DEMO_LICENSE_KEY
    kkt_terminal: str = DEMO_TERMINAL
    merchant_code: str = DEMO_MERCHANT
    sms_secret: str = SMS_SECRET
    password: str = PASSWORD  # every provisioned card-service card's 6-digit password
    http_limit: int = 0  # HTTP connections the platform keeps at most (all workers): the slow client goes past it
    timeout_s: float = 10.0  # every client's deadline for one answer (10 s × the run's --slack)
    workers: int = 1
    dd_limit: int = 0  # DD connections the platform keeps at most (all workers): the slow client fills them
    source: str = ""  # this client process's own loopback address for proxied connections (set by chaos.client)

    @property
    def password_md5(self) -> str:
        return hashlib.md5(self.password.encode()).hexdigest()
    sms_terminals: list[str] = field(default_factory=list)  # one SMS terminal per SMS client (its operator phone)
    order_key_file: str = ""
    dd_terminals: list[DDTerminal] = field(default_factory=list)
    kkt_cards: list[list[str]] = field(default_factory=list)  # one range per card-service client
    sms_cards: list[list[str]] = field(default_factory=list)  # one range per SMS client
    sms_operators: list[str] = field(default_factory=list)  # one phone per SMS client
    order_cards: list[list[str]] = field(default_factory=list)  # CPU cards per order client; the last: probes
    mpay_accounts: list[dict[str, Any]] = field(default_factory=list)  # per mpay client: numbers, SIM, PINs
    wallet_clients: list[dict[str, Any]] = field(default_factory=list)  # per wallet client: SIMs, its two POS

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> World:
        raw: dict[str, Any] = json.loads(path.read_text())
        raw["dd_terminals"] = [DDTerminal(**t) for t in raw["dd_terminals"]]
        return cls(**raw)

    def http(self, via_proxy: bool, timeout_s: float | None = None) -> Http:
        return Http("127.0.0.1", self.proxy_http_port if via_proxy and self.proxy_http_port else self.http_port,
                    timeout_s or self.timeout_s, self.source if via_proxy else "")

    def dd_target(self, via_proxy: bool) -> tuple[str, int]:
        return "127.0.0.1", self.proxy_dd_port if via_proxy and self.proxy_dd_port else self.dd_port


async def _provision_db(world: World, dd_clients: int, card_ranges: int, cards_each: int,
                        order_clients: int) -> list[list[str]]:
    conn = await asyncpg.connect(world.database_url)
    try:
        # CPU cards the order API may take orders for (it refuses cards it never saw)
        world.order_cards = [["1680" + fixtures.random_digits(12) for _ in range(5)] for _ in range(order_clients + 1)]
        for card_no in (c for r in world.order_cards for c in r):
            await store.ensure_cpu_card(conn, card_no)
        for _ in range(dd_clients):
            merchant_id = await fixtures.funded_merchant(conn, await fixtures.fresh_merchant_code(conn), 10**12)
            code, pki = fixtures.random_digits(8), fixtures.random_digits(8)
            await fixtures.dd_terminal(conn, merchant_id, code, pki)
            world.dd_terminals.append(DDTerminal(code, pki, merchant_id))
        ranges = []
        for _ in range(card_ranges):
            batch = await cards.create_card_batch(conn, world.merchant_code, cards_each, actor="chaos")
            first = int(batch.first[-8:])
            ranges.append([cards.card_no_for(world.merchant_code, first + i) for i in range(cards_each)])
        for phone in world.sms_operators:
            terminal = f"S{world.merchant_code}{phone[-4:]}"
            await cards.upsert_terminal(conn, terminal, world.merchant_code, "sms", msisdn=phone, actor="chaos")
            world.sms_terminals.append(terminal)
        return ranges
    finally:
        await conn.close()


async def _provision_mpay(world: World, clients: int, pins_each: int) -> None:
    """Per client: an eligible real-name subscriber, its account opened with known passwords, a bound
    RFID-SIM, ``pins_each`` prepaid cards of 10 yuan (Hunan, the accepted province)."""
    env = Env.of(Settings(), load_keys(Path(world.keys_file)))
    conn = await asyncpg.connect(world.database_url)
    try:
        for n in range(clients):
            msisdn, sim = f"{MPAY_PREFIX}{n:04d}", "7310" + fixtures.random_digits(12)
            body = {"province": "430000", "brand": "GOTONE", "status": "normal", "name": "混沌",
                    "id_type": "id_card", "id_number": "430102199001011234"}
            rows = [mpay_cards.CardRow(f"43000180{fixtures.random_digits(9)}", "18" + fixtures.random_digits(16),
                                       MPAY_FACE_YUAN * 100, "430000", dt.date(2099, 12, 31)) for _ in range(pins_each)]
            async with conn.transaction():
                await events.set_subscribers(conn, env, [registry.validate(msisdn, body)], "chaos")
                account = (await accounts.open_account(conn, env, msisdn)).account
                for kind, password in (("login", MPAY_LOGIN), ("pay", MPAY_PAY)):
                    await credentials.replace(conn, env.hasher, account["id"], kind, password, initial=False)
                await sim_cards.add_stock(conn, [sim])
                await sim_cards.bind(conn, [(msisdn, sim)])
                await mpay_cards.import_pool(conn, env, rows)
            world.mpay_accounts.append({"msisdn": msisdn, "account_id": int(account["id"]), "sim": sim,
                                        "login_password": MPAY_LOGIN, "pay_password": MPAY_PAY,
                                        "pins": [[r.serial, r.pin, r.face_cents] for r in rows]})
    finally:
        await conn.close()


async def _provision_wallet(world: World, clients: int) -> None:
    """Per client: ``WALLET_SIMS`` subscribers, each an opened account with cash and a pay password and an
    RFID-SIM bound to its number (the wallet itself is opened over STK by the client); a merchant POS terminal of
    a merchant of its own and a hall POS terminal."""
    env = Env.of(Settings(), load_keys(Path(world.keys_file)))
    conn = await asyncpg.connect(world.database_url)
    try:
        for n in range(clients):
            sims = []
            for k in range(WALLET_SIMS):
                msisdn, card = f"{WALLET_PREFIX}{n:02d}{k:02d}", "7310" + fixtures.random_digits(12)
                body = {"province": "430000", "brand": "GOTONE", "status": "normal"}
                async with conn.transaction():
                    await events.set_subscribers(conn, env, [registry.validate(msisdn, body)], "chaos")
                    account_id = int((await accounts.open_account(conn, env, msisdn)).account["id"])
                    await credentials.replace(conn, env.hasher, account_id, "pay", MPAY_PAY, initial=False)
                    await sim_cards.add_stock(conn, [card])
                    await sim_cards.bind(conn, [(msisdn, card)])
                    hall, cash = (await postings.account_id(conn, f"HALL/{WALLET_HALL}"),
                                  await postings.account_id(conn, f"C/{account_id}"))
                    await postings.must(conn, [postings.Move(f"chaos:cash:{account_id}", hall, cash,
                                                             WALLET_CASH_CENTS, "mpay_cash", WALLET_HALL)])
                sims.append({"card": card, "msisdn": msisdn, "account_id": account_id})
            shop, hall_pos = fixtures.random_digits(12), fixtures.random_digits(12)
            await terminals.register(conn, [terminals.Terminal(shop, merchant="M" + fixtures.random_digits(7)),
                                            terminals.Terminal(hall_pos, hall=WALLET_HALL)])
            world.wallet_clients.append({"sims": sims, "pay_password": MPAY_PAY, "merchant_pos": shop,
                                         "hall_pos": hall_pos})
    finally:
        await conn.close()


def _activate(world: World, card_no: str) -> None:
    api = world.http(via_proxy=False, timeout_s=30)
    params = {"method": "aCRequest", "LICENSEKEY": world.license_key, "CARDNO": card_no, "CARDPWD": world.password,
              "POSCODE": world.kkt_terminal, "COPNO": world.merchant_code}
    status, _, body = api.request("GET", "/s/get?" + urllib.parse.urlencode(params))
    if status != 200 or b"<Result>11</Result>" not in body:
        raise RuntimeError(f"activating {card_no}: HTTP {status} {body[:200]!r}")


def provision(world: World, data_dir: Path, *, dd_clients: int, kkt_clients: int, sms_clients: int,
              order_clients: int, mpay_clients: int = 0, wallet_clients: int = 0, pins_each: int = 100,
              cards_each: int = 12) -> World:
    """Create everything the clients need (once, before any fault) and return the world."""
    world.order_key_file = str(demo_private_key_path(data_dir))
    world.sms_operators = [f"{SMS_OPERATOR_PREFIX}{n:04d}" for n in range(sms_clients)]
    ranges = asyncio.run(_provision_db(world, dd_clients, kkt_clients + sms_clients, cards_each, order_clients))
    for card_range in ranges:
        for card_no in card_range:
            _activate(world, card_no)
    world.kkt_cards, world.sms_cards = ranges[:kkt_clients], ranges[kkt_clients:]
    if mpay_clients:
        asyncio.run(_provision_mpay(world, mpay_clients, pins_each))
    if wallet_clients:
        asyncio.run(_provision_wallet(world, wallet_clients))
    return world


def ready(world: World) -> bool:
    return channels.readyz(world.http(via_proxy=False)) == 200

"""Load-test set-up: merchants, DD terminals, orders and API identities, written to a plan file.

``provision`` runs before Locust starts (``loadtest.run``): it registers ``terminals`` DD
terminals spread over load-test merchants (codes ``9000``–``9099``, funded recharge
funds), gives each terminal its own card number and ``orders_per_terminal`` unpaid orders
(the platform pays them at DD11, as it does in production), registers an order-API
platform with a key pair for the HTTP users, and writes everything the Locust users need
to a JSON plan. The plan names the master key file, never the keys: the users read the
key file themselves (demo keys only — virtual cards are a test tool).

Terminal and merchant codes are fixed by index, so a second run on the same database
reuses them (sign-in state and failure counts reset); orders are always new.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app import demo, fixtures
from loadtest import mpay_provision, wallet_provision
from recharge import db
from recharge.config import Settings
from recharge.orders import lifecycle as orders
from recharge.orders import platforms as order_platforms

MERCHANT_PREFIX = "90"  # load-test merchants 9000–9099
TERMINALS_PER_MERCHANT = 10  # a shop has a few terminals; the fund row is shared by them
FUND_CENTS = 10_000_000_000  # 100 million yuan per load-test merchant: never the bottleneck
ORDER_PLATFORM_RAW = "990001"
ORDER_PLATFORM_MERCHANT = "9199"
ORDER_API_CARDS = 10_000  # CPU cards 16809199 00000000… the order-API users order for (registered)
ORDER_CRT_VERSION = "1"
SMS_OPERATOR_MSISDN = "13900000000"
SMS_TERMINAL_CODE = "1155SMS1"
PROVISION_CONCURRENCY = 8  # database connections used to create orders


@dataclass
class PlannedTerminal:
    code: str
    pki: str
    card_no: str
    orders: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What the Locust users read (``LOADTEST_PLAN``): where to connect and as whom."""

    dd_host: str
    dd_port: int
    key_file: str
    amount_cents: int
    terminals: list[PlannedTerminal]
    order_api: dict[str, Any]
    kkt: dict[str, Any]
    sms: dict[str, Any]
    mpay: dict[str, Any] = field(default_factory=dict)
    wallet: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Plan:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["terminals"] = [PlannedTerminal(**t) for t in raw["terminals"]]
        return cls(**raw)


def terminal_identity(index: int) -> tuple[str, str, str, str]:
    """(merchant code, terminal code, PKI number, card number) of load-test terminal ``index``."""
    merchant = f"{MERCHANT_PREFIX}{index // TERMINALS_PER_MERCHANT % 100:02d}"
    return merchant, f"{merchant}{index:04d}", f"9{index:07d}", f"1680{merchant}{index:08d}"


async def _terminals(pool: asyncpg.Pool, count: int) -> list[PlannedTerminal]:
    planned: list[PlannedTerminal] = []
    async with pool.acquire() as conn, conn.transaction():
        merchant_ids: dict[str, int] = {}
        for index in range(count):
            merchant, code, pki, card = terminal_identity(index)
            if merchant not in merchant_ids:
                merchant_ids[merchant] = await fixtures.funded_merchant(
                    conn, merchant, FUND_CENTS, name=f"load test merchant {merchant}"
                )
            await fixtures.dd_terminal(conn, merchant_ids[merchant], code, pki)
            planned.append(PlannedTerminal(code, pki, card))
        await conn.execute("UPDATE terminals SET signed_in_until = NULL WHERE code = ANY($1::text[])",
                           [t.code for t in planned])
    return planned


async def _orders(pool: asyncpg.Pool, planned: list[PlannedTerminal], per_terminal: int, amount_cents: int,
                  expiry_s: int) -> None:
    """``per_terminal`` unpaid orders for each terminal's card, a few connections at a time."""
    queue: asyncio.Queue[PlannedTerminal] = asyncio.Queue()
    for terminal in planned:
        queue.put_nowait(terminal)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expiry_s)

    async def worker() -> None:
        while not queue.empty():
            terminal = queue.get_nowait()
            merchant = terminal_identity(int(terminal.code[4:]))[0]
            async with pool.acquire() as conn, conn.transaction():
                merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE code = $1", merchant)
                for _ in range(per_terminal):
                    created = await orders.create_order(
                        conn, merchant_id=merchant_id, amount_cents=amount_cents, card_no=terminal.card_no,
                        pay=False, expires_at=expires,
                    )
                    terminal.orders.append(created.order.order_no)

    await asyncio.gather(*(worker() for _ in range(PROVISION_CONCURRENCY)))


async def _order_api(conn: asyncpg.Connection, settings: Settings, work_dir: Path) -> dict[str, Any]:
    """A load-test order-API platform with a key pair (the private key stays in ``work_dir``)."""
    key_path = work_dir / "order_platform_key.pem"
    if key_path.exists():
        public_pem = order_platforms.public_key_of_private_file(key_path)
    else:
        public_pem = order_platforms.generate_key_pair(key_path, bits=settings.order_api_min_rsa_bits)
    platform = await order_platforms.register_platform(
        conn, platform_raw=ORDER_PLATFORM_RAW, name="load test platform", merchant_code=ORDER_PLATFORM_MERCHANT,
        pki_no=None,
    )
    await fixtures.funded_merchant(conn, ORDER_PLATFORM_MERCHANT, FUND_CENTS)
    card_prefix = "1680" + ORDER_PLATFORM_MERCHANT
    await fixtures.register_cpu_cards(conn, [f"{card_prefix}{i:08d}" for i in range(ORDER_API_CARDS)])
    await order_platforms.add_public_key(
        conn, platform.id, ORDER_CRT_VERSION, public_pem, min_bits=settings.order_api_min_rsa_bits
    )
    return {"platform_raw": int(ORDER_PLATFORM_RAW), "crt_version": int(ORDER_CRT_VERSION),
            "private_key_file": str(key_path.resolve()), "card_prefix": card_prefix, "cards": ORDER_API_CARDS}


async def _sms_operator(conn: asyncpg.Connection) -> None:
    """An SMS terminal of the demo merchant, so the SMS user acts as its operator."""
    from recharge.kkt import cards

    await cards.upsert_terminal(conn, SMS_TERMINAL_CODE, demo.DEMO_MERCHANT, "sms", msisdn=SMS_OPERATOR_MSISDN,
                                actor="loadtest")


async def provision(
    dsn: str, settings: Settings, *, terminals: int, orders_per_terminal: int, amount_cents: int,
    dd_host: str, dd_port: int, work_dir: Path,
) -> Plan:
    """Create what the users need (the demo data must be seeded already) and return the plan."""
    pool = await db.create_pool(dsn, settings.replace(pool_min_size=1, pool_max_size=PROVISION_CONCURRENCY))
    try:
        planned = await _terminals(pool, terminals)
        await _orders(pool, planned, orders_per_terminal, amount_cents, settings.order_expiry_s)
        async with pool.acquire() as conn:
            order_api = await _order_api(conn, settings, work_dir)
            await _sms_operator(conn)
            mpay = await mpay_provision.provision(conn, settings, work_dir)
            wallet = await wallet_provision.provision(conn, settings)
    finally:
        await pool.close()
    from recharge.kkt import cards

    return Plan(
        dd_host=dd_host,
        dd_port=dd_port,
        key_file=str(settings.resolved_key_file.resolve()),
        amount_cents=amount_cents,
        terminals=planned,
        order_api=order_api,
        kkt={"license_key": demo.DEMO_LICENSE_KEY, "merchant": demo.DEMO_MERCHANT, "terminal": demo.DEMO_TERMINAL,
             "cards": [c for c in cards.DEMO_CARDS if c != cards.DEMO_INACTIVE_CARD],
             "password": cards.DEMO_PASSWORD},
        sms={"from": SMS_OPERATOR_MSISDN, "to": "10658000",
             "cards": [c for c in cards.DEMO_CARDS if c != cards.DEMO_INACTIVE_CARD]},
        mpay=mpay,
        wallet=wallet,
    )

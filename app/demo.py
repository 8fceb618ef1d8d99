"""The demo data of SPEC 5 and seed 002's test section, created idempotently.

Merchant 1155, its POS terminal 11552001 (also a DD recharge terminal with PKI number
70000472), license key ``NV41VDlSNldhFTFeYw0z``, a funded recharge fund, and the demo
cards; the mobile payment account's demo data (``app.mpay_demo``). The master keys are the
demo-only ones generated into the data folder. With a data folder, also the console's demo
administrator ``admin``, whose one-time password goes to ``<data_dir>/console-admin-password.txt``
(mode 0600), never to a log.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from app import mpay_demo, wallet_demo
from recharge import merchants
from recharge.keys import MasterKeys
from recharge.kkt import cards
from recharge.ledger import transfers as ledger
from recharge.operators import accounts
from recharge.orders import platforms

DEMO_MERCHANT = "1155"
DEMO_MERCHANT_NAME = "卡卡通测试商户"
DEMO_TERMINAL = "11552001"
DEMO_PKI = "70000472"
DEMO_LICENSE_KEY = "NV41VDlSNldhFTFeYw0z"
DEMO_FUND_CENTS = 100_000_000  # 1,000,000.00 yuan in the demo merchant's recharge fund
DEMO_ADMIN = "admin"  # the console's demo administrator


def admin_password_file(data_dir: Path) -> Path:
    return data_dir / "console-admin-password.txt"


async def seed_console_admin(conn: asyncpg.Connection, data_dir: Path) -> bool:
    """Create the demo administrator unless it exists; its one-time password goes to a file
    only the owner can read. True when created now."""
    if await conn.fetchval("SELECT 1 FROM operators WHERE name = $1", DEMO_ADMIN):
        return False
    try:
        _, password = await accounts.add_operator(conn, DEMO_ADMIN, "admin", actor="demo")
    except accounts.OperatorError:  # created meanwhile by another process
        return False
    path = admin_password_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(password + "\n")
    return True


async def external_account(conn: asyncpg.Connection, ledger_name: str = "CNY") -> int:
    """The platform's boundary account (bank side); the only kind that may go negative."""
    return await ledger.ensure_account(
        conn, ledger=ledger_name, kind=ledger.AccountKind.EXTERNAL, no_overdraft=False, name="external"
    )


async def fund_recharge_fund(conn: asyncpg.Connection, merchant_id: int, amount: int, transfer_id: str) -> int:
    """Top a merchant's recharge fund up from the external account; returns the fund's id."""
    fund = await ledger.ensure_account(
        conn, ledger="CNY", kind=ledger.AccountKind.RECHARGE_FUND, merchant_id=merchant_id, name="recharge fund"
    )
    topup = ledger.NewTransfer(transfer_id, await external_account(conn), fund, amount, code="fund_topup")
    (await ledger.create_transfers(conn, [topup]))[0].check(transfer_id)
    return fund


async def seed(conn: asyncpg.Connection, keys: MasterKeys, data_dir: Path | None = None) -> None:
    """Create (or leave as they are) the demo merchant, terminal, license key and fund.

    With ``data_dir``, also the order API's example platform 7, its key pair generated there.
    """
    async with conn.transaction():
        merchant_id = await merchants.ensure_merchant(conn, DEMO_MERCHANT, DEMO_MERCHANT_NAME)
        await conn.execute(
            "INSERT INTO terminals (code, merchant_id, kind, pki_no) VALUES ($1, $2, 'pos', $3)"
            " ON CONFLICT (code) DO NOTHING",
            DEMO_TERMINAL,
            merchant_id,
            DEMO_PKI,
        )
        await conn.execute(
            "INSERT INTO license_keys (license_key, merchant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            DEMO_LICENSE_KEY,
            merchant_id,
        )
        await fund_recharge_fund(conn, merchant_id, DEMO_FUND_CENTS, f"demo:fund:{DEMO_MERCHANT}")
        await cards.seed_demo(conn, keys, merchant_id, DEMO_TERMINAL)
        await wallet_demo.seed(conn)
        if data_dir is not None:
            await seed_demo_platform(conn, data_dir)
            await mpay_demo.seed(conn, keys, data_dir)
    if data_dir is not None:
        await seed_console_admin(conn, data_dir)


DEMO_PLATFORM_RAW = "7"  # seed 004: "7 自行车", the public-bicycle platform
DEMO_PLATFORM_NAME = "公共自行车 (public bicycle, demo)"
DEMO_CRT_VERSION = "1"


def demo_private_key_path(data_dir: Path) -> Path:
    return data_dir / "order-api" / "platform7_private.pem"


async def seed_demo_platform(conn: asyncpg.Connection, data_dir: Path, *, min_bits: int = 2048) -> Path | None:
    """Platform 7 of the demo merchant, its key pair generated into the data folder.

    The private key stays in ``<data_dir>/order-api/`` (demo only, never in the repo); the
    database holds the public key. Returns the private key's path, or None when crt_version
    1 of platform 7 already holds a key that file does not match (left as it is).
    """
    path = demo_private_key_path(data_dir)
    public = platforms.public_key_of_private_file(path) if path.exists() else platforms.generate_key_pair(path)
    platform = await platforms.register_platform(
        conn, platform_raw=DEMO_PLATFORM_RAW, name=DEMO_PLATFORM_NAME, merchant_code=DEMO_MERCHANT,
        pki_no=DEMO_PKI,
    )
    try:
        await platforms.add_public_key(conn, platform.id, DEMO_CRT_VERSION, public, min_bits=min_bits)
    except platforms.PlatformError:
        return None
    return path

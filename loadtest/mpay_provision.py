"""What the mobile payment Locust users need: subscribers with open accounts whose passwords
are known, a merchant with its key pair (the private key stays in the load test's work
folder), all created through the domain (``recharge.mpay``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from Crypto.PublicKey import RSA

from recharge.config import Settings
from recharge.keys import load_keys
from recharge.mpay import accounts, credentials, events, merchants, registry
from recharge.mpay.env import Env

ACCOUNTS = 20
MSISDN_PREFIX = "1370000"  # 13700000000 … : the load test's own subscribers
LOGIN_PASSWORD = "Load1234"
PAY_PASSWORD = "135790"
MERCHANT = "LOADMER1"


async def provision(conn: asyncpg.Connection, settings: Settings, work_dir: Path) -> dict[str, Any]:
    env = Env.of(settings, load_keys(settings.resolved_key_file))
    numbers = [f"{MSISDN_PREFIX}{i:04d}" for i in range(ACCOUNTS)]
    async with conn.transaction():
        for number in numbers:
            if await accounts.live_by_msisdn(conn, number) is not None:
                continue
            sub = registry.validate(number, {"name": "压测", "id_type": "id_card", "id_number": f"L{number}",
                                             "province": "430000"})
            await events.set_subscribers(conn, env, [sub], "loadtest")
            opened = await accounts.open_account(conn, env, number)
            for kind, password in (("login", LOGIN_PASSWORD), ("pay", PAY_PASSWORD)):
                await credentials.replace(conn, env.hasher, opened.account["id"], kind, password, initial=False)
        key_path = work_dir / "mpay_merchant_key.pem"
        if not key_path.exists():
            key_path.parent.mkdir(parents=True, exist_ok=True)
            key_path.write_bytes(RSA.generate(2048).export_key())
        public = RSA.import_key(key_path.read_bytes()).publickey().export_key().decode("ascii")
        await merchants.add(conn, MERCHANT, "压测商户", "GENERAL", public)
    return {"msisdns": numbers, "login_password": LOGIN_PASSWORD, "merchant": MERCHANT,
            "merchant_key_file": str(key_path.resolve())}

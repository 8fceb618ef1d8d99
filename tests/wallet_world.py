"""Test support for the SIM wallet: real mobile payment accounts (SPEC 6) with a bound RFID-SIM each, the
wallet's virtual devices keyed like the platform under test."""

from __future__ import annotations

import secrets

import asyncpg

from core_ext.virtual_sim import STATE_OPEN, VirtualRfidSim, WalletMasterKeys
from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.mpay import accounts, events, registry
from recharge.mpay.env import Env


def digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def virtual_keys(keys: MasterKeys) -> WalletMasterKeys:
    """The platform's wallet master keys, handed to the virtual SIMs, PSAMs and POS terminals."""
    assert keys.wallet is not None
    return WalletMasterKeys(**{n: getattr(keys.wallet, n) for n in ("load", "purchase", "tac", "maint", "stk", "pos")})


async def account_with_sim(conn: asyncpg.Connection, settings: Settings, keys: MasterKeys, *,
                           balance: int = 50_000, limit: int = 100_000) -> tuple[VirtualRfidSim, int]:
    """An eligible subscriber's opened account and an open wallet SIM bound to its number (set up through the
    domain, as the counter's swap and the STK opening would leave them)."""
    msisdn = "139" + digits(8)
    env = Env.of(settings, keys)
    body = {"province": "430000", "brand": "GOTONE", "status": "normal", "name": "张三", "id_type": "id_card",
            "id_number": "430102199001011234"}
    async with conn.transaction():
        await events.set_subscribers(conn, env, [registry.validate(msisdn, body)], "test")
        opened = await accounts.open_account(conn, env, msisdn)
        card_no = "7310" + digits(12)
        await conn.execute("INSERT INTO wallet_cards (card_no, status, msisdn, account_id) VALUES ($1, 'bound', $2, $3)",
                           card_no, msisdn, opened.account["id"])
    sim = VirtualRfidSim(card_no, virtual_keys(keys), balance=balance, state=STATE_OPEN, limit=limit)
    return sim, int(opened.account["id"])

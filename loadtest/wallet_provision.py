"""What the SIM wallet Locust users need (``loadtest.wallet_users``): fresh wallets for every run — a subscriber,
its account, a bound RFID-SIM with an open wallet whose shadow holds what the card holds (cash recharged at the
hall and moved ``C → W`` as a posted load leaves it) — and a merchant POS terminal per wallet, all created
through the domain. Fresh cards and terminals each run, so sequence numbers, offline serials and TTS start over
without meeting an earlier run's."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from recharge.config import Settings
from recharge.keys import load_keys
from recharge.mpay import accounts, events, postings, registry
from recharge.mpay.env import Env
from recharge.wallet import cards, terminals

WALLETS = 20
CARD_BALANCE = 100_000  # 1,000.00 yuan on each card (the cap)
LIMIT = 100_000  # the single-purchase limit written on the cards
MERCHANT = "LOADWLT1"
HALL = "LOADHALL"
MSISDN_PREFIX = "1371"


async def _wallet(conn: asyncpg.Connection, env: Env, run: str, i: int) -> dict[str, Any]:
    msisdn = f"{MSISDN_PREFIX}{run}{i:03d}"
    card_no, terminal_id = f"7310{run}{i:03d}{secrets.randbelow(10**5):05d}", f"{run}{i:03d}{secrets.randbelow(10**5):05d}"
    sub = registry.validate(msisdn, {"name": "压测", "id_type": "id_card", "id_number": f"W{msisdn}",
                                     "province": "430000", "brand": "GOTONE"})
    await events.set_subscribers(conn, env, [sub], "loadtest")
    account = await accounts.live_by_msisdn(conn, msisdn) or (await accounts.open_account(conn, env, msisdn)).account
    await cards.add_stock(conn, [card_no])
    await cards.bind(conn, [(msisdn, card_no)])
    await conn.execute("UPDATE wallet_cards SET account_id = $2 WHERE card_no = $1", card_no, account["id"])
    await conn.execute(
        "INSERT INTO wallets (account_id, card_no, state, limit_cents) VALUES ($1, $2, 'open', $3)"
        " ON CONFLICT (account_id) DO UPDATE SET card_no = $2, state = 'open', limit_cents = $3", account["id"],
        card_no, LIMIT)
    shadow = await postings.account_id(conn, f"W/{account['id']}")
    balance = (await postings.buckets(conn, shadow))[shadow].posted
    if CARD_BALANCE - balance > 0:  # the shadow holds what the new card holds
        hall = await postings.account_id(conn, f"HALL/{HALL}")
        await postings.must(conn, [postings.Move(f"loadtest:cash:{card_no}", hall, account["cash_account"],
                                                 CARD_BALANCE - balance, "mpay_cash", HALL)])
        await postings.must(conn, [postings.Move(f"loadtest:load:{card_no}", account["cash_account"], shadow,
                                                 CARD_BALANCE - balance, "wallet_load")])
    await terminals.register(conn, [terminals.Terminal(terminal_id, merchant=MERCHANT)])
    return {"msisdn": msisdn, "card_no": card_no, "balance": CARD_BALANCE, "limit": LIMIT, "terminal_id": terminal_id}


async def provision(conn: asyncpg.Connection, settings: Settings) -> dict[str, Any]:
    """The plan's ``wallet`` part: ``{wallets: [{msisdn, card_no, balance, limit, terminal_id}, …]}``, empty
    when the platform has no SIM wallet keys."""
    keys = load_keys(settings.resolved_key_file)
    if keys.wallet is None:
        return {"wallets": []}
    env = Env.of(settings, keys)
    run = f"{secrets.randbelow(10**4):04d}"
    async with conn.transaction():
        return {"wallets": [await _wallet(conn, env, run, i) for i in range(WALLETS)]}

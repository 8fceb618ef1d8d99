"""Closing an account at the customer's request (SPEC 6.6 Close; XH, web, 10086, counter).

Checks in order: the number ``normal`` (``2008``), the account ``normal`` (6.7), the wallet
cancelled or never opened (``2011``, asked of ``WALLET_CHECKS``), no pending transfer or
open bank order (``2013``), cash = card = 0 posted (``2012``); then the channel's
credential (pay password; counter: ID and OTP). A ``created`` payment does not block.
"""

from __future__ import annotations

import asyncpg

from recharge.mpay import accounts, events, matrix, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env

WALLET_CHECKS = accounts.WALLET_CHECKS  # (conn, account) → True while its wallet is open (SPEC 7 adds its check)


async def _open_bank_orders(conn: asyncpg.Connection, account_id: int) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM mpay_bank_orders WHERE account_id = $1 AND state = 'open' AND expires_at > now() LIMIT 1",
        account_id,
    )
    return found is not None


async def check(conn: asyncpg.Connection, account: asyncpg.Record, channel: str) -> None:
    sub = await registry.get(conn, account["msisdn"]) if account["msisdn"] else None
    if sub is None or sub.status != "normal":
        raise Refused("2008")
    matrix.require(account, "pay_reset_close", channel)
    if await accounts.wallet_open(conn, account):
        raise Refused("2011")
    if not await accounts.nothing_pending(conn, account) or await _open_bank_orders(conn, account["id"]):
        raise Refused("2013")
    figures = await accounts.balances(conn, account)
    if figures.cash != 0 or figures.card != 0:
        raise Refused("2012")


async def close(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, *, notify: bool) -> None:
    """Close after ``check`` and the credential passed (the SMS channel replies instead of notifying)."""
    if notify:
        await events.close(conn, env, account)
        return
    await conn.execute("UPDATE mpay_tokens SET revoked = true WHERE account_id = $1", account["id"])
    await accounts.set_status(conn, account["id"], "closed", detach=True)

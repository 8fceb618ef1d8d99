"""Wallet cancellation at the counter (退订, SPEC 7.7; C16: the counter moves the balance), in the caller's
transaction.

- ``POST /counter/wallet-cancel`` (``permit``): the number in the registry and not cancelled (``2008``), a live
  account (``2003``), not frozen (``2005``), a wallet open or paused (``5001``), the ID given equal to the
  registry's (``3007``, last); then the counter's hall may buy that wallet out for ``wallet_cancel_permit_s``
  (10 min; a new permit replaces the last). ``data`` = ``{expires_at}``.
- ``POST /pos/wallet-cancels`` (``hall_cancel``): the buy-out checks of ``recharge.wallet.buyouts`` with the
  permit as the route's own (``1004``: none, expired, or another hall's); then the whole balance ``W → C``,
  waiting loads void, the wallet ``cancelled``, the permit used up, the SMS, and the script writing ``03`` ‖
  limit under the card's challenge. ``data`` = ``{amount, script, text}``.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from recharge import metrics
from recharge.mpay import accounts, outbox, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import yuan
from recharge.wallet import buyouts, closing
from recharge.wallet.clearing import Books
from recharge.wallet.crypto import STATE_CANCELLED, WalletCrypto
from recharge.wallet.swaps import registry_id_matches
from recharge.wallet.terminals import Terminal
from recharge.wallet.wire import Record

CANCELLED_SMS = "手机钱包已注销,余额{amt}元已转入手机支付现金账户。"


async def permit(conn: asyncpg.Connection, env: Env, msisdn: str, id_type: str, id_number: str, *, hall: str,
                 operator_id: str) -> dt.datetime:
    """The counter's step; ``Refused`` before anything is written; when the permit expires."""
    sub = await registry.get(conn, msisdn)
    if sub is None or sub.status == "cancelled":
        raise Refused("2008")
    account = await accounts.live_by_msisdn(conn, msisdn, lock=True)
    if account is None:
        raise Refused("2003")
    if account["status"] == "frozen":
        raise Refused("2005")
    state = await conn.fetchval("SELECT state FROM wallets WHERE account_id = $1", account["id"])
    if state not in ("open", "paused"):
        raise Refused("5001")
    if not registry_id_matches(sub, id_type, id_number):
        raise Refused("3007")
    expires = await conn.fetchval(
        "INSERT INTO wallet_cancel_permits (account_id, hall, operator_id, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
        " ON CONFLICT (account_id) DO UPDATE SET hall = $2, operator_id = $3, expires_at = EXCLUDED.expires_at,"
        " created_at = now() RETURNING expires_at",
        account["id"], hall, operator_id, float(env.settings.wallet_cancel_permit_s),
    )
    assert isinstance(expires, dt.datetime)
    return expires


async def hall_cancel(conn: asyncpg.Connection, env: Env, crypto: WalletCrypto, books: Books, terminal: Terminal,
                      record: Record, challenge: bytes) -> dict[str, object]:
    """The hall POS's buy-out; ``Refused`` before anything is written, else ``{amount, script, text}``."""
    async def permitted(account: asyncpg.Record) -> None:
        found = await conn.fetchval(
            "SELECT 1 FROM wallet_cancel_permits WHERE account_id = $1 AND hall = $2 AND expires_at > now()",
            account["id"], terminal.hall,
        )
        if not found:
            raise Refused("1004")

    bo = await buyouts.check(conn, crypto, terminal, record, permitted)
    account_id, amount, limit = bo.account["id"], record.amount, bo.wallet["limit_cents"]
    await buyouts.take(conn, books, bo, "cancel")
    await closing.void_waiting(conn, account_id, "wallet_cancel")
    await conn.execute("UPDATE wallets SET state = 'cancelled', updated_at = now() WHERE account_id = $1", account_id)
    await conn.execute("DELETE FROM wallet_cancel_permits WHERE account_id = $1", account_id)
    text = CANCELLED_SMS.format(amt=yuan(amount))
    await outbox.notify(conn, env.keys, bo.account, text)
    metrics.WALLET_CANCELS.labels("counter").inc()
    script = crypto.state_write_script(record.card, challenge, STATE_CANCELLED, limit)
    return {"amount": amount, "script": script, "text": text}

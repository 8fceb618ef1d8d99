"""Mobile payment accounts (SPEC 6.2): opening, finding, locking, balances.

One live account (``normal``/``locked``/``frozen``) per MSISDN, with a generated alias
(``mp`` + 8 digits), a cash bucket ``C/<id>`` and a prepaid-card bucket ``K/<id>`` in the
ledger (``recharge.mpay.postings``). Other rooms (the SIM wallet) find an account with
``live_by_msisdn`` / ``by_id`` (``lock=True``: the row lock every operation on the account
takes before its checks) and read its figures with ``balances``.

Account rows are asyncpg records of ``mpay_accounts``; the columns are the API.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from recharge.mpay import credentials, outbox, postings, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.keyring import MpayKeys

LIVE = ("normal", "locked", "frozen")
CLOSED_SMS = "您的手机支付账户已注销,感谢使用!"
# (conn, account) → True while the account's wallet is open (SPEC 7 registers its check here).
WalletCheck = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[bool]]
WALLET_CHECKS: list[WalletCheck] = []
OPEN_SMS = "手机支付登录密码{lp},支付密码{pp},别名{alias}。请尽快登录网站修改并删除本短信。"
GENERATED_ALIAS_RE = re.compile(r"mp[0-9]{8}", re.IGNORECASE)
CHOSEN_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9]{5,19}")


async def live_by_msisdn(conn: asyncpg.Connection, msisdn: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM mpay_accounts WHERE msisdn = $1{' FOR UPDATE' if lock else ''}", msisdn
    )


async def by_id(conn: asyncpg.Connection, account_id: int, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM mpay_accounts WHERE id = $1{' FOR UPDATE' if lock else ''}", account_id
    )


async def by_alias(conn: asyncpg.Connection, alias: str, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM mpay_accounts WHERE lower(alias) = lower($1){' FOR UPDATE' if lock else ''}", alias
    )


async def by_login(conn: asyncpg.Connection, login: str) -> asyncpg.Record | None:
    """Login by MSISDN (live accounts) or alias, case-insensitive (a detached one by alias only)."""
    if re.fullmatch(r"1[3-9][0-9]{9}", login):
        return await live_by_msisdn(conn, login)
    if 1 <= len(login) <= 20 and login.isascii() and login.isalnum():
        return await by_alias(conn, login)
    return None


@dataclass(frozen=True, slots=True)
class Figures:
    """Posted balances and pending debits of C and K; ``available`` = Σ posted − pending debits."""

    cash: int
    card: int
    cash_pending: int
    card_pending: int

    @property
    def available(self) -> int:
        return self.cash - self.cash_pending + self.card - self.card_pending

    @property
    def cash_available(self) -> int:
        return self.cash - self.cash_pending

    @property
    def card_available(self) -> int:
        return self.card - self.card_pending


async def balances(conn: asyncpg.Connection, account: asyncpg.Record) -> Figures:
    found = await postings.buckets(conn, account["cash_account"], account["card_account"])
    cash, card = found[account["cash_account"]], found[account["card_account"]]
    return Figures(cash.posted, card.posted, cash.pending_debits, card.pending_debits)


async def _new_alias(conn: asyncpg.Connection) -> str:
    while True:
        alias = "mp" + "".join(secrets.choice("0123456789") for _ in range(8))
        if await conn.fetchval("SELECT 1 FROM mpay_aliases WHERE alias = $1", alias) is None:
            return alias


@dataclass(frozen=True, slots=True)
class Opened:
    account: asyncpg.Record
    alias: str
    kind: str


async def check_can_open(conn: asyncpg.Connection, msisdn: str) -> registry.Subscriber:
    """``2002`` when a live account exists, then ``2001`` when the number is not eligible."""
    if await live_by_msisdn(conn, msisdn) is not None:
        raise Refused("2002")
    sub = await registry.get(conn, msisdn, lock=True)
    if sub is None or not sub.eligible:
        raise Refused("2001")
    return sub


async def open_account(conn: asyncpg.Connection, env: Env, msisdn: str) -> Opened:
    """Open the account of an eligible number (checks first); the initial passwords and the
    alias go out as one sensitive SMS. Runs in the caller's transaction."""
    sub = await check_can_open(conn, msisdn)
    alias = await _new_alias(conn)
    login_pw, pay_pw = credentials.generate("login"), credentials.generate("pay")
    account_id = await conn.fetchval("SELECT nextval('mpay_accounts_id_seq')")
    cash = await postings.account_id(conn, f"C/{account_id}")
    card = await postings.account_id(conn, f"K/{account_id}")
    kind = "real_name" if sub.real_name else "non_real_name"
    row = await conn.fetchrow(
        "INSERT INTO mpay_accounts (id, msisdn, alias, kind, status, province, cash_account, card_account,"
        " login_hash, pay_hash) VALUES ($1, $2, $3, $4, 'normal', $5, $6, $7, $8, $9) RETURNING *",
        account_id, msisdn, alias, kind, sub.province, cash, card,
        await env.hasher.hash(login_pw), await env.hasher.hash(pay_pw),
    )
    await conn.execute("INSERT INTO mpay_aliases (alias, account_id) VALUES ($1, $2)", alias.lower(), account_id)
    await outbox.notify(conn, env.keys, row, OPEN_SMS.format(lp=login_pw, pp=pay_pw, alias=alias), sensitive=True)
    return Opened(row, alias, kind)


async def nothing_pending(conn: asyncpg.Connection, account: asyncpg.Record) -> bool:
    """No pending transfer on C or K (and none on the wallet shadow, if any)."""
    found = await conn.fetchval(
        "SELECT 1 FROM transfers t JOIN accounts a ON a.id IN (t.debit_account_id, t.credit_account_id)"
        " WHERE a.kind = 'mpay' AND a.card_no = ANY($1::text[]) AND t.kind = 'pending' AND t.status = 'pending'"
        " LIMIT 1",
        [f"C/{account['id']}", f"K/{account['id']}", f"W/{account['id']}"],
    )
    return found is None


async def set_status(
    conn: asyncpg.Connection, account_id: int, status: str, *, lock_reason: str | None = None,
    detach: bool = False,
) -> asyncpg.Record:
    """Change an account's status (a detached account keeps its MSISDN as ``former_msisdn``)."""
    row = await conn.fetchrow(
        "UPDATE mpay_accounts SET status = $2, lock_reason = $3,"
        " former_msisdn = CASE WHEN $4 THEN coalesce(msisdn, former_msisdn) ELSE former_msisdn END,"
        " msisdn = CASE WHEN $4 THEN NULL ELSE msisdn END,"
        " closed_at = CASE WHEN $2 = 'closed' THEN now() ELSE closed_at END, updated_at = now()"
        " WHERE id = $1 RETURNING *",
        account_id, status, lock_reason, detach,
    )
    assert row is not None
    return row


async def wallet_open(conn: asyncpg.Connection, account: asyncpg.Record) -> bool:
    for check in WALLET_CHECKS:
        if await check(conn, account):
            return True
    return False


async def close_if_settled(conn: asyncpg.Connection, keys: MpayKeys, account_id: int) -> bool:
    """C8: a ``pending_closure`` account closes in the transaction that leaves cash and card at
    zero with nothing pending and its wallet closed. Returns True when it closed."""
    account = await by_id(conn, account_id, lock=True)
    if account is None or account["status"] != "pending_closure":
        return False
    figures = await balances(conn, account)
    if figures.cash or figures.card or not await nothing_pending(conn, account) or await wallet_open(conn, account):
        return False
    row = await set_status(conn, account_id, "closed", detach=True)
    await outbox.notify(conn, keys, row, CLOSED_SMS)
    return True

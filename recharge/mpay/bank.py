"""Bank recharges (SPEC 6.6): orders on the website, signed notices from the bank gateways.

An order (bank of 6.2, 1.00–5,000.00, into ``account`` or ``wallet``) is ``open`` for 30
minutes. A gateway (``icbc``, ``unionpay``) notifies with a form signed RSASSA-PKCS1-v1_5 /
SHA-256 over the other non-empty fields sorted by key as ``k=v`` joined by ``&``. Every
verified notice is stored once by (gw, order_id, result, bank_serial) and answered ``OK``;
the bank is authoritative: a success posts ``BANK/<bank> → C`` whatever the order's state
(a closed account's money goes to ``SUSPENSE``), a success of another amount goes to
``SUSPENSE``; a failure fails an open order; a failure after a success or a second success
changes nothing. An order ``into`` the wallet passes 7.3's load checks when it is made, and its
success makes a waiting load (``C → W``, driven at the next STK or hall POS contact) if the wallet
is still open then.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncpg
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

from recharge import metrics
from recharge.mpay import accounts, matrix, outbox, postings
from recharge.mpay.banks import BANKS, GATEWAYS, gateway_of
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import yuan

RECHARGED_SMS = "您已成功充值{amt}元至手机支付现金账户,现金账户余额{bal}元。"
MIN_CENTS, MAX_CENTS = 100, 500_000
ORDER_TTL = dt.timedelta(minutes=30)
FIELDS = ("order_id", "amount", "result", "bank_serial", "paid_at")
_SERIAL_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_AMOUNT_RE = re.compile(r"[0-9]{1,12}")  # cents, ASCII digits (str.isdigit also takes "²", int() does not)
_PAID_AT_RE = re.compile(r"[0-9]{14}")  # YYYYMMDDhhmmss, Shanghai


def signed_text(form: Mapping[str, str]) -> bytes:
    """``k=v&…`` of the non-empty fields but ``sign``, sorted by key (byte order)."""
    items = sorted((k, v) for k, v in form.items() if k != "sign" and v != "")
    return "&".join(f"{k}={v}" for k, v in items).encode("utf-8")


def sign_form(private_key_pem: str | bytes, form: Mapping[str, str]) -> str:
    """What a bank computes (the simulated bank, tests, the demo)."""
    key = RSA.import_key(private_key_pem)
    return base64.b64encode(pkcs1_15.new(key).sign(SHA256.new(signed_text(form)))).decode("ascii")


def verified(public_key_pem: str, form: Mapping[str, str]) -> bool:
    try:
        signature = base64.b64decode(form.get("sign", ""), validate=True)
        pkcs1_15.new(RSA.import_key(public_key_pem)).verify(SHA256.new(signed_text(form)), signature)
    except (ValueError, TypeError, binascii.Error):
        return False
    return True


async def set_gateway_key(conn: asyncpg.Connection, gateway: str, public_key_pem: str) -> None:
    if gateway not in GATEWAYS:
        raise ValueError(f"gateway must be one of {', '.join(GATEWAYS)}")
    key = RSA.import_key(public_key_pem)
    if key.has_private() or key.size_in_bits() < 2048:
        raise ValueError("a public RSA key of at least 2048 bits is needed")
    await conn.execute("INSERT INTO mpay_gateways (id, public_key_pem) VALUES ($1, $2) ON CONFLICT (id)"
                       " DO UPDATE SET public_key_pem = $2", gateway, public_key_pem)


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    gateway: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class WalletLoads:
    """What online banking into the SIM wallet needs of SPEC 7's loads (the composition root registers
    ``recharge.wallet.bank_loads`` in ``WALLET``, as the wallet's closure check: mpay does not import
    the wallet that stands on it). ``check_order`` raises 7.3's creation refusals at the order;
    ``queue`` makes the waiting load at the notice, or answers None (the money stays in cash)."""

    check_order: Callable[[asyncpg.Connection, Env, asyncpg.Record, int], Awaitable[None]]
    queue: Callable[[asyncpg.Connection, Env, int, int, str], Awaitable[str | None]]


WALLET: list[WalletLoads] = []


async def create_order(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, bank: str, amount: int,
                       into: str) -> Order:
    """An ``open`` order: 6.7's recharge cell and the amount; into the wallet 7.3's creation checks
    (wallet ``5001``/``5002``, 6.7, ``5006``, the load's amount ``4001``, the cap ``5003``) too."""
    if bank not in BANKS or into not in ("account", "wallet"):
        raise Refused("1001")
    if into == "wallet":
        if not WALLET:
            raise Refused("5001")  # no SIM wallet on this platform
        await WALLET[0].check_order(conn, env, account, amount)
    matrix.require(account, "recharge", "web")
    if not MIN_CENTS <= amount <= MAX_CENTS:
        raise Refused("4001")
    order_id = "b" + secrets.token_hex(12)
    gateway = gateway_of(bank)
    row = await conn.fetchrow(
        "INSERT INTO mpay_bank_orders (id, account_id, bank, gateway, amount, into_, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, now() + $7) RETURNING expires_at",
        order_id, account["id"], bank, gateway, amount, into, ORDER_TTL,
    )
    return Order(order_id, gateway, row["expires_at"])


def _well_formed(form: Mapping[str, str]) -> bool:
    """Every field as SPEC 6.6 has it; ``paid_at`` (kept, not used) may be left out or empty."""
    paid_at = form.get("paid_at", "")
    return (bool(_SERIAL_RE.fullmatch(form.get("order_id", ""))) and bool(_AMOUNT_RE.fullmatch(form.get("amount", "")))
            and form.get("result") in ("S", "F")
            and bool(_SERIAL_RE.fullmatch(form.get("bank_serial", "")))
            and (paid_at == "" or bool(_PAID_AT_RE.fullmatch(paid_at))))


async def notice(conn: asyncpg.Connection, env: Env, gateway: str, form: Mapping[str, str]) -> bool:
    """Handle one notice; False (``FAIL``) for an unknown gateway or a bad signature, nothing stored."""
    key = await conn.fetchval("SELECT public_key_pem FROM mpay_gateways WHERE id = $1", gateway)
    if key is None or not verified(key, form) or not _well_formed(form):
        return False
    inserted = await conn.fetchval(
        "INSERT INTO mpay_bank_notices (gateway, order_id, result, bank_serial, amount, paid_at, outcome)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT DO NOTHING RETURNING id",
        gateway, form["order_id"], form["result"], form["bank_serial"], int(form["amount"]), form.get("paid_at"),
    )
    if inserted is None:
        return True  # a repeat: stored once, answered OK, nothing changes
    outcome, transfer_id = await _apply(conn, env, gateway, form, inserted)
    await conn.execute("UPDATE mpay_bank_notices SET outcome = $2, transfer_id = $3 WHERE id = $1",
                       inserted, outcome, transfer_id)
    return True


async def _apply(conn: asyncpg.Connection, env: Env, gateway: str, form: Mapping[str, str], notice_id: int
                 ) -> tuple[str, str | None]:
    order = await conn.fetchrow("SELECT * FROM mpay_bank_orders WHERE id = $1 AND gateway = $2 FOR UPDATE",
                                form["order_id"], gateway)
    if order is None:
        return "unknown_order", None
    if form["result"] == "F":
        if order["state"] == "open":
            await conn.execute("UPDATE mpay_bank_orders SET state = 'failed' WHERE id = $1", order["id"])
            return "failed", None
        return "ignored", None
    if order["state"] == "paid":
        return "ignored", None
    amount = int(form["amount"])
    bank_account = await postings.account_id(conn, f"BANK/{order['bank']}")
    transfer_id = f"mpay:bank:{gateway}:{notice_id}"
    account = await accounts.by_id(conn, order["account_id"], lock=True)
    assert account is not None
    if amount != order["amount"] or account["status"] == "closed" or amount <= 0:
        if amount > 0:
            await postings.must(conn, [postings.Move(transfer_id, bank_account,
                                                     await postings.account_id(conn, "SUSPENSE"), amount,
                                                     "mpay_bank_suspense", order["id"])])
        if amount == order["amount"]:
            await conn.execute("UPDATE mpay_bank_orders SET state = 'paid', paid_at = now() WHERE id = $1", order["id"])
        metrics.MPAY_BANK_SUSPENSE.inc()
        return "suspense", transfer_id if amount > 0 else None
    await postings.must(conn, [postings.Move(transfer_id, bank_account, account["cash_account"], amount,
                                             "mpay_bank", order["id"])])
    await conn.execute("UPDATE mpay_bank_orders SET state = 'paid', paid_at = now() WHERE id = $1", order["id"])
    figures = await accounts.balances(conn, account)
    await outbox.notify(conn, env.keys, account, RECHARGED_SMS.format(amt=yuan(amount), bal=yuan(figures.cash)))
    if order["into_"] == "wallet" and WALLET:  # the waiting load's request key names the order
        await WALLET[0].queue(conn, env, account["id"], amount, order["id"])
    return "posted", transfer_id

"""The business-hall counter (营业厅, SPEC 6.4 and 6.6): one-time codes to the customer's phone,
opening and closing an account on the ID shown, cash paid in at the counter.

Both counter channels call these functions — the ``/mpay/v1/counter`` JSON API and the
console's counter pages — so neither holds a rule of its own. A clerk is an operator with the
API role ``counter`` bound to a hall (``recharge.operators``, one identity); every write is in
``operator_actions`` with the clerk, the hall and the required reason, committed with it. The
caller's transaction runs the checks in SPEC 6.12's order; a refusal (``Refused``) is raised
after writing nothing but attempt counters (``recharge.mpay.unit.atomic`` commits those).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from recharge.mpay import accounts, closure, matrix, otp, outbox, postings, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import compact, yuan
from recharge.operators.actions import record_action

CASH_SMS = "您已在营业厅现金充值{amt}元,现金账户余额{bal}元。"
CASH_MIN, CASH_MAX = 100, 500_000  # 1.00-5,000.00 yuan (SPEC 6.6 Counter cash)
PURPOSES = ("open", "close")


@dataclass(frozen=True, slots=True)
class Clerk:
    """Who acts at the counter: the operator's name, hall, the actor written in the audit trail
    (``mpay:<name>`` over the API, ``console:<name>`` in the console) and the API token, if any."""

    name: str
    hall: str
    actor: str
    token_id: int | None = None

    async def record(self, conn: asyncpg.Connection, action: str, subject: str, reason: str,
                     **detail: object) -> None:
        if not reason.strip():
            raise Refused("1001")  # a counter write needs its reason
        await record_action(conn, self.actor, action, subject, reason.strip(), hall=self.hall,
                            token_id=self.token_id, **detail)


async def id_matches(conn: asyncpg.Connection, number: str, id_type: str, id_number: str) -> None:
    """The ID shown must be the registry's (BOSS) real-name data, else ``3007``."""
    sub = await registry.get(conn, number)
    if sub is None or not sub.real_name or sub.id_type != id_type or \
            compact(sub.id_number or "") != compact(id_number):
        raise Refused("3007")


async def send_otp(conn: asyncpg.Connection, env: Env, number: str, purpose: str) -> dt.datetime:
    """An OTP to the customer's phone for opening (``营业厅开户``) or closing (``营业厅销户``);
    returns when it expires."""
    if purpose == "open":
        await accounts.check_can_open(conn, number)
    elif purpose == "close":
        if await accounts.live_by_msisdn(conn, number) is None:
            raise Refused("2003")
    else:
        raise Refused("1001")
    return await otp.issue(conn, env, number, f"counter_{purpose}", number)


async def open_account(conn: asyncpg.Connection, env: Env, clerk: Clerk, number: str, id_type: str, id_number: str,
                       code: str, reason: str) -> accounts.Opened:
    """Open the account of ``number``: eligible, no live account, the ID equal to the registry's,
    the OTP (last). The initial passwords and alias go to the phone by SMS."""
    await accounts.check_can_open(conn, number)
    await id_matches(conn, number, id_type, id_number)
    if not reason.strip():
        raise Refused("1001")
    await otp.verify(conn, env, "counter_open", number, code)
    opened = await accounts.open_account(conn, env, number)
    await clerk.record(conn, "mpay_counter_open", number, reason, alias=opened.alias)
    return opened


async def close_account(conn: asyncpg.Connection, env: Env, clerk: Clerk, number: str, id_type: str, id_number: str,
                        code: str, reason: str) -> None:
    """Close the account of ``number`` (SPEC 6.6 Close: its checks, then the ID and the OTP)."""
    account = await accounts.live_by_msisdn(conn, number, lock=True)
    if account is None:
        raise Refused("2003")
    await closure.check(conn, account, "counter")
    await id_matches(conn, number, id_type, id_number)
    if not reason.strip():
        raise Refused("1001")
    await otp.verify(conn, env, "counter_close", number, code)
    await closure.close(conn, env, account, notify=True)
    await clerk.record(conn, "mpay_counter_close", number, reason)


async def take_cash(conn: asyncpg.Connection, env: Env, clerk: Clerk, number: str, amount: int, request_key: str,
                    reason: str) -> int:
    """Cash paid in at the counter: ``HALL/<hall> → C`` (idempotent by ``request_key``), the SMS;
    returns the cash balance after."""
    account = await accounts.live_by_msisdn(conn, number, lock=True)
    if account is None:
        raise Refused("2003")
    matrix.require(account, "recharge", "counter")
    if not CASH_MIN <= amount <= CASH_MAX:
        raise Refused("4001")
    transfer_id = f"mpay:cash:{clerk.name}:{request_key}"
    hall = await postings.account_id(conn, f"HALL/{clerk.hall}")
    await postings.must(conn, [postings.Move(transfer_id, hall, account["cash_account"], amount, "mpay_cash",
                                             clerk.hall)])
    figures = await accounts.balances(conn, account)
    await outbox.notify(conn, env.keys, account, CASH_SMS.format(amt=yuan(amount), bal=yuan(figures.cash)))
    await clerk.record(conn, "mpay_counter_cash", number, reason, amount=amount, transfer=transfer_id)
    return figures.cash

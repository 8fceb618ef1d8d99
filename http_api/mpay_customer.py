"""The website's endpoints (SPEC 6.13 "anyone" and "customer"): opening, login, the account's
own pages and operations, paying a merchant's payment. Each handler reads the logged-in
account under its row lock and calls the domain (``recharge.mpay``); nothing here decides
a business rule.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from aiohttp import web

from http_api.mpay_gate import Call, Endpoint, endpoint
from recharge.mpay import (
    accounts,
    bills,
    binding,
    cards,
    closure,
    credentials,
    history,
    matrix,
    otp,
    payments,
    profile,
    security,
    sessions,
    withdrawals,
)
from recharge.mpay.codes import Refused
from recharge.mpay.text import SHANGHAI, day_start, mask_name, today
from recharge.wallet import wallets


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).isoformat(timespec="seconds")


async def me(call: Call) -> asyncpg.Record:
    """The caller's account, locked for the operation."""
    assert call.session is not None and call.session.account_id is not None
    account = await accounts.by_id(call.conn, call.session.account_id, lock=True)
    if account is None:
        raise Refused("1003")
    return account


# --- anyone
async def auth_otp(call: Call) -> dict[str, Any]:
    msisdn, purpose = call.fields["msisdn"], call.fields["purpose"]
    if purpose == "open":
        await accounts.check_can_open(call.conn, msisdn)
    elif purpose == "login_reset":
        if await accounts.live_by_msisdn(call.conn, msisdn) is None:
            raise Refused("2003")
    else:
        raise Refused("1001")
    return {"expires_at": rfc3339(await otp.issue(call.conn, call.env, msisdn, purpose, msisdn))}


async def auth_open(call: Call) -> dict[str, Any]:
    if call.fields["agree"] is not True:
        raise Refused("1001")
    msisdn = call.fields["msisdn"]
    await accounts.check_can_open(call.conn, msisdn)
    await otp.verify(call.conn, call.env, "open", msisdn, call.fields["otp"])
    opened = await accounts.open_account(call.conn, call.env, msisdn)
    return {"alias": opened.alias, "kind": opened.kind}


async def auth_login(call: Call) -> dict[str, Any]:
    issued, initial = await sessions.login(call.conn, call.env, call.fields["login"], call.fields["password"],
                                           call.client)
    return {"token": issued.token, "expires_at": rfc3339(issued.expires_at), "must_change_password": initial}


async def auth_login_reset(call: Call) -> dict[str, Any]:
    found = await accounts.by_login(call.conn, call.fields["login"])
    if found is None or found["msisdn"] is None:
        raise Refused("3007" if found is not None else "2003")
    account = await accounts.by_id(call.conn, found["id"], lock=True)
    assert account is not None
    await profile.check_login_reset(call.conn, account, "web")
    await otp.verify(call.conn, call.env, "login_reset", account["msisdn"], call.fields["otp"])
    await profile.reset_login(call.conn, call.env, account, "web")
    return {}


# --- customer
async def auth_logout(call: Call) -> dict[str, Any]:
    assert call.session is not None
    await sessions.revoke(call.conn, call.session.token_id)
    return {}


async def me_profile(call: Call, account: asyncpg.Record | None = None) -> dict[str, Any]:
    account = account or await me(call)
    card = withdrawals.card_of(account)
    name = None
    if account["msisdn"]:
        sub = await call.conn.fetchval("SELECT name FROM mpay_subscribers WHERE msisdn = $1", account["msisdn"])
        name = mask_name(sub) if sub else None
    return {
        "msisdn": account["msisdn"] or account["former_msisdn"], "alias": account["alias"], "kind": account["kind"],
        "status": account["status"], "lock_reason": account["lock_reason"], "name_masked": name,
        "bank_card": {"bank": card["bank"], "last4": card["number"][-4:]} if card else None,
        "wallet": await wallets.summary(call.conn, account["id"]),
    }


async def balance_of(call: Call, account: asyncpg.Record) -> dict[str, Any]:
    f = await accounts.balances(call.conn, account)
    return {"cash_balance": f.cash, "card_balance": f.card, "cash_pending": f.cash_pending,
            "card_pending": f.card_pending, "available": f.available}


async def me_balance(call: Call) -> dict[str, Any]:
    return await balance_of(call, await me(call))


def _date_param(call: Call, name: str, default: dt.date) -> dt.date:
    raw = call.request.query.get(name)
    if raw is None:
        return default
    try:
        return dt.date.fromisoformat(raw) if len(raw) == 10 else _bad_date()
    except ValueError:
        return _bad_date()


def _bad_date() -> dt.date:
    raise Refused("4001")


async def history_of(call: Call, account: asyncpg.Record) -> dict[str, Any]:
    until = _date_param(call, "to", today())
    since = _date_param(call, "from", until - dt.timedelta(days=90))
    if since > until:
        raise Refused("4001")
    before = None
    cursor = call.request.query.get("cursor")
    if cursor:
        stamp, _, tid = cursor.partition("~")
        try:
            before = (dt.datetime.fromisoformat(stamp), tid)
        except ValueError:
            raise Refused("1001") from None
    items = await history.entries(call.conn, account, day_start(since), day_start(until + dt.timedelta(days=1)),
                                  limit=50, before=before)
    next_cursor = f"{items[-1].created_at.isoformat()}~{items[-1].id}" if len(items) == 50 else None
    return {"items": [{"id": e.id, "created_at": rfc3339(e.created_at), "type": e.type, "amount": e.amount,
                       "bucket": e.bucket, "state": e.state} for e in items], "next_cursor": next_cursor}


async def me_history(call: Call) -> dict[str, Any]:
    return await history_of(call, await me(call))


async def password_login(call: Call) -> dict[str, Any]:
    account = await me(call)
    assert call.session is not None
    await profile.change(call.conn, call.env, account, "login", call.fields["old"], call.fields["new"],
                         keep_token=call.session.token_id)
    return {}


async def password_pay(call: Call) -> dict[str, Any]:
    account = await me(call)
    matrix.require(account, "pay_change_security", "web")
    assert call.session is not None
    await profile.change(call.conn, call.env, account, "pay", call.fields["old"], call.fields["new"],
                         keep_token=call.session.token_id)
    return {}


async def me_alias(call: Call) -> dict[str, Any]:
    return {"alias": await profile.set_alias(call.conn, await me(call), call.fields["alias"])}


async def recharge_card(call: Call) -> dict[str, Any]:
    account = await me(call)
    done = await cards.recharge(call.conn, call.env, account, account["msisdn"] or account["alias"],
                                call.fields["pin"], "web")
    return {"amount": done.amount, "card_balance": done.card_balance}


async def bank_card(call: Call) -> dict[str, Any]:
    f = call.fields
    card = binding.card_fields(f["bank"], f["province"], f["city"], f["branch"], f["number"], f["holder"])
    return await binding.bind(call.conn, call.env, await me(call), card, f["pay_password"])


async def withdraw(call: Call) -> dict[str, Any]:
    account = await me(call)
    now = await call.conn.fetchval("SELECT now()")
    credentials.ensure_usable(account, "pay", now)
    card = await withdrawals.check(call.conn, account, "web")
    amount = await withdrawals.check_amount(call.conn, account, call.fields["amount"])
    await credentials.check(call.conn, call.env.hasher, call.env.policy, account, "pay", call.fields["pay_password"],
                            now)
    withdrawal_id, _ = await withdrawals.submit(call.conn, call.env, account, card, amount, "web")
    return {"withdrawal_id": withdrawal_id, "state": "submitted"}


async def hf(call: Call) -> dict[str, Any]:
    paid = await bills.pay(call.conn, call.env, await me(call), call.fields["target"], call.fields["amount"], "web",
                           call.fields["pay_password"])
    return {"bucket": paid.bucket, "amount": paid.amount}


async def close(call: Call) -> dict[str, Any]:
    account = await me(call)
    await closure.check(call.conn, account, "web")
    now = await call.conn.fetchval("SELECT now()")
    credentials.ensure_usable(account, "pay", now)
    await credentials.check(call.conn, call.env.hasher, call.env.policy, account, "pay", call.fields["pay_password"],
                            now)
    await closure.close(call.conn, call.env, account, notify=True)
    return {}


# --- paying a merchant
async def payment_show(call: Call) -> dict[str, Any]:
    payment = await payments.load(call.conn, call.request.match_info["id"], await me(call))
    name = await call.conn.fetchval("SELECT name FROM mpay_merchants WHERE id = $1", payment["merchant_id"])
    return {"payment_id": payment["id"], "merchant_name": name, "amount": payment["amount"],
            "state": payment["state"], "otp_required": payments.otp_required(payment),
            "expires_at": rfc3339(payment["expires_at"])}


async def payment_otp(call: Call) -> dict[str, Any]:
    expires = await payments.reserve(call.conn, call.env, call.request.match_info["id"], await me(call), "web")
    return {"otp_expires_at": rfc3339(expires)}


async def payment_confirm(call: Call) -> dict[str, Any]:
    paid = await payments.confirm(call.conn, call.env, call.request.match_info["id"], await me(call),
                                  call.fields["pay_password"], call.fields["otp"], "web")
    return {"state": paid["state"], "bucket": paid["bucket"]}


# --- security centre
async def security_set(call: Call) -> dict[str, Any]:
    await security.set_questions(call.conn, call.env, await me(call), call.fields["pay_password"],
                                 call.fields["questions"])
    return {}


async def pay_reset(call: Call) -> dict[str, Any]:
    await security.web_pay_reset(call.conn, call.env, await me(call), call.fields["answers"])
    return {}


async def me_otp(call: Call) -> dict[str, Any]:
    account = await me(call)
    purpose, number = call.fields["purpose"], call.fields["msisdn"]
    if purpose == "security_phone" and number is not None:
        matrix.require(account, "pay_change_security", "web")
        obj = f"{account['id']}:{number}"
    elif purpose == "real_name" and number is None:
        await profile.check_upgrade(call.conn, account, "web")
        number, obj = account["msisdn"], str(account["id"])
    else:
        raise Refused("1001")
    return {"expires_at": rfc3339(await otp.issue(call.conn, call.env, number, purpose, obj))}


async def security_phone(call: Call) -> dict[str, Any]:
    account = await me(call)
    matrix.require(account, "pay_change_security", "web")
    number = call.fields["msisdn"]
    await otp.verify(call.conn, call.env, "security_phone", f"{account['id']}:{number}", call.fields["otp"])
    await call.conn.execute("UPDATE mpay_accounts SET security_phone = $2 WHERE id = $1", account["id"], number)
    return {}


async def real_name(call: Call) -> dict[str, Any]:
    account = await me(call)
    await profile.check_upgrade(call.conn, account, "web")
    await otp.verify(call.conn, call.env, "real_name", str(account["id"]), call.fields["otp"])
    await profile.upgrade(call.conn, call.env, account, "web")
    return {"kind": "real_name"}


ROUTES: list[tuple[str, str, Endpoint]] = [
    ("POST", "/auth/otp", Endpoint(auth_otp, fields={"msisdn": "msisdn", "purpose": "str"}, request_id=False)),
    ("POST", "/auth/open", Endpoint(auth_open, fields={"msisdn": "msisdn", "otp": "digits", "agree": "bool"},
                                    request_id=False)),
    ("POST", "/auth/login", Endpoint(auth_login, fields={"login": "str", "password": "str"}, request_id=False)),
    ("POST", "/auth/login-reset", Endpoint(auth_login_reset, fields={"login": "str", "otp": "digits"},
                                           request_id=False)),
    ("POST", "/auth/logout", Endpoint(auth_logout, "customer", request_id=False, initial_ok=True)),
    ("GET", "/me", Endpoint(me_profile, "customer")),
    ("GET", "/me/balance", Endpoint(me_balance, "customer")),
    ("GET", "/me/history", Endpoint(me_history, "customer")),
    ("POST", "/me/password/login", Endpoint(password_login, "customer", {"old": "str", "new": "str"},
                                            initial_ok=True)),
    ("POST", "/me/password/pay", Endpoint(password_pay, "customer", {"old": "digits", "new": "str"})),
    ("PUT", "/me/alias", Endpoint(me_alias, "customer", {"alias": "str"}, request_id=False)),
    ("POST", "/me/recharges/card", Endpoint(recharge_card, "customer", {"pin": "digits"})),
    ("PUT", "/me/bank-card", Endpoint(bank_card, "customer", {
        "bank": "str", "province": "digits", "city": "digits", "branch": "str", "number": "digits", "holder": "str",
        "pay_password": "digits"}, request_id=False)),
    ("POST", "/me/withdrawals", Endpoint(withdraw, "customer", {"amount": "cents", "pay_password": "digits"})),
    ("POST", "/me/hf", Endpoint(hf, "customer", {"target": "msisdn", "amount": "cents", "pay_password": "digits"})),
    ("POST", "/me/close", Endpoint(close, "customer", {"pay_password": "digits"})),
    ("PUT", "/me/security", Endpoint(security_set, "customer", {"pay_password": "digits", "questions": "answers"},
                                     request_id=False)),
    ("POST", "/me/password/pay/reset", Endpoint(pay_reset, "customer", {"answers": "answers"})),
    ("POST", "/me/otp", Endpoint(me_otp, "customer", {"purpose": "str", "msisdn?": "msisdn"})),
    ("PUT", "/me/security/phone", Endpoint(security_phone, "customer", {"msisdn": "msisdn", "otp": "digits"},
                                           request_id=False)),
    ("POST", "/me/real-name", Endpoint(real_name, "customer", {"otp": "digits"})),
    ("GET", "/payments/{id}", Endpoint(payment_show, "customer")),
    ("POST", "/payments/{id}/otp", Endpoint(payment_otp, "customer")),
    ("POST", "/payments/{id}/confirm", Endpoint(payment_confirm, "customer",
                                                {"pay_password": "digits", "otp?": "digits"})),
]


def setup(app: web.Application) -> None:
    for method, path, ep in ROUTES:
        app.router.add_route(method, path, endpoint(ep))

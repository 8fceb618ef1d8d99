"""The staff channels (SPEC 6.4, 6.13): operators' login, ops, the BOSS registry feed, the
business-hall counter, 10086 agents, the IVRs, and the demo SMS sink and delivery reports.

Roles: ``/registry`` needs ``boss``, ``/counter`` ``counter`` (its hall), ``/cs`` ``cs``,
``/ops`` ``ops`` (else ``1004``); every operator write is in ``operator_actions`` with
operator, token and reason, and a write that moves money or changes a status (registry PUT,
counter open, close and cash, 10086 close, freeze, unfreeze, withdrawal void) requires its ``reason``
(missing or blank: ``1001``). 10086 and the IVRs act on the account of header ``X-ANI`` (a detached one by
``alias``). The rules are the domain's; handlers only find the account and call it.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from http_api.mpay_customer import balance_of, history_of, me_profile, rfc3339
from http_api.mpay_gate import Call, Endpoint, endpoint
from recharge.mpay import (
    accounts,
    cards,
    closure,
    counter,
    credentials,
    events,
    matrix,
    outbox,
    profile,
    registry,
    security,
    sessions,
    withdrawals,
)
from recharge.mpay.codes import Refused
from recharge.mpay.text import compact, msisdn


async def _log(call: Call, action: str, subject: str, reason: str = "", **detail: object) -> None:
    """The write in ``operator_actions`` (committed with it); ``reason`` defaults to the request's."""
    assert call.operator is not None and call.session is not None
    reason = reason or (call.fields.get("reason") or "").strip()
    await sessions.log_action(call.conn, call.operator["id"], call.session.token_id, action, subject, reason,
                              **detail)


async def ops_login(call: Call) -> dict[str, Any]:
    issued, row = await sessions.operator_login(call.conn, call.env, call.fields["operator"],
                                                call.fields["password"], call.client)
    return {"token": issued.token, "expires_at": rfc3339(issued.expires_at), "role": row["role"], "hall": row["hall"]}


async def _by_login(call: Call, login: str) -> asyncpg.Record:
    found = await accounts.by_login(call.conn, login)
    if found is None:
        raise Refused("2003")
    locked = await accounts.by_id(call.conn, found["id"], lock=True)
    assert locked is not None
    return locked


async def ops_freeze(call: Call) -> dict[str, Any]:
    account = await _by_login(call, call.request.match_info["login"])
    row = await events.freeze(call.conn, call.env, account, call.fields["reason"])
    await _log(call, "mpay_freeze", account["alias"], call.fields["reason"])
    return {"status": row["status"]}


async def ops_unfreeze(call: Call) -> dict[str, Any]:
    account = await _by_login(call, call.request.match_info["login"])
    row = await events.unfreeze(call.conn, call.env, account)
    await _log(call, "mpay_unfreeze", account["alias"], call.fields["reason"])
    return {"status": row["status"]}


async def ops_void_withdrawal(call: Call) -> dict[str, Any]:
    row = await call.conn.fetchrow("SELECT * FROM mpay_withdrawals WHERE id = $1 FOR UPDATE",
                                   call.request.match_info["id"])
    if row is None or row["state"] != "submitted":
        raise Refused("4011")
    await withdrawals.settle(call.conn, call.env, row, "voided", reason=call.fields["reason"])
    await _log(call, "mpay_withdrawal_void", row["id"], call.fields["reason"])
    return {"state": "voided"}


async def ops_sms_sink(call: Call) -> dict[str, Any]:
    if call.env.settings.mpay_outbox_url:
        raise Refused("1004")  # a real SMSC is configured: the sink is demo only
    number = msisdn(call.request.query.get("msisdn", ""))
    if number is None:
        raise Refused("1001")
    items = await outbox.drain_sink(call.conn, call.env.keys, number)
    return {"items": [{"id": i, "created_at": t, "text": text} for i, t, text in items]}


# --- BOSS
def _record(sub: registry.Subscriber) -> dict[str, Any]:
    return {k: v for k, v in sub.record().items()}


async def registry_put(call: Call) -> dict[str, Any]:
    number = msisdn(call.request.match_info["msisdn"])
    if number is None:
        raise Refused("1001")
    sub = registry.validate(number, {k: v for k, v in call.fields.items() if k != "reason"})
    change = (await events.set_subscribers(call.conn, call.env, [sub], f"op:{call.operator['id']}"
                                           if call.operator else "op"))[0]
    await _log(call, "mpay_registry_put", number, status=sub.status, events=change.events)
    return {"record": _record(sub), "created": change.created, "events": change.events}


async def registry_get(call: Call) -> dict[str, Any]:
    number = msisdn(call.request.match_info["msisdn"])
    sub = await registry.get(call.conn, number) if number else None
    if sub is None:
        raise Refused("2008")
    return {"record": _record(sub)}


# --- counter (its hall): recharge.mpay.counter, shared with the console's counter pages
def _clerk(call: Call) -> counter.Clerk:
    assert call.operator is not None and call.session is not None
    return counter.Clerk(call.operator["id"], call.operator["hall"], f"mpay:{call.operator['id']}",
                         call.session.token_id)


async def counter_otp(call: Call) -> dict[str, Any]:
    return {"expires_at": rfc3339(await counter.send_otp(call.conn, call.env, call.fields["msisdn"],
                                                         call.fields["purpose"]))}


async def counter_open(call: Call) -> dict[str, Any]:
    f = call.fields
    opened = await counter.open_account(call.conn, call.env, _clerk(call), f["msisdn"], f["id_type"], f["id_number"],
                                        f["otp"], f["reason"])
    return {"alias": opened.alias, "kind": opened.kind}


async def counter_close(call: Call) -> dict[str, Any]:
    f = call.fields
    await counter.close_account(call.conn, call.env, _clerk(call), f["msisdn"], f["id_type"], f["id_number"],
                                f["otp"], f["reason"])
    return {}


async def counter_cash(call: Call) -> dict[str, Any]:
    rid = call.request.headers.get("X-Request-Id")
    assert rid  # the gate requires it on every POST here
    cash = await counter.take_cash(call.conn, call.env, _clerk(call), call.fields["msisdn"], call.fields["amount"],
                                   rid, call.fields["reason"])
    return {"cash_balance": cash}


# --- 10086 agents and IVRs (X-ANI)
async def _ani_account(call: Call, *, detached_ok: bool = False) -> asyncpg.Record:
    alias = call.request.query.get("alias") or (call.fields.get("alias") if call.fields else None)
    if detached_ok and alias:
        found = await accounts.by_alias(call.conn, alias)
        if found is None or found["msisdn"] is not None or found["status"] == "closed":
            raise Refused("2003")
        locked = await accounts.by_id(call.conn, found["id"], lock=True)
        assert locked is not None
        return locked
    number = msisdn(call.request.headers.get("X-ANI", ""))
    if number is None:
        raise Refused("1001")
    account = await accounts.live_by_msisdn(call.conn, number, lock=True)
    if account is None:
        raise Refused("2003")
    return account


async def cs_account(call: Call) -> dict[str, Any]:
    account = await _ani_account(call, detached_ok=True)
    return await me_profile(call, account) | await balance_of(call, account)


async def cs_history(call: Call) -> dict[str, Any]:
    return await history_of(call, await _ani_account(call, detached_ok=True))


async def cs_reset_login(call: Call) -> dict[str, Any]:
    f = call.fields
    if f.get("alias"):
        account = await _ani_account(call, detached_ok=True)
        if not account["security_phone"]:
            raise Refused("3007")
        last = await registry.get(call.conn, account["former_msisdn"] or "")
        if last is None or compact(last.name or "") != compact(f.get("name") or "-") or \
                compact(last.id_number or "") != compact(f.get("id_number") or "-"):
            raise Refused("3007")
    else:
        account = await _ani_account(call)
    await profile.reset_login(call.conn, call.env, account, "cs")
    await _log(call, "mpay_cs_reset_login", account["alias"])
    return {}


async def cs_reset_pay(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    await security.cs_pay_reset(call.conn, call.env, account, call.fields["answers"], call.fields["identity"])
    await _log(call, "mpay_cs_reset_pay", account["alias"])
    return {}


async def cs_reset_operation(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    f = call.fields
    now = await call.conn.fetchval("SELECT now()")
    if f["pay_password"] is not None:
        await credentials.check(call.conn, call.env.hasher, call.env.policy, account, "pay", f["pay_password"], now)
    else:
        sub = await registry.get(call.conn, account["msisdn"])
        if sub is None or compact(sub.name or "") != compact(f["name"] or "-") or \
                compact(sub.id_number or "") != compact(f["id_number"] or "-"):
            raise Refused("3007")
    await profile.reset_op(call.conn, call.env, account)
    await _log(call, "mpay_cs_reset_operation", account["alias"])
    return {}


async def cs_close(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    await closure.check(call.conn, account, "cs")
    now = await call.conn.fetchval("SELECT now()")
    credentials.ensure_usable(account, "pay", now)
    await credentials.check(call.conn, call.env.hasher, call.env.policy, account, "pay", call.fields["pay_password"],
                            now)
    await closure.close(call.conn, call.env, account, notify=True)
    await _log(call, "mpay_cs_close", account["alias"])
    return {}


async def ivr_reset_login(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    await profile.reset_login(call.conn, call.env, account, "cs")
    return {}


async def ivr_balance(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    matrix.require(account, "query_login", "ivr")
    data = await balance_of(call, account)
    return {k: data[k] for k in ("cash_balance", "card_balance", "available")}


async def ivr_pay_password(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    matrix.require(account, "pay_change_security", "web")
    await profile.change(call.conn, call.env, account, "pay", call.fields["old"], call.fields["new"])
    return {}


async def ivr_card_recharge(call: Call) -> dict[str, Any]:
    account = await _ani_account(call)
    done = await cards.recharge(call.conn, call.env, account, account["msisdn"], call.fields["pin"], "ivr")
    return {"amount": done.amount, "card_balance": done.card_balance}


def _ops(roles: str, handler: Any, fields: dict[str, str] | None = None, **kw: Any) -> Endpoint:
    return Endpoint(handler, "operator", fields, roles=(roles,), channel=roles, **kw)


ROUTES: list[tuple[str, str, Endpoint]] = [
    ("POST", "/ops/login", Endpoint(ops_login, fields={"operator": "str", "password": "str"}, request_id=False,
                                    channel="ops")),
    ("POST", "/ops/accounts/{login}/freeze", _ops("ops", ops_freeze, {"reason": "reason"})),
    ("POST", "/ops/accounts/{login}/unfreeze", _ops("ops", ops_unfreeze, {"reason": "reason"})),
    ("POST", "/ops/withdrawals/{id}/void", _ops("ops", ops_void_withdrawal, {"reason": "reason"})),
    ("GET", "/ops/sms-sink", _ops("ops", ops_sms_sink)),
    ("GET", "/registry/subscribers/{msisdn}", _ops("boss", registry_get)),
    ("POST", "/counter/otp", _ops("counter", counter_otp, {"msisdn": "msisdn", "purpose": "str"})),
    ("POST", "/counter/accounts", _ops("counter", counter_open, {
        "msisdn": "msisdn", "id_type": "str", "id_number": "str", "otp": "digits", "reason": "reason"})),
    ("POST", "/counter/close", _ops("counter", counter_close, {
        "msisdn": "msisdn", "id_type": "str", "id_number": "str", "otp": "digits", "reason": "reason"})),
    ("POST", "/counter/cash", _ops("counter", counter_cash, {"msisdn": "msisdn", "amount": "cents",
                                                               "reason": "reason"})),
    ("GET", "/cs/account", _ops("cs", cs_account)),
    ("GET", "/cs/history", _ops("cs", cs_history)),
    ("POST", "/cs/resets/login", _ops("cs", cs_reset_login, {"alias?": "str", "name?": "str",
                                                             "id_number?": "str"})),
    ("POST", "/cs/resets/pay", _ops("cs", cs_reset_pay, {"answers?": "answers", "identity?": "object"})),
    ("POST", "/cs/resets/operation", _ops("cs", cs_reset_operation, {
        "pay_password?": "digits", "name?": "str", "id_number?": "str"})),
    ("POST", "/cs/close", _ops("cs", cs_close, {"pay_password": "digits", "reason": "reason"})),
    ("POST", "/cs/ivr/resets/login", Endpoint(ivr_reset_login, "ivr", channel="ivr")),
    ("GET", "/cs/ivr/balance", Endpoint(ivr_balance, "ivr", channel="ivr")),
    ("POST", "/cs/ivr/password/pay", Endpoint(ivr_pay_password, "ivr", {"old": "digits", "new": "str"},
                                              channel="ivr")),
    ("POST", "/ivr/card-recharge", Endpoint(ivr_card_recharge, "ivr", {"pin": "digits"}, channel="ivr")),
]


def setup(app: web.Application) -> None:
    for method, path, ep in ROUTES:
        app.router.add_route(method, path, endpoint(ep))
    # The registry PUT replaces a record: its body is the record itself (absent or null clears).
    app.router.add_route("PUT", "/registry/subscribers/{msisdn}", endpoint(Endpoint(
        registry_put, "operator", {"name?": "str", "id_type?": "str", "id_number?": "str", "province?": "str",
                                   "brand?": "str", "status?": "str", "reason": "reason"}, roles=("boss",),
        request_id=False,
        channel="boss")))

"""Registry changes and operator freezes, and what they do to the account (SPEC 6.1, 6.2).

``set_subscribers`` writes records (one batch: the CSV import, the PUT, the CLI) and, in
the same transaction, applies each change's effects and records the event with them:

- number → ``suspended_*`` / ``arrears`` / ``lost``: an account not frozen → ``locked``
  (reason ``suspended`` / ``lost``); → ``normal``: ``locked`` → ``normal``;
- → ``cancelled`` (销号): detached from the MSISDN; ``closed`` when both buckets are zero
  with nothing pending, else ``pending_closure`` (a frozen account stays frozen);
- any status change: the hooks of ``NUMBER_EVENT_HOOKS`` first (the SIM wallet's 销号, SPEC 7.7);
- name or ID changed, or real-name data incomplete: a bound card whose holder no longer
  matches is unbound (its unexported withdrawals voided), incomplete
  data makes the account ``non_real_name``.

``freeze`` / ``unfreeze`` are the operator's risk freeze (lifting gives the status the
number implies). Closing an account (``close``) is shared with the closure operation.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from recharge.mpay import accounts, outbox, registry, withdrawals
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import compact

CLOSED_SMS = accounts.CLOSED_SMS
UNFROZEN_SMS = "您的手机支付账户已解除冻结。"
FROZEN_SMS = "您的账户已冻结,详询10086。"
LOCKING = {"suspended_oneway": "suspended", "suspended_twoway": "suspended", "arrears": "suspended", "lost": "lost"}
# (conn, env, account, new number status) → the events it caused. Run, in the registry change's transaction,
# when a number with a live account changes status, before the account's own effects (SPEC 7.7: the SIM wallet
# registers its 销号 handling here at start-up, so this room needs no import of it).
NumberEventHook = Callable[[asyncpg.Connection, Env, asyncpg.Record, str], Awaitable[list[str]]]
NUMBER_EVENT_HOOKS: list[NumberEventHook] = []



@dataclass(frozen=True, slots=True)
class Change:
    record: dict[str, object]
    created: bool
    events: list[str]


async def set_subscribers(
    conn: asyncpg.Connection, env: Env, subs: list[registry.Subscriber], actor: str
) -> list[Change]:
    """Write each record and apply its effects, in the caller's transaction, in order."""
    changes = []
    for sub in subs:
        before = await registry.get(conn, sub.msisdn, lock=True)
        await registry.store(conn, sub)
        events = await _effects(conn, env, before, sub)
        await conn.execute(
            "INSERT INTO mpay_registry_events (msisdn, actor, before, after, effects) VALUES ($1, $2, $3, $4, $5)",
            sub.msisdn, actor, json.dumps(before.record() if before else None), json.dumps(sub.record()),
            json.dumps(events),
        )
        changes.append(Change(sub.record(), before is None, events))
    return changes


async def _effects(
    conn: asyncpg.Connection, env: Env, before: registry.Subscriber | None, after: registry.Subscriber
) -> list[str]:
    account = await accounts.live_by_msisdn(conn, after.msisdn, lock=True)
    if account is None:
        return []
    events: list[str] = []
    if account["province"] != after.province:
        await conn.execute("UPDATE mpay_accounts SET province = $2 WHERE id = $1", account["id"], after.province)
    if before is None or (before.name, before.id_number) != (after.name, after.id_number) or not after.real_name:
        events += await _identity_changed(conn, env, account, after)
    if before is None or before.status != after.status:
        for hook in NUMBER_EVENT_HOOKS:
            events += await hook(conn, env, account, after.status)
    if after.status == "cancelled":
        account = await accounts.by_id(conn, account["id"], lock=True)
        assert account is not None
        events.append(await detach(conn, env, account))
    elif after.status in LOCKING and account["status"] != "frozen":
        if account["status"] != "locked" or account["lock_reason"] != LOCKING[after.status]:
            await accounts.set_status(conn, account["id"], "locked", lock_reason=LOCKING[after.status])
            events.append(f"locked:{LOCKING[after.status]}")
    elif after.status == "normal" and account["status"] == "locked":
        await accounts.set_status(conn, account["id"], "normal")
        events.append("normal")
    return events


async def _identity_changed(
    conn: asyncpg.Connection, env: Env, account: asyncpg.Record, sub: registry.Subscriber
) -> list[str]:
    events = []
    card = json.loads(account["bank_card"]) if isinstance(account["bank_card"], str) else account["bank_card"]
    if card is not None and (not sub.name or compact(str(card.get("holder", ""))) != compact(sub.name)):
        await conn.execute("UPDATE mpay_accounts SET bank_card = NULL WHERE id = $1", account["id"])
        await withdrawals.void_unexported(conn, env, account)
        events.append("card_unbound")
    if not sub.real_name and account["kind"] == "real_name":
        await conn.execute("UPDATE mpay_accounts SET kind = 'non_real_name' WHERE id = $1", account["id"])
        events.append("non_real_name")
    return events


async def settled_status(conn: asyncpg.Connection, account: asyncpg.Record) -> str:
    """``closed`` when both buckets are zero with nothing pending, else ``pending_closure``."""
    figures = await accounts.balances(conn, account)
    empty = figures.cash == 0 and figures.card == 0 and await accounts.nothing_pending(conn, account)
    return "closed" if empty and not await accounts.wallet_open(conn, account) else "pending_closure"


async def detach(conn: asyncpg.Connection, env: Env, account: asyncpg.Record) -> str:
    """销号: detach from the MSISDN; closed or pending closure (a frozen account stays frozen)."""
    if account["status"] == "frozen":
        await accounts.set_status(conn, account["id"], "frozen", detach=True)
        return "detached:frozen"
    status = await settled_status(conn, account)
    row = await accounts.set_status(conn, account["id"], status, detach=True)
    if status == "closed":
        await outbox.notify(conn, env.keys, row, CLOSED_SMS)
    return f"detached:{status}"


async def close(conn: asyncpg.Connection, env: Env, account: asyncpg.Record) -> asyncpg.Record:
    """Close an account (its checks done by the caller): detached, ``closed``, the closure SMS."""
    await outbox.notify(conn, env.keys, account, CLOSED_SMS)
    await conn.execute("UPDATE mpay_tokens SET revoked = true WHERE account_id = $1", account["id"])
    return await accounts.set_status(conn, account["id"], "closed", detach=True)


async def freeze(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, reason: str) -> asyncpg.Record:
    if account["status"] not in accounts.LIVE and account["status"] != "pending_closure":
        raise Refused("2007" if account["status"] == "closed" else "4011")
    row = await conn.fetchrow(
        "UPDATE mpay_accounts SET status = 'frozen', lock_reason = NULL, freeze_reason = $2, updated_at = now()"
        " WHERE id = $1 RETURNING *",
        account["id"], reason,
    )
    await conn.execute("UPDATE mpay_tokens SET revoked = true WHERE account_id = $1", account["id"])
    await outbox.notify(conn, env.keys, row, FROZEN_SMS)
    return row


async def unfreeze(conn: asyncpg.Connection, env: Env, account: asyncpg.Record) -> asyncpg.Record:
    """Lift a freeze: the status the number implies (or, detached, closed / pending closure)."""
    if account["status"] != "frozen":
        raise Refused("4011")
    if account["msisdn"] is None:
        status, reason = await settled_status(conn, account), None
    else:
        sub = await registry.get(conn, account["msisdn"])
        reason = LOCKING.get(sub.status) if sub else None
        status = "locked" if reason else "normal"
    await conn.execute("UPDATE mpay_accounts SET freeze_reason = NULL WHERE id = $1", account["id"])
    row = await accounts.set_status(conn, account["id"], status, lock_reason=reason)
    await outbox.notify(conn, env.keys, row, UNFROZEN_SMS)
    if status == "closed":
        await outbox.notify(conn, env.keys, row, CLOSED_SMS)
    return row

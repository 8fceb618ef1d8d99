"""An account's own settings (SPEC 6.2, 6.3): real-name upgrade, password changes and resets.

- ``upgrade`` (GX, the website's 实名信息更新): ``2010`` when the registry lacks real-name
  data, ``2014`` when already real-name.
- ``reset_login`` (SMS M→Y, website 忘记密码, 10086): a generated initial login password by
  sensitive SMS, every token revoked. C21: while the login password is locked only 10086
  resets it (``3003`` elsewhere).
- ``reset_pay`` / ``reset_op``: generated initial pay password / ``1234``.
- ``change``: old + new of one kind (``3005`` for a bad or unchanged new one).
"""

from __future__ import annotations

import asyncpg

from recharge.mpay import accounts, credentials, matrix, outbox, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env

UPGRADED = "实名升级成功!您已可使用提现等全部功能。"
LOGIN_RESET_SMS = "您的手机支付登录密码已重置为{lp},请尽快登录网站修改并删除本短信。"
PAY_RESET_SMS = "您的手机支付支付密码已重置为{pp},请尽快修改并删除本短信。"
OP_RESET_SMS = "您的手机钱包操作密码已重置为1234。"


async def check_upgrade(conn: asyncpg.Connection, account: asyncpg.Record, channel: str) -> registry.Subscriber:
    matrix.require(account, "reset_upgrade", channel)
    sub = await registry.get(conn, account["msisdn"]) if account["msisdn"] else None
    if sub is None or not sub.real_name:
        raise Refused("2010")
    if account["kind"] == "real_name":
        raise Refused("2014")
    return sub


async def upgrade(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, channel: str) -> str:
    await check_upgrade(conn, account, channel)
    await conn.execute("UPDATE mpay_accounts SET kind = 'real_name', updated_at = now() WHERE id = $1", account["id"])
    if channel != "sms":
        await outbox.notify(conn, env.keys, account, UPGRADED)
    return UPGRADED


async def revoke_tokens(conn: asyncpg.Connection, account_id: int, *, keep: int | None = None) -> None:
    await conn.execute(
        "UPDATE mpay_tokens SET revoked = true WHERE account_id = $1 AND id IS DISTINCT FROM $2", account_id, keep
    )


async def check_login_reset(conn: asyncpg.Connection, account: asyncpg.Record, channel: str) -> None:
    if channel != "cs":
        matrix.require(account, "reset_upgrade", channel)
        if credentials.locked(account, "login", await conn.fetchval("SELECT now()")):
            raise Refused("3003")
    else:
        matrix.require(account, "query_login", channel)


async def reset_login(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, channel: str) -> None:
    """A new initial login password, sent by sensitive SMS (a detached account's: 6.2)."""
    await check_login_reset(conn, account, channel)
    new = credentials.generate("login")
    await credentials.replace(conn, env.hasher, account["id"], "login", new, initial=True)
    await revoke_tokens(conn, account["id"])
    text = LOGIN_RESET_SMS.format(lp=new)
    if account["msisdn"] is None and account["security_phone"]:
        await outbox.enqueue(conn, env.keys, account["security_phone"], text, sensitive=True, account_id=account["id"])
    else:
        await outbox.notify(conn, env.keys, account, text, sensitive=True)


async def reset_pay(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, *, to_security_phone: bool) -> None:
    new = credentials.generate("pay")
    await credentials.replace(conn, env.hasher, account["id"], "pay", new, initial=True)
    await revoke_tokens(conn, account["id"])
    text = PAY_RESET_SMS.format(pp=new)
    if to_security_phone and account["security_phone"]:
        await outbox.enqueue(conn, env.keys, account["security_phone"], text, sensitive=True, account_id=account["id"])
    else:
        await outbox.notify(conn, env.keys, account, text, sensitive=True)


async def reset_op(conn: asyncpg.Connection, env: Env, account: asyncpg.Record) -> None:
    await credentials.replace(conn, env.hasher, account["id"], "op", credentials.INITIAL_OP_PASSWORD, initial=False)
    await outbox.notify(conn, env.keys, account, OP_RESET_SMS)


async def change(
    conn: asyncpg.Connection, env: Env, account: asyncpg.Record, kind: str, old: str, new: str,
    *, keep_token: int | None = None,
) -> None:
    """Old + new (the account row locked): state, the new one's format, then the old one last."""
    now = await conn.fetchval("SELECT now()")
    if credentials.locked(account, kind, now):
        raise Refused("3003")
    if not credentials.well_formed(kind, new) or new == old:
        raise Refused("3005")
    await credentials.check(conn, env.hasher, env.policy, account, kind, old, now)
    await credentials.replace(conn, env.hasher, account["id"], kind, new, initial=False)
    await revoke_tokens(conn, account["id"], keep=keep_token)


async def set_alias(conn: asyncpg.Connection, account: asyncpg.Record, alias: str) -> str:
    """Replace the generated alias once (``1004`` again) by 6–20 letters/digits starting with a
    letter (``1001``; the generated pattern is reserved), unique and never reused (``2015``)."""
    matrix.require(account, "alias_change", "web")
    if account["alias_replaced"]:
        raise Refused("1004")
    if not accounts.CHOSEN_ALIAS_RE.fullmatch(alias) or accounts.GENERATED_ALIAS_RE.fullmatch(alias):
        raise Refused("1001")
    if await conn.fetchval("SELECT 1 FROM mpay_aliases WHERE alias = $1", alias.lower()):
        raise Refused("2015")
    await conn.execute("INSERT INTO mpay_aliases (alias, account_id) VALUES ($1, $2)", alias.lower(), account["id"])
    await conn.execute("UPDATE mpay_accounts SET alias = $2, alias_replaced = true, updated_at = now() WHERE id = $1",
                       account["id"], alias)
    return alias

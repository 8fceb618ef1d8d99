"""Binding the withdrawal bank card (SPEC 6.6 Bind card; web only, C6: bind first everywhere).

Checks in order after the status matrix: real-name (``2009``), no withdrawal submitted or
exported (``4008``), fewer than 3 successful bindings this Shanghai month (``4006``), the
holder equal to the registry name after NFKC without spaces (``4007``), the pay password.
A binding replaces the last (there is no unbind); the seed's SMS confirms it.
"""

from __future__ import annotations

import json
import re

import asyncpg

from recharge.mpay import credentials, matrix, outbox, registry
from recharge.mpay.banks import BANKS
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import compact, day_start, today

BOUND_SMS = "尊敬的客户:您的提现银行卡已设定成功!提现银行卡已设定为[{bank}尾号{last4}]卡。详询10086。"
MONTHLY_BINDINGS = 3
_NUMBER_RE = re.compile(r"[0-9]{12,19}")
_PROVINCE_RE = re.compile(r"[1-9][0-9]0000")
_CITY_RE = re.compile(r"[1-9][0-9]{3}00")


def card_fields(bank: str, province: str, city: str, branch: str, number: str, holder: str) -> dict[str, str]:
    """The card as stored, or ``Refused("1001")`` for a malformed field."""
    if bank not in BANKS or not _PROVINCE_RE.fullmatch(province) or not _CITY_RE.fullmatch(city):
        raise Refused("1001")
    if not _NUMBER_RE.fullmatch(number) or not 1 <= len(branch) <= 64 or not 1 <= len(holder) <= 32:
        raise Refused("1001")
    return {"bank": bank, "province": province, "city": city, "branch": branch, "number": number, "holder": holder}


async def bind(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, card: dict[str, str],
               pay_password: str) -> dict[str, str]:
    matrix.require(account, "bind_card", "web")
    now = await conn.fetchval("SELECT now()")
    credentials.ensure_usable(account, "pay", now)
    if account["kind"] != "real_name":
        raise Refused("2009")
    if await conn.fetchval("SELECT 1 FROM mpay_withdrawals WHERE account_id = $1 AND state IN ('submitted', 'exported')"
                           " LIMIT 1", account["id"]):
        raise Refused("4008")
    month_start = day_start(today(now).replace(day=1))
    if await conn.fetchval("SELECT count(*) FROM mpay_bindings WHERE account_id = $1 AND created_at >= $2",
                           account["id"], month_start) >= MONTHLY_BINDINGS:
        raise Refused("4006")
    sub = await registry.get(conn, account["msisdn"]) if account["msisdn"] else None
    if sub is None or not sub.name or compact(card["holder"]) != compact(sub.name):
        raise Refused("4007")
    await credentials.check(conn, env.hasher, env.policy, account, "pay", pay_password, now)
    await conn.execute("UPDATE mpay_accounts SET bank_card = $2, updated_at = now() WHERE id = $1",
                       account["id"], json.dumps(card, ensure_ascii=False))
    last4 = card["number"][-4:]
    await conn.execute("INSERT INTO mpay_bindings (account_id, bank, last4) VALUES ($1, $2, $3)",
                       account["id"], card["bank"], last4)
    await outbox.notify(conn, env.keys, account, BOUND_SMS.format(bank=BANKS[card["bank"]], last4=last4))
    return {"bank": card["bank"], "last4": last4}

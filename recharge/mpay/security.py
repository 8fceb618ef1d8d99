"""The security centre and the pay-password resets that rely on it (SPEC 6.3).

Three distinct questions of the configured list (ids ``1``–``8``), answers 1–32 characters,
compared after NFKC, case folding and removing whitespace, hashed as passwords. The
website's pay reset asks all three at once (any wrong = one failed attempt, ``3007``); the
10086 agent's asks one of them, or — for a real-name account — 4 of 5 identity items (name,
ID number, opening date, latest recharge amount, latest remote payment amount; a
non-real-name account ``2010``). The 3rd failure of a day and channel answers ``3008`` until
Shanghai midnight; none set ``3007``. The new pay password goes to the 密保手机号 (website)
or the own number (10086).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping
from typing import Any

import asyncpg

from recharge.mpay import credentials, matrix, profile, registry
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import SHANGHAI, compact, day_start, today


def normal_answer(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def _answers(env: Env, given: Any, count: int | None) -> dict[int, str]:
    """{question id: normalised answer} of a request's ``answers``, or ``1001``."""
    if not isinstance(given, list) or (count is not None and len(given) != count):
        raise Refused("1001")
    out: dict[int, str] = {}
    for item in given:
        qid, answer = item.get("id"), normal_answer(str(item.get("answer", "")))
        if type(qid) is not int or not 1 <= qid <= env.settings.mpay_security_questions or qid in out:
            raise Refused("1001")
        if not 1 <= len(answer) <= 32:
            raise Refused("1001")
        out[qid] = answer
    return out


async def set_questions(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, pay_password: str,
                        given: Any) -> None:
    matrix.require(account, "pay_change_security", "web")
    now = await conn.fetchval("SELECT now()")
    credentials.ensure_usable(account, "pay", now)
    answers = _answers(env, given, 3)
    await credentials.check(conn, env.hasher, env.policy, account, "pay", pay_password, now)
    await conn.execute("DELETE FROM mpay_security_answers WHERE account_id = $1", account["id"])
    for qid, answer in answers.items():
        await conn.execute("INSERT INTO mpay_security_answers (account_id, question_id, answer_hash)"
                           " VALUES ($1, $2, $3)", account["id"], qid, await env.hasher.hash(answer))


async def _check_attempts(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, channel: str) -> None:
    failures = await conn.fetchval(
        "SELECT count(*) FROM mpay_reset_failures WHERE account_id = $1 AND channel = $2 AND created_at >= $3",
        account["id"], channel, day_start(today()))
    if failures >= env.settings.mpay_reset_daily_failures:
        raise Refused("3008")


async def _failed(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, channel: str) -> Refused:
    await conn.execute("INSERT INTO mpay_reset_failures (account_id, channel) VALUES ($1, $2)", account["id"], channel)
    failures = await conn.fetchval(
        "SELECT count(*) FROM mpay_reset_failures WHERE account_id = $1 AND channel = $2 AND created_at >= $3",
        account["id"], channel, day_start(today()))
    return Refused("3008" if failures >= env.settings.mpay_reset_daily_failures else "3007")


async def _answers_match(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, answers: dict[int, str]
                         ) -> bool:
    stored = {r["question_id"]: r["answer_hash"] for r in await conn.fetch(
        "SELECT question_id, answer_hash FROM mpay_security_answers WHERE account_id = $1", account["id"])}
    ok = True
    for qid, answer in answers.items():
        ok = qid in stored and await env.hasher.verify(stored[qid], answer) and ok
    return ok


async def web_pay_reset(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, given: Any) -> None:
    """All three answers at once; the new pay password to the 密保手机号, else the own number."""
    await _reset_checks(conn, account, "web")
    answers = _answers(env, given, 3)
    if not await conn.fetchval("SELECT 1 FROM mpay_security_answers WHERE account_id = $1 LIMIT 1", account["id"]):
        raise Refused("3007")
    await _check_attempts(conn, env, account, "web")
    if not await _answers_match(conn, env, account, answers):
        raise await _failed(conn, env, account, "web")
    await profile.reset_pay(conn, env, account, to_security_phone=True)


async def _reset_checks(conn: asyncpg.Connection, account: asyncpg.Record, channel: str) -> None:
    """Pay reset needs account and number ``normal`` (001 L337)."""
    sub = await registry.get(conn, account["msisdn"]) if account["msisdn"] else None
    if sub is None or sub.status != "normal":
        raise Refused("2008")
    matrix.require(account, "pay_reset_close", channel)


async def _identity_items(conn: asyncpg.Connection, account: asyncpg.Record) -> dict[str, str]:
    sub = await registry.get(conn, account["msisdn"])
    mine = [account["cash_account"], account["card_account"]]
    recharge = await conn.fetchval(
        "SELECT t.amount FROM transfers t JOIN accounts o ON o.id = t.debit_account_id WHERE t.credit_account_id ="
        " ANY($1::bigint[]) AND t.kind = 'single' AND (o.card_no LIKE 'BANK/%' OR o.card_no LIKE 'PPC/%'"
        " OR o.card_no LIKE 'HALL/%') ORDER BY t.created_at DESC LIMIT 1", mine)
    payment = await conn.fetchval("SELECT amount FROM mpay_payments WHERE account_id = $1 AND state = 'paid'"
                                  " ORDER BY paid_at DESC LIMIT 1", account["id"])
    opened: dt.datetime = account["opened_at"]
    return {"name": compact(sub.name or "") if sub else "", "id_number": compact(sub.id_number or "") if sub else "",
            "opened_on": opened.astimezone(SHANGHAI).date().isoformat(),
            "last_recharge": str(recharge) if recharge else "", "last_payment": str(payment) if payment else ""}


def _identity_given(identity: Mapping[str, Any]) -> dict[str, str]:
    if set(identity) - {"name", "id_number", "opened_on", "last_recharge", "last_payment"}:
        raise Refused("1001")
    out = {}
    for key, value in identity.items():
        if value is None:
            out[key] = ""
        elif key in ("last_recharge", "last_payment"):
            if type(value) is not int or value < 0:
                raise Refused("1001")
            out[key] = str(value) if value else ""
        elif isinstance(value, str):
            out[key] = compact(value)
        else:
            raise Refused("1001")
    return out


async def cs_pay_reset(conn: asyncpg.Connection, env: Env, account: asyncpg.Record, answers: Any,
                       identity: Mapping[str, Any] | None) -> None:
    """10086: one of the three answers, else (real-name) 4 of the 5 identity items."""
    await _reset_checks(conn, account, "cs")
    if (answers is None) == (identity is None):
        raise Refused("1001")
    if identity is not None:
        if account["kind"] != "real_name":
            raise Refused("2010")
        given = _identity_given(identity)
    else:
        given_answers = _answers(env, answers, 1)
    await _check_attempts(conn, env, account, "cs")
    if identity is not None:
        items = await _identity_items(conn, account)
        ok = sum(1 for k, v in items.items() if given.get(k, "") == v) >= 4  # an empty item matches only empty
    else:
        ok = await _answers_match(conn, env, account, given_answers)
    if not ok:
        raise await _failed(conn, env, account, "cs")
    await profile.reset_pay(conn, env, account, to_security_phone=False)

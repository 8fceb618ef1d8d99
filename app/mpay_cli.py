"""``rechargectl mpay …``: the operator's commands for the mobile payment account (SPEC 6).

The registry (``registry set`` / ``registry import FILE.csv``, all rows or none), prepaid
card pools (``cards import``), merchants (``merchant add``), the operator calendar
(``calendar set``), operators and their system tokens (``operator add|token|tokens|revoke``),
bank gateway keys (``gateway key``), the payout cycle (``payout export|import``) and the
merchants' payout (``merchant payout``), both cut at a working day's 17:00
(``recharge.mpay.calendar``). Every write goes through the domain (``recharge.mpay``) in one
transaction and is recorded (registry events; ``operator_actions`` with ``--actor``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from app import bank_sim, mpay_demo, wallet_cli
from app.commands import add_common, run_with_db
from recharge.config import Settings
from recharge.keys import load_keys
from recharge.mpay import bank, bills, calendar, cards, events, merchants, registry, sessions, withdrawals
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import msisdn as normal_msisdn

REGISTRY_HEADER = ["msisdn", "name", "id_type", "id_number", "province", "brand", "status"]
EnvWork = Callable[[asyncpg.Connection, Env], Awaitable[int]]


def _run(settings: Settings, work: EnvWork) -> int:
    env = Env.of(settings, load_keys(settings.resolved_key_file))

    async def guarded(conn: asyncpg.Connection) -> int:
        try:
            async with conn.transaction():
                return await work(conn, env)
        except (Refused, cards.ImportRefused, merchants.MerchantError, withdrawals.PayoutRefused, ValueError) as exc:
            print(f"rechargectl mpay: refused: {exc}", file=sys.stderr)
            return 2

    return run_with_db(settings, guarded)


async def _record(conn: asyncpg.Connection, actor: str, action: str, subject: str, detail: object) -> None:
    await conn.execute(
        "INSERT INTO operator_actions (actor, action, subject, reason, detail) VALUES ($1, $2, $3, '', $4)",
        actor, action, subject, json.dumps(detail),
    )


def _subscriber(msisdn: str, fields: dict[str, str | None]) -> registry.Subscriber:
    number = normal_msisdn(msisdn)
    if number is None:
        raise ValueError(f"{msisdn!r} is not an MSISDN")
    try:
        return registry.validate(number, {k: v for k, v in fields.items() if v not in (None, "")})
    except Refused:
        raise ValueError(f"bad registry data for {number}") from None


async def _write_csv(path: str, header: list[str], rows: list[list[str]]) -> None:
    """An export file, written before its transaction commits (a failed command: do not send it)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    await asyncio.to_thread(Path(path).write_text, out.getvalue(), encoding="utf-8")


def cmd_registry_set(settings: Settings, a: argparse.Namespace) -> int:
    try:
        sub = _subscriber(a.msisdn, {"name": a.name, "id_type": a.id_type, "id_number": a.id_number,
                                     "province": a.province, "brand": a.brand, "status": a.status})
    except ValueError as exc:
        print(f"rechargectl mpay: refused: {exc}", file=sys.stderr)
        return 2

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        change = (await events.set_subscribers(conn, env, [sub], f"cli:{a.actor}"))[0]
        print(f"{sub.msisdn}: {'created' if change.created else 'updated'}; account effects: "
              f"{', '.join(change.events) or 'none'}")
        return 0

    return _run(settings, work)


def read_registry_csv(text: str) -> list[registry.Subscriber]:
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != REGISTRY_HEADER:
        raise ValueError(f"the header must be {','.join(REGISTRY_HEADER)}")
    subs, seen = [], set()
    for number, row in enumerate(reader, start=2):
        if len(row) != len(REGISTRY_HEADER):
            raise ValueError(f"row {number}: {len(REGISTRY_HEADER)} fields expected")
        sub = _subscriber(row[0], dict(zip(REGISTRY_HEADER[1:], row[1:], strict=True)))
        if sub.msisdn in seen:
            raise ValueError(f"row {number}: {sub.msisdn} repeated")
        seen.add(sub.msisdn)
        subs.append(sub)
    return subs


def cmd_registry_import(settings: Settings, a: argparse.Namespace) -> int:
    try:
        subs = read_registry_csv(Path(a.file).read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        print(f"rechargectl mpay: refused, nothing imported: {exc}", file=sys.stderr)
        return 2

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        changes = await events.set_subscribers(conn, env, subs, f"cli:{a.actor}")
        print(f"{len(changes)} subscribers imported ({sum(c.created for c in changes)} new)")
        return 0

    return _run(settings, work)


def cmd_cards_import(settings: Settings, a: argparse.Namespace) -> int:
    try:
        rows = cards.parse_pool(Path(a.file).read_text(encoding="utf-8"))
    except (cards.ImportRefused, OSError, UnicodeDecodeError) as exc:
        print(f"rechargectl mpay: refused, nothing imported: {exc}", file=sys.stderr)
        return 2

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        count = await cards.import_pool(conn, env, rows)
        await _record(conn, a.actor, "mpay_cards_import", a.file, {"cards": count})
        print(f"{count} prepaid cards imported")
        return 0

    return _run(settings, work)


def cmd_merchant_add(settings: Settings, a: argparse.Namespace) -> int:
    pem = Path(a.public_key).read_text(encoding="utf-8")

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        await merchants.add(conn, a.id, a.name, a.category, pem)
        await _record(conn, a.actor, "mpay_merchant_add", a.id, {"name": a.name, "category": a.category})
        print(f"merchant {a.id} ({a.category}) saved")
        return 0

    return _run(settings, work)


def cmd_calendar_set(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        day = dt.date.fromisoformat(a.date)
        await conn.execute("INSERT INTO mpay_calendar (day, kind) VALUES ($1, $2) ON CONFLICT (day)"
                           " DO UPDATE SET kind = $2", day, a.kind)
        await _record(conn, a.actor, "mpay_calendar_set", a.date, {"kind": a.kind})
        print(f"{day} is a {a.kind}")
        return 0

    return _run(settings, work)


def cmd_operator_add(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        password = await sessions.add_operator(conn, env, a.id, a.role, a.hall, actor=a.actor)
        await _record(conn, a.actor, "mpay_operator_add", a.id, {"role": a.role, "hall": a.hall})
        print(f"operator {a.id} ({a.role}{' ' + a.hall if a.hall else ''}); initial password: {password}"
              " (the same name and password sign in to the console, which has it changed first)")
        return 0

    return _run(settings, work)


def cmd_operator_token(settings: Settings, a: argparse.Namespace) -> int:
    if not 1 <= a.ttl <= 90:
        print("rechargectl mpay: refused: --ttl is 1-90 days", file=sys.stderr)
        return 2

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        if await sessions.operator(conn, a.id) is None:
            raise ValueError(f"no enabled operator {a.id}")
        issued = await sessions.issue(conn, env, operator_id=a.id, ttl_s=a.ttl * 86400)
        await _record(conn, a.actor, "mpay_operator_token", a.id, {"token_id": issued.token_id, "days": a.ttl})
        print(f"token {issued.token_id} of {a.id}, valid until {issued.expires_at.isoformat()} (shown once):")
        print(issued.token)
        return 0

    return _run(settings, work)


def cmd_operator_tokens(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        rows = await conn.fetch("SELECT id, operator_id, created_at, expires_at, revoked FROM mpay_tokens"
                                " WHERE system AND operator_id IS NOT NULL ORDER BY id")
        for r in rows:
            state = "revoked" if r["revoked"] else "active"
            print(f"{r['id']}\t{r['operator_id']}\t{r['created_at']:%Y-%m-%d}\t{r['expires_at']:%Y-%m-%d}\t{state}")
        return 0

    return _run(settings, work)


def cmd_operator_revoke(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        await sessions.revoke(conn, a.token_id)
        await _record(conn, a.actor, "mpay_token_revoke", str(a.token_id), {})
        print(f"token {a.token_id} revoked")
        return 0

    return _run(settings, work)


def cmd_gateway_key(settings: Settings, a: argparse.Namespace) -> int:
    pem = Path(a.public_key).read_text(encoding="utf-8")

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        await bank.set_gateway_key(conn, a.gateway, pem)
        await _record(conn, a.actor, "mpay_gateway_key", a.gateway, {})
        print(f"gateway {a.gateway}: key saved")
        return 0

    return _run(settings, work)


async def _batch(conn: asyncpg.Connection, settings: Settings, day_text: str | None, force: bool = False
                 ) -> tuple[str, dt.datetime] | None:
    """The working day whose batch to run and its cut-off (default: the latest cut-off passed),
    or None (said why) for a day off without ``--force`` or a cut-off still to come."""
    cutoff = calendar.cutoff_time(settings.mpay_cutoff)
    now = await conn.fetchval("SELECT now()")
    if day_text is None:
        day = await calendar.last_cutoff(conn, now, cutoff)
    else:
        day = dt.date.fromisoformat(day_text)
        if not force and not await calendar.is_workday(conn, day):
            print(f"{day} is not a working day: no batch (--force to run it anyway)")
            return None
    if calendar.cutoff_at(day, cutoff) > now:
        print(f"{day}'s batch closes at its {settings.mpay_cutoff} cut-off: not yet")
        return None
    return day.isoformat(), calendar.cutoff_at(day, cutoff)


def cmd_payout_export(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        batch = await _batch(conn, settings, a.day)
        if batch is None:
            return 0
        rows = await withdrawals.export_submitted(conn, batch[1])
        await _write_csv(a.file, withdrawals.EXPORT_HEADER, rows)
        await _record(conn, a.actor, "mpay_payout_export", a.file, {"rows": len(rows), "batch": batch[0]})
        print(f"{len(rows)} withdrawals of the {batch[0]} batch (before its cut-off) exported to {a.file}")
        return 0

    return _run(settings, work)


def cmd_payout_import(settings: Settings, a: argparse.Namespace) -> int:
    try:
        reader = csv.reader(io.StringIO(Path(a.file).read_text(encoding="utf-8")))
        if next(reader, None) != withdrawals.IMPORT_HEADER:
            raise ValueError(f"the header must be {','.join(withdrawals.IMPORT_HEADER)}")
        rows = list(reader)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        print(f"rechargectl mpay: refused, nothing imported: {exc}", file=sys.stderr)
        return 2

    async def work(conn: asyncpg.Connection, env: Env) -> int:
        paid, failed = await withdrawals.import_results(conn, env, rows)
        await _record(conn, a.actor, "mpay_payout_import", a.file, {"paid": paid, "failed": failed})
        print(f"{paid} paid, {failed} failed")
        return 0

    return _run(settings, work)


def cmd_bank_sim(settings: Settings, a: argparse.Namespace) -> int:
    key = a.key or mpay_demo.key_path(settings.data_dir, f"gw_{a.gateway}")
    status, body = bank_sim.notify(a.url, a.gateway, Path(key), a.order_id, a.amount, a.result, a.serial)
    print(f"{status} {body}")
    return 0 if status == 200 else 1


def cmd_bills_export(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        rows = await bills.export_unexported(conn)
        await _write_csv(a.file, bills.EXPORT_HEADER, rows)
        await _record(conn, a.actor, "mpay_bills_export", a.file, {"rows": len(rows)})
        print(f"{len(rows)} phone-bill payments exported to {a.file}")
        return 0

    return _run(settings, work)


def cmd_merchant_payout(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection, env: Env) -> int:
        batch = await _batch(conn, settings, a.day, a.force)
        if batch is None:
            return 0
        day, cutoff = batch
        paid = await merchants.payout_all(conn, day, cutoff)
        await _record(conn, a.actor, "mpay_merchant_payout", day, {"merchants": len(paid)})
        for merchant_id, cents in paid:
            print(f"{merchant_id}\t{cents // 100}.{cents % 100:02d}")
        print(f"{len(paid)} merchants paid out for {day}")
        return 0

    return _run(settings, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mpay = sub.add_parser("mpay", help="mobile payment account: registry, cards, merchants, calendar")
    cmds = mpay.add_subparsers(dest="mpay_command", required=True, metavar="WHAT")

    reg = cmds.add_parser("registry", help="the subscriber registry (BOSS stand-in)")
    reg_cmds = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    p = reg_cmds.add_parser("set", help="write one subscriber record (it replaces the record)")
    add_common(p)
    p.add_argument("msisdn")
    p.add_argument("--name")
    p.add_argument("--id-type", choices=registry.ID_TYPES)
    p.add_argument("--id-number")
    p.add_argument("--province", required=True, help="GB/T 2260 code xx0000 (Hunan 430000)")
    p.add_argument("--brand", default="")
    p.add_argument("--status", default="normal", choices=registry.STATUSES)
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_registry_set)
    p = reg_cmds.add_parser("import", help="import a CSV (msisdn,name,id_type,id_number,province,brand,status)")
    add_common(p)
    p.add_argument("file")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_registry_import)

    crd = cmds.add_parser("cards", help="prepaid recharge card pools")
    crd_cmds = crd.add_subparsers(dest="cards_command", required=True, metavar="ACTION")
    p = crd_cmds.add_parser("import", help="import a card pool CSV (serial,pin,face_yuan,province,expiry)")
    add_common(p)
    p.add_argument("file")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_cards_import)

    mer = cmds.add_parser("merchant", help="remote-payment merchants")
    mer_cmds = mer.add_subparsers(dest="merchant_command", required=True, metavar="ACTION")
    p = mer_cmds.add_parser("add", help="add or update a merchant and its RSA public key")
    add_common(p)
    p.add_argument("id")
    p.add_argument("--name", required=True)
    p.add_argument("--category", required=True, choices=merchants.CATEGORIES)
    p.add_argument("--public-key", required=True, help="PEM file of the merchant's RSA public key")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_merchant_add)

    p = mer_cmds.add_parser("payout", help="the working day's batch: each merchant's available balance MER → PAYOUT")
    add_common(p)
    p.add_argument("--day", help="YYYY-MM-DD, a working day whose 17:00 cut-off has passed (default: the latest"
                   " such day); once per merchant and day; money credited after the cut-off waits for the next")
    p.add_argument("--force", action="store_true", help="pay out on a day the calendar says is not a working day")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_merchant_payout)

    bil = cmds.add_parser("bills", help="phone-bill payments (HF)")
    bil_cmds = bil.add_subparsers(dest="bills_command", required=True, metavar="ACTION")
    p = bil_cmds.add_parser("export", help="write the phone-bill payments not yet exported (daily BOSS file)")
    add_common(p)
    p.add_argument("file")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_bills_export)
    _register_staff_and_payouts(cmds)
    wallet = cmds.add_parser("wallet", help="the SIM wallet's money on the mobile payment side")
    wallet_cmds = wallet.add_subparsers(dest="wallet_command", required=True, metavar="ACTION")
    wallet_cli.register_writeoff(wallet_cmds.add_parser(
        "writeoff", help="write lost cards' value idle 24 months off: RETIRED → FEE (SPEC 7.6)"))
    _register_tools(cmds)


def _register_staff_and_payouts(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    op = cmds.add_parser("operator", help="operators (boss, counter, cs, ops) and system tokens")
    op_cmds = op.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    p = op_cmds.add_parser("add", help="add (or reset) an operator; prints its initial password")
    add_common(p)
    p.add_argument("id")
    p.add_argument("--role", required=True, choices=sessions.ROLES)
    p.add_argument("--hall", help="the counter operator's business hall")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_operator_add)
    p = op_cmds.add_parser("token", help="print a system token of an operator once (the BOSS feed)")
    add_common(p)
    p.add_argument("id")
    p.add_argument("--ttl", type=int, required=True, help="days, at most 90")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_operator_token)
    p = op_cmds.add_parser("tokens", help="list system tokens")
    add_common(p)
    p.set_defaults(func=cmd_operator_tokens)
    p = op_cmds.add_parser("revoke", help="revoke a token by its id")
    add_common(p)
    p.add_argument("token_id", type=int)
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_operator_revoke)

    gw = cmds.add_parser("gateway", help="bank gateways (icbc, unionpay)")
    gw_cmds = gw.add_subparsers(dest="gateway_command", required=True, metavar="ACTION")
    p = gw_cmds.add_parser("key", help="set the RSA public key a gateway signs its notices with")
    add_common(p)
    p.add_argument("gateway", choices=("icbc", "unionpay"))
    p.add_argument("--public-key", required=True, help="PEM file")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_gateway_key)

    pay = cmds.add_parser("payout", help="the withdrawal payout cycle")
    pay_cmds = pay.add_subparsers(dest="payout_command", required=True, metavar="ACTION")
    p = pay_cmds.add_parser("export", help="write a working day's batch to a CSV: every withdrawal submitted before"
                            " its 17:00 cut-off and not yet exported (then exported)")
    add_common(p)
    p.add_argument("file")
    p.add_argument("--day", help="YYYY-MM-DD, a working day whose cut-off has passed (default: the latest such day)")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_payout_export)
    p = pay_cmds.add_parser("import", help="import the bank's results (id,result,reference,reason): all or none")
    add_common(p)
    p.add_argument("file")
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_payout_import)


def _register_tools(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("bank-sim", help="the simulated bank: sign and send a notice for an order (demo, tests)")
    add_common(p)
    p.add_argument("order_id")
    p.add_argument("--amount", type=int, required=True, help="cents, as the bank paid")
    p.add_argument("--result", choices=("S", "F"), default="S")
    p.add_argument("--gateway", choices=("icbc", "unionpay"), default="unionpay")
    p.add_argument("--serial", help="bank serial (default: a new one)")
    p.add_argument("--key", help="the gateway's private key PEM (default: the demo key in the data folder)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the platform's base URL")
    p.set_defaults(func=cmd_bank_sim)

    cal = cmds.add_parser("calendar", help="the operator calendar (working days)")
    cal_cmds = cal.add_subparsers(dest="calendar_command", required=True, metavar="ACTION")
    p = cal_cmds.add_parser("set", help="mark a date a workday or a holiday")
    add_common(p)
    p.add_argument("date", help="YYYY-MM-DD")
    p.add_argument("kind", choices=("workday", "holiday"))
    p.add_argument("--actor", default="cli")
    p.set_defaults(func=cmd_calendar_set)

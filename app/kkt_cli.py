"""``rechargectl kkt …``: the operator's KaKaTong commands (SPEC 3).

Merchants, terminals (POS, operator, administrator, SMS), license keys, service codes,
points rules, card batches (with a progress bar), and card state changes (lost, found,
frozen, unfrozen, cancelled, reissued). Every write is recorded in ``operator_actions``
with ``--actor`` and, for card state changes, a mandatory ``--reason``. The logic lives in
``recharge.kkt.cards`` and is shared with the admin HTTP API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from app.commands import add_common, run_with_db
from recharge.config import Settings
from recharge.kkt import cards

Work = Callable[[asyncpg.Connection], Awaitable[int]]


def _run(settings: Settings, work: Work) -> int:
    async def guarded(conn: asyncpg.Connection) -> int:
        try:
            return await work(conn)
        except cards.AdminError as exc:
            print(f"rechargectl kkt: {exc}", file=sys.stderr)
            return 2

    return run_with_db(settings, guarded)


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _datetime(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def cmd_merchant(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        merchant_id = await cards.upsert_merchant(conn, a.code, a.name, issuing=not a.not_issuing,
                                                  consuming=not a.not_consuming, closed=a.closed, actor=a.actor)
        print(f"merchant {a.code} (id {merchant_id}) saved")
        return 0

    return _run(settings, work)


def cmd_terminal(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        await cards.upsert_terminal(conn, a.code, a.merchant, a.kind, msisdn=a.msisdn, enabled=not a.disabled,
                                    daily_recharge_limit_cents=a.daily_recharge_limit_cents, actor=a.actor)
        print(f"terminal {a.code} ({a.kind}) of merchant {a.merchant} saved")
        return 0

    return _run(settings, work)


def cmd_license_key(settings: Settings, a: argparse.Namespace) -> int:
    key = a.key or os.environ.get("RECHARGE_KKT_LICENSE_KEY") or sys.stdin.readline().strip()

    async def work(conn: asyncpg.Connection) -> int:
        await cards.upsert_license_key(conn, key, a.merchant, valid_to=a.valid_to, networks=a.network or None,
                                       enabled=not a.disabled, test_mode=a.test_mode, actor=a.actor)
        print(f"license key …{key[-4:]} of merchant {a.merchant} saved")
        return 0

    return _run(settings, work)


def cmd_service_code(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        await cards.upsert_service_code(conn, a.merchant, a.item_code, a.name, actor=a.actor)
        print(f"service code {a.item_code} of merchant {a.merchant} saved")
        return 0

    return _run(settings, work)


def cmd_points_rule(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        await cards.upsert_points_rule(conn, a.merchant, a.cents_per_point, actor=a.actor)
        print(f"merchant {a.merchant}: one point per {a.cents_per_point} cents")
        return 0

    return _run(settings, work)


def cmd_accept(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            await cards.set_acceptance(conn, a.issuer, a.merchant, accepted=not a.revoke, actor=a.actor)
        verb = "no longer serves" if a.revoke else "serves"
        print(f"merchant {a.merchant} {verb} the cards of issuer {a.issuer}")
        return 0

    return _run(settings, work)


def cmd_card_batch(settings: Settings, a: argparse.Namespace) -> int:
    from tqdm import tqdm

    async def work(conn: asyncpg.Connection) -> int:
        with tqdm(total=a.count, unit="card", file=sys.stderr, disable=a.quiet) as bar:
            batch = await cards.create_card_batch(
                conn, a.merchant, a.count, kind=a.kind, valid_from=a.valid_from, valid_to=a.valid_to,
                per_txn_limit_cents=a.per_txn_limit_cents, daily_count_limit=a.daily_count_limit,
                progress=bar.update, actor=a.actor,
            )
        print(f"{batch.count} cards {batch.first} … {batch.last} generated (not activated)")
        return 0

    return _run(settings, work)


def cmd_card_state(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        state = await cards.change_card_state(conn, a.card_no, a.action, actor=a.actor, reason=a.reason)
        print(f"card {a.card_no} is now {state}")
        return 0

    return _run(settings, work)


def cmd_card_reissue(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        new = await cards.reissue_card(conn, a.card_no, actor=a.actor, reason=a.reason, new_card_no=a.new_card_no)
        print(f"card {a.card_no} reissued as {new}")
        return 0

    return _run(settings, work)


def cmd_card_password(settings: Settings, a: argparse.Namespace) -> int:
    from recharge.keys import KeyFileError, load_keys

    # never from argv (it would sit in the shell history and the process list)
    password = sys.stdin.readline().strip() if a.password_stdin else getpass.getpass("new 6-digit password: ")
    try:
        keys = load_keys(settings.resolved_key_file)
    except KeyFileError as exc:
        print(f"rechargectl kkt: {exc}", file=sys.stderr)
        return 2

    async def work(conn: asyncpg.Connection) -> int:
        await cards.reset_card_password(conn, a.card_no, password, cards.password_pepper(keys),
                                        settings.kkt_password_hash_iterations, actor=a.actor, reason=a.reason)
        print(f"card {a.card_no}: password set, lock lifted")
        return 0

    return _run(settings, work)


def cmd_card_show(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        info = await cards.card_summary(conn, a.card_no)
        if info is None:
            raise cards.AdminError(f"card {a.card_no} does not exist")
        print(json.dumps(info, ensure_ascii=False, indent=2, default=str))
        return 0

    return _run(settings, work)


Command = Callable[[Settings, argparse.Namespace], int]
Add = Callable[[str, str, Command], argparse.ArgumentParser]


def register(sub: Any) -> None:
    kkt = sub.add_parser("kkt", help="KaKaTong reference data and cards (merchants, terminals, keys, cards)")
    ks = kkt.add_subparsers(dest="kkt_command", required=True, metavar="KKT_COMMAND")

    def add(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ks.add_parser(name, help=help_text, description=help_text)
        add_common(p)
        p.add_argument("--actor", default=os.environ.get("USER", "operator"), help="who does this (audit trail)")
        p.set_defaults(func=func)
        return p

    _reference_commands(add)
    _card_commands(add)


def _reference_commands(add: Add) -> None:
    p = add("merchant", "create or update a merchant (issuing and/or consuming)", cmd_merchant)
    p.add_argument("code", help="4 digits")
    p.add_argument("name")
    p.add_argument("--not-issuing", action="store_true")
    p.add_argument("--not-consuming", action="store_true")
    p.add_argument("--closed", action="store_true", help="closed merchants' trades answer 60")

    p = add("terminal", "create or update a terminal (pos, operator, admin, sms)", cmd_terminal)
    p.add_argument("code")
    p.add_argument("--merchant", required=True)
    p.add_argument("--kind", required=True, choices=cards.TERMINAL_KINDS)
    p.add_argument("--msisdn", help="SMS terminals: the operator's mobile number")
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--daily-recharge-limit-cents", type=int, help="code 58 limit (default: the setting)")

    p = add("license-key", "create or update a license key (the key: argument, RECHARGE_KKT_LICENSE_KEY or stdin)",
            cmd_license_key)
    p.add_argument("key", nargs="?")
    p.add_argument("--merchant", required=True)
    p.add_argument("--valid-to", type=_datetime, help="ISO time; after it the key answers 2")
    p.add_argument("--network", action="append", help="allowed caller network (CIDR), repeatable; default all")
    p.add_argument("--disabled", action="store_true", help="the key answers 3")
    p.add_argument("--test-mode", action="store_true", help="at most kkt_test_mode_daily_max trades a day (68)")

    p = add("service-code", "create or update a service code (ITEMCODE) and its name", cmd_service_code)
    p.add_argument("merchant")
    p.add_argument("item_code")
    p.add_argument("name")

    p = add("points-rule", "set a merchant's points rule: one point per N cents spent", cmd_points_rule)
    p.add_argument("merchant")
    p.add_argument("cents_per_point", type=int)

    p = add("accept", "let a merchant's terminals serve an issuer's cards (others answer 52)", cmd_accept)
    p.add_argument("issuer", help="the issuing merchant's 4-digit code")
    p.add_argument("merchant", help="the merchant whose terminals may serve its cards")
    p.add_argument("--revoke", action="store_true", help="stop serving them")



def _card_commands(add: Add) -> None:
    p = add("card-batch", "generate a batch of not-yet-activated cards (shows progress)", cmd_card_batch)
    p.add_argument("--merchant", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--kind", default="both", choices=cards.CARD_KINDS)
    p.add_argument("--valid-from", type=_date)
    p.add_argument("--valid-to", type=_date)
    p.add_argument("--per-txn-limit-cents", type=int)
    p.add_argument("--daily-count-limit", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("card-state", "mark a card lost / found / frozen / unfrozen / cancelled", cmd_card_state)
    p.add_argument("card_no")
    p.add_argument("action", choices=("lose", "found", "freeze", "unfreeze", "cancel"))
    p.add_argument("--reason", required=True)

    p = add("card-reissue", "replace a card by a new number; value, points and bindings move to it", cmd_card_reissue)
    p.add_argument("card_no")
    p.add_argument("--reason", required=True)
    p.add_argument("--new-card-no", help="default: the issuing merchant's next number")

    p = add("card-password", "set a card's password and lift a lock (prompted, or --password-stdin)",
            cmd_card_password)
    p.add_argument("card_no")
    p.add_argument("--reason", required=True)
    p.add_argument("--password-stdin", action="store_true")

    p = add("card-show", "a card's state, limits, bindings and balances as JSON", cmd_card_show)
    p.add_argument("card_no")

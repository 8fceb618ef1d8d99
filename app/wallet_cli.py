"""``rechargectl wallet …``: the operator's SIM wallet reference data (SPEC 7): POS terminals of merchants
and halls, merchant commission rates, stock RFID-SIMs and their binding to a number; the merchants' daily
settlement and the lost cards' write-off; the negative-shadow audit. Every write is recorded in
``operator_actions`` with ``--actor``; the rules live in ``recharge.wallet``. The virtual devices (``card``,
``stk``, ``pos``) are ``app.wallet_devices``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import Any

import asyncpg

from app import wallet_devices
from app.commands import add_common, run_with_db
from recharge.config import Settings
from recharge.keys import load_keys
from recharge.kkt.cards import record_action
from recharge.mpay import calendar
from recharge.mpay.keyring import MpayKeys
from recharge.mpay.text import SHANGHAI
from recharge.wallet import cards, loads, payouts, retired, shadows, terminals
from recharge.wallet.books import BOOKS

_FAILED = (terminals.Result.INVALID, terminals.Result.EXISTS_WITH_DIFFERENT_FIELDS)


def cmd_terminal(settings: Settings, a: argparse.Namespace) -> int:
    terminal = terminals.Terminal(a.terminal_id.rjust(12, "0"), merchant=a.merchant, hall=a.hall)

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            (result,) = await terminals.register(conn, [terminal])
            if result == terminals.Result.CREATED:
                await record_action(conn, a.actor, "wallet.terminal", terminal.terminal_id, "registered",
                                    merchant=a.merchant, hall=a.hall)
        print(f"terminal {terminal.terminal_id}: {result.value}")
        return 2 if result in _FAILED else 0

    return run_with_db(settings, work)


def cmd_rate(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            (result,) = await terminals.set_rates(conn, [(a.merchant, a.basis_points)])
            if result == terminals.Result.CREATED:
                await record_action(conn, a.actor, "wallet.rate", a.merchant, "commission rate set",
                                    commission_bp=a.basis_points)
        print(f"merchant {a.merchant} commission {a.basis_points / 100:.2f} %: {result.value}")
        return 2 if result in _FAILED else 0

    return run_with_db(settings, work)


def cmd_stock(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            results = await cards.add_stock(conn, a.card_no)
            created = [c for c, r in zip(a.card_no, results, strict=True) if r == terminals.Result.CREATED]
            if created:
                await record_action(conn, a.actor, "wallet.stock", f"{len(created)} cards", "stock registered",
                                    cards=created)
        for card_no, result in zip(a.card_no, results, strict=True):
            print(f"card {card_no}: {result.value}")
        return 2 if terminals.Result.INVALID in results else 0

    return run_with_db(settings, work)


def cmd_bind(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            (result,) = await cards.bind(conn, [(a.msisdn, a.card_no)])
            if result == terminals.Result.CREATED:
                await record_action(conn, a.actor, "wallet.bind", a.card_no, a.reason, msisdn=a.msisdn)
        print(f"card {a.card_no} → {a.msisdn}: {result.value}")
        return 2 if result in _FAILED else 0

    return run_with_db(settings, work)


def cmd_shadows(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        found = await shadows.negative(conn)
        for shadow in found:
            why = f"{shadow.unresolved_loads} load(s) unresolved" if shadow.explained else "NO LOAD UNRESOLVED"
            print(f"W/{shadow.account_id}: {shadow.balance / 100:.2f} yuan ({why})")
        unexplained = sum(1 for s in found if not s.explained)
        print(f"{len(found)} negative wallet shadow(s), {unexplained} without an unresolved load")
        return 1 if unexplained else 0

    return run_with_db(settings, work)


def cmd_settle(settings: Settings, a: argparse.Namespace) -> int:
    """The merchants' daily settlement through the payout batch (a working day's, unless ``--force``)."""
    day = dt.date.fromisoformat(a.date) if a.date else dt.datetime.now(SHANGHAI).date()

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            if not a.force and not await calendar.is_workday(conn, day):
                print(f"{day} is not a working day: no payout (--force to run it anyway)")
                return 0
            statements, new = await payouts.settle_day(conn, day)
            if new:
                await record_action(conn, a.actor, "wallet.settle", day.isoformat(), "merchant settlement",
                                    merchants=len(statements), payout_cents=sum(s.payout_cents for s in statements))
        folder = settings.data_dir / "settlement"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / payouts.file_name(day)
        path.write_text(payouts.render_csv(statements), encoding="utf-8")
        for s in statements:
            print(f"{s.merchant}\tsales {s.sales} ({s.sales_cents / 100:.2f})\tcommission {s.commission_cents / 100:.2f}"
                  f"\tpaid out {s.payout_cents / 100:.2f}")
        print(f"{day}: {len(statements)} merchant statement(s){'' if new else ' (settled before)'} → {path}")
        return 0

    return run_with_db(settings, work)


def cmd_load_resolve(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        keys = MpayKeys.of(load_keys(settings.resolved_key_file))
        async with conn.transaction():
            answer = await loads.resolve(conn, keys, a.load_id, a.outcome == "posted")
            if isinstance(answer, loads.Load):
                await record_action(conn, a.actor, "wallet.load_resolve", a.load_id, a.reason, outcome=a.outcome)
        if isinstance(answer, loads.LoadRefused):
            print(f"load {a.load_id}: not loading ({answer.load.state if answer.load else 'unknown'})",
                  file=sys.stderr)
            return 1
        print(f"load {a.load_id}: {answer.state}")
        return 0

    return run_with_db(settings, work)


def cmd_writeoff(settings: Settings, a: argparse.Namespace) -> int:
    """SPEC 7.6: lost cards' value idle ``wallet_writeoff_idle_months`` → FEE."""
    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            done = await retired.write_off(conn, BOOKS, idle_months=settings.wallet_writeoff_idle_months,
                                           now=dt.datetime.now(dt.UTC))
            if done:
                await record_action(conn, a.actor, "wallet.writeoff", f"{len(done)} cards", "RETIRED → FEE",
                                    cards=[w.card_no for w in done], cents=sum(w.amount for w in done))
        for w in done:
            print(f"{w.card_no}\t{w.amount / 100:.2f}\tidle since {w.last_moved.astimezone(SHANGHAI):%Y-%m-%d}")
        print(f"{len(done)} card(s) written off ({sum(w.amount for w in done) / 100:.2f} yuan RETIRED → FEE)")
        return 0

    return run_with_db(settings, work)


def register_writeoff(parser: argparse.ArgumentParser) -> None:
    """``writeoff``'s options (``rechargectl mpay wallet writeoff``, SPEC 7.6's name, and ``rechargectl wallet
    writeoff``)."""
    add_common(parser)
    parser.add_argument("--actor", default=os.environ.get("USER", "operator"), help="who does this (audit trail)")
    parser.set_defaults(func=cmd_writeoff)


def register(sub: Any) -> None:
    wallet = sub.add_parser("wallet", help="SIM wallet reference data (POS terminals, commission rates, stock SIMs)")
    ws = wallet.add_subparsers(dest="wallet_command", required=True, metavar="WALLET_COMMAND")

    def add(name: str, help_text: str, func: Callable[[Settings, argparse.Namespace], int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ws.add_parser(name, help=help_text, description=help_text)
        add_common(p)
        p.add_argument("--actor", default=os.environ.get("USER", "operator"), help="who does this (audit trail)")
        p.set_defaults(func=func)
        return p

    p = add("terminal", "register a POS terminal of a merchant (purchases, returns) or of a hall (loads, swaps)",
            cmd_terminal)
    p.add_argument("terminal_id", help="up to 12 digits (left-padded with zeros)")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--merchant", help="merchant id ([A-Z0-9]{4,16})")
    owner.add_argument("--hall", help="hall id (e.g. HN0001)")

    p = add("rate", "set a merchant's commission on uploaded purchases (default 60 = 0.60 %)", cmd_rate)
    p.add_argument("merchant")
    p.add_argument("basis_points", type=int, help="hundredths of a per cent, 0..10000")

    p = add("stock", "register stock RFID-SIMs (bound to a number later by the counter's SIM swap)", cmd_stock)
    p.add_argument("card_no", nargs="+", help="16-digit card numbers")

    p = add("bind", "bind a stock RFID-SIM to a number (the counter's SIM swap, step 2; the old card retires)",
            cmd_bind)
    p.add_argument("msisdn")
    p.add_argument("card_no")
    p.add_argument("--reason", required=True, help="why (recorded in operator_actions)")

    p = add("settle", "the merchants' daily settlement: each wallet merchant's statement and its available balance"
            " MER → PAYOUT (once a day; CSV in <data_dir>/settlement/wallet_YYYYMMDD.csv)", cmd_settle)
    p.add_argument("--date", help="the Shanghai day YYYY-MM-DD (default today)")
    p.add_argument("--force", action="store_true", help="settle a day that is not a working day too")

    register_writeoff(ws.add_parser("writeoff", help="write lost cards' value idle 24 months off: RETIRED → FEE"))

    wallet_devices.register(ws)

    p = add("shadows", "list wallet shadows below zero (exit 1 if one has no unresolved load: SPEC 7.4)",
            cmd_shadows)

    p = add("load-resolve", "settle a SIM wallet load left loading, from the card's log (customer service)",
            cmd_load_resolve)
    p.add_argument("load_id", help="L and digits")
    p.add_argument("--outcome", required=True, choices=("posted", "waiting"),
                   help="posted: the card was credited; waiting: it was not (the load may be driven again)")
    p.add_argument("--reason", required=True, help="why (recorded in operator_actions)")


"""``rechargectl wallet …``: the operator's SIM wallet reference data (SPEC 7): POS terminals of merchants
and halls, merchant commission rates, stock RFID-SIMs and their binding to a number. Every write is recorded
in ``operator_actions`` with ``--actor``; the rules live in ``recharge.wallet``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import asyncpg

from app.commands import add_common, run_with_db
from recharge.config import Settings
from recharge.keys import load_keys
from recharge.kkt.cards import record_action
from recharge.mpay.keyring import MpayKeys
from recharge.wallet import cards, loads, shadows, terminals

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

    p = add("shadows", "list wallet shadows below zero (exit 1 if one has no unresolved load: SPEC 7.4)",
            cmd_shadows)

    p = add("load-resolve", "settle a SIM wallet load left loading, from the card's log (customer service)",
            cmd_load_resolve)
    p.add_argument("load_id", help="L and digits")
    p.add_argument("--outcome", required=True, choices=("posted", "waiting"),
                   help="posted: the card was credited; waiting: it was not (the load may be driven again)")
    p.add_argument("--reason", required=True, help="why (recorded in operator_actions)")


"""``rechargectl operator …``: console operator accounts (add, reset-password, disable, enable, list).

``add`` and ``reset-password`` print a one-time password, once, on stdout: the operator must
change it at the first sign-in. Every change is recorded in ``operator_actions`` with ``--actor``.
Exit status: 0 done, 1 refused (nothing changed, the reason on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from app.commands import add_common, run_with_db
from recharge.config import Settings
from recharge.operators import accounts

Work = Callable[[asyncpg.Connection], Awaitable[int]]


def _run(settings: Settings, work: Work) -> int:
    async def guarded(conn: asyncpg.Connection) -> int:
        try:
            return await work(conn)
        except accounts.OperatorError as exc:
            print(f"rechargectl operator: {exc}", file=sys.stderr)
            return 1

    return run_with_db(settings, guarded)


def cmd_add(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        operator, password = await accounts.add_operator(conn, a.name, a.role, actor=a.actor,
                                                         cost=accounts.Argon2Cost.of(settings))
        print(f"operator {operator.name} ({operator.role}) added; one-time password (change it at first sign-in):")
        print(password)
        return 0

    return _run(settings, work)


def cmd_reset_password(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        password = await accounts.reset_password(conn, a.name, actor=a.actor, reason=a.reason,
                                                 cost=accounts.Argon2Cost.of(settings))
        print(f"operator {a.name}: lock lifted, sessions ended; one-time password (change it at first sign-in):")
        print(password)
        return 0

    return _run(settings, work)


def cmd_disable(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        await accounts.set_disabled(conn, a.name, a.operator_command == "disable", actor=a.actor, reason=a.reason)
        print(f"operator {a.name} {a.operator_command}d")
        return 0

    return _run(settings, work)


def cmd_list(settings: Settings, a: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        for op in await accounts.list_operators(conn):
            flags = [f for f, on in (("disabled", op.disabled), ("must-change-password", op.must_change_password))
                     if on]
            locked = f" locked until {op.locked_until:%Y-%m-%d %H:%M:%S}Z" if op.locked_until else ""
            print(f"{op.name}\t{op.role}\t{' '.join(flags)}{locked}")
        return 0

    return _run(settings, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("operator", help="operator console accounts: add, reset-password, disable, enable, list")
    osub = p.add_subparsers(dest="operator_command", required=True, metavar="ACTION")

    def add(name: str, help_text: str, func: Callable[[Settings, argparse.Namespace], int]) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = osub.add_parser(name, help=help_text, description=help_text)
        add_common(q)
        q.add_argument("--actor", default=getpass.getuser(), help="who does this (audit trail; default: OS user)")
        q.set_defaults(func=func)
        return q

    q = add("add", "add an operator; prints a one-time password to change at first sign-in", cmd_add)
    q.add_argument("--name", required=True, help="1-32 letters, digits, '.', '_' or '-'")
    q.add_argument("--role", required=True, choices=accounts.ROLES,
                   help="viewer sees; operator acts on terminals, cards, loads; admin also manages operators, "
                   "platforms and keys")
    q = add("reset-password", "a new one-time password for an operator (lifts a lock, ends sessions)",
            cmd_reset_password)
    q.add_argument("--name", required=True)
    q.add_argument("--reason", default="", help="why (audit trail)")
    for action in ("disable", "enable"):
        q = add(action, f"{action} an operator's account", cmd_disable)
        q.add_argument("--name", required=True)
        q.add_argument("--reason", default="", help="why (audit trail)")
    add("list", "list operators with their roles and locks", cmd_list)

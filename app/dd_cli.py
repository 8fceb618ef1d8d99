"""``rechargectl`` commands of the DD side: terminals, operator orders, load resolution, simulator.

- ``terminal add --code C --merchant M --pki P``: register a DD terminal and its module's PKI number.
- ``terminal unlock --code C --actor A --reason R``: lift a lockout after failed sign-ins.
- ``terminal enable|disable --code C --actor A --reason R``: a disabled terminal cannot sign in.
- ``terminal simulate --terminals N --recharges M``: simulated terminals against a running server.
- ``order create --card K --amount CENTS [--merchant 1155] [--unpaid]``: prints the order number.
- ``load resolve --order O --outcome posted|voided --actor A --reason R``: settle a load left
  *loading* by hand (after checking the card), recorded in ``operator_actions``.

Exit status: 0 done, 1 refused (the message says why; nothing changed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from typing import Any

import asyncpg

from app.commands import add_common, run_with_db
from recharge import terminals
from recharge.config import Settings
from recharge.orders import lifecycle as orders
from recharge.orders import model, resolution


def _digits(n: int, what: str) -> Any:
    pattern = re.compile(rf"^[0-9]{{{n}}}$")

    def parse(text: str) -> str:
        if not pattern.match(text):
            raise argparse.ArgumentTypeError(f"{what} must be {n} digits")
        return text

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _refused(message: str) -> int:
    print(f"rechargectl: {message}", file=sys.stderr)
    return 1


# --- terminal


def cmd_terminal_add(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        try:
            await terminals.add_terminal(conn, code=args.code, merchant_code=args.merchant, pki_no=args.pki,
                                         actor=args.actor)
        except terminals.TerminalError as exc:
            return _refused(str(exc))
        print(f"terminal {args.code} of merchant {args.merchant} registered with PKI {args.pki}")
        return 0

    return run_with_db(settings, work)


def cmd_terminal_unlock(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            done = await terminals.unlock_terminal(conn, code=args.code, actor=args.actor, reason=args.reason)
        if not done:
            return _refused(f"terminal {args.code} not found")
        print(f"terminal {args.code} unlocked")
        return 0

    return run_with_db(settings, work)


def cmd_terminal_enable(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        enabled = args.terminal_command == "enable"
        try:
            await terminals.set_terminal_enabled(conn, code=args.code, enabled=enabled, actor=args.actor,
                                                 reason=args.reason)
        except terminals.TerminalError as exc:
            return _refused(str(exc))
        print(f"terminal {args.code} {'enabled' if enabled else 'disabled'}")
        return 0

    return run_with_db(settings, work)


def cmd_terminal_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from app import simulator
    from recharge.keys import KeyFileError, load_keys

    try:
        keys = load_keys(settings.resolved_key_file)
    except KeyFileError as exc:
        return _refused(f"{exc} (the simulator needs the platform's key file)")
    host, port = args.host or "127.0.0.1", args.port or settings.dd_port

    plans: list[simulator.SimPlan] = []

    async def prepare(conn: asyncpg.Connection) -> int:
        plans.append(await simulator.provision(
            conn, host, port, keys, terminals=args.terminals, recharges=args.recharges, amount_cents=args.amount
        ))
        return 0

    run_with_db(settings, prepare)
    plan = plans[0]
    with tqdm(total=args.terminals * args.recharges, unit="recharge", file=sys.stderr) as bar:
        report = asyncio.run(simulator.run(plan, progress=lambda: bar.update(1)))
    print(report.render())
    return 0 if set(report.results) == {"00"} else 1


# --- order


def cmd_order_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE code = $1", args.merchant)
        if merchant_id is None:
            return _refused(f"merchant {args.merchant} not found")
        try:
            created = await orders.create_order(
                conn, merchant_id=merchant_id, amount_cents=args.amount, card_no=args.card, pay=not args.unpaid,
                expiry_s=settings.order_expiry_s, max_amount_cents=settings.order_max_amount_cents,
            )
        except model.OrderError as exc:
            return _refused(f"order refused ({exc.code.value}): {exc}")
        print(created.order.order_no)
        return 0

    return run_with_db(settings, work)


# --- load


def cmd_load_resolve(settings: Settings, args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> int:
        try:
            state = await resolution.resolve_load(
                conn, order_no=args.order, outcome=args.outcome, actor=args.actor, reason=args.reason
            )
        except model.OrderError as exc:
            return _refused(str(exc))
        print(f"order {args.order} resolved as {args.outcome}: state {state}")
        return 0

    return run_with_db(settings, work)


# --- registration


def _actor_options(parser: argparse.ArgumentParser, *, required_reason: bool) -> None:
    parser.add_argument("--actor", default=getpass.getuser(), help="who decides (default: the OS user)")
    parser.add_argument("--reason", required=required_reason, default="" if not required_reason else None,
                        help="why (recorded in operator_actions)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("terminal", help="DD terminals: register, unlock, simulate")
    tsub = p.add_subparsers(dest="terminal_command", required=True, metavar="ACTION")

    a = tsub.add_parser("add", help="register a DD terminal with its security module's PKI number")
    add_common(a)
    a.add_argument("--code", required=True, type=_digits(8, "terminal code"), help="8-digit terminal code (user id)")
    a.add_argument("--merchant", required=True, type=_digits(4, "merchant code"), help="4-digit merchant code")
    a.add_argument("--pki", required=True, type=_digits(8, "PKI number"), help="8-digit PKI number of its module")
    a.add_argument("--actor", default=getpass.getuser(), help="who does this (audit trail; default: the OS user)")
    a.set_defaults(func=cmd_terminal_add)

    for action in ("enable", "disable"):
        e = tsub.add_parser(action, help=f"{action} a terminal (a disabled terminal cannot sign in)")
        add_common(e)
        e.add_argument("--code", required=True, help="terminal code")
        _actor_options(e, required_reason=False)
        e.set_defaults(func=cmd_terminal_enable)

    u = tsub.add_parser("unlock", help="unlock a terminal locked by failed sign-ins")
    add_common(u)
    u.add_argument("--code", required=True, help="terminal code")
    _actor_options(u, required_reason=False)
    u.set_defaults(func=cmd_terminal_unlock)

    s = tsub.add_parser(
        "simulate", help="simulated terminals with virtual cards against a running DD server (test tool)",
        description="Provision N terminals and N×M paid orders, then run N concurrent simulated terminals "
        "(virtual security module and card built from the platform's key file) signing in and recharging. "
        "Prints results by code and latency percentiles per stage; exit 1 if any recharge failed.",
    )
    add_common(s)
    s.add_argument("--terminals", type=_positive_int, default=10, help="concurrent terminals (default 10)")
    s.add_argument("--recharges", type=_positive_int, default=10, help="recharges per terminal (default 10)")
    s.add_argument("--amount", type=_positive_int, default=100, help="cents per recharge (default 100)")
    s.add_argument("--host", help="DD server host (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="DD server port (default: the dd_port setting)")
    s.set_defaults(func=cmd_terminal_simulate)

    p = sub.add_parser("order", help="recharge orders created by an operator")
    osub = p.add_subparsers(dest="order_command", required=True, metavar="ACTION")
    c = osub.add_parser("create", help="create (and pay) an order for a card; prints its 20-digit number")
    add_common(c)
    c.add_argument("--card", required=True, type=_digits(16, "card number"), help="16-digit logical card number")
    c.add_argument("--amount", required=True, type=_positive_int, help="amount in cents")
    c.add_argument("--merchant", default="1155", type=_digits(4, "merchant code"),
                   help="merchant whose recharge fund pays it (default 1155)")
    c.add_argument("--unpaid", action="store_true", help="leave it unpaid (state 01; DD11 pays it)")
    c.set_defaults(func=cmd_order_create)

    p = sub.add_parser("load", help="loads left loading (MAC2 sent, outcome unknown)")
    lsub = p.add_subparsers(dest="load_command", required=True, metavar="ACTION")
    r = lsub.add_parser("resolve", help="settle a load left loading: posted or voided (recorded)")
    add_common(r)
    r.add_argument("--order", required=True, type=_digits(20, "order number"))
    r.add_argument("--outcome", required=True, choices=("posted", "voided"))
    _actor_options(r, required_reason=True)
    r.set_defaults(func=cmd_load_resolve)

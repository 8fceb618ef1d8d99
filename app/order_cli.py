"""``rechargectl`` commands of the order API: the envelope for integrators (``envelope
encode`` / ``envelope decode``), third-party platforms (``platform add``) and daily
settlement (``settle --date``)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg

from app.commands import add_common, run_with_db
from recharge.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("envelope", help="encode or decode an order-API envelope (seed 004 3.2.1)")
    env = p.add_subparsers(dest="envelope_command", required=True, metavar="ACTION")
    e = env.add_parser(
        "encode",
        help="encrypt the plaintext JSON on stdin exactly as given; print the envelope",
        description="Reads the JSON text of the encrypted fields on stdin (byte for byte: use printf, "
        "not echo, to avoid a trailing newline) and prints {\"timestamp\":T,…,\"data\":…,\"mac\":…}.",
    )
    e.add_argument("--timestamp", required=True, help="decimal timestamp (seconds or milliseconds)")
    e.add_argument("--clear", default="{}", help="JSON object of clear fields placed before data "
                   "(covered by the mac), e.g. '{\"status\":1,\"errmsg\":\"\"}'")
    e.add_argument("--lowercase", action="store_true", help="lower-case hex data, as the platform's replies")
    e.set_defaults(func=cmd_envelope_encode)
    d = env.add_parser("decode", help="check the mac of the envelope on stdin and print its plaintext",
                       description="Exit status 1 when the mac, hex or padding is wrong.")
    d.set_defaults(func=cmd_envelope_decode)

    p = sub.add_parser("platform", help="manage order-API platforms")
    plat = p.add_subparsers(dest="platform_command", required=True, metavar="ACTION")
    a = plat.add_parser(
        "add",
        help="register a platform, its merchant and its public key (or generate a key pair)",
        description="Registers platformRaw with the merchant whose recharge fund pays its orders "
        "(created when missing) and the RSA public key for --crt-version. With --generate-key PATH a "
        "new key pair is made for a test client: the private key is written to PATH (mode 0600, never "
        "overwritten) and only the public key is stored.",
    )
    add_common(a)
    a.add_argument("--raw", required=True, help="platformRaw, e.g. 7")
    a.add_argument("--name", required=True, help="display name, e.g. 'public bicycle'")
    a.add_argument("--merchant", required=True, help="4-digit merchant code whose fund pays the orders")
    a.add_argument("--merchant-name", help="name for a merchant created here (default: --name)")
    a.add_argument("--pki", help="8-digit PKI number the platform's replies carry")
    a.add_argument("--crt-version", default="1", help="key version (default 1)")
    key = a.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", type=Path, help="PEM file of the platform's RSA public key")
    key.add_argument("--generate-key", type=Path, metavar="PRIVATE_KEY_PATH",
                     help="generate a key pair; write the private key here")
    a.add_argument("--actor", default=getpass.getuser(), help="who does this (audit trail; default: the OS user)")
    a.set_defaults(func=cmd_platform_add)
    for action in ("disable", "enable"):
        d = plat.add_parser(action, help=f"{action} a platform (or one of its keys with --crt-version)")
        add_common(d)
        d.add_argument("--raw", required=True, help="platformRaw")
        d.add_argument("--crt-version", help="only this key version")
        d.add_argument("--actor", default=getpass.getuser(), help="who does this (audit trail)")
        d.add_argument("--reason", default="", help="why (audit trail)")
        d.set_defaults(func=cmd_platform_enable)

    s = sub.add_parser(
        "settle",
        help="settle a day's loaded orders and write one reconciliation CSV per platform",
        description="Moves the orders loaded on DATE (Asia/Shanghai) in state 03/04 to 05 and writes "
        "<data_dir>/settlement/YYYYMMDD_<platformRaw>.csv; loads still in progress are listed apart. "
        "Running it again changes nothing.",
    )
    add_common(s)
    s.add_argument("--date", required=True, type=dt.date.fromisoformat, help="YYYY-MM-DD")
    s.add_argument("--actor", default=getpass.getuser(), help="who runs it (audit trail; default: the OS user)")
    s.add_argument("--reason", default="", help="why (audit trail; default: daily settlement)")
    s.set_defaults(func=cmd_settle)


def _fail(message: str, status: int = 1) -> int:
    print(f"rechargectl: {message}", file=sys.stderr)
    return status


def cmd_envelope_encode(settings: Settings, args: argparse.Namespace) -> int:
    from http_api.order_envelope import EnvelopeError, envelope_encrypt

    try:
        plaintext = sys.stdin.buffer.read().decode("utf-8")
        clear = json.loads(args.clear)
    except (UnicodeDecodeError, ValueError) as exc:
        return _fail(f"bad input: {exc}", 2)
    if not isinstance(clear, dict) or {"timestamp", "data", "mac"} & set(clear):
        return _fail("--clear must be a JSON object without timestamp, data or mac", 2)
    try:
        data, mac = envelope_encrypt(args.timestamp, plaintext, clear=clear, lowercase=args.lowercase)
    except EnvelopeError as exc:
        return _fail(str(exc), 2)
    envelope: dict[str, Any] = {"timestamp": int(args.timestamp), **clear, "data": data, "mac": mac}
    print(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False))
    return 0


def cmd_envelope_decode(settings: Settings, args: argparse.Namespace) -> int:
    from http_api.order_envelope import EnvelopeError, open_envelope

    try:
        envelope = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _fail("stdin is not a JSON envelope")
    if not isinstance(envelope, dict):
        return _fail("stdin is not a JSON object")
    timestamp, data, mac = envelope.get("timestamp"), envelope.get("data"), envelope.get("mac")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not isinstance(data, str) \
            or not isinstance(mac, str):
        return _fail("the envelope needs an integer timestamp and string data and mac")
    try:
        plaintext = open_envelope(envelope)
    except EnvelopeError as exc:
        return _fail(f"bad envelope: {exc}")
    sys.stdout.write(plaintext + ("\n" if sys.stdout.isatty() else ""))
    return 0


def cmd_platform_add(settings: Settings, args: argparse.Namespace) -> int:
    from recharge.orders import platforms as order_platforms
    from recharge.orders.platforms import PlatformError

    try:
        if args.public_key is not None:
            public_pem = args.public_key.read_text(encoding="ascii")
            order_platforms.parse_public_key(public_pem, min_bits=settings.order_api_min_rsa_bits)
    except (OSError, UnicodeDecodeError, PlatformError) as exc:
        return _fail(f"public key: {exc}", 2)

    async def work(conn: asyncpg.Connection) -> int:
        try:
            pem = order_platforms.generate_key_pair(args.generate_key) if args.generate_key else public_pem
            platform, added = await order_platforms.register_with_key(
                conn, platform_raw=args.raw, name=args.name, merchant_code=args.merchant,
                merchant_name=args.merchant_name, pki_no=args.pki, crt_version=args.crt_version, public_key_pem=pem,
                min_bits=settings.order_api_min_rsa_bits, actor=args.actor,
            )
        except PlatformError as exc:
            if args.generate_key is not None and "not overwriting" not in str(exc):
                args.generate_key.unlink(missing_ok=True)  # its public half was not registered
            return _fail(str(exc), 2)
        print(f"platform {platform.platform_raw} ({platform.name}) pays from merchant id {platform.merchant_id};"
              f" key crt_version {args.crt_version} {'registered' if added else 'already registered'}")
        if args.generate_key is not None:
            print(f"private key written to {args.generate_key} (keep it with the client; never in the repo)")
        return 0

    return run_with_db(settings, work)


def cmd_platform_enable(settings: Settings, args: argparse.Namespace) -> int:
    from recharge.orders import platforms as order_platforms

    async def work(conn: asyncpg.Connection) -> int:
        enabled = args.platform_command == "enable"
        try:
            await order_platforms.set_enabled(conn, args.raw, enabled, actor=args.actor, reason=args.reason,
                                              crt_version=args.crt_version)
        except order_platforms.PlatformError as exc:
            return _fail(str(exc))
        what = f"key {args.crt_version} of platform" if args.crt_version else "platform"
        print(f"{what} {args.raw} {'enabled' if enabled else 'disabled'}")
        return 0

    return run_with_db(settings, work)


def cmd_settle(settings: Settings, args: argparse.Namespace) -> int:
    from recharge.orders.settlement import run_settlement

    async def work(conn: asyncpg.Connection) -> int:
        done = await run_settlement(conn, args.date, settings.data_dir / "settlement", actor=args.actor,
                                    reason=args.reason or "daily settlement")
        for st, path in done:
            print(f"{path}: {len(st.settled)} settled, {len(st.loading)} loading")
        return 0

    return run_with_db(settings, work)

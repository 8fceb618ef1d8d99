"""Prepaid recharge cards (充值卡, SPEC 6.6): pool import and single-use recharges into K.

Only imported PINs exist, stored as HMAC-SHA256 under ``K_pin``. A recharge checks, in
order: the account's status, the platform pause (``6006``), the MSISDN's block (``6005``),
the PIN's format (``6001``, not counted), unknown (``6001``, counted), used (``6002``),
expired (``6003``, valid through its date), province (``6004``); success moves the face
value ``PPC/<province> → K/<acct>`` once (the transfer id is the card's serial). The 5th
unknown PIN of an MSISDN in 24 h answers ``6005`` and blocks it 24 h; the 1,001st
platform-wide in an hour answers ``6006`` and pauses every card recharge 15 min.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass

import asyncpg

from recharge.mpay import accounts, matrix, outbox, postings
from recharge.mpay.codes import Refused
from recharge.mpay.env import Env
from recharge.mpay.text import today, yuan

HEADER = ["serial", "pin", "face_yuan", "province", "expiry"]
FACES_YUAN = (10, 20, 30, 50, 100, 200, 300, 500)
SERIAL_RE = re.compile(r"[0-9]{5}18[0-9]{10}")
PIN_RE = re.compile(r"18[0-9]{16}")
PROVINCE_RE = re.compile(r"[1-9][0-9]0000")
REPLY = "充值成功!充值卡账户充入{amt}元,充值卡账户余额{bal}元。"
PLATFORM_BLOCK = "pin:platform"


class ImportRefused(Exception):
    """The card file was refused whole; the text names the first bad row (never a PIN)."""


@dataclass(frozen=True, slots=True)
class CardRow:
    serial: str
    pin: str
    face_cents: int
    province: str
    expiry: dt.date


def parse_pool(text: str) -> list[CardRow]:
    """Every row of a card file, or ``ImportRefused`` for the first bad one."""
    reader = csv.reader(io.StringIO(text))
    if next(reader, None) != HEADER:
        raise ImportRefused(f"the header must be {','.join(HEADER)}")
    rows, serials, pins = [], set(), set()
    for number, fields in enumerate(reader, start=2):
        if len(fields) != 5:
            raise ImportRefused(f"row {number}: 5 fields expected")
        serial, pin, face, province, expiry = (f.strip() for f in fields)
        try:
            day = dt.date.fromisoformat(expiry) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", expiry) else None
        except ValueError:
            day = None
        if not SERIAL_RE.fullmatch(serial) or not PIN_RE.fullmatch(pin) or day is None:
            raise ImportRefused(f"row {number}: bad serial, PIN or expiry")
        if not face.isdigit() or int(face) not in FACES_YUAN or not PROVINCE_RE.fullmatch(province):
            raise ImportRefused(f"row {number}: bad face value or province")
        if serial in serials or pin in pins:
            raise ImportRefused(f"row {number}: serial or PIN repeated in the file")
        serials.add(serial)
        pins.add(pin)
        rows.append(CardRow(serial, pin, int(face) * 100, province, day))
    return rows


async def import_pool(conn: asyncpg.Connection, env: Env, rows: list[CardRow]) -> int:
    """Store a parsed pool (all or nothing, in the caller's transaction); returns the count."""
    macs = [env.keys.pin_mac(r.pin) for r in rows]
    clash = await conn.fetchval(
        "SELECT count(*) FROM mpay_prepaid_cards WHERE serial = ANY($1::text[]) OR pin_mac = ANY($2::bytea[])",
        [r.serial for r in rows], macs,
    )
    if clash:
        raise ImportRefused(f"{clash} serial(s) or PIN(s) already stored")
    await conn.executemany(
        "INSERT INTO mpay_prepaid_cards (serial, pin_mac, face_cents, province, expiry) VALUES ($1, $2, $3, $4, $5)",
        [(r.serial, mac, r.face_cents, r.province, r.expiry) for r, mac in zip(rows, macs, strict=True)],
    )
    return len(rows)


async def _blocked(conn: asyncpg.Connection, subject: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM mpay_blocks WHERE subject = $1 AND until > now()", subject))


async def _block(conn: asyncpg.Connection, subject: str, seconds: int) -> None:
    await conn.execute(
        "INSERT INTO mpay_blocks (subject, until) VALUES ($1, now() + make_interval(secs => $2))"
        " ON CONFLICT (subject) DO UPDATE SET until = EXCLUDED.until",
        subject, float(seconds),
    )


async def _count_unknown(conn: asyncpg.Connection, env: Env, msisdn: str) -> Refused:
    """Record an unknown PIN; the refusal it earns (6001, or 6005 / 6006 at a limit)."""
    s = env.settings
    await conn.execute("INSERT INTO mpay_pin_failures (msisdn) VALUES ($1)", msisdn)
    mine = await conn.fetchval(
        "SELECT count(*) FROM mpay_pin_failures WHERE msisdn = $1 AND created_at > now() - interval '24 hours'",
        msisdn,
    )
    everyone = await conn.fetchval(
        "SELECT count(*) FROM mpay_pin_failures WHERE created_at > now() - interval '1 hour'"
    )
    if everyone > s.mpay_cards_platform_failures:
        await _block(conn, PLATFORM_BLOCK, s.mpay_cards_platform_pause_s)
        return Refused("6006")
    if mine >= s.mpay_cards_msisdn_failures:
        await _block(conn, f"pin:{msisdn}", s.mpay_cards_msisdn_block_s)
        return Refused("6005")
    return Refused("6001")


@dataclass(frozen=True, slots=True)
class Recharged:
    amount: int
    card_balance: int
    reply: str


async def recharge(
    conn: asyncpg.Connection, env: Env, account: asyncpg.Record, msisdn: str, pin: str, channel: str
) -> Recharged:
    """Redeem a card into the (locked) account's K bucket; ``msisdn`` is whose attempts count.

    The card's SMS (6.5's reply) is queued unless the channel is SMS (its reply is the text)."""
    matrix.require(account, "recharge", channel)
    if await _blocked(conn, PLATFORM_BLOCK):
        raise Refused("6006")
    if await _blocked(conn, f"pin:{msisdn}"):
        raise Refused("6005")
    if not PIN_RE.fullmatch(pin):
        raise Refused("6001")
    card = await conn.fetchrow(
        "SELECT * FROM mpay_prepaid_cards WHERE pin_mac = $1 FOR UPDATE", env.keys.pin_mac(pin)
    )
    if card is None:
        raise await _count_unknown(conn, env, msisdn)
    if card["used_at"] is not None:
        raise Refused("6002")
    if today() > card["expiry"]:
        raise Refused("6003")
    if card["province"] not in env.provinces(env.settings.mpay_cards_provinces):
        raise Refused("6004")
    transfer_id = f"mpay:card:{card['serial']}"
    ppc = await postings.account_id(conn, f"PPC/{card['province']}")
    await postings.must(conn, [postings.Move(transfer_id, ppc, account["card_account"], card["face_cents"],
                                             "mpay_card", card["serial"])])
    await conn.execute(
        "UPDATE mpay_prepaid_cards SET used_by = $2, used_at = now(), transfer_id = $3 WHERE serial = $1",
        card["serial"], account["id"], transfer_id,
    )
    figures = await accounts.balances(conn, account)
    reply = REPLY.format(amt=yuan(card["face_cents"]), bal=yuan(figures.card))
    if channel != "sms":
        await outbox.notify(conn, env.keys, account, reply)
    return Recharged(card["face_cents"], figures.card, reply)

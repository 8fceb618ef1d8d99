"""The 10658888 SMS channel (SPEC 6.5): one MO in, one reply text out.

``handle(conn, env, sender, text, message_id)`` runs one MO in one transaction: MOs of one
MSISDN one at a time in arrival order (a transaction advisory lock on the number), a
repeated (``from``, ``id``) within 7 days answered with the first reply (a repeat arriving
while the first runs waits for it), then parsing (``7002``, ``7001``), the command or the
dialogue step, and the reply stored with everything the MO changed. A refusal replies its
zh text and commits only attempt counters and the dialogue's end. Never raises for anything
a sender can type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from recharge.db import RetryPolicy, retry_transaction
from recharge.mpay import dialogues, sms_commands
from recharge.mpay.codes import HELP_TEXT, Refused
from recharge.mpay.env import Env
from recharge.mpay.text import nfkc, parse_yuan

KEEPS_DIALOGUE = frozenset({"3002", "7003"})
STRAY_WORDS = frozenset({"A", "Y", "0", "9", "6"})
_HF_GLUED = re.compile(r"HF(\S+)")
# Commands whose argument is optional (None) or required; KT takes only "A"; the rest none.
_ONE_ARG = frozenset({"CZK", "TX", "HF"})


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply, and the metric labels: the command word (or ``step``/``none``) and the code."""

    reply: str
    command: str
    code: str


@dataclass(frozen=True, slots=True)
class Parsed:
    command: str | None  # a command word, or None for a plain text
    arg: str | None
    text: str


def parse(raw: str) -> Parsed:
    """NFKC, trimmed, upper-cased; ``Refused("7002")`` for a command word with surplus arguments."""
    text = nfkc(raw).upper()
    tokens = text.split()
    if not tokens:
        return Parsed(None, None, text)
    first, rest = tokens[0], tokens[1:]
    glued = _HF_GLUED.fullmatch(first)
    if first not in sms_commands.COMMANDS and glued is None:
        return Parsed(None, None, text)
    command, args = ("HF", [glued.group(1), *rest]) if glued and first != "HF" else (first, rest)
    if command == "KT":
        if args not in ([], ["A"]):
            raise Refused("7002")
        return Parsed("KT", args[0] if args else None, text)
    if len(args) > (1 if command in _ONE_ARG else 0):
        raise Refused("7002")
    return Parsed(command, args[0] if args else None, text)


def is_stray(text: str) -> bool:
    """A dialogue reply without a dialogue: A, Y, 0, 9, 6, an amount, a date or a password."""
    return text in STRAY_WORDS or parse_yuan(text) is not None or re.fullmatch(r"[0-9]{8}", text) is not None


async def _run(mo: sms_commands.Mo, raw: str) -> Answer:
    dialogue = await dialogues.current(mo.conn, mo.sender)
    try:
        parsed = parse(raw)
    except Refused as refused:
        await mo.done()
        return Answer(refused.zh, "unknown", refused.code)
    try:
        if parsed.command is not None:
            await mo.done()  # a command word replaces the dialogue, then runs
            return Answer(await sms_commands.COMMANDS[parsed.command](mo, parsed.arg), parsed.command, "0000")
        if dialogue is None:
            code = "7001" if is_stray(parsed.text) else "7002"
            return Answer(Refused(code).zh if code == "7001" else HELP_TEXT, "none", code)
        if parsed.text == "0":
            await mo.done()
            return Answer(sms_commands.EXITED, dialogue.command, "0000")
        return Answer(await sms_commands.step(mo, dialogue, parsed.text), dialogue.command, "0000")
    except Refused as refused:
        if refused.code in KEEPS_DIALOGUE and dialogue is not None and parsed.command is None:
            await dialogues.keep(mo.conn, mo.sender, mo.env.settings.mpay_dialogue_ttl_s)
        else:
            await mo.done()
        label = parsed.command or (dialogue.command if dialogue else "none")
        return Answer(refused.zh, label, refused.code)


async def handle(conn: asyncpg.Connection, env: Env, sender: str, text: str, message_id: str | None) -> Answer:
    """Run one MO from ``sender`` (an MSISDN or any other number, which the registry lacks): one
    transaction, run again whole by the code base's one retry policy after a deadlock."""

    async def one(tx: asyncpg.Connection) -> Answer:
        return await _handle(tx, env, sender, text, message_id)

    return await retry_transaction(conn, one, policy=RetryPolicy.from_settings(env.settings))


async def _handle(conn: asyncpg.Connection, env: Env, sender: str, text: str, message_id: str | None) -> Answer:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mpay-mo:' || $1))", sender)
    if message_id is not None:
        first = await conn.fetchval(
            "SELECT reply FROM mpay_mo_replies WHERE msisdn = $1 AND message_id = $2"
            " AND created_at > now() - make_interval(secs => $3)",
            sender, message_id, float(env.settings.mpay_mo_dedup_s),
        )
        if first is not None:
            return Answer(first, "replay", "replay")
    now = await conn.fetchval("SELECT now()")
    answer = await _run(sms_commands.Mo(conn, env, sender, now), text)
    if message_id is not None:
        await conn.execute(
            "INSERT INTO mpay_mo_replies (msisdn, message_id, reply) VALUES ($1, $2, $3)"
            " ON CONFLICT (msisdn, message_id) DO UPDATE SET reply = $3, created_at = now()",
            sender, message_id, answer.reply,
        )
    return answer

"""The card side of one PBOC load (SPEC 1.4, 1.6, 7.3), sans-IO: the scripts the platform sends and the
checks of the replies the card sends back, for any key set and any terminal id.

    READ_CARD_SCRIPT ─► read_card ─► initialize_script ─► parse_initialize + credit (MAC1 → MAC2)
        ─► (durably *loading*: the caller) ─► CREDIT FOR LOAD ─► tac_ok ─► (posted: the caller)
    a lost outcome: prove_script ─► proof_ok (posted) · SW_NO_PROOF (not credited) · else still loading

The DD recharge (server/flows.py) and the SIM wallet (recharge/wallet/loads.py) both drive a load through
these functions; only the keys (``LoadKeys``: the platform's ``MK_load``/``MK_tac`` or the wallet's
``MKW_load``/``MKW_tac``) and the terminal id differ. A refused step raises ``CardStepError`` with the
reason, which each channel turns into its own code (DD ``0xAA``/``0xA3``, the wallet's ``5008``/``5007``).
Keys only go to ``core_ext``; every cryptogram check compares in constant time.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field

from core_ext import (
    Instruction,
    Reply,
    bcd_decode,
    bcd_encode,
    be_decode,
    be_encode,
    card_div_data,
    constant_time_eq,
    diversify,
    pboc_mac2,
    pboc_seslk,
    reply_decode,
    script_encode,
    terminal_id_bytes,
    verify_mac1_make_mac2,
    verify_tac,
)

LOCAL_TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
SW_OK = b"\x90\x00"
SW_NO_PROOF = b"\x94\x06"  # GET TRANSACTION PROVE: no load with that serial completed
CARD_TYPE_CPU = 0x01
ISSUER_FILE_SIZE = 30
READ_CARD_APDUS = (
    bytes.fromhex("00A4000002DDF1"), bytes.fromhex("00A4000002ADF1"),  # SELECT DDF1, SELECT ADF1
    bytes.fromhex("00B095001E"), bytes.fromhex("805C000204"),  # READ BINARY SFI 0x15, GET BALANCE
)


def read_card_instructions(first: int = 1) -> list[Instruction]:
    """DD12's four instructions, numbered from ``first`` (7.6: after a state write, 2–5)."""
    last = first + len(READ_CARD_APDUS) - 1
    return [Instruction(first + k, apdu, SW_OK, first + k + 1 if first + k < last else 0, 0)
            for k, apdu in enumerate(READ_CARD_APDUS)]


READ_CARD_SCRIPT = script_encode(read_card_instructions())  # DD12, exactly


class CardStepError(Exception):
    """A card step failed: ``card_error`` (a status word, a shape, a cryptogram) or ``purse_type``."""

    def __init__(self, reason: str = "card_error") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LoadKeys:
    """The two master keys a load needs: ``load`` (→ DLK, MAC1/MAC2) and ``tac`` (→ DTK, TAC)."""

    load: bytes = field(repr=False)
    tac: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CardRead:
    card_no: str
    balance: int


@dataclass(frozen=True, slots=True)
class InFlight:
    """What a load's proof covers, as it was durably marked *loading* (dates and random as hex)."""

    card_no: str
    amount: int
    terminal_id: str  # the terminal's code; left-padded to 12 digits in the cryptograms
    balance_before: int
    serial: int
    load_date: str  # YYYYMMDD as 8 hex digits (BCD)
    load_time: str  # hhmmss as 6 hex digits (BCD)
    load_random: str | None = None  # the card's INITIALIZE random, 8 hex digits (for the proof)

    @property
    def balance_after(self) -> int:
        return self.balance_before + self.amount


@dataclass(frozen=True, slots=True)
class Credit:
    """A verified INITIALIZE FOR LOAD reply: the load to mark *loading*, and the CREDIT FOR LOAD script that
    may leave only once that mark is durable."""

    load: InFlight
    script: bytes = field(repr=False)


def replies(info: bytes) -> list[Reply]:
    try:
        return reply_decode(info)
    except ValueError:
        raise CardStepError() from None


def single_reply(info: bytes) -> Reply:
    """The one reply of a one-instruction script (seq 1)."""
    found = replies(info)
    if len(found) != 1 or found[0].seq != 1:
        raise CardStepError()
    return found[0]


def read_card(info: bytes, *, first: int = 1) -> CardRead:
    """DD13: the reply list of the read script (numbered from ``first``) → card number and balance."""
    found = replies(info)
    if [r.seq for r in found] != list(range(first, first + 4)) or any(r.sw != SW_OK for r in found):
        raise CardStepError()
    issuer, balance = found[2].body, found[3].body
    if len(issuer) != ISSUER_FILE_SIZE or len(balance) != 4:
        raise CardStepError()
    if issuer[4] != CARD_TYPE_CPU:
        raise CardStepError("purse_type")
    try:
        card_no = bcd_decode(issuer[8:16])
    except ValueError:
        raise CardStepError() from None
    if len(card_no) != 16 or not card_no.isdigit():
        raise CardStepError()
    return CardRead(card_no, be_decode(balance))


def initialize_script(amount: int, terminal_id: str) -> bytes:
    """DD14: the one INITIALIZE FOR LOAD instruction (key index 01, purse 02)."""
    apdu = bytes.fromhex("805000020B01") + be_encode(amount, 4) + terminal_id_bytes(terminal_id) + b"\x10"
    return script_encode([Instruction(1, apdu, SW_OK, 0, 0)])


def credit(keys: LoadKeys, card_no: str, amount: int, terminal_id: str, info: bytes,
           now: dt.datetime) -> Credit:
    """DD15: the INITIALIZE FOR LOAD reply → MAC1 verified under DLK, MAC2 for the Shanghai date and time of
    ``now``; the CREDIT FOR LOAD script. ``CardStepError`` when the SW, the shape or MAC1 is wrong."""
    reply = single_reply(info)
    body = reply.body
    if reply.sw != SW_OK or len(body) != 16 or body[6] != 0x01 or body[7] != 0x00:
        raise CardStepError()
    balance, serial, random4, mac1 = be_decode(body[0:4]), be_decode(body[4:6]), body[8:12], body[12:16]
    local = now.astimezone(LOCAL_TZ)
    date4, time3 = bcd_encode(local.strftime("%Y%m%d"), 4), bcd_encode(local.strftime("%H%M%S"), 3)
    dlk = diversify(keys.load, card_div_data(card_no))
    mac2 = verify_mac1_make_mac2(dlk, random4, serial, balance, amount, terminal_id_bytes(terminal_id), mac1,
                                 date4, time3)
    if mac2 is None:
        raise CardStepError()
    load = InFlight(card_no, amount, terminal_id, balance, serial, date4.hex(), time3.hex(), random4.hex().upper())
    apdu = bytes.fromhex("805200000B") + date4 + time3 + mac2 + b"\x04"
    return Credit(load, script_encode([Instruction(1, apdu, SW_OK, 0, 0)]))


def tac_ok(keys: LoadKeys, load: InFlight, tac: bytes) -> bool:
    """DD17: whether the card's TAC over the balance after verifies under DTK."""
    if len(tac) != 4:
        return False
    return verify_tac(diversify(keys.tac, card_div_data(load.card_no)), load.balance_after, load.serial,
                      load.amount, terminal_id_bytes(load.terminal_id), bytes.fromhex(load.load_date),
                      bytes.fromhex(load.load_time), tac)


def prove_script(serial: int) -> bytes:
    """DD22: GET TRANSACTION PROVE for the online serial the card returned at INITIALIZE."""
    apdu = bytes.fromhex("805A000202") + be_encode(serial, 2) + b"\x08"
    return script_encode([Instruction(1, apdu, SW_OK, 0, 0)])


def proof_ok(keys: LoadKeys, load: InFlight, body: bytes) -> bool:
    """Whether GET TRANSACTION PROVE's ``MAC2 ‖ TAC`` proves the load: the MAC2 the platform issued and a
    TAC over the balance after, both verifying."""
    if load.load_random is None or len(body) != 8:
        return False
    tid = terminal_id_bytes(load.terminal_id)
    date4, time3 = bytes.fromhex(load.load_date), bytes.fromhex(load.load_time)
    seslk = pboc_seslk(diversify(keys.load, card_div_data(load.card_no)), bytes.fromhex(load.load_random),
                       load.serial)
    mac2_ok = constant_time_eq(body[:4], pboc_mac2(seslk, load.amount, tid, date4, time3))
    return mac2_ok and tac_ok(keys, load, body[4:8])

"""A virtual PBOC CPU purse card (SPEC 1.4, 1.6, 1.7) for tests, the load test and the terminal simulator.

It answers APDUs with real status words and the exact cryptography of core_ext, keeps a balance and an
online serial that increments on each load, and has knobs to inject the faults a real card can show.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass

from core_ext import (
    DEPOSIT_UPDATE_HEADER,
    Reply,
    bcd_encode,
    card_div_data,
    constant_time_eq,
    deposit_update_mac,
    diversify,
    pboc_mac1,
    pboc_mac2,
    pboc_seslk,
    pboc_tac,
    reply_encode,
    script_decode,
)

SW_OK = b"\x90\x00"
SW_MAC_INVALID = b"\x93\x02"
SW_AMOUNT_INVALID = b"\x94\x01"
SW_KEY_INDEX = b"\x94\x03"
SW_NO_PROOF = b"\x94\x06"
SW_CONDITIONS = b"\x69\x85"
SW_SM_INVALID = b"\x69\x88"
SW_NOT_FOUND = b"\x6a\x82"
SW_WRONG_P1P2 = b"\x6b\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_BAD_P2 = b"\x6a\x86"
SW_INS_UNKNOWN = b"\x6d\x00"
SW_CLA_UNKNOWN = b"\x6e\x00"

DDF1 = b"\xdd\xf1"
ADF1 = b"\xad\xf1"
LOAD_KEY_INDEX = 0x01
KEY_VERSION = 0x01
ALGORITHM_ID = 0x00
PURSE = 0x02
MAX_BALANCE_CENTS = 0x7FFFFFFF
MAX_SCRIPT_STEPS = 64


@dataclass(frozen=True, slots=True)
class _PendingLoad:
    amount: int
    terminal_id: bytes
    seslk: bytes
    serial: int


class VirtualCard:
    """A PBOC electronic purse: ``transmit`` one APDU, or ``run_script`` a platform toreader script."""

    def __init__(
        self,
        card_no: str,
        balance: int,
        mk_load: bytes,
        mk_tac: bytes,
        mk_maint: bytes,
        *,
        card_type: int = 0x01,
        deposit_flag: int = 0,
        issuer: str = "4401",
        city: str = "5810",
        app_version: int = 0x01,
        start_date: str = "20240101",
        expiry_date: str = "20341231",
        online_serial: int = 0,
        seed: int | None = None,
    ) -> None:
        self.card_no = card_no
        self.balance = balance
        self.online_serial = online_serial
        self.deposit_flag = deposit_flag
        self.card_type = card_type
        self.max_balance = MAX_BALANCE_CENTS
        div = card_div_data(card_no)
        self._dlk = diversify(mk_load, div)
        self._dtk = diversify(mk_tac, div)
        self._damk = diversify(mk_maint, div)
        self._issuer_file = (
            bcd_encode(issuer, 2) + bcd_encode(city, 2) + bytes((card_type, app_version)) + bytes(2)
            + bcd_encode(card_no, 8) + bcd_encode(start_date, 4) + bcd_encode(expiry_date, 4) + bytes(6)
        )
        self._rng = random.Random(seed) if seed is not None else None
        self._selected: bytes | None = None
        self._challenge: bytes | None = None
        self._pending: _PendingLoad | None = None
        self._proofs: dict[int, bytes] = {}
        self.commands: list[bytes] = []
        # Fault knobs: the next CREDIT FOR LOAD answers this SW without crediting; TAC dropped or corrupted.
        self.fail_next_credit_with: bytes | None = None
        self.drop_tac = False
        self.corrupt_tac = False

    # --- what a reader sees --------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        """The card's response data followed by its status word."""
        self.commands.append(bytes(apdu))
        challenge, self._challenge = self._challenge, None  # single use: any command consumes it
        if len(apdu) < 4:
            return SW_WRONG_LENGTH
        apdu = bytes(apdu)
        cla, ins = apdu[0], apdu[1]
        if (cla, ins) == (0x04, 0xD6):
            return self._update_binary(apdu, challenge)
        handler = self._handlers().get((cla, ins))
        if handler is None:
            return SW_INS_UNKNOWN if cla in (0x00, 0x04, 0x80) else SW_CLA_UNKNOWN
        return handler(self, apdu)

    def run_script(self, script: bytes) -> bytes:
        """Run a toreader script, following next_ok / next_fail; the encoded reply list."""
        instructions = script_decode(script)
        by_seq = {ins.seq: ins for ins in instructions}
        replies: list[Reply] = []
        current = instructions[0] if instructions else None
        while current is not None and len(replies) < MAX_SCRIPT_STEPS:
            data = self.transmit(current.apdu)
            replies.append(Reply(current.seq, data))
            nxt = current.next_ok if data[-2:] == current.expected_sw else current.next_fail
            current = by_seq.get(nxt) if nxt else None
        return reply_encode(replies)

    def _handlers(self) -> dict[tuple[int, int], Callable[[VirtualCard, bytes], bytes]]:
        return VirtualCard._HANDLERS

    @property
    def issuer_file(self) -> bytes:
        return self._issuer_file

    # --- commands ------------------------------------------------------------------------------

    def _random4(self) -> bytes:
        return self._rng.randbytes(4) if self._rng is not None else os.urandom(4)

    def _select(self, apdu: bytes) -> bytes:
        name = apdu[5:5 + apdu[4]] if len(apdu) >= 5 else b""
        if apdu[2:4] != b"\x00\x00" or name not in (DDF1, ADF1):
            return SW_NOT_FOUND
        if name == ADF1 and self._selected is None:
            return SW_NOT_FOUND
        self._selected = name
        return SW_OK

    def _read_binary(self, apdu: bytes) -> bytes:
        if self._selected != ADF1:
            return SW_CONDITIONS
        p1, offset = apdu[2], apdu[3]
        content = self._files().get(p1)
        if content is None:
            return SW_NOT_FOUND
        le = apdu[4] if len(apdu) >= 5 else 0
        end = len(content) if le == 0 else offset + le
        if end > len(content) or offset >= len(content):
            return SW_WRONG_P1P2
        return content[offset:end] + SW_OK

    def _get_balance(self, apdu: bytes) -> bytes:
        if self._selected != ADF1:
            return SW_CONDITIONS
        if apdu[2:4] != b"\x00\x02":
            return SW_BAD_P2
        return self.balance.to_bytes(4, "big") + SW_OK

    def _get_challenge(self, apdu: bytes) -> bytes:
        if apdu[2:] != b"\x00\x00\x04":
            return SW_WRONG_P1P2
        self._challenge = self._random4()
        return self._challenge + SW_OK

    def _initialize_for_load(self, apdu: bytes) -> bytes:
        self._pending = None
        if self._selected != ADF1:
            return SW_CONDITIONS
        if apdu[2] != 0x00 or apdu[3] != PURSE:
            return SW_BAD_P2
        if len(apdu) < 16 or apdu[4] != 0x0B:
            return SW_WRONG_LENGTH
        if not self._purse_usable():
            return SW_CONDITIONS
        if apdu[5] != LOAD_KEY_INDEX:
            return SW_KEY_INDEX
        amount = int.from_bytes(apdu[6:10], "big")
        terminal_id = bytes(apdu[10:16])
        if amount == 0 or self.balance + amount > self.max_balance:
            return SW_AMOUNT_INVALID
        random4 = self._random4()
        seslk = pboc_seslk(self._dlk, random4, self.online_serial)
        mac1 = pboc_mac1(seslk, self.balance, amount, terminal_id)
        self._pending = _PendingLoad(amount, terminal_id, seslk, self.online_serial)
        return (self.balance.to_bytes(4, "big") + self.online_serial.to_bytes(2, "big")
                + bytes((KEY_VERSION, ALGORITHM_ID)) + random4 + mac1 + SW_OK)

    def _purse_usable(self) -> bool:
        """Whether INITIALIZE may open a transaction (a plain purse always; the SIM wallet only when open)."""
        return True

    def _files(self) -> dict[int, bytes]:
        """Transparent files READ BINARY serves, by P1 (0x80 | SFI)."""
        return {0x95: self._issuer_file, 0x96: bytes((self.deposit_flag,))}

    def _completed(self, kind: int, serial: int, amount: int, terminal_id: bytes, date: bytes, time: bytes) -> None:
        """Called after each completed load (02) or purchase (06); the SIM wallet logs it."""

    def _credit_for_load(self, apdu: bytes) -> bytes:
        pending, self._pending = self._pending, None
        if pending is None:
            return SW_CONDITIONS
        if apdu[2:4] != b"\x00\x00" or len(apdu) < 16 or apdu[4] != 0x0B:
            return SW_WRONG_LENGTH
        if self.fail_next_credit_with is not None:
            sw, self.fail_next_credit_with = self.fail_next_credit_with, None
            return sw
        date, time, mac2 = bytes(apdu[5:9]), bytes(apdu[9:12]), bytes(apdu[12:16])
        expected = pboc_mac2(pending.seslk, pending.amount, pending.terminal_id, date, time)
        if not constant_time_eq(expected, mac2):
            return SW_MAC_INVALID
        self.balance += pending.amount
        tac = pboc_tac(self._dtk, self.balance, pending.serial, pending.amount, pending.terminal_id, date, time)
        self._proofs[pending.serial] = mac2 + tac
        self.online_serial = (self.online_serial + 1) & 0xFFFF
        self._completed(PURSE, pending.serial, pending.amount, pending.terminal_id, date, time)
        if self.corrupt_tac:
            tac = bytes(b ^ 0x5A for b in tac)
        return SW_OK if self.drop_tac else tac + SW_OK

    def _get_transaction_prove(self, apdu: bytes) -> bytes:
        if apdu[2:5] != b"\x00\x02\x02" or len(apdu) < 7:
            return SW_WRONG_LENGTH
        proof = self._proofs.get(int.from_bytes(apdu[5:7], "big"))
        return SW_NO_PROOF if proof is None else proof + SW_OK

    def _update_binary(self, apdu: bytes, challenge: bytes | None) -> bytes:
        if bytes(apdu[:5]) != DEPOSIT_UPDATE_HEADER or len(apdu) != 10:
            return SW_WRONG_P1P2 if apdu[2] != 0x96 else SW_WRONG_LENGTH
        if challenge is None or self._selected != ADF1:
            return SW_CONDITIONS
        flag = apdu[5]
        if not constant_time_eq(deposit_update_mac(self._damk, challenge, flag), bytes(apdu[6:10])):
            return SW_SM_INVALID
        self.deposit_flag = flag
        return SW_OK

    _HANDLERS: dict[tuple[int, int], Callable[[VirtualCard, bytes], bytes]] = {
        (0x00, 0xA4): _select,
        (0x00, 0xB0): _read_binary,
        (0x80, 0x5C): _get_balance,
        (0x00, 0x84): _get_challenge,
        (0x80, 0x50): _initialize_for_load,
        (0x80, 0x52): _credit_for_load,
        (0x80, 0x5A): _get_transaction_prove,
    }

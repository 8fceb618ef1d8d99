"""The platform's side of the SIM wallet's cryptography (SPEC 7): per-card and per-terminal keys, the X-MAC of
STK and POS bodies, the 0x17 state-file write script and the purchase TAC check. Keys never leave this module
in an error or a log line."""

from __future__ import annotations

from dataclasses import dataclass, field

import core_ext
from recharge.keys import WalletKeys
from recharge.loads.pboc import LoadKeys

STATE_NONE, STATE_OPEN, STATE_PAUSED, STATE_CANCELLED = 0x00, 0x01, 0x02, 0x03
TAC_MAC_HEX_LEN = 8


@dataclass(frozen=True, slots=True)
class PurchaseProof:
    """What a purchase record's TAC covers (SPEC 7.4)."""

    card: str
    amount: int
    terminal_id: str  # 12 digits
    tts: int
    date: str  # YYYYMMDD
    time: str  # hhmmss
    tac: bytes = field(repr=False)


class WalletCrypto:
    """Derives and checks with the six wallet master keys."""

    def __init__(self, keys: WalletKeys) -> None:
        self._keys = keys

    def __repr__(self) -> str:
        return "WalletCrypto(<redacted>)"

    def load_keys(self) -> LoadKeys:
        """MKW_load and MKW_tac for the load engine (recharge/loads): DLK and DTK are diversified per card."""
        return LoadKeys(self._keys.load, self._keys.tac)

    def stk_key(self, card_no: str) -> bytes:
        """K_stk = diversify(MKW_stk, card number as 8 bytes BCD)."""
        return core_ext.diversify(self._keys.stk, core_ext.card_div_data(card_no))

    def pos_key(self, terminal_id: str) -> bytes:
        """K_pos = diversify(MKW_pos, 0000 ‖ terminal id as 6 bytes BCD)."""
        return core_ext.diversify(self._keys.pos, core_ext.pos_div_data(terminal_id))

    def state_write_script(self, card_no: str, challenge: bytes, state: int, limit: int) -> str:
        """SPEC 7.2's single instruction: UPDATE BINARY SFI 0x17 with secure messaging, as upper-case hex."""
        instruction = self.state_write_instruction(card_no, challenge, state, limit)
        return core_ext.script_encode([instruction]).hex().upper()

    def state_write_instruction(self, card_no: str, challenge: bytes, state: int, limit: int,
                                next_ok: int = 0) -> core_ext.Instruction:
        """The 0x17 write as instruction 1 (``next_ok``: the instruction after it, 7.6's swap load: 2)."""
        damk = core_ext.diversify(self._keys.maint, core_ext.card_div_data(card_no))
        data = bytes((state,)) + limit.to_bytes(4, "big")
        apdu = core_ext.WALLET_STATE_UPDATE_HEADER + data + core_ext.wallet_state_update_mac(
            damk, challenge, state, limit)
        return core_ext.Instruction(1, apdu, b"\x90\x00", next_ok, 0)

    def tac_ok(self, proof: PurchaseProof) -> bool:
        """Whether a purchase record's TAC verifies under DTK = diversify(MKW_tac, card) (constant time)."""
        dtk = core_ext.diversify(self._keys.tac, core_ext.card_div_data(proof.card))
        return core_ext.verify_purchase_tac(dtk, proof.amount, core_ext.terminal_id_bytes(proof.terminal_id),
                                            proof.tts, bytes.fromhex(proof.date), bytes.fromhex(proof.time),
                                            proof.tac)


def body_mac(key: bytes, body: bytes) -> str:
    """The X-MAC of exact body bytes: 1.6's retail MAC, 8 upper-case hex digits."""
    return core_ext.mac(key, body).hex().upper()


def body_mac_ok(key: bytes, body: bytes, header: str | None) -> bool:
    """Whether an X-MAC header (8 hex digits, either case) is the body's MAC, compared in constant time."""
    if header is None or len(header) != TAC_MAC_HEX_LEN or not header.isascii():
        return False
    try:
        got = bytes.fromhex(header)
    except ValueError:
        return False
    return core_ext.constant_time_eq(core_ext.mac(key, body), got)

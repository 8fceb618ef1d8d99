"""A virtual RFID-SIM (SPEC 7.1, 7.4): the PBOC purse of the virtual card plus the wallet-state file, the
last-ten log, INITIALIZE/DEBIT FOR PURCHASE and the limits the card itself enforces.

Written from SPEC 7 alone, beside the platform: it is the counterpart the platform is tested against.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from core_ext import (
    WALLET_STATE_UPDATE_HEADER,
    card_div_data,
    constant_time_eq,
    diversify,
    pboc_purchase_tac,
    verify_purchase_mac1_make_mac2,
    wallet_state_update_mac,
)
from core_ext.virtual_card import (
    ADF1,
    ALGORITHM_ID,
    KEY_VERSION,
    SW_AMOUNT_INVALID,
    SW_BAD_P2,
    SW_CONDITIONS,
    SW_KEY_INDEX,
    SW_MAC_INVALID,
    SW_OK,
    SW_SM_INVALID,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    VirtualCard,
)

SW_WRONG_DATA = b"\x6a\x80"
SW_RECORD_NOT_FOUND = b"\x6a\x83"

STATE_NONE, STATE_OPEN, STATE_PAUSED, STATE_CANCELLED = 0x00, 0x01, 0x02, 0x03
WALLET_CAP_CENTS = 100_000
DEFAULT_LIMIT_CENTS = 20_000
MIN_LIMIT_CENTS, MAX_LIMIT_CENTS = 100, 100_000
PURCHASE_KEY_INDEX = 0x01
LOG_SIZE = 10
LOG_RECORD_LEN = 23
TYPE_LOAD, TYPE_PURCHASE = 0x02, 0x06
OVERDRAFT_LIMIT = b"\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class WalletMasterKeys:
    """The SIM wallet's own master keys (SPEC 7.1), 16 bytes each."""

    load: bytes
    purchase: bytes
    tac: bytes
    maint: bytes
    stk: bytes
    pos: bytes


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record of SFI 0x18: serial ‖ overdraft ‖ amount ‖ type ‖ terminal ‖ date ‖ time (23 bytes)."""

    serial: int
    amount: int
    kind: int
    terminal_id: bytes
    date: bytes
    time: bytes

    def encode(self) -> bytes:
        return (self.serial.to_bytes(2, "big") + OVERDRAFT_LIMIT + self.amount.to_bytes(4, "big")
                + bytes((self.kind,)) + self.terminal_id + self.date + self.time)

    @classmethod
    def decode(cls, data: bytes) -> LogRecord:
        if len(data) != LOG_RECORD_LEN:
            raise ValueError("a log record is 23 bytes")
        return cls(int.from_bytes(data[:2], "big"), int.from_bytes(data[5:9], "big"), data[9], bytes(data[10:16]),
                   bytes(data[16:20]), bytes(data[20:23]))


@dataclass(frozen=True, slots=True)
class _PendingPurchase:
    amount: int
    terminal_id: bytes
    random4: bytes
    serial: int


class VirtualRfidSim(VirtualCard):
    """The purse of an RFID-SIM: ``transmit`` APDUs or ``run_script`` toreader scripts, as a reader would."""

    def __init__(
        self,
        card_no: str,
        keys: WalletMasterKeys,
        *,
        balance: int = 0,
        state: int = STATE_NONE,
        limit: int = DEFAULT_LIMIT_CENTS,
        offline_serial: int = 0,
        online_serial: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__(card_no, balance, keys.load, keys.tac, keys.maint, issuer="4300", city="7310",
                         start_date="20240101", expiry_date="20991231", online_serial=online_serial, seed=seed)
        self.max_balance = WALLET_CAP_CENTS
        self.state = state
        self.limit = limit
        self.offline_serial = offline_serial
        div = card_div_data(card_no)
        self._dpk = diversify(keys.purchase, div)
        self.k_stk = diversify(keys.stk, div)
        self.log: deque[LogRecord] = deque(maxlen=LOG_SIZE)
        self._purchase: _PendingPurchase | None = None
        self._session: _PendingPurchase | None = None
        # Fault knob: the next DEBIT FOR PURCHASE answers this SW without debiting.
        self.fail_next_debit_with: bytes | None = None

    # --- what a reader sees --------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        # A purchase session ends at the next command, which uses it only if it is the session's DEBIT.
        self._session = self._purchase if bytes(apdu[:2]) == b"\x80\x54" else None
        self._purchase = None
        return super().transmit(apdu)

    @property
    def state_file(self) -> bytes:
        return bytes((self.state,)) + self.limit.to_bytes(4, "big")

    def _purse_usable(self) -> bool:
        return self.state == STATE_OPEN

    def _files(self) -> dict[int, bytes]:
        return {**super()._files(), 0x97: self.state_file}

    def _completed(self, kind: int, serial: int, amount: int, terminal_id: bytes, date: bytes, time: bytes) -> None:
        self.log.appendleft(LogRecord(serial, amount, kind, terminal_id, date, time))

    def _handlers(self) -> dict[tuple[int, int], Callable[[VirtualCard, bytes], bytes]]:
        return _SIM_HANDLERS

    # --- commands ------------------------------------------------------------------------------

    def _initialize(self, apdu: bytes) -> bytes:
        """INITIALIZE FOR LOAD (P1 00) as the card's, or FOR PURCHASE (P1 01)."""
        if apdu[2] != 0x01:
            return self._initialize_for_load(apdu)
        if self._selected != ADF1:
            return SW_CONDITIONS
        if apdu[3] != 0x02:
            return SW_BAD_P2
        if len(apdu) < 16 or apdu[4] != 0x0B:
            return SW_WRONG_LENGTH
        amount = int.from_bytes(apdu[6:10], "big")
        if self.state != STATE_OPEN:
            return SW_CONDITIONS
        if apdu[5] != PURCHASE_KEY_INDEX:
            return SW_KEY_INDEX
        if amount == 0:
            return SW_AMOUNT_INVALID
        if amount > self.limit:
            return SW_CONDITIONS
        if amount > self.balance:
            return SW_AMOUNT_INVALID
        random4 = self._random4()
        self._purchase = _PendingPurchase(amount, bytes(apdu[10:16]), random4, self.offline_serial)
        return (self.balance.to_bytes(4, "big") + self.offline_serial.to_bytes(2, "big") + OVERDRAFT_LIMIT
                + bytes((KEY_VERSION, ALGORITHM_ID)) + random4 + SW_OK)

    def _debit_for_purchase(self, apdu: bytes) -> bytes:
        pending = self._session
        if pending is None:
            return SW_CONDITIONS
        if apdu[2:4] != b"\x01\x00" or len(apdu) < 20 or apdu[4] != 0x0F:
            return SW_WRONG_LENGTH
        if self.fail_next_debit_with is not None:
            sw, self.fail_next_debit_with = self.fail_next_debit_with, None
            return sw
        tts = int.from_bytes(apdu[5:9], "big")
        date, time, mac1 = bytes(apdu[9:13]), bytes(apdu[13:16]), bytes(apdu[16:20])
        mac2 = verify_purchase_mac1_make_mac2(self._dpk, pending.random4, pending.serial, tts, pending.amount,
                                              pending.terminal_id, date, time, mac1)
        if mac2 is None:
            return SW_MAC_INVALID
        self.balance -= pending.amount
        self.offline_serial = (self.offline_serial + 1) & 0xFFFF
        self._completed(TYPE_PURCHASE, pending.serial, pending.amount, pending.terminal_id, date, time)
        tac = pboc_purchase_tac(self._dtk, pending.amount, pending.terminal_id, tts, date, time)
        if self.corrupt_tac:
            tac = bytes(b ^ 0x5A for b in tac)
        return tac + mac2 + SW_OK

    def _read_record(self, apdu: bytes) -> bytes:
        if self._selected != ADF1:
            return SW_CONDITIONS
        if len(apdu) < 5 or apdu[3] != 0xC4:
            return SW_WRONG_P1P2
        if apdu[4] not in (0x00, LOG_RECORD_LEN):
            return SW_WRONG_LENGTH
        number = apdu[2]
        if not 1 <= number <= len(self.log):
            return SW_RECORD_NOT_FOUND
        return self.log[number - 1].encode() + SW_OK

    def _update_binary(self, apdu: bytes, challenge: bytes | None) -> bytes:
        if apdu[2] != 0x97:
            return super()._update_binary(apdu, challenge)
        if bytes(apdu[:5]) != WALLET_STATE_UPDATE_HEADER or len(apdu) != 14:
            return SW_WRONG_LENGTH
        if challenge is None or self._selected != ADF1:
            return SW_CONDITIONS
        state, limit = apdu[5], int.from_bytes(apdu[6:10], "big")
        if not constant_time_eq(wallet_state_update_mac(self._damk, challenge, state, limit), bytes(apdu[10:14])):
            return SW_SM_INVALID
        if state > STATE_CANCELLED or not MIN_LIMIT_CENTS <= limit <= MAX_LIMIT_CENTS:
            return SW_WRONG_DATA
        self.state, self.limit = state, limit
        return SW_OK


_SIM_HANDLERS: dict[tuple[int, int], Callable[[VirtualCard, bytes], bytes]] = {
    **VirtualCard._HANDLERS,
    (0x80, 0x50): VirtualRfidSim._initialize,  # type: ignore[dict-item]
    (0x80, 0x54): VirtualRfidSim._debit_for_purchase,  # type: ignore[dict-item]
    (0x00, 0xB2): VirtualRfidSim._read_record,  # type: ignore[dict-item]
}

"""A virtual PSAM and a virtual POS terminal (SPEC 7.4): offline purchases on a virtual RFID-SIM, the purchase
records, voids, batch uploads (批上送), returns, and the hall's load, swap and buy-out requests, each a signed
request (``X-MAC`` under ``K_pos``) for whatever carries it.

Written from SPEC 7 alone, beside the platform: it is the counterpart the platform is tested against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from core_ext import (
    bcd_decode,
    card_div_data,
    constant_time_eq,
    diversify,
    mac,
    pboc_purchase_mac1,
    pboc_purchase_mac2,
    pboc_sespk,
    pos_div_data,
    terminal_id_bytes,
)
from core_ext.virtual_card import SW_OK, VirtualCard

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_TTS = 0xFFFFFFFF
MAX_BATCH_RECORDS = 1000
SELECT_DDF1 = bytes.fromhex("00A4000002DDF1")
SELECT_ADF1 = bytes.fromhex("00A4000002ADF1")
READ_ISSUER = bytes.fromhex("00B095001E")
GET_BALANCE = bytes.fromhex("805C000204")
GET_CHALLENGE = bytes.fromhex("0084000004")


class PSAMError(ValueError):
    """The PSAM refused: no session, a MAC2 that does not verify, or its transaction serials are used up."""


class PurchaseRefused(Exception):
    """The card (or the PSAM) refused a purchase; ``sw`` is the card's status word when it was the card."""

    def __init__(self, step: str, sw: bytes = b"") -> None:
        super().__init__(f"{step} refused{': ' + sw.hex().upper() if sw else ''}")
        self.step = step
        self.sw = sw


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """One request as the device sends it: the path under /mpay/v1, the exact body bytes and the X-MAC."""

    path: str
    body: bytes
    mac: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=utf-8", "X-MAC": self.mac}

    @property
    def fields(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


def sign(key16: bytes, path: str, fields: Mapping[str, object]) -> SignedRequest:
    """The compact UTF-8 JSON of ``fields`` and its X-MAC: 1.6's retail MAC of the exact bytes, 8 hex digits."""
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return SignedRequest(path, body, mac(key16, body).hex().upper())


def reply_mac_ok(key16: bytes, body: bytes, mac_hex: str | None) -> bool:
    """Whether a reply's X-MAC is the MAC of its exact body bytes under the device's key."""
    if mac_hex is None or len(mac_hex) != 8:
        return False
    try:
        got = bytes.fromhex(mac_hex)
    except ValueError:
        return False
    return constant_time_eq(mac(key16, body), got)


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """SPEC 7.4's record of one purchase, as the POS stores, prints and uploads it."""

    card: str
    offline_serial: int
    amount: int
    balance_after: int
    tts: int
    date: str
    time: str
    tac: bytes
    void: bool = False

    def wire(self) -> dict[str, object]:
        """The record as 6.12 spells it: digits, integer cents, hex for ``tts`` and ``tac``."""
        return {"card": self.card, "offline_serial": self.offline_serial, "amount": self.amount,
                "balance_after": self.balance_after, "tts": f"{self.tts:08X}", "date": self.date,
                "time": self.time, "tac": self.tac.hex().upper(), "void": self.void}


class VirtualPSAM:
    """The POS's purchase security module: holds MKW_purchase, allocates TTS, makes MAC1, checks MAC2."""

    def __init__(self, terminal_code: str, mk_purchase: bytes, *, next_tts: int = 1) -> None:
        self.terminal_id = terminal_id_bytes(terminal_code)
        self._mk = mk_purchase
        self.next_tts = next_tts
        self._sespk: bytes | None = None
        self._amount = 0

    def mac1(self, card_no: str, random4: bytes, offline_serial: int, amount: int, date4: bytes,
             time3: bytes) -> tuple[int, bytes]:
        """(TTS, MAC1) of a purchase the card initialised; the TTS is used up whatever happens next."""
        if self.next_tts > MAX_TTS:
            raise PSAMError("transaction serials used up")
        tts, self.next_tts = self.next_tts, self.next_tts + 1
        dpk = diversify(self._mk, card_div_data(card_no))
        self._sespk = pboc_sespk(dpk, random4, offline_serial, tts)
        self._amount = amount
        return tts, pboc_purchase_mac1(self._sespk, amount, self.terminal_id, date4, time3)

    def check_mac2(self, mac2: bytes) -> None:
        """The card's MAC2 proves the debit; PSAMError when it does not verify. Ends the session."""
        sespk, self._sespk = self._sespk, None
        if sespk is None:
            raise PSAMError("no purchase session")
        if not constant_time_eq(pboc_purchase_mac2(sespk, self._amount), mac2):
            raise PSAMError("MAC2 does not verify")


def _command(card: VirtualCard, apdu: bytes, step: str) -> bytes:
    data = card.transmit(apdu)
    if data[-2:] != SW_OK:
        raise PurchaseRefused(step, data[-2:])
    return data[:-2]


class VirtualPOS:
    """A merchant or hall POS terminal with its PSAM; ``pos_seq`` and batch numbers as SPEC 7.4 wants them."""

    def __init__(self, terminal_code: str, mk_purchase: bytes, mk_pos: bytes, *, next_tts: int = 1,
                 pos_seq: int = 0, batch_no: int = 0) -> None:
        self.terminal_code = terminal_code.rjust(12, "0")
        self.psam = VirtualPSAM(terminal_code, mk_purchase, next_tts=next_tts)
        self.k_pos = diversify(mk_pos, pos_div_data(terminal_code))
        self.pos_seq = pos_seq
        self.batch_no = batch_no
        self.pending: list[PurchaseRecord] = []
        self.uploaded: list[PurchaseRecord] = []

    # --- the card ------------------------------------------------------------------------------

    def read_card(self, card: VirtualCard) -> tuple[str, int]:
        """(card number, balance): SELECT DDF1, ADF1, READ BINARY SFI 0x15, GET BALANCE."""
        _command(card, SELECT_DDF1, "SELECT")
        _command(card, SELECT_ADF1, "SELECT")
        issuer = _command(card, READ_ISSUER, "READ BINARY")
        balance = int.from_bytes(_command(card, GET_BALANCE, "GET BALANCE"), "big")
        return bcd_decode(issuer[8:16]), balance

    def challenge(self, card: VirtualCard) -> str:
        """The card's GET CHALLENGE (after selecting ADF1), hex, for a secure-messaging write."""
        self.read_card(card)
        return _command(card, GET_CHALLENGE, "GET CHALLENGE").hex().upper()

    def purchase(self, card: VirtualCard, amount: int, when: datetime | None = None) -> PurchaseRecord:
        """One offline purchase: the record (kept for the next batch), or PurchaseRefused with the card's SW."""
        card_no, _ = self.read_card(card)
        local = (when or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
        date, time = local.strftime("%Y%m%d"), local.strftime("%H%M%S")
        init = bytes.fromhex("805001020B01") + amount.to_bytes(4, "big") + self.psam.terminal_id + b"\x0f"
        body = _command(card, init, "INITIALIZE FOR PURCHASE")
        balance, serial, random4 = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:6], "big"), body[11:15]
        tts, mac1 = self.psam.mac1(card_no, random4, serial, amount, bytes.fromhex(date), bytes.fromhex(time))
        debit = (bytes.fromhex("805401000F") + tts.to_bytes(4, "big") + bytes.fromhex(date) + bytes.fromhex(time)
                 + mac1 + b"\x08")
        reply = _command(card, debit, "DEBIT FOR PURCHASE")
        try:
            self.psam.check_mac2(reply[4:8])
        except PSAMError:
            raise PurchaseRefused("MAC2") from None
        record = PurchaseRecord(card_no, serial, amount, balance - amount, tts, date, time, reply[:4])
        self.pending.append(record)
        return record

    def void(self, record: PurchaseRecord) -> PurchaseRecord:
        """撤销: the purchase's own record flagged ``void``, replacing it in the next batch (or added to it)."""
        voided = replace(record, void=True)
        self.pending = [r for r in self.pending if r != record] + [voided]
        return voided

    # --- requests ------------------------------------------------------------------------------

    def request(self, path: str, **fields: object) -> SignedRequest:
        """A signed request with the next ``pos_seq``."""
        self.pos_seq += 1
        return sign(self.k_pos, path, {"terminal_id": self.terminal_code, "pos_seq": self.pos_seq, **fields})

    def reply_ok(self, body: bytes, mac_hex: str | None) -> bool:
        return reply_mac_ok(self.k_pos, body, mac_hex)

    def batch(self, limit: int = MAX_BATCH_RECORDS) -> SignedRequest:
        """批上送 of up to ``limit`` pending records under the next batch number; they count as uploaded."""
        records, self.pending = self.pending[:limit], self.pending[limit:]
        self.uploaded += records
        self.batch_no += 1
        return self.request("/pos/batches", batch_no=f"{self.batch_no:06d}", records=[r.wire() for r in records])

    def return_request(self, record: PurchaseRecord, amount: int) -> SignedRequest:
        """退货 of (part of) an uploaded purchase."""
        return self.request("/pos/returns", card=record.card, offline_serial=record.offline_serial, amount=amount)

    # --- the hall ------------------------------------------------------------------------------

    def load_request(self, card_no: str, amount: int | None = None) -> SignedRequest:
        """POS转存 of ``amount`` from cash, or (no amount) drive the card's oldest waiting load."""
        fields: dict[str, object] = {"card": card_no}
        if amount is not None:
            fields["amount"] = amount
        return self.request("/pos/loads", **fields)

    def continue_request(self, load_id: str, replies: bytes | None = None,
                         challenge: str | None = None) -> SignedRequest:
        fields: dict[str, object] = {}
        if replies is not None:
            fields["replies"] = replies.hex().upper()
        if challenge is not None:
            fields["challenge"] = challenge
        return self.request(f"/pos/loads/{load_id}/continue", **fields)

    def recover_request(self, load_id: str) -> SignedRequest:
        return self.request(f"/pos/loads/{load_id}/recover")

    def run_script(self, card: VirtualCard, script_hex: str) -> bytes:
        """Relay a platform script to the card; its reply list."""
        return card.run_script(bytes.fromhex(script_hex))

    def buy_out(self, card: VirtualCard, when: datetime | None = None) -> PurchaseRecord:
        """换卡登记 / 退订: a purchase of the card's whole balance (not kept for a batch; sent on its own)."""
        _, balance = self.read_card(card)
        record = self.purchase(card, balance, when)
        self.pending.remove(record)
        return record

    def swap_request(self, record: PurchaseRecord) -> SignedRequest:
        return self.request("/pos/swaps", record=record.wire())

    def wallet_open_request(self, card_no: str, challenge: str) -> SignedRequest:
        return self.request("/pos/wallet-opens", card=card_no, challenge=challenge)

    def wallet_cancel_request(self, record: PurchaseRecord, challenge: str) -> SignedRequest:
        return self.request("/pos/wallet-cancels", record=record.wire(), challenge=challenge)

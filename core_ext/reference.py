"""Pure-Python reference of the core_ext API (struct, zlib, pycryptodome): the differential-test oracle and
the benchmark baseline. Idiomatic and straightforward on purpose; production code imports core_ext."""

from __future__ import annotations

import hmac
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from Crypto.Cipher import DES, DES3

INFO_CHECKSUM = 0xA2
INFO_LENGTH = 0xCC

MAX_LENGTH = 278


def stage_kind(stage: int) -> int:
    """1 for a request stage byte (two decimal digits, the last odd), 2 for a response one, else 0."""
    if not 0 < stage <= 0xFF or stage >> 4 > 9 or stage & 15 > 9:
        return 0
    return 1 if stage & 1 else 2
_HEADER = struct.Struct(">BBBH")
_CRC = struct.Struct(">I")
_NO_PKI = b"\xff\xff\xff\xff"


# --- integers, BCD, CRC ------------------------------------------------------------------------


def crc32(data: bytes) -> int:
    """CRC-32 (zlib / IEEE 802.3)."""
    return zlib.crc32(data)


def bcd_encode(digits: str, nbytes: int) -> bytes:
    """Packed BCD of ``digits``, left-padded with zeros to ``2 * nbytes`` digits."""
    if nbytes < 0:
        raise ValueError("negative BCD width")
    if len(digits) > 2 * nbytes:
        raise ValueError("too many digits for the BCD field")
    if not (digits.isascii() and (digits.isdigit() or digits == "")):
        raise ValueError("BCD field holds a non-decimal character")
    return bytes.fromhex(digits.rjust(2 * nbytes, "0"))


def bcd_decode(data: bytes) -> str:
    """Digits of a packed BCD field; a nibble above 9 is a ValueError."""
    text = bytes(data).hex()
    if not text.isdigit() and text:
        raise ValueError("BCD field holds a nibble above 9")
    return text


def be_encode(value: int, nbytes: int) -> bytes:
    """Unsigned big-endian integer in exactly ``nbytes`` bytes."""
    if nbytes < 0:
        raise ValueError("negative width")
    if value < 0 or value >> (8 * nbytes):
        raise ValueError("value does not fit the field")
    return value.to_bytes(nbytes, "big")


def be_decode(data: bytes) -> int:
    """Unsigned big-endian integer of any width."""
    return int.from_bytes(data, "big")


# --- frames ------------------------------------------------------------------------------------


class FrameError(Exception):
    """A received frame that cannot be accepted; ``info_code`` None means close without an answer."""

    def __init__(
        self,
        message: str,
        info_code: int | None = None,
        stage: int | None = None,
        user_id: bytes | None = None,
        pki: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.info_code = info_code
        self.stage = stage
        self.user_id = user_id
        self.pki = pki
        # Frames the same feed() call completed before the error, in order.
        self.frames: list[Frame] = []


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One DD frame; requests (odd stages) carry ``step``, responses ``flow`` and ``result``."""

    stage: int
    user_id: bytes
    pki: bytes = _NO_PKI
    info: bytes = b""
    step: int = 0
    flow: int = 0
    result: int = 0

    @property
    def is_request(self) -> bool:
        return self.stage & 1 == 1


def frame_encode(frame: Frame) -> bytes:
    """Wire bytes of a frame (header, body, CRC)."""
    kind = stage_kind(frame.stage)
    if not kind:
        raise ValueError("unknown stage")
    request = kind == 1
    if len(frame.user_id) > 16:
        raise ValueError("user id longer than 16 bytes")
    if len(frame.pki) != 4:
        raise ValueError("PKI field must be 4 bytes")
    if len(frame.info) > 255:
        raise ValueError("info longer than 255 bytes")
    codes = [frame.step] if request else [frame.flow, frame.result]
    if not all(0 <= c <= 0xFF for c in codes) or not 0 <= frame.result <= 0xFF:
        raise ValueError("step, flow or result outside one byte")
    body = frame.user_id.ljust(16, b"\x00") + bytes(codes) + frame.pki + bytes((len(frame.info),)) + frame.info
    return _HEADER.pack(0xDD, frame.stage, 0x01, len(body)) + body + _CRC.pack(zlib.crc32(body))


class FrameDecoder:
    """Incremental decoder of one direction of a DD byte stream; dead after its first FrameError."""

    def __init__(self, requests: bool = True, max_length: int = MAX_LENGTH, stages: Iterable[int] | None = None) -> None:
        if not 0 <= max_length <= 0xFFFF:
            raise ValueError("max_length must fit the 2-byte length field")
        self.requests = requests
        self.max_length = max_length
        self.dead = False
        self._kind = 1 if requests else 2
        accepted = frozenset(s for s in range(256) if stage_kind(s) == self._kind) if stages is None else frozenset(stages)
        if any(stage_kind(s) != self._kind for s in accepted):
            raise ValueError("not a stage of this direction")
        self._stages = accepted
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _fail(self, message: str, info_code: int | None = None, stage: int | None = None,
              user_id: bytes | None = None, pki: bytes | None = None) -> FrameError:
        self.dead = True
        self._buf.clear()
        return FrameError(message, info_code, stage, user_id, pki)

    def _frame_size(self) -> int:
        """Validate the header bytes held; the frame's size once its length field is in, else 0."""
        buf = self._buf
        if buf[0] != 0xDD:
            raise self._fail("bad header byte")
        if len(buf) >= 2 and buf[1] not in self._stages:
            other = stage_kind(buf[1]) not in (0, self._kind)
            raise self._fail("stage of the other direction" if other else "unknown stage", stage=buf[1])
        if len(buf) >= 3 and buf[2] != 0x01:
            raise self._fail("unsupported version", stage=buf[1])
        if len(buf) < 5:
            return 0
        length = (buf[3] << 8) | buf[4]
        if length > self.max_length:
            raise self._fail("length field above the maximum", stage=buf[1])
        return 9 + length

    def feed(self, data: bytes) -> list[Frame]:
        """Consume bytes from the stream; the complete frames they finish, in order."""
        if self.dead:
            raise FrameError("decoder is closed after an earlier error")
        frames: list[Frame] = []
        try:
            self._feed(memoryview(data), frames)
        except FrameError as exc:
            exc.frames = frames
            raise
        return frames

    def _feed(self, view: memoryview, frames: list[Frame]) -> None:
        while view:
            # Take only what the current frame needs, so at most one frame is ever buffered.
            need = 5 - len(self._buf) if len(self._buf) < 5 else 0
            if need:
                self._buf += view[:need]
                view = view[need:]
            size = self._frame_size()
            if not size:
                break
            take = size - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < size:
                break
            frame = bytes(self._buf)
            self._buf.clear()
            frames.append(self._parse(frame))

    def _parse(self, frame: bytes) -> Frame:
        stage = frame[1]
        body, (crc,) = frame[5:-4], _CRC.unpack_from(frame, len(frame) - 4)
        prefix = 17 if self.requests else 18
        user_id = body[:16].rstrip(b"\x00") if len(body) >= 16 else None
        pki = body[prefix:prefix + 4] if len(body) >= prefix + 4 else None
        if zlib.crc32(body) != crc:
            raise self._fail("checksum wrong", INFO_CHECKSUM, stage, user_id, pki)
        if len(body) < prefix + 5 or len(body) != prefix + 5 + body[prefix + 4]:
            raise self._fail("length field disagrees with the info length", INFO_LENGTH, stage, user_id, pki)
        assert user_id is not None and pki is not None
        info = body[prefix + 5:]
        if self.requests:
            return Frame(stage=stage, user_id=user_id, pki=pki, info=info, step=body[16])
        return Frame(stage=stage, user_id=user_id, pki=pki, info=info, flow=body[16], result=body[17])


def frame_decode(data: bytes, requests: bool = True, max_length: int = MAX_LENGTH,
                 stages: Iterable[int] | None = None) -> Frame:
    """Exactly one complete frame from ``data``; anything else is a FrameError."""
    decoder = FrameDecoder(requests, max_length, stages)
    frames = decoder.feed(data)
    if len(frames) != 1 or decoder.buffered:
        raise FrameError("not exactly one complete frame")
    return frames[0]


# --- reader scripts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    """One reader-script instruction: run ``apdu``; go to ``next_ok`` if the SW is ``expected_sw``."""

    seq: int
    apdu: bytes
    expected_sw: bytes = b"\x90\x00"
    next_ok: int = 0
    next_fail: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """One reader reply: the instruction's ``seq`` and the card's response data including SW."""

    seq: int
    data: bytes

    @property
    def sw(self) -> bytes:
        return self.data[-2:]

    @property
    def body(self) -> bytes:
        return self.data[:-2]


def _check_byte(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} outside one byte")


def script_encode(instructions: Iterable[Instruction]) -> bytes:
    """The toreader bytes of a list of instructions."""
    out = bytearray()
    for ins in instructions:
        for value, what in ((ins.seq, "seq"), (ins.next_ok, "next_ok"), (ins.next_fail, "next_fail")):
            _check_byte(value, what)
        if ins.seq == 0:
            raise ValueError("instruction seq starts at 1")
        if len(ins.apdu) > 0xFF:
            raise ValueError("APDU longer than 255 bytes")
        if len(ins.expected_sw) != 2:
            raise ValueError("expected SW must be 2 bytes")
        out += bytes((ins.seq, len(ins.apdu))) + ins.apdu + ins.expected_sw + bytes((ins.next_ok, ins.next_fail))
    return bytes(out)


def script_decode(data: bytes) -> list[Instruction]:
    """Instructions of a toreader script; malformed bytes are a ValueError."""
    data = bytes(data)
    out: list[Instruction] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise ValueError("truncated instruction header")
        seq, ln = data[pos], data[pos + 1]
        if len(data) - pos < 6 + ln:
            raise ValueError("truncated instruction")
        if seq == 0:
            raise ValueError("instruction seq starts at 1")
        apdu = data[pos + 2:pos + 2 + ln]
        sw = data[pos + 2 + ln:pos + 4 + ln]
        out.append(Instruction(seq, apdu, sw, data[pos + 4 + ln], data[pos + 5 + ln]))
        pos += 6 + ln
    return out


def reply_encode(replies: Iterable[Reply]) -> bytes:
    """The reply-list bytes the terminal relays from the reader."""
    out = bytearray()
    for r in replies:
        _check_byte(r.seq, "seq")
        if not 2 <= len(r.data) <= 0xFF:
            raise ValueError("reply data must hold 2..255 bytes (SW included)")
        out += bytes((r.seq, len(r.data))) + r.data
    return bytes(out)


def reply_decode(data: bytes) -> list[Reply]:
    """Replies of a reply list; malformed bytes are a ValueError."""
    data = bytes(data)
    out: list[Reply] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise ValueError("truncated reply header")
        seq, ln = data[pos], data[pos + 1]
        if ln < 2:
            raise ValueError("reply without a status word")
        if len(data) - pos < 2 + ln:
            raise ValueError("truncated reply")
        out.append(Reply(seq, data[pos + 2:pos + 2 + ln]))
        pos += 2 + ln
    return out


# --- cryptography ------------------------------------------------------------------------------


def _need(value: bytes, n: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise ValueError(f"{what} must be {n} bytes")
    return value


def _des3(key16: bytes) -> Any:
    # pycryptodome refuses a two-key 3DES key whose halves are equal (it would be single DES);
    # a card key may legally be that, so fall back to the equivalent single-DES cipher.
    _need(key16, 16, "key")
    if key16[:8] == key16[8:]:
        return DES.new(key16[:8], DES.MODE_ECB)
    return DES3.new(key16, DES3.MODE_ECB)


def _blocks(data: bytes) -> bytes:
    if len(data) % 8:
        raise ValueError("data length must be a multiple of 8")
    return data


def des_encrypt(key8: bytes, data: bytes) -> bytes:
    """Single DES, ECB, 8-byte key."""
    return DES.new(_need(key8, 8, "key"), DES.MODE_ECB).encrypt(_blocks(data))


def des_decrypt(key8: bytes, data: bytes) -> bytes:
    """Single DES, ECB, 8-byte key."""
    return DES.new(_need(key8, 8, "key"), DES.MODE_ECB).decrypt(_blocks(data))


def des3_encrypt(key16: bytes, data: bytes) -> bytes:
    """Two-key 3DES E(KL)D(KR)E(KL), ECB."""
    return _des3(key16).encrypt(_blocks(data))


def des3_decrypt(key16: bytes, data: bytes) -> bytes:
    """Two-key 3DES D(KL)E(KR)D(KL), ECB."""
    return _des3(key16).decrypt(_blocks(data))


def diversify(mk16: bytes, data8: bytes) -> bytes:
    """16-byte key diversified from ``mk16``: 3DES(MK, X) || 3DES(MK, ~X)."""
    _need(data8, 8, "diversification data")
    cipher = _des3(mk16)
    return cipher.encrypt(data8) + cipher.encrypt(bytes(b ^ 0xFF for b in data8))


def mac8(key: bytes, data: bytes, iv: bytes = b"\x00" * 8) -> bytes:
    """ISO 9797-1 alg 1 (8-byte key) or alg 3 (16-byte key), padding method 2; the full 8 bytes."""
    if not isinstance(key, bytes) or len(key) not in (8, 16):
        raise ValueError("MAC key must be 8 or 16 bytes")
    _need(iv, 8, "IV")
    padded = data + b"\x80" + b"\x00" * (-(len(data) + 1) % 8)
    last = DES.new(key[:8], DES.MODE_CBC, iv=iv).encrypt(padded)[-8:]
    if len(key) == 16:
        last = DES.new(key[:8], DES.MODE_ECB).encrypt(DES.new(key[8:], DES.MODE_ECB).decrypt(last))
    return last


def mac(key: bytes, data: bytes, iv: bytes = b"\x00" * 8) -> bytes:
    """4-byte MAC: the first half of :func:`mac8`."""
    return mac8(key, data, iv)[:4]


def _u(value: int, n: int, what: str) -> bytes:
    if not 0 <= value < 1 << (8 * n):
        raise ValueError(f"{what} outside {n} bytes")
    return value.to_bytes(n, "big")


def _ttype(trans_type: int) -> bytes:
    return _u(trans_type, 1, "transaction type")


def pboc_seslk(dlk16: bytes, random4: bytes, serial: int) -> bytes:
    """Session load key: 3DES(DLK, random || online serial || 8000)."""
    return _des3(dlk16).encrypt(_need(random4, 4, "random") + _u(serial, 2, "serial") + b"\x80\x00")


def pboc_mac1(seslk8: bytes, balance: int, amount: int, terminal_id6: bytes, *, trans_type: int = 0x02) -> bytes:
    """MAC1 = MAC(SESLK, balance || amount || type (02 purse) || terminal id)."""
    data = _u(balance, 4, "balance") + _u(amount, 4, "amount") + _ttype(trans_type)
    return mac(_need(seslk8, 8, "SESLK"), data + _need(terminal_id6, 6, "terminal id"))


def pboc_mac2(seslk8: bytes, amount: int, terminal_id6: bytes, date4: bytes, time3: bytes, *,
              trans_type: int = 0x02) -> bytes:
    """MAC2 = MAC(SESLK, amount || type (02 purse) || terminal id || date || time)."""
    data = (_u(amount, 4, "amount") + _ttype(trans_type) + _need(terminal_id6, 6, "terminal id")
            + _need(date4, 4, "date") + _need(time3, 3, "time"))
    return mac(_need(seslk8, 8, "SESLK"), data)


def pboc_tac(dtk16: bytes, balance_after: int, serial: int, amount: int, terminal_id6: bytes, date4: bytes,
             time3: bytes, *, trans_type: int = 0x02) -> bytes:
    """TAC = MAC(DTK_left XOR DTK_right, balance after || serial || amount || type || tid || date || time)."""
    _need(dtk16, 16, "DTK")
    key = bytes(a ^ b for a, b in zip(dtk16[:8], dtk16[8:], strict=True))
    data = (_u(balance_after, 4, "balance") + _u(serial, 2, "serial") + _u(amount, 4, "amount")
            + _ttype(trans_type) + _need(terminal_id6, 6, "terminal id") + _need(date4, 4, "date")
            + _need(time3, 3, "time"))
    return mac(key, data)


def verify_mac1_make_mac2(dlk16: bytes, random4: bytes, serial: int, balance: int, amount: int,
                          terminal_id6: bytes, mac1: bytes, date4: bytes, time3: bytes) -> bytes | None:
    """One INITIALIZE FOR LOAD check: MAC2 when the card's MAC1 verifies (constant time), else None."""
    _need(mac1, 4, "MAC1")
    seslk = pboc_seslk(dlk16, random4, serial)
    if not hmac.compare_digest(pboc_mac1(seslk, balance, amount, terminal_id6), mac1):
        return None
    return pboc_mac2(seslk, amount, terminal_id6, date4, time3)


def verify_tac(dtk16: bytes, balance_after: int, serial: int, amount: int, terminal_id6: bytes, date4: bytes,
               time3: bytes, tac: bytes) -> bool:
    """Whether the card's TAC verifies, compared in constant time."""
    _need(tac, 4, "TAC")
    expected = pboc_tac(dtk16, balance_after, serial, amount, terminal_id6, date4, time3)
    return hmac.compare_digest(expected, tac)


def pboc_sespk(dpk16: bytes, random4: bytes, offline_serial: int, tts: int) -> bytes:
    """Session purchase key: 3DES(DPK, random || offline serial || last 2 bytes of TTS)."""
    block = _need(random4, 4, "random") + _u(offline_serial, 2, "offline serial") + _u(tts, 4, "TTS")[2:]
    return _des3(_need(dpk16, 16, "DPK")).encrypt(block)


def pboc_purchase_mac1(sespk8: bytes, amount: int, terminal_id6: bytes, date4: bytes, time3: bytes) -> bytes:
    """The PSAM's MAC1 = MAC(SESPK, amount || 06 || terminal id || date || time)."""
    data = (_u(amount, 4, "amount") + b"\x06" + _need(terminal_id6, 6, "terminal id") + _need(date4, 4, "date")
            + _need(time3, 3, "time"))
    return mac(_need(sespk8, 8, "SESPK"), data)


def pboc_purchase_mac2(sespk8: bytes, amount: int) -> bytes:
    """The card's MAC2 = MAC(SESPK, amount)."""
    return mac(_need(sespk8, 8, "SESPK"), _u(amount, 4, "amount"))


def pboc_purchase_tac(dtk16: bytes, amount: int, terminal_id6: bytes, tts: int, date4: bytes, time3: bytes) -> bytes:
    """Purchase TAC = MAC(DTK_left XOR DTK_right, amount || 06 || terminal id || TTS || date || time)."""
    _need(dtk16, 16, "DTK")
    key = bytes(a ^ b for a, b in zip(dtk16[:8], dtk16[8:], strict=True))
    data = (_u(amount, 4, "amount") + b"\x06" + _need(terminal_id6, 6, "terminal id") + _u(tts, 4, "TTS")
            + _need(date4, 4, "date") + _need(time3, 3, "time"))
    return mac(key, data)


def verify_purchase_mac1_make_mac2(dpk16: bytes, random4: bytes, offline_serial: int, tts: int, amount: int,
                                   terminal_id6: bytes, date4: bytes, time3: bytes, mac1: bytes) -> bytes | None:
    """The card's DEBIT FOR PURCHASE check: MAC2 when the PSAM's MAC1 verifies (constant time), else None."""
    _need(mac1, 4, "MAC1")
    sespk = pboc_sespk(dpk16, random4, offline_serial, tts)
    if not hmac.compare_digest(pboc_purchase_mac1(sespk, amount, terminal_id6, date4, time3), mac1):
        return None
    return pboc_purchase_mac2(sespk, amount)


def verify_purchase_tac(dtk16: bytes, amount: int, terminal_id6: bytes, tts: int, date4: bytes, time3: bytes,
                        tac: bytes) -> bool:
    """Whether a purchase record's TAC verifies, compared in constant time."""
    _need(tac, 4, "TAC")
    return hmac.compare_digest(pboc_purchase_tac(dtk16, amount, terminal_id6, tts, date4, time3), tac)


def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Equality that takes the same time wherever the first difference is."""
    return hmac.compare_digest(a, b)


def terminal_id_bytes(code: str) -> bytes:
    """The 6-byte terminal id: the terminal's code left-padded with zeros to 12 digits, BCD."""
    if not code.isascii() or not code.isdigit() or len(code) > 12:
        raise ValueError("terminal code must be at most 12 decimal digits")
    return bytes.fromhex(code.rjust(12, "0"))


def pki_div_data(pki4: bytes) -> bytes:
    """Diversification data of a security module: 00000000 || PKI."""
    return b"\x00" * 4 + _need(pki4, 4, "PKI")


def pos_div_data(code: str) -> bytes:
    """Diversification data of a POS terminal (K_pos, SPEC 7.4): 0000 || its 6-byte terminal id."""
    return b"\x00\x00" + terminal_id_bytes(code)


def card_div_data(card_no: str) -> bytes:
    """Diversification data of a card: the BCD of its 16-digit logical card number."""
    if not card_no.isascii() or not card_no.isdigit() or len(card_no) > 16:
        raise ValueError("card number must be at most 16 decimal digits")
    return bytes.fromhex(card_no.rjust(16, "0"))


def signin_pki_key(mk_signin16: bytes, pki4: bytes) -> bytes:
    """K_pki: the sign-in master key diversified by 00000000 || PKI."""
    return diversify(mk_signin16, pki_div_data(pki4))


def signin_cryptogram(k_pki16: bytes, random8: bytes) -> bytes:
    """3DES(K_pki, random): the answer to a sign-in challenge."""
    return des3_encrypt(k_pki16, _need(random8, 8, "random"))


def signin_wrap_session_key(k_pki16: bytes, sk16: bytes) -> bytes:
    """R-AC-Login2 info: 3DES-ECB(K_pki, SK) || first 3 bytes of 3DES(SK, 0^8)."""
    _need(sk16, 16, "session key")
    return des3_encrypt(k_pki16, sk16) + des3_encrypt(sk16, b"\x00" * 8)[:3]


def signin_unwrap_session_key(k_pki16: bytes, info19: bytes) -> bytes:
    """SK from R-AC-Login2 info; ValueError when its check value does not match."""
    _need(info19, 19, "R-AC-Login2 info")
    sk = des3_decrypt(k_pki16, info19[:16])
    if not hmac.compare_digest(des3_encrypt(sk, b"\x00" * 8)[:3], info19[16:]):
        raise ValueError("session key check value does not match")
    return sk


def signin_proof(sk16: bytes, pki4: bytes, rt8: bytes, rp8: bytes) -> bytes:
    """MAC(SK, PKI || RT || RP): the module's proof that it loaded SK."""
    return mac(sk16, _need(pki4, 4, "PKI") + _need(rt8, 8, "RT") + _need(rp8, 8, "RP"))


DEPOSIT_UPDATE_HEADER = b"\x04\xd6\x96\x00\x05"
WALLET_STATE_UPDATE_HEADER = b"\x04\xd6\x97\x00\x09"


def _sm_mac(damk16: bytes, challenge4: bytes, command: bytes) -> bytes:
    """Retail MAC under DAMK of an UPDATE BINARY command, IV = challenge || 00000000."""
    return mac(damk16, command, _need(challenge4, 4, "challenge") + b"\x00" * 4)


def deposit_update_mac(damk16: bytes, challenge4: bytes, new_flag: int) -> bytes:
    """MAC of UPDATE BINARY SFI 0x16: retail MAC under DAMK, IV = challenge || 00000000."""
    return _sm_mac(damk16, challenge4, DEPOSIT_UPDATE_HEADER + _u(new_flag, 1, "flag"))


def wallet_state_update_mac(damk16: bytes, challenge4: bytes, state: int, limit: int) -> bytes:
    """MAC of UPDATE BINARY SFI 0x17 (state || single-purchase limit): as the deposit flag's, 9 data bytes."""
    command = WALLET_STATE_UPDATE_HEADER + _u(state, 1, "state") + _u(limit, 4, "limit")
    return _sm_mac(damk16, challenge4, command)

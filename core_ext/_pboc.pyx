# cython: language_level=3
"""Compiled PBOC purse cryptography: load (session key, MAC1, MAC2, TAC), purchase (SPEC 7.4) and the
secure-messaging writes (deposit flag SPEC 1.7, wallet state SPEC 7.1), on the DES of _des.pyx."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from core_ext._des cimport _des3, _des_schedule, _key, _load64, _mac_raw, _out, _store64, des_ks

from core_ext._des import mac

cdef inline void _put32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = v >> 16
    p[2] = v >> 8
    p[3] = v


cdef inline uint32_t _u32(value, str what) except? 0:
    if value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"{what} outside 4 bytes")
    return value


cdef inline uint32_t _u16(value, str what) except? 0:
    if value < 0 or value > 0xFFFF:
        raise ValueError(f"{what} outside 2 bytes")
    return value


cdef void _seslk(const unsigned char *dlk, const unsigned char *rnd, uint32_t serial, unsigned char *out) noexcept nogil:
    cdef unsigned char blk[8]
    cdef des_ks kl, kr
    memcpy(blk, rnd, 4)
    blk[4] = serial >> 8
    blk[5] = serial
    blk[6] = 0x80
    blk[7] = 0x00
    _des_schedule(&kl, dlk)
    _des_schedule(&kr, dlk + 8)
    _store64(out, _des3(&kl, &kr, _load64(blk), False))


def pboc_seslk(bytes dlk16, bytes random4, serial) -> bytes:
    """Session load key: 3DES(DLK, random || online serial || 8000)."""
    cdef const unsigned char *k = _key(dlk16, 16, "DLK")
    cdef const unsigned char *r = _key(random4, 4, "random")
    cdef uint32_t s = _u16(serial, "serial")
    cdef unsigned char out[8]
    _seslk(k, r, s, out)
    return PyBytes_FromStringAndSize(<const char *>out, 8)


cdef inline Py_ssize_t _mac1_data(unsigned char *b, uint32_t balance, uint32_t amount,
                                  const unsigned char *tid, uint8_t ttype=0x02) noexcept nogil:
    _put32(b, balance)
    _put32(b + 4, amount)
    b[8] = ttype
    memcpy(b + 9, tid, 6)
    return 15


cdef inline Py_ssize_t _mac2_data(unsigned char *b, uint32_t amount, const unsigned char *tid,
                                  const unsigned char *date, const unsigned char *time,
                                  uint8_t ttype=0x02) noexcept nogil:
    _put32(b, amount)
    b[4] = ttype
    memcpy(b + 5, tid, 6)
    memcpy(b + 11, date, 4)
    memcpy(b + 15, time, 3)
    return 18


cdef inline Py_ssize_t _tac_data(unsigned char *b, uint32_t balance_after, uint32_t serial, uint32_t amount,
                                 const unsigned char *tid, const unsigned char *date,
                                 const unsigned char *time, uint8_t ttype=0x02) noexcept nogil:
    _put32(b, balance_after)
    b[4] = serial >> 8
    b[5] = serial
    _put32(b + 6, amount)
    b[10] = ttype
    memcpy(b + 11, tid, 6)
    memcpy(b + 17, date, 4)
    memcpy(b + 21, time, 3)
    return 24


cdef inline void _tac_key(const unsigned char *dtk, unsigned char *k8) noexcept nogil:
    cdef int i
    for i in range(8):
        k8[i] = dtk[i] ^ dtk[8 + i]


cdef inline uint8_t _ttype(int trans_type) except? 0xFF:
    if not 0 <= trans_type <= 0xFF:
        raise ValueError("transaction type outside one byte")
    return trans_type


def pboc_mac1(bytes seslk8, balance, amount, bytes terminal_id6, *, int trans_type=0x02) -> bytes:
    """MAC1 = MAC(SESLK, balance || amount || type (02 purse) || terminal id)."""
    cdef unsigned char b[16]
    cdef Py_ssize_t n = _mac1_data(b, _u32(balance, "balance"), _u32(amount, "amount"),
                                   _key(terminal_id6, 6, "terminal id"), _ttype(trans_type))
    return _out(_mac_raw(_key(seslk8, 8, "SESLK"), 8, b, n, 0), 4)


def pboc_mac2(bytes seslk8, amount, bytes terminal_id6, bytes date4, bytes time3, *,
              int trans_type=0x02) -> bytes:
    """MAC2 = MAC(SESLK, amount || type (02 purse) || terminal id || date || time)."""
    cdef unsigned char b[24]
    cdef Py_ssize_t n = _mac2_data(b, _u32(amount, "amount"), _key(terminal_id6, 6, "terminal id"),
                                   _key(date4, 4, "date"), _key(time3, 3, "time"), _ttype(trans_type))
    return _out(_mac_raw(_key(seslk8, 8, "SESLK"), 8, b, n, 0), 4)


def pboc_tac(bytes dtk16, balance_after, serial, amount, bytes terminal_id6, bytes date4, bytes time3, *,
             int trans_type=0x02) -> bytes:
    """TAC = MAC(DTK_left XOR DTK_right, balance after || serial || amount || type || tid || date || time)."""
    cdef unsigned char b[24]
    cdef unsigned char k8[8]
    _tac_key(_key(dtk16, 16, "DTK"), k8)
    cdef Py_ssize_t n = _tac_data(b, _u32(balance_after, "balance"), _u16(serial, "serial"),
                                  _u32(amount, "amount"), _key(terminal_id6, 6, "terminal id"),
                                  _key(date4, 4, "date"), _key(time3, 3, "time"), _ttype(trans_type))
    return _out(_mac_raw(k8, 8, b, n, 0), 4)


cdef inline bint _eq4(const unsigned char *a, const unsigned char *b) noexcept nogil:
    # Constant time: no early exit on the first differing byte.
    return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0


def verify_mac1_make_mac2(bytes dlk16, bytes random4, serial, balance, amount, bytes terminal_id6,
                          bytes mac1, bytes date4, bytes time3):
    """One INITIALIZE FOR LOAD check: MAC2 when the card's MAC1 verifies (constant time), else None."""
    cdef const unsigned char *k = _key(dlk16, 16, "DLK")
    cdef const unsigned char *r = _key(random4, 4, "random")
    cdef const unsigned char *tid = _key(terminal_id6, 6, "terminal id")
    cdef const unsigned char *m1 = _key(mac1, 4, "MAC1")
    cdef const unsigned char *d = _key(date4, 4, "date")
    cdef const unsigned char *t = _key(time3, 3, "time")
    cdef uint32_t s = _u16(serial, "serial"), bal = _u32(balance, "balance"), amt = _u32(amount, "amount")
    cdef unsigned char ses[8]
    cdef unsigned char b[24]
    cdef unsigned char got[8]
    _seslk(k, r, s, ses)
    _store64(got, _mac_raw(ses, 8, b, _mac1_data(b, bal, amt, tid), 0))
    if not _eq4(got, m1):
        return None
    return _out(_mac_raw(ses, 8, b, _mac2_data(b, amt, tid, d, t), 0), 4)


def verify_tac(bytes dtk16, balance_after, serial, amount, bytes terminal_id6, bytes date4, bytes time3,
               bytes tac) -> bool:
    """Whether the card's TAC verifies, compared in constant time."""
    cdef const unsigned char *expected = _key(tac, 4, "TAC")
    cdef bytes got = pboc_tac(dtk16, balance_after, serial, amount, terminal_id6, date4, time3)
    return _eq4(<const unsigned char *>PyBytes_AS_STRING(got), expected)


# --- PBOC purchase (SPEC 7.4): the card, its PSAM and the platform's batch check ------------------

cdef void _sespk(const unsigned char *dpk, const unsigned char *rnd, uint32_t serial, uint32_t tts,
                 unsigned char *out) noexcept nogil:
    cdef unsigned char blk[8]
    cdef des_ks kl, kr
    memcpy(blk, rnd, 4)
    blk[4] = serial >> 8
    blk[5] = serial
    blk[6] = tts >> 8
    blk[7] = tts
    _des_schedule(&kl, dpk)
    _des_schedule(&kr, dpk + 8)
    _store64(out, _des3(&kl, &kr, _load64(blk), False))


cdef inline Py_ssize_t _purchase_tac_data(unsigned char *b, uint32_t amount, const unsigned char *tid,
                                          uint32_t tts, const unsigned char *date,
                                          const unsigned char *time) noexcept nogil:
    _put32(b, amount)
    b[4] = 0x06
    memcpy(b + 5, tid, 6)
    _put32(b + 11, tts)
    memcpy(b + 15, date, 4)
    memcpy(b + 19, time, 3)
    return 22


def pboc_sespk(bytes dpk16, bytes random4, offline_serial, tts) -> bytes:
    """Session purchase key: 3DES(DPK, random || offline serial || last 2 bytes of TTS)."""
    cdef const unsigned char *k = _key(dpk16, 16, "DPK")
    cdef const unsigned char *r = _key(random4, 4, "random")
    cdef uint32_t s = _u16(offline_serial, "offline serial"), t = _u32(tts, "TTS")
    cdef unsigned char out[8]
    _sespk(k, r, s, t & 0xFFFF, out)
    return PyBytes_FromStringAndSize(<const char *>out, 8)


def pboc_purchase_mac1(bytes sespk8, amount, bytes terminal_id6, bytes date4, bytes time3) -> bytes:
    """The PSAM's MAC1 = MAC(SESPK, amount || 06 || terminal id || date || time)."""
    cdef unsigned char b[24]
    cdef Py_ssize_t n = _mac2_data(b, _u32(amount, "amount"), _key(terminal_id6, 6, "terminal id"),
                                   _key(date4, 4, "date"), _key(time3, 3, "time"), 0x06)
    return _out(_mac_raw(_key(sespk8, 8, "SESPK"), 8, b, n, 0), 4)


def pboc_purchase_mac2(bytes sespk8, amount) -> bytes:
    """The card's MAC2 = MAC(SESPK, amount)."""
    cdef unsigned char b[4]
    _put32(b, _u32(amount, "amount"))
    return _out(_mac_raw(_key(sespk8, 8, "SESPK"), 8, b, 4, 0), 4)


def pboc_purchase_tac(bytes dtk16, amount, bytes terminal_id6, tts, bytes date4, bytes time3) -> bytes:
    """Purchase TAC = MAC(DTK_left XOR DTK_right, amount || 06 || terminal id || TTS || date || time)."""
    cdef unsigned char b[24]
    cdef unsigned char k8[8]
    _tac_key(_key(dtk16, 16, "DTK"), k8)
    cdef Py_ssize_t n = _purchase_tac_data(b, _u32(amount, "amount"), _key(terminal_id6, 6, "terminal id"),
                                           _u32(tts, "TTS"), _key(date4, 4, "date"), _key(time3, 3, "time"))
    return _out(_mac_raw(k8, 8, b, n, 0), 4)


def verify_purchase_mac1_make_mac2(bytes dpk16, bytes random4, offline_serial, tts, amount, bytes terminal_id6,
                                   bytes date4, bytes time3, bytes mac1):
    """The card's DEBIT FOR PURCHASE check: MAC2 when the PSAM's MAC1 verifies (constant time), else None."""
    cdef const unsigned char *k = _key(dpk16, 16, "DPK")
    cdef const unsigned char *r = _key(random4, 4, "random")
    cdef const unsigned char *tid = _key(terminal_id6, 6, "terminal id")
    cdef const unsigned char *d = _key(date4, 4, "date")
    cdef const unsigned char *t = _key(time3, 3, "time")
    cdef const unsigned char *m1 = _key(mac1, 4, "MAC1")
    cdef uint32_t s = _u16(offline_serial, "offline serial"), ts = _u32(tts, "TTS"), amt = _u32(amount, "amount")
    cdef unsigned char ses[8]
    cdef unsigned char b[24]
    cdef unsigned char got[8]
    _sespk(k, r, s, ts & 0xFFFF, ses)
    _store64(got, _mac_raw(ses, 8, b, _mac2_data(b, amt, tid, d, t, 0x06), 0))
    if not _eq4(got, m1):
        return None
    _put32(b, amt)
    return _out(_mac_raw(ses, 8, b, 4, 0), 4)


def verify_purchase_tac(bytes dtk16, amount, bytes terminal_id6, tts, bytes date4, bytes time3,
                        bytes tac) -> bool:
    """Whether a purchase record's TAC verifies, compared in constant time."""
    cdef const unsigned char *expected = _key(tac, 4, "TAC")
    cdef bytes got = pboc_purchase_tac(dtk16, amount, terminal_id6, tts, date4, time3)
    return _eq4(<const unsigned char *>PyBytes_AS_STRING(got), expected)


# --- secure-messaging writes: deposit flag (SPEC 1.7), wallet state (SPEC 7.1) ---------------------

DEPOSIT_UPDATE_HEADER = b"\x04\xd6\x96\x00\x05"
WALLET_STATE_UPDATE_HEADER = b"\x04\xd6\x97\x00\x09"


cdef bytes _sm_mac(bytes damk16, bytes challenge4, bytes command):
    """Retail MAC under DAMK of an UPDATE BINARY command, IV = challenge || 00000000."""
    _key(challenge4, 4, "challenge")
    return mac(damk16, command, challenge4 + b"\x00" * 4)


def deposit_update_mac(bytes damk16, bytes challenge4, int new_flag) -> bytes:
    """MAC of UPDATE BINARY SFI 0x16: retail MAC under DAMK, IV = challenge || 00000000."""
    if not 0 <= new_flag <= 0xFF:
        raise ValueError("flag outside one byte")
    return _sm_mac(damk16, challenge4, DEPOSIT_UPDATE_HEADER + bytes((new_flag,)))


def wallet_state_update_mac(bytes damk16, bytes challenge4, int state, limit) -> bytes:
    """MAC of UPDATE BINARY SFI 0x17 (state || single-purchase limit): as the deposit flag's, 9 data bytes."""
    if not 0 <= state <= 0xFF:
        raise ValueError("state outside one byte")
    cdef unsigned char b[4]
    _put32(b, _u32(limit, "limit"))
    return _sm_mac(damk16, challenge4, WALLET_STATE_UPDATE_HEADER + bytes((state,))
                   + PyBytes_FromStringAndSize(<const char *>b, 4))

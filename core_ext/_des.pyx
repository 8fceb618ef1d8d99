# cython: language_level=3
"""Compiled DES/3DES (FIPS 46-3, ECB), key diversification and ISO 9797-1 MACs: the block cipher the card
cryptography of _pboc.pyx and _signin.pyx is built on."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

# ---------------------------------------------------------------------------------------------
# DES, FIPS 46-3. The tables below are the standard's; the lookup tables the rounds use are
# derived from them once at import, so nothing here is a hand-copied magic constant table.

_IP = (58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4,
       62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8,
       57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3,
       61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7)
_PC1 = (57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18,
        10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36,
        63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22,
        14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4)
_PC2 = (14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10,
        23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2,
        41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48,
        44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32)
_SHIFTS = (1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1)
_P = (16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10,
      2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25)
_SBOX = (
    (14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7,
     0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8,
     4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0,
     15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13),
    (15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10,
     3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5,
     0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15,
     13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9),
    (10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8,
     13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1,
     13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7,
     1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12),
    (7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15,
     13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9,
     10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4,
     3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14),
    (2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9,
     14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6,
     4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14,
     11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3),
    (12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11,
     10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8,
     9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6,
     4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13),
    (4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1,
     13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6,
     1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2,
     6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12),
    (13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7,
     1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2,
     7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8,
     2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11),
)

# Byte-indexed tables: a bit permutation of a 64-bit word becomes 8 lookups and ORs.
cdef uint64_t IP_TAB[8][256]
cdef uint64_t FP_TAB[8][256]
cdef uint64_t PC1_TAB[8][256]
cdef uint64_t PC2_TAB[7][256]
# S-box i followed by P, indexed by the 6 input bits of that box.
cdef uint32_t SP[8][64]


cdef void _fill_perm(uint64_t tab[][256], int in_bytes, perm):
    cdef int nout = len(perm), byte, v, j, src
    for byte in range(in_bytes):
        for v in range(256):
            tab[byte][v] = 0
    for j in range(nout):
        src = perm[j] - 1
        byte = src // 8
        for v in range(256):
            if v & (0x80 >> (src % 8)):
                tab[byte][v] |= (<uint64_t>1) << (nout - 1 - j)


def _init_tables():
    cdef int box, v, row, col, j
    cdef uint32_t x, out
    fp = [0] * 64
    for j in range(64):
        fp[_IP[j] - 1] = j + 1
    _fill_perm(IP_TAB, 8, _IP)
    _fill_perm(FP_TAB, 8, fp)
    _fill_perm(PC1_TAB, 8, _PC1)
    _fill_perm(PC2_TAB, 7, _PC2)
    for box in range(8):
        for v in range(64):
            row = ((v >> 4) & 2) | (v & 1)
            col = (v >> 1) & 0xF
            x = (<uint32_t>_SBOX[box][row * 16 + col]) << (28 - 4 * box)
            out = 0
            for j in range(32):
                if x & ((<uint32_t>1) << (32 - _P[j])):
                    out |= (<uint32_t>1) << (31 - j)
            SP[box][v] = out


_init_tables()


cdef inline uint64_t _perm(uint64_t tab[][256], uint64_t x) noexcept nogil:
    return (tab[0][x >> 56] | tab[1][(x >> 48) & 0xFF] | tab[2][(x >> 40) & 0xFF] | tab[3][(x >> 32) & 0xFF]
            | tab[4][(x >> 24) & 0xFF] | tab[5][(x >> 16) & 0xFF] | tab[6][(x >> 8) & 0xFF] | tab[7][x & 0xFF])


cdef void _des_schedule(des_ks *ks, const unsigned char *key) noexcept nogil:
    cdef uint64_t cd = _perm(PC1_TAB, _load64(key)), sub
    cdef uint32_t c = <uint32_t>(cd >> 28) & 0xFFFFFFF, d = <uint32_t>cd & 0xFFFFFFF
    cdef int r, i, s
    for r in range(16):
        s = 1 if (r == 0 or r == 1 or r == 8 or r == 15) else 2
        c = ((c << s) | (c >> (28 - s))) & 0xFFFFFFF
        d = ((d << s) | (d >> (28 - s))) & 0xFFFFFFF
        cd = (<uint64_t>c << 28) | d
        sub = (PC2_TAB[0][(cd >> 48) & 0xFF] | PC2_TAB[1][(cd >> 40) & 0xFF] | PC2_TAB[2][(cd >> 32) & 0xFF]
               | PC2_TAB[3][(cd >> 24) & 0xFF] | PC2_TAB[4][(cd >> 16) & 0xFF] | PC2_TAB[5][(cd >> 8) & 0xFF]
               | PC2_TAB[6][cd & 0xFF])
        for i in range(8):
            ks.k[r][i] = (sub >> (42 - 6 * i)) & 0x3F


cdef inline uint32_t _f(uint32_t r, const uint8_t *k) noexcept nogil:
    cdef uint32_t x = (r >> 1) | (r << 31)
    return (SP[0][((x >> 26) & 0x3F) ^ k[0]] | SP[1][((x >> 22) & 0x3F) ^ k[1]]
            | SP[2][((x >> 18) & 0x3F) ^ k[2]] | SP[3][((x >> 14) & 0x3F) ^ k[3]]
            | SP[4][((x >> 10) & 0x3F) ^ k[4]] | SP[5][((x >> 6) & 0x3F) ^ k[5]]
            | SP[6][((x >> 2) & 0x3F) ^ k[6]] | SP[7][((x << 2) | (x >> 30)) & 0x3F ^ k[7]])


cdef inline uint64_t _rounds(const des_ks *ks, uint64_t lr, bint decrypt) noexcept nogil:
    """16 Feistel rounds on a word after IP; the result is ready for FP (halves swapped)."""
    cdef uint32_t l = <uint32_t>(lr >> 32), r = <uint32_t>lr, t
    cdef int i
    if decrypt:
        for i in range(15, -1, -1):
            t = r
            r = l ^ _f(r, ks.k[i])
            l = t
    else:
        for i in range(16):
            t = r
            r = l ^ _f(r, ks.k[i])
            l = t
    return (<uint64_t>r << 32) | l


cdef inline uint64_t _des(const des_ks *ks, uint64_t x, bint decrypt) noexcept nogil:
    return _perm(FP_TAB, _rounds(ks, _perm(IP_TAB, x), decrypt))


cdef uint64_t _des3(const des_ks *kl, const des_ks *kr, uint64_t x, bint decrypt) noexcept nogil:
    # FP then IP between the three passes cancel out, so they are skipped.
    cdef uint64_t y = _perm(IP_TAB, x)
    if decrypt:
        y = _rounds(kl, _rounds(kr, _rounds(kl, y, True), False), True)
    else:
        y = _rounds(kl, _rounds(kr, _rounds(kl, y, False), True), False)
    return _perm(FP_TAB, y)


cdef bytes _ecb(bytes key, bytes data, bint decrypt, bint triple):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i
    if n % 8:
        raise ValueError("data length must be a multiple of 8")
    cdef des_ks kl, kr
    cdef const unsigned char *k = _key(key, 16 if triple else 8, "key")
    _des_schedule(&kl, k)
    if triple:
        _des_schedule(&kr, k + 8)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    for i in range(0, n, 8):
        if triple:
            _store64(o + i, _des3(&kl, &kr, _load64(p + i), decrypt))
        else:
            _store64(o + i, _des(&kl, _load64(p + i), decrypt))
    return out


def des_encrypt(bytes key8, bytes data) -> bytes:
    """Single DES, ECB, 8-byte key."""
    return _ecb(key8, data, False, False)


def des_decrypt(bytes key8, bytes data) -> bytes:
    """Single DES, ECB, 8-byte key."""
    return _ecb(key8, data, True, False)


def des3_encrypt(bytes key16, bytes data) -> bytes:
    """Two-key 3DES E(KL)D(KR)E(KL), ECB."""
    return _ecb(key16, data, False, True)


def des3_decrypt(bytes key16, bytes data) -> bytes:
    """Two-key 3DES D(KL)E(KR)D(KL), ECB."""
    return _ecb(key16, data, True, True)


cdef void _diversify(const unsigned char *mk, const unsigned char *x, unsigned char *out) noexcept nogil:
    cdef des_ks kl, kr
    _des_schedule(&kl, mk)
    _des_schedule(&kr, mk + 8)
    cdef uint64_t v = _load64(x)
    _store64(out, _des3(&kl, &kr, v, False))
    _store64(out + 8, _des3(&kl, &kr, ~v, False))


def diversify(bytes mk16, bytes data8) -> bytes:
    """16-byte key diversified from ``mk16``: 3DES(MK, X) || 3DES(MK, ~X)."""
    cdef const unsigned char *mk = _key(mk16, 16, "master key")
    cdef const unsigned char *x = _key(data8, 8, "diversification data")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 16)
    _diversify(mk, x, <unsigned char *>PyBytes_AS_STRING(out))
    return out


cdef uint64_t _mac_raw(const unsigned char *key, Py_ssize_t klen, const unsigned char *data, Py_ssize_t n,
                       uint64_t iv) noexcept nogil:
    """ISO 9797-1 padding method 2, CBC; algorithm 1 for 8-byte keys, algorithm 3 for 16-byte keys."""
    cdef des_ks kl, kr
    _des_schedule(&kl, key)
    cdef uint64_t c = iv, blk
    cdef Py_ssize_t pos = 0, rest, i
    cdef unsigned char last[8]
    while n - pos >= 8:
        c = _des(&kl, c ^ _load64(data + pos), False)
        pos += 8
    rest = n - pos
    for i in range(8):
        last[i] = 0
    memcpy(last, data + pos, rest)
    last[rest] = 0x80
    c = _des(&kl, c ^ _load64(last), False)
    if klen == 16:
        _des_schedule(&kr, key + 8)
        c = _des(&kl, _des(&kr, c, True), False)
    return c


cdef uint64_t _mac_bytes(bytes key, bytes data, bytes iv) except? 0:
    if key is None or (PyBytes_GET_SIZE(key) != 8 and PyBytes_GET_SIZE(key) != 16):
        raise ValueError("MAC key must be 8 or 16 bytes")
    cdef const unsigned char *ivp = _key(iv, 8, "IV")
    if data is None:
        raise TypeError("data must be bytes")
    return _mac_raw(<const unsigned char *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key),
                    <const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), _load64(ivp))


def mac(bytes key, bytes data, bytes iv=b"\x00" * 8) -> bytes:
    """4-byte MAC: ISO 9797-1 alg 1 (8-byte key) or alg 3 (16-byte key), padding 80 00.."""
    return _out(_mac_bytes(key, data, iv), 4)


def mac8(bytes key, bytes data, bytes iv=b"\x00" * 8) -> bytes:
    """The full 8-byte result of :func:`mac`."""
    return _out(_mac_bytes(key, data, iv), 8)

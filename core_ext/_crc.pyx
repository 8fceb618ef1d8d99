# cython: language_level=3
"""Compiled CRC-32 (zlib / IEEE 802.3): slice-by-16 tables, carry-less multiplication where the CPU has it,
zlib for long input; the DD frame's checksum (SPEC 1.1) and ``crc32``."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint32_t

# zlib's crc32 when the build found zlib (setup.py defines CORE_EXT_HAVE_ZLIB), else a stub never called.
cdef extern from *:
    """
    #ifdef CORE_EXT_HAVE_ZLIB
    #include <zlib.h>
    #define CORE_EXT_ZLIB 1
    static unsigned long core_ext_zlib_crc32(unsigned long c, const unsigned char *p, unsigned int n) {
        return crc32(c, p, n);
    }
    #else
    #define CORE_EXT_ZLIB 0
    static unsigned long core_ext_zlib_crc32(unsigned long c, const unsigned char *p, unsigned int n) {
        (void)p; (void)n; return c;
    }
    #endif
    """
    const int CORE_EXT_ZLIB
    unsigned long core_ext_zlib_crc32(unsigned long c, const unsigned char *p, unsigned int n) nogil


# Slice-by-16 CRC-32 tables (reflected polynomial 0xEDB88320, the zlib CRC), built at import. On
# frame-sized input it is several times faster than zlib, whose per-call set-up dominates there; from
# 1 KiB on, zlib (when built in) is faster.
cdef uint32_t CRC_TAB[16][256]
# CRC_PAD[f]: the state that 16 - f zero bytes turn into the initial state 0xFFFFFFFF (see below).
cdef uint32_t CRC_PAD[17]

# Where the CPU has carry-less multiplication (x86-64 PCLMULQDQ with SSE4.1, checked at run time), input
# of 16 bytes or more is folded 16 bytes per step instead (the Intel white paper "Fast CRC Computation
# for Generic Polynomials Using PCLMULQDQ"; the reflected-domain constants of Linux's crc32-pclmul): a
# frame's CRC is a few multiplications instead of ~200 table instructions. The fold takes whole 16-byte
# blocks only, so the first n % 16 bytes (f of them, 1..16) are read as the tail of a block whose front
# is zeros, started from CRC_PAD[f]: the zeros turn that state into 0xFFFFFFFF exactly where the real
# data starts, so the result is the plain CRC with no byte loop. Elsewhere the table CRC does all sizes.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__GNUC__) && defined(__x86_64__) && !defined(CORE_EXT_NO_CLMUL)
    #include <immintrin.h>
    #define CORE_EXT_CLMUL_BUILT 1
    static int core_ext_clmul_ok = 0;
    static void core_ext_clmul_probe(void) {
        __builtin_cpu_init();
        core_ext_clmul_ok = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    }
    static const unsigned char core_ext_clmul_shuffle[32] = {
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    /* Final state of the CRC register over n >= 16 bytes, starting from pad[f] (not yet inverted). */
    __attribute__((target("pclmul,sse4.1")))
    static uint32_t core_ext_crc_clmul(const uint32_t *pad, const unsigned char *p, size_t n) {
        const __m128i k43 = _mm_set_epi64x(0x00000000ccaa009eLL, 0x00000001751997d0LL);
        const __m128i k5 = _mm_set_epi64x(0, 0x0000000163cd6124LL);
        const __m128i poly = _mm_set_epi64x(0x00000001f7011641LL, 0x00000001db710641LL);
        const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
        size_t f = ((n - 1) & 15) + 1;
        /* bytes 0..f-1 moved to the top of the block, zeros in front (byte 16-f+j = p[j]) */
        __m128i x1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p),
                                      _mm_loadu_si128((const __m128i *)(core_ext_clmul_shuffle + f)));
        __m128i x2;
        x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)pad[f]));
        p += f;
        n -= f;
        while (n) {
            x2 = _mm_clmulepi64_si128(x1, k43, 0x11);
            x1 = _mm_clmulepi64_si128(x1, k43, 0x00);
            x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), _mm_loadu_si128((const __m128i *)p));
            p += 16;
            n -= 16;
        }
        /* 128 -> 64 bits, 64 -> 32, then the bit-reflected Barrett reduction */
        x2 = _mm_clmulepi64_si128(x1, k43, 0x10);
        x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
        x2 = _mm_srli_si128(x1, 4);
        x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k5, 0x00);
        x1 = _mm_xor_si128(x1, x2);
        x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), poly, 0x10);
        x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, mask32), poly, 0x00);
        x1 = _mm_xor_si128(x1, x2);
        return (uint32_t)_mm_extract_epi32(x1, 1);
    }
    #else
    #define CORE_EXT_CLMUL_BUILT 0
    static int core_ext_clmul_ok = 0;
    static void core_ext_clmul_probe(void) {}
    static uint32_t core_ext_crc_clmul(const uint32_t *pad, const unsigned char *p, size_t n) {
        (void)pad; (void)p; (void)n; return 0;
    }
    #endif
    """
    int core_ext_clmul_ok
    void core_ext_clmul_probe() noexcept nogil
    uint32_t core_ext_crc_clmul(const uint32_t *pad, const unsigned char *p, size_t n) noexcept nogil


def _init_crc_tables():
    cdef uint32_t c
    cdef int i, k, bit
    cdef unsigned char inverse[256]
    for i in range(256):
        c = i
        for bit in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        CRC_TAB[0][i] = c
    for k in range(1, 16):
        for i in range(256):
            CRC_TAB[k][i] = (CRC_TAB[k - 1][i] >> 8) ^ CRC_TAB[0][CRC_TAB[k - 1][i] & 0xFF]
    # A zero byte takes state s to (s >> 8) ^ T0[s & 0xFF]; T0's top bytes are all distinct, so the step
    # can be undone: the top byte of the new state names s & 0xFF. CRC_PAD[f] undoes 16 - f zero bytes.
    for i in range(256):
        inverse[CRC_TAB[0][i] >> 24] = i
    c = 0xFFFFFFFF
    CRC_PAD[16] = c
    for k in range(15, -1, -1):
        i = inverse[c >> 24]
        c = ((c ^ CRC_TAB[0][i]) << 8) | <uint32_t>i
        CRC_PAD[k] = c
    for k in range(17):  # each pad state, run through its zero bytes, is the initial state again
        c = CRC_PAD[k]
        for i in range(16 - k):
            c = (c >> 8) ^ CRC_TAB[0][c & 0xFF]
        if c != 0xFFFFFFFF:
            raise AssertionError("CRC pad states do not undo the zero-byte step")
    core_ext_clmul_probe()


_init_crc_tables()


cdef enum:
    CRC_ZLIB_THRESHOLD = 1024


cdef uint32_t _crc(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    if CORE_EXT_ZLIB and n >= CRC_ZLIB_THRESHOLD:
        return _crc_zlib(p, n)
    if n >= 16 and core_ext_clmul_ok:
        return ~core_ext_crc_clmul(CRC_PAD, p, <size_t>n)
    return _crc_table(p, n)


cdef uint32_t _crc_zlib(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef unsigned long c = 0
    cdef unsigned int chunk
    while n > 0:
        chunk = <unsigned int>(n if n < 0x40000000 else 0x40000000)
        c = core_ext_zlib_crc32(c, p, chunk)
        p += chunk
        n -= chunk
    return <uint32_t>c


cdef inline uint32_t _crc_table(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t c = ~(<uint32_t>0), one, two, three, four, acc
    cdef Py_ssize_t i
    while n >= 16:
        one = _le32(p) ^ c
        two = _le32(p + 4)
        three = _le32(p + 8)
        four = _le32(p + 12)
        c = (CRC_TAB[15][one & 0xFF] ^ CRC_TAB[14][(one >> 8) & 0xFF] ^ CRC_TAB[13][(one >> 16) & 0xFF]
             ^ CRC_TAB[12][one >> 24] ^ CRC_TAB[11][two & 0xFF] ^ CRC_TAB[10][(two >> 8) & 0xFF]
             ^ CRC_TAB[9][(two >> 16) & 0xFF] ^ CRC_TAB[8][two >> 24] ^ CRC_TAB[7][three & 0xFF]
             ^ CRC_TAB[6][(three >> 8) & 0xFF] ^ CRC_TAB[5][(three >> 16) & 0xFF] ^ CRC_TAB[4][three >> 24]
             ^ CRC_TAB[3][four & 0xFF] ^ CRC_TAB[2][(four >> 8) & 0xFF] ^ CRC_TAB[1][(four >> 16) & 0xFF]
             ^ CRC_TAB[0][four >> 24])
        p += 16
        n -= 16
    if n == 0:
        return ~c
    # The last 1..15 bytes in one step, the slice-by-n generalisation: byte i (xored with byte i of the
    # state for i < 4) goes through table n-1-i; the state bytes no data byte met shift down. The lookups
    # are independent of each other, so this costs a few cycles, not one dependent lookup per byte.
    acc = (c >> (8 * n)) if n < 4 else 0
    for i in range(n):
        if i < 4:
            acc ^= CRC_TAB[n - 1 - i][(p[i] ^ (c >> (8 * i))) & 0xFF]
        else:
            acc ^= CRC_TAB[n - 1 - i][p[i]]
    return ~acc


cdef inline const unsigned char *_bytes_ptr(object data, Py_ssize_t *n):
    """Pointer and size of a bytes object without taking a buffer view (the common, fast case); else NULL."""
    if type(data) is bytes:
        n[0] = PyBytes_GET_SIZE(data)
        return <const unsigned char *>PyBytes_AS_STRING(data)
    return NULL


def crc32(data) -> int:
    """CRC-32 (zlib / IEEE 802.3) of a bytes-like object."""
    cdef Py_ssize_t n = 0
    cdef const unsigned char *p = _bytes_ptr(data, &n)
    cdef const unsigned char[::1] view
    if p == NULL:
        view = data
        n = view.shape[0]
        if n == 0:
            return 0
        p = &view[0]
    cdef uint32_t c
    if n < 65536:
        return _crc(p, n)  # releasing the GIL costs more than a short CRC
    with nogil:
        c = _crc(p, n)
    return c


def _crc32_paths(bytes data not None) -> tuple:
    """(table CRC, carry-less-multiply CRC or None where the CPU or build lacks it) of ``data``.

    Not API: lets the tests check both short-input paths whatever the machine running them picks.
    """
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    clmul = None
    if core_ext_clmul_ok and n >= 16:
        clmul = ~core_ext_crc_clmul(CRC_PAD, p, <size_t>n)
    return _crc_table(p, n), clmul

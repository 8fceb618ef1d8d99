# cython: language_level=3
"""Compiled DD codec: CRC-32, BCD, big-endian integers, frames (SPEC 1.1) and reader scripts (SPEC 1.4)."""

cimport cython
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcmp, memcpy, memset


# The info codes the codec itself raises (SPEC 1.5); the protocol's others belong to the layer above.
INFO_CHECKSUM = 0xA2
INFO_LENGTH = 0xCC

# Frame layout (SPEC 1.1): DD stage version length(2) | user id(16) step|flow,result pki(4) n info(n) | crc(4)
cdef enum:
    HEADER_SIZE = 5
    CRC_SIZE = 4
    USER_ID_SIZE = 16
    PKI_SIZE = 4
    MAX_INFO = 255
MAX_LENGTH = 278

# Frame syntax of a stage byte (SPEC 1.1): two decimal digits written as hex (0x19, never 0x1A), not 00;
# an odd last digit goes terminal->platform (1), an even one answers (2), anything else is no stage (0).
# Which stages a decoder accepts is the caller's vocabulary (``FrameDecoder(stages=...)``).
cdef uint8_t STAGE_KIND[256]
for _s in range(256):
    STAGE_KIND[_s] = 0 if _s == 0 or (_s >> 4) > 9 or (_s & 15) > 9 else (1 if _s & 1 else 2)


def stage_kind(int stage) -> int:
    """1 for a request stage byte, 2 for a response stage byte, 0 for a byte that is no stage."""
    return STAGE_KIND[stage] if 0 <= stage <= 0xFF else 0


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

# Copies of frame-sized, variable-length runs. gcc expands a memcpy whose size it can bound (a field of at
# most 255 bytes) into ``rep movs``, whose start-up costs more than the copy itself at these sizes; this
# copies in fixed 16/8/4-byte moves (single loads and stores), the last one overlapping the one before.
cdef extern from *:
    """
    #include <string.h>
    static inline void core_ext_copy(unsigned char *d, const unsigned char *s, size_t n) {
        if (n >= 16) {
            size_t i = 0;
            do {
                unsigned char t[16];
                memcpy(t, s + i, 16);
                memcpy(d + i, t, 16);
                i += 16;
            } while (i + 16 <= n);
            if (i < n) {
                unsigned char t[16];
                memcpy(t, s + n - 16, 16);
                memcpy(d + n - 16, t, 16);
            }
        } else if (n >= 8) {
            unsigned char a[8], b[8];
            memcpy(a, s, 8); memcpy(b, s + n - 8, 8);
            memcpy(d, a, 8); memcpy(d + n - 8, b, 8);
        } else if (n >= 4) {
            unsigned char a[4], b[4];
            memcpy(a, s, 4); memcpy(b, s + n - 4, 4);
            memcpy(d, a, 4); memcpy(d + n - 4, b, 4);
        } else if (n > 0) {
            d[0] = s[0]; d[n / 2] = s[n / 2]; d[n - 1] = s[n - 1];
        }
    }
    """
    void core_ext_copy(unsigned char *d, const unsigned char *s, size_t n) noexcept nogil


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

cdef inline uint32_t _le32(const unsigned char *p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef enum:
    CRC_ZLIB_THRESHOLD = 1024


cdef inline uint32_t _crc(const unsigned char *p, Py_ssize_t n) noexcept nogil:
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


cdef inline uint32_t _be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


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


def bcd_encode(str digits not None, Py_ssize_t nbytes) -> bytes:
    """Packed BCD of ``digits``, left-padded with zeros to ``2 * nbytes`` digits."""
    cdef Py_ssize_t n = len(digits), width = 2 * nbytes, i
    cdef Py_UCS4 ch
    if nbytes < 0:
        raise ValueError("negative BCD width")
    if n > width:
        raise ValueError("too many digits for the BCD field")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, nbytes)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned char nib
    cdef Py_ssize_t pos = width - n
    for i in range(nbytes):
        o[i] = 0
    for i in range(n):
        ch = digits[i]
        if ch < 48 or ch > 57:
            raise ValueError("BCD field holds a non-decimal character")
        nib = <unsigned char>(<int>ch - 48)
        if (pos + i) & 1:
            o[(pos + i) >> 1] |= nib
        else:
            o[(pos + i) >> 1] |= nib << 4
    return out


def bcd_decode(data) -> str:
    """Digits of a packed BCD field; a nibble above 9 is a ValueError."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0], i
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 2 * n)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned char b, hi, lo
    for i in range(n):
        b = view[i]
        hi = b >> 4
        lo = b & 0x0F
        if hi > 9 or lo > 9:
            raise ValueError("BCD field holds a nibble above 9")
        o[2 * i] = hi + 48
        o[2 * i + 1] = lo + 48
    return out.decode("ascii")


def be_encode(value, Py_ssize_t nbytes) -> bytes:
    """Unsigned big-endian integer in exactly ``nbytes`` bytes."""
    if nbytes < 0:
        raise ValueError("negative width")
    if value < 0 or value >> (8 * nbytes):
        raise ValueError("value does not fit the field")
    if nbytes > 8:
        return int(value).to_bytes(nbytes, "big")
    cdef uint64_t v = value
    cdef bytes out = PyBytes_FromStringAndSize(NULL, nbytes)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(nbytes - 1, -1, -1):
        o[i] = v & 0xFF
        v >>= 8
    return out


def be_decode(data) -> int:
    """Unsigned big-endian integer of any width."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0], i
    cdef uint64_t v = 0
    if n > 8:
        return int.from_bytes(bytes(view), "big")
    for i in range(n):
        v = (v << 8) | view[i]
    return v


class FrameError(Exception):
    """A received frame that cannot be accepted; ``info_code`` None means close without an answer."""

    def __init__(self, message, info_code=None, stage=None, user_id=None, pki=None):
        super().__init__(message)
        self.info_code = info_code
        self.stage = stage
        self.user_id = user_id
        self.pki = pki
        # Frames the same feed() call completed before the error, in order.
        self.frames = []


# Frames hold only bytes and ints, so they cannot be part of a cycle: no GC tracking, a freelist.
@cython.freelist(256)
@cython.no_gc
@cython.final
cdef class Frame:
    """One DD frame; requests (odd stages) carry ``step``, responses ``flow`` and ``result``."""

    def __init__(self, *, int stage, bytes user_id not None, bytes pki not None = b"\xff\xff\xff\xff",
                 bytes info not None = b"", int step=0, int flow=0, int result=0):
        self.stage = stage
        self.user_id = user_id
        self.pki = pki
        self.info = info
        self.step = step
        self.flow = flow
        self.result = result

    @property
    def is_request(self) -> bool:
        return (self.stage & 1) == 1

    def _astuple(self):
        return (self.stage, self.user_id, self.pki, self.info, self.step, self.flow, self.result)

    def __eq__(self, other):
        if not isinstance(other, Frame):
            return NotImplemented
        return self._astuple() == (<Frame>other)._astuple()

    def __hash__(self):
        return hash(self._astuple())

    def __repr__(self):
        if self.stage & 1:
            tail = f"step=0x{self.step:02X}"
        else:
            tail = f"flow=0x{self.flow:02X}, result=0x{self.result:02X}"
        return (f"Frame(stage=0x{self.stage:02X}, user_id={self.user_id!r}, pki={self.pki!r}, "
                f"info={self.info!r}, {tail})")


# A plain builtin rather than a CyFunction: the interpreter's call-site specialisation calls it directly.
@cython.binding(False)
def frame_encode(Frame frame not None) -> bytes:
    """Wire bytes of a frame (header, body, CRC)."""
    return _frame_encode(frame)


cdef bytes _frame_encode(Frame frame):
    cdef bytes user_id = frame.user_id, pki = frame.pki, info = frame.info
    cdef Py_ssize_t uid_n = PyBytes_GET_SIZE(user_id), n = PyBytes_GET_SIZE(info)
    cdef int stage = frame.stage
    cdef int kind = STAGE_KIND[stage] if 0 <= stage <= 0xFF else 0
    if kind == 0:
        raise ValueError("unknown stage")
    if uid_n > USER_ID_SIZE:
        raise ValueError("user id longer than 16 bytes")
    if PyBytes_GET_SIZE(pki) != PKI_SIZE:
        raise ValueError("PKI field must be 4 bytes")
    if n > MAX_INFO:
        raise ValueError("info longer than 255 bytes")
    cdef int a = frame.step if kind == 1 else frame.flow
    if not (0 <= a <= 0xFF and 0 <= frame.result <= 0xFF):
        raise ValueError("step, flow or result outside one byte")
    cdef Py_ssize_t prefix = USER_ID_SIZE + (1 if kind == 1 else 2)
    cdef Py_ssize_t length = prefix + PKI_SIZE + 1 + n
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + length + CRC_SIZE)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned char *body = o + HEADER_SIZE
    o[0] = 0xDD
    o[1] = <unsigned char>stage
    o[2] = 0x01
    o[3] = <unsigned char>(length >> 8)
    o[4] = <unsigned char>length
    memset(body, 0, USER_ID_SIZE)
    core_ext_copy(body, <const unsigned char *>PyBytes_AS_STRING(user_id), uid_n)
    body[USER_ID_SIZE] = <unsigned char>a
    if kind == 2:
        body[USER_ID_SIZE + 1] = <unsigned char>frame.result
    memcpy(body + prefix, PyBytes_AS_STRING(pki), PKI_SIZE)
    body[prefix + PKI_SIZE] = <unsigned char>n
    core_ext_copy(body + prefix + PKI_SIZE + 1, <const unsigned char *>PyBytes_AS_STRING(info), n)
    cdef uint32_t c = _crc(body, length)
    cdef unsigned char *t = body + length
    t[0] = c >> 24
    t[1] = c >> 16
    t[2] = c >> 8
    t[3] = c
    return out


# The PKI field of frames sent before sign-in: one shared object instead of one per frame.
cdef bytes NO_PKI = b"\xff\xff\xff\xff"


@cython.freelist(16)
@cython.no_gc
@cython.final
cdef class FrameDecoder:
    """Incremental decoder of one direction of a DD byte stream; dead after its first FrameError.

    ``stages``: the stage bytes it accepts (the caller's stage table), each of this direction;
    None accepts every stage byte of this direction. Any other stage closes silently."""

    def __cinit__(self, bint requests=True, Py_ssize_t max_length=MAX_LENGTH, stages=None):
        if max_length < 0 or max_length > 0xFFFF:
            raise ValueError("max_length must fit the 2-byte length field")
        self.requests = requests
        self.kind = 1 if requests else 2
        cdef int s
        if stages is None:  # every stage byte of this direction
            for s in range(256):
                self.accept[s] = STAGE_KIND[s] == self.kind
        else:
            memset(self.accept, 0, 256)
            for s in stages:
                if s < 0 or s > 0xFF or STAGE_KIND[s] != self.kind:
                    raise ValueError(f"0x{s:02X} is not a stage of this direction")
                self.accept[s] = 1
        self.max_length = max_length
        self.dead = False
        self.have = 0
        self.last_user_id = None
        self.last_pki = None
        # The buffer of a split frame is allocated when a read first ends inside a frame: a peer that
        # sends whole frames (the usual case) never needs it.
        self.buf = NULL

    def __dealloc__(self):
        PyMem_Free(self.buf)
        self.buf = NULL

    cdef int _hold(self, const unsigned char *p, Py_ssize_t n) except -1:
        """Keep the first ``n`` bytes of a frame that the next reads complete."""
        if self.buf == NULL:
            self.buf = <unsigned char *>PyMem_Malloc(HEADER_SIZE + self.max_length + CRC_SIZE)
            if self.buf == NULL:
                raise MemoryError()
        memcpy(self.buf, p, n)
        self.have = n
        return 0

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame."""
        return self.have

    cdef int _fail(self, list out, str message, object info_code, object stage, object user_id,
                   object pki) except -1:
        self.dead = True
        self.have = 0
        exc = FrameError(message, info_code, stage, user_id, pki)
        if out is not None:
            exc.frames = out
        raise exc

    cdef Py_ssize_t _check_header(self, const unsigned char *p, Py_ssize_t avail, list out) except -1:
        """Validate the header bytes present; the frame's total size once the length is known, else 0."""
        cdef int kind
        if avail >= 1 and p[0] != 0xDD:
            self._fail(out, "bad header byte", None, None, None, None)
        if avail >= 2 and not self.accept[p[1]]:
            kind = STAGE_KIND[p[1]]
            if kind != 0 and kind != self.kind:
                self._fail(out, "stage of the other direction", None, p[1], None, None)
            self._fail(out, "unknown stage", None, p[1], None, None)
        if avail >= 3 and p[2] != 0x01:
            self._fail(out, "unsupported version", None, p[1], None, None)
        if avail < HEADER_SIZE:
            return 0
        cdef Py_ssize_t length = (<Py_ssize_t>p[3] << 8) | p[4]
        if length > self.max_length:
            self._fail(out, "length field above the maximum", None, p[1], None, None)
        return HEADER_SIZE + length + CRC_SIZE

    cdef inline bytes _user_id(self, const unsigned char *p):
        # A connection repeats one user id: the raw 16-byte field is compared with the last one, and the
        # last object reused, so a frame costs neither an allocation nor the strip of its zero padding.
        if self.last_user_id is not None and memcmp(p, self.last_uid_raw, USER_ID_SIZE) == 0:
            return self.last_user_id
        cdef Py_ssize_t n = USER_ID_SIZE
        while n > 0 and p[n - 1] == 0:
            n -= 1
        self.last_user_id = PyBytes_FromStringAndSize(<const char *>p, n)
        memcpy(self.last_uid_raw, p, USER_ID_SIZE)
        return self.last_user_id

    cdef inline bytes _pki(self, const unsigned char *p):
        if _le32(p) == <uint32_t>0xFFFFFFFF:
            return NO_PKI
        if self.last_pki is not None and memcmp(p, self.last_pki_raw, PKI_SIZE) == 0:
            return self.last_pki
        self.last_pki = PyBytes_FromStringAndSize(<const char *>p, PKI_SIZE)
        memcpy(self.last_pki_raw, p, PKI_SIZE)
        return self.last_pki

    cdef Frame _emit(self, const unsigned char *p, Py_ssize_t size, list out):
        cdef Py_ssize_t length = size - HEADER_SIZE - CRC_SIZE
        cdef const unsigned char *body = p + HEADER_SIZE
        cdef int stage = p[1]
        cdef Py_ssize_t prefix = USER_ID_SIZE + (1 if self.requests else 2)
        if _crc(body, length) != _be32(body + length) or (
                length < prefix + PKI_SIZE + 1 or length != prefix + PKI_SIZE + 1 + body[prefix + PKI_SIZE]):
            self._reject(body, length, stage, prefix, out)
        cdef Frame f = Frame.__new__(Frame)
        f.stage = stage
        f.user_id = self._user_id(body)
        f.pki = self._pki(body + prefix)
        f.info = PyBytes_FromStringAndSize(<const char *>body + prefix + PKI_SIZE + 1,
                                           length - prefix - PKI_SIZE - 1)
        if self.requests:
            f.step = body[USER_ID_SIZE]
        else:
            f.flow = body[USER_ID_SIZE]
            f.result = body[USER_ID_SIZE + 1]
        return f

    cdef int _reject(self, const unsigned char *body, Py_ssize_t length, int stage, Py_ssize_t prefix,
                     list out) except -1:
        """Raise the error of a complete frame whose checksum or length is wrong, with what it could read."""
        cdef object user_id = self._user_id(body) if length >= USER_ID_SIZE else None
        cdef object pki = self._pki(body + prefix) if length >= prefix + PKI_SIZE else None
        if _crc(body, length) != _be32(body + length):
            return self._fail(out, "checksum wrong", INFO_CHECKSUM, stage, user_id, pki)
        return self._fail(out, "length field disagrees with the info length", INFO_LENGTH, stage, user_id, pki)

    def feed(self, data) -> list:
        """Consume bytes from the stream; the complete frames they finish, in order."""
        cdef Py_ssize_t n
        cdef const unsigned char[::1] view
        if self.dead:
            raise FrameError("decoder is closed after an earlier error")
        if type(data) is bytes:
            return self._feed(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        view = data
        n = view.shape[0]
        if n == 0:
            return []
        return self._feed(&view[0], n)

    cdef list _feed(self, const unsigned char *src, Py_ssize_t n):
        cdef Py_ssize_t pos = 0, take, size, avail
        cdef list out = None  # made with the first frame: sized for one, the usual case
        cdef Frame f
        while pos < n:
            if self.have:
                if self.have < HEADER_SIZE:
                    take = min(HEADER_SIZE - self.have, n - pos)
                    memcpy(self.buf + self.have, src + pos, take)
                    self.have += take
                    pos += take
                size = self._check_header(self.buf, self.have, out)
                if size == 0:
                    break
                take = min(size - self.have, n - pos)
                memcpy(self.buf + self.have, src + pos, take)
                self.have += take
                pos += take
                if self.have < size:
                    break
                self.have = 0
                f = self._emit(self.buf, size, out)
                out = _add_frame(out, f)
            else:
                avail = n - pos
                size = _whole_frame(src + pos, avail, self.accept, self.max_length)
                if size:  # the usual case: a complete frame whose header needs no error path
                    f = self._emit(src + pos, size, out)
                    out = _add_frame(out, f)
                    pos += size
                    continue
                size = self._check_header(src + pos, avail, out)
                if size == 0 or avail < size:
                    self._hold(src + pos, avail)
                    break
                f = self._emit(src + pos, size, out)
                out = _add_frame(out, f)
                pos += size
        return out if out is not None else []


cdef inline Py_ssize_t _whole_frame(const unsigned char *p, Py_ssize_t avail, const uint8_t *accept,
                                    Py_ssize_t max_length) noexcept nogil:
    """Size of the complete frame at ``p`` when its header passes every check, else 0 (look closer)."""
    if avail < HEADER_SIZE or p[0] != 0xDD or not accept[p[1]] or p[2] != 0x01:
        return 0
    cdef Py_ssize_t size = HEADER_SIZE + ((<Py_ssize_t>p[3] << 8) | p[4]) + CRC_SIZE
    if size - HEADER_SIZE - CRC_SIZE > max_length or size > avail:
        return 0
    return size


cdef inline list _add_frame(list out, Frame f):
    if out is None:
        out = PyList_New(1)
        Py_INCREF(f)
        PyList_SET_ITEM(out, 0, f)
    else:
        out.append(f)
    return out


def frame_decode(data, bint requests=True, Py_ssize_t max_length=MAX_LENGTH, stages=None) -> Frame:
    """Exactly one complete frame from ``data``; anything else is a FrameError."""
    cdef FrameDecoder decoder = FrameDecoder(requests, max_length, stages)
    cdef list frames = decoder.feed(data)
    if len(frames) != 1 or decoder.have:
        raise FrameError("not exactly one complete frame")
    return frames[0]


@cython.no_gc
@cython.final
cdef class Instruction:
    """One reader-script instruction: run ``apdu``; go to ``next_ok`` if the SW is ``expected_sw``."""

    def __init__(self, int seq, bytes apdu not None, bytes expected_sw not None = b"\x90\x00",
                 int next_ok=0, int next_fail=0):
        self.seq = seq
        self.apdu = apdu
        self.expected_sw = expected_sw
        self.next_ok = next_ok
        self.next_fail = next_fail

    def _astuple(self):
        return (self.seq, self.apdu, self.expected_sw, self.next_ok, self.next_fail)

    def __eq__(self, other):
        if not isinstance(other, Instruction):
            return NotImplemented
        return self._astuple() == (<Instruction>other)._astuple()

    def __hash__(self):
        return hash(self._astuple())

    def __repr__(self):
        return (f"Instruction(seq={self.seq}, apdu={self.apdu.hex().upper()}, "
                f"expected_sw={self.expected_sw.hex().upper()}, next_ok={self.next_ok}, next_fail={self.next_fail})")


@cython.no_gc
@cython.final
cdef class Reply:
    """One reader reply: the instruction's ``seq`` and the card's response data including SW."""

    def __init__(self, int seq, bytes data not None):
        self.seq = seq
        self.data = data

    @property
    def sw(self) -> bytes:
        return self.data[len(self.data) - 2:]

    @property
    def body(self) -> bytes:
        return self.data[:max(len(self.data) - 2, 0)]

    def _astuple(self):
        return (self.seq, self.data)

    def __eq__(self, other):
        if not isinstance(other, Reply):
            return NotImplemented
        return self._astuple() == (<Reply>other)._astuple()

    def __hash__(self):
        return hash(self._astuple())

    def __repr__(self):
        return f"Reply(seq={self.seq}, data={self.data.hex().upper()})"


cdef inline void _check_byte(int value, str what) except *:
    if value < 0 or value > 0xFF:
        raise ValueError(f"{what} outside one byte")


def script_encode(instructions) -> bytes:
    """The toreader bytes of a list of instructions."""
    cdef bytearray out = bytearray()
    cdef Instruction ins
    for ins in instructions:
        _check_byte(ins.seq, "seq")
        _check_byte(ins.next_ok, "next_ok")
        _check_byte(ins.next_fail, "next_fail")
        if ins.seq == 0:
            raise ValueError("instruction seq starts at 1")
        if len(ins.apdu) > 0xFF:
            raise ValueError("APDU longer than 255 bytes")
        if len(ins.expected_sw) != 2:
            raise ValueError("expected SW must be 2 bytes")
        out.append(ins.seq)
        out.append(len(ins.apdu))
        out += ins.apdu
        out += ins.expected_sw
        out.append(ins.next_ok)
        out.append(ins.next_fail)
    return bytes(out)


def script_decode(data) -> list:
    """Instructions of a toreader script; malformed bytes are a ValueError."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0], pos = 0, ln
    cdef list out = []
    cdef Instruction ins
    cdef const unsigned char *p
    while pos < n:
        if n - pos < 2:
            raise ValueError("truncated instruction header")
        p = &view[pos]
        ln = p[1]
        if n - pos < 2 + ln + 4:
            raise ValueError("truncated instruction")
        if p[0] == 0:
            raise ValueError("instruction seq starts at 1")
        ins = Instruction.__new__(Instruction)
        ins.seq = p[0]
        ins.apdu = PyBytes_FromStringAndSize(<const char *>p + 2, ln)
        ins.expected_sw = PyBytes_FromStringAndSize(<const char *>p + 2 + ln, 2)
        ins.next_ok = p[4 + ln]
        ins.next_fail = p[5 + ln]
        out.append(ins)
        pos += 6 + ln
    return out


def reply_encode(replies) -> bytes:
    """The reply-list bytes the terminal relays from the reader."""
    cdef bytearray out = bytearray()
    cdef Reply r
    for r in replies:
        _check_byte(r.seq, "seq")
        if not 2 <= len(r.data) <= 0xFF:
            raise ValueError("reply data must hold 2..255 bytes (SW included)")
        out.append(r.seq)
        out.append(len(r.data))
        out += r.data
    return bytes(out)


def reply_decode(data) -> list:
    """Replies of a reply list; malformed bytes are a ValueError."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0], pos = 0, ln
    cdef list out = []
    cdef Reply r
    cdef const unsigned char *p
    while pos < n:
        if n - pos < 2:
            raise ValueError("truncated reply header")
        p = &view[pos]
        ln = p[1]
        if ln < 2:
            raise ValueError("reply without a status word")
        if n - pos < 2 + ln:
            raise ValueError("truncated reply")
        r = Reply.__new__(Reply)
        r.seq = p[0]
        r.data = PyBytes_FromStringAndSize(<const char *>p + 2, ln)
        out.append(r)
        pos += 2 + ln
    return out

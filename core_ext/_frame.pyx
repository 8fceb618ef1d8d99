# cython: language_level=3
"""Compiled DD frames (SPEC 1.1): the stage byte's syntax, Frame, frame_encode, the incremental FrameDecoder."""

cimport cython
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.string cimport memcmp, memcpy, memset

from core_ext._crc cimport _crc, _le32


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

cdef inline uint32_t _be32(const unsigned char *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]

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

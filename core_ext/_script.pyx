# cython: language_level=3
"""Compiled reader scripts (SPEC 1.4): Instruction and Reply, the toreader and reply-list bytes."""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize


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

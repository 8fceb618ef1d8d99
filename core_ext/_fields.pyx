# cython: language_level=3
"""Compiled field codecs of the DD messages: packed BCD and unsigned big-endian integers."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t


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

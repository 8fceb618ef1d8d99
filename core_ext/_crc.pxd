# Declarations of the compiled CRC-32 (see _crc.pyx): what the frame codec cimports.
from libc.stdint cimport uint32_t


cdef uint32_t _crc(const unsigned char *p, Py_ssize_t n) noexcept nogil


cdef inline uint32_t _le32(const unsigned char *p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

# Declarations of the compiled DES (see _des.pyx): what the PBOC and sign-in modules cimport.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t


cdef struct des_ks:
    uint8_t k[16][8]


cdef void _des_schedule(des_ks *ks, const unsigned char *key) noexcept nogil
cdef uint64_t _des3(const des_ks *kl, const des_ks *kr, uint64_t x, bint decrypt) noexcept nogil
cdef uint64_t _mac_raw(const unsigned char *key, Py_ssize_t klen, const unsigned char *data, Py_ssize_t n,
                       uint64_t iv) noexcept nogil


cdef inline uint64_t _load64(const unsigned char *p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40) | (<uint64_t>p[3] << 32)
            | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16) | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline void _store64(unsigned char *p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = v & 0xFF
        v >>= 8


cdef inline const unsigned char *_key(bytes key, Py_ssize_t n, str what) except NULL:
    if key is None or PyBytes_GET_SIZE(key) != n:
        raise ValueError(f"{what} must be {n} bytes")
    return <const unsigned char *>PyBytes_AS_STRING(key)


cdef inline bytes _out(uint64_t v, Py_ssize_t n):
    cdef unsigned char buf[8]
    _store64(buf, v)
    return PyBytes_FromStringAndSize(<const char *>buf, n)

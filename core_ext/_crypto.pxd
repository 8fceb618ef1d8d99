# Declarations of the compiled card cryptography (see _crypto.pyx).
from libc.stdint cimport uint8_t, uint64_t


cdef struct des_ks:
    uint8_t k[16][8]


cdef void _des_schedule(des_ks *ks, const unsigned char *key) noexcept nogil
cdef uint64_t _mac_raw(const unsigned char *key, Py_ssize_t klen, const unsigned char *data, Py_ssize_t n,
                       uint64_t iv) noexcept nogil

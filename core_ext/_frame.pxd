# Declarations of the compiled DD frames (see _frame.pyx).
from libc.stdint cimport uint8_t


cdef class Frame:
    cdef readonly int stage
    cdef readonly bytes user_id
    cdef readonly bytes pki
    cdef readonly bytes info
    cdef readonly int step
    cdef readonly int flow
    cdef readonly int result


cdef class FrameDecoder:
    cdef readonly bint requests
    cdef readonly Py_ssize_t max_length
    cdef readonly bint dead
    cdef int kind  # STAGE_KIND of the frames expected: 1 requests, 2 responses
    cdef uint8_t accept[256]  # 1 for each stage byte this decoder accepts
    cdef unsigned char *buf
    cdef Py_ssize_t have
    cdef bytes last_user_id
    cdef bytes last_pki
    cdef unsigned char last_uid_raw[16]
    cdef unsigned char last_pki_raw[4]
    cdef inline bytes _user_id(self, const unsigned char *p)
    cdef inline bytes _pki(self, const unsigned char *p)
    cdef int _fail(self, list out, str message, object info_code, object stage, object user_id,
                   object pki) except -1
    cdef Py_ssize_t _check_header(self, const unsigned char *p, Py_ssize_t avail, list out) except -1
    cdef Frame _emit(self, const unsigned char *p, Py_ssize_t size, list out)
    cdef int _reject(self, const unsigned char *body, Py_ssize_t length, int stage, Py_ssize_t prefix,
                     list out) except -1
    cdef list _feed(self, const unsigned char *src, Py_ssize_t n)
    cdef int _hold(self, const unsigned char *p, Py_ssize_t n) except -1

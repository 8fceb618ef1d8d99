# Declarations of the compiled reader scripts (see _script.pyx).

cdef class Instruction:
    cdef readonly int seq
    cdef readonly bytes apdu
    cdef readonly bytes expected_sw
    cdef readonly int next_ok
    cdef readonly int next_fail


cdef class Reply:
    cdef readonly int seq
    cdef readonly bytes data

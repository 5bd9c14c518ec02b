from libc.stdint cimport uint32_t
from nbio.engine._conn cimport ConnBase

cdef class TimerWheel:
    cdef list slots
    cdef uint32_t mask
    cdef double resolution
    cdef double origin
    cdef uint32_t cur_tick
    cdef Py_ssize_t entries
    cdef object loop
    cdef object handle
    cdef bint closed

    cdef uint32_t now_tick(self)
    cdef uint32_t ticks_for(self, double seconds)
    cdef int schedule(self, ConnBase conn) except -1
    cdef int _arm(self) except -1

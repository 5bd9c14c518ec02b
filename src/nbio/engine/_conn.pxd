# Shared per-connection base for both engine backends (native epoll and portable asyncio).
from libc.stdint cimport uint32_t

# ConnBase.flags bits
cdef enum:
    F_CLOSED = 1          # fully closed, on_close delivered (or being delivered)
    F_CLOSING = 2         # graceful close requested: flush the queue, then close
    F_PAUSED = 4          # reading paused by the user
    F_MEM_PAUSED = 8      # reading paused by the engine's memory limit
    F_EPOLLOUT = 16       # EPOLLOUT armed (native)
    F_UNIX = 32           # AF_UNIX stream socket
    F_UDP = 64            # virtual UDP connection
    F_EOF = 128           # peer sent EOF, we keep the write side open (on_eof returned True)
    F_DIALED = 256        # outbound connection


cdef class Hub:
    """Per-listener (or per-dial) record of the handler's callbacks, shared by its connections."""
    cdef readonly object engine
    cdef readonly object handler
    cdef readonly object wheel
    cdef readonly object on_open
    cdef readonly object on_data
    cdef readonly object on_close
    cdef readonly object on_eof
    cdef readonly object on_drain
    cpdef log_error(self, object conn, str where, object exc)
    cpdef notify_close(self, object conn, object exc)


cdef class ConnBase:
    cdef Hub hub
    cdef public object session
    cdef int fd
    cdef unsigned int flags
    # deadlines in timer-wheel ticks (0 = none); see nbio.engine._timers
    cdef uint32_t read_dl
    cdef uint32_t write_dl
    cdef uint32_t idle_dl
    cdef uint32_t idle_ticks
    cdef uint32_t timer_tick
    cdef Py_ssize_t wbuf        # bytes queued for the peer

    cdef inline uint32_t earliest_deadline(self):
        cdef uint32_t t = self.read_dl
        if self.write_dl and (t == 0 or self.write_dl < t):
            t = self.write_dl
        if self.idle_dl and (t == 0 or self.idle_dl < t):
            t = self.idle_dl
        return t

    cpdef _deadline_expired(self, str kind)
    cdef int _expire(self, uint32_t now) except -1

# cython: language_level=3
"""Sans-IO RFC 6455 connection core (C-level interface for the engine).

The engine calls ``core.feed_c(buf, n, handler, conn)`` with each chunk it reads; the core
calls the *per-listener* ``handler``'s methods with ``conn`` as first argument. A Cython
handler subclass overriding these cpdef methods is called through the vtable (no Python
call); a Python subclass works too.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef class Handler:
    cpdef on_message(self, object conn, object data, bint is_text)
    cpdef on_ping(self, object conn, bytes payload)
    cpdef on_pong(self, object conn, bytes payload)
    cpdef on_close(self, object conn, int code, str reason)


cdef struct FrameHeader:
    uint64_t length
    Py_ssize_t size          # header bytes
    unsigned char key[4]
    uint8_t opcode
    uint8_t fin
    uint8_t rsv1
    uint8_t masked


# WebSocketCore._flags bits
cdef enum:
    F_CLIENT = 1
    F_CLOSE_SENT = 2
    F_STOPPED = 4        # peer's Close received or connection failed: input ignored
    F_FAILED = 8         # we failed the connection (protocol error)
    F_LOCAL_FIRST = 16   # we started the closing handshake (or failed)


cdef class WebSocketCore:
    cdef object _tail        # bytearray: incomplete header / control frame, else None
    cdef object _frag        # message being assembled (bytes preallocated or bytearray), else None
    cdef object _deflate     # nbio.ws.deflate.PerMessageDeflate when negotiated, else None
    cdef object _reason      # close reason (str) once closing, else None
    cdef int64_t _max_size   # <= 0: unlimited
    cdef uint64_t _remaining # payload bytes still to come for the frame being streamed
    cdef uint32_t _utf8      # incremental UTF-8 state of the text message being assembled
    cdef unsigned char _key[4]
    cdef uint16_t _close_code
    cdef uint8_t _flags
    cdef uint8_t _mflags     # current message flags
    cdef uint8_t _msg_op     # 0: no message in progress, 1: text, 2: binary
    cdef uint8_t _mask_off   # mask key offset for the frame being streamed
    cdef uint8_t _fbits      # streamed frame: bit0 masked, bit1 fin

    cdef inline bint open_c(self) noexcept:
        """``self.state == OPEN`` without the Python property."""
        return not (self._flags & (F_CLOSE_SENT | F_STOPPED))

    cdef int feed_c(self, const unsigned char *buf, Py_ssize_t n, Handler h, object conn) except -1

    cdef int _fail(self, int code, str reason, Handler h, object conn) except -1
    cdef int _check(self, FrameHeader *hd, const char **why) noexcept
    cdef Py_ssize_t _frame_at(self, const unsigned char *p, Py_ssize_t avail, Handler h,
                              object conn) except -1
    cdef Py_ssize_t _feed_tail(self, const unsigned char *p, Py_ssize_t avail, Handler h,
                               object conn) except -1
    cdef Py_ssize_t _data_begin(self, FrameHeader *hd, const unsigned char *body,
                                Py_ssize_t avail, Handler h, object conn) except -1
    cdef Py_ssize_t _stream(self, const unsigned char *p, Py_ssize_t avail, Handler h,
                            object conn) except -1
    cdef int _chunk(self, const unsigned char *p, Py_ssize_t k, Handler h, object conn) except -1
    cdef int _append(self, object data, Handler h, object conn) except -1
    cdef Py_ssize_t _room(self)
    cdef void _drop_input(self) noexcept
    cdef bytes _control_frame(self, unsigned int op, object payload)
    cdef int _frame_end(self, Handler h, object conn) except -1
    cdef int _deliver(self, FrameHeader *hd, const unsigned char *body, Handler h,
                      object conn) except -1
    cdef int _control(self, FrameHeader *hd, const unsigned char *body, Handler h,
                      object conn) except -1

    cpdef bytes encode_message(self, object data, Py_ssize_t max_frame_size=*)
    cpdef bytes pong(self, object payload)
    cpdef bytes close_reply(self)

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Sans-IO RFC 6455 connection core: a compact per-connection state machine.

``WebSocketCore`` parses frames straight from the caller's buffer (only an incomplete
frame header or control frame is copied aside), unmasks 8 bytes at a time, validates UTF-8
incrementally in C and calls a per-listener :class:`Handler`. Buffers exist only while a
message is in flight; an idle core holds no Python buffers and no zlib objects (unless
permessage-deflate with context takeover keeps its inflater).

Callback contract (``feed_c`` / ``feed``):

* ``on_message(conn, data, is_text)`` - a complete message (``str`` or ``bytes``).
* ``on_ping(conn, payload)`` - the handler should write ``core.pong(payload)``.
* ``on_pong(conn, payload)``.
* ``on_close(conn, code, reason)`` - called once; input is ignored afterwards. Either the
  peer sent Close (``code`` 1005 when it had no status) or the core failed the connection
  because the peer broke the protocol (``core.failed`` is true; ``code`` is 1002, 1007 or
  1009 and ``core.exception`` the typed error). In both cases the handler should write
  ``core.close_reply()`` (empty when our Close was already sent) and, on the server,
  close the TCP connection once the state is CLOSED.

A handler that raises stops the processing of the current buffer; the exception
propagates to the caller (the engine closes that connection).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcpy

from nbio.ws._frames cimport (
    NBIO_UTF8_REJECT,
    build_frames,
    check_close_code,
    nbio_utf8_feed,
    nbio_ws_mask,
)

import zlib

from nbio.errors import ConnectionClosed, MessageTooBig, ProtocolError

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    Py_ssize_t Py_REFCNT(object o)

cdef extern from *:
    """
    /* ob_shash is deprecated (3.11+) but still the cached hash that must be cleared
       when an unshared bytes object is reused (as _PyBytes_Resize does). */
    #if defined(__GNUC__)
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #endif
    static inline void nbio_bytes_reuse(PyObject *b, Py_ssize_t n) {
        Py_SET_SIZE(b, n);
        ((PyBytesObject *)b)->ob_sval[n] = 0;
        ((PyBytesObject *)b)->ob_shash = -1;
    }
    #if defined(__GNUC__)
    #pragma GCC diagnostic pop
    #endif
    """
    void nbio_bytes_reuse(object b, Py_ssize_t n) noexcept

# One spare bytes object for binary messages (module-wide, all connections): a message the
# callback did not keep (refcount back to 1) lends its buffer to the next one of at most the
# same size, saving a malloc/free pair per message above pymalloc's 512-byte objects.
# Resizing down and clearing the cached hash is what _PyBytes_Resize does to an unshared
# bytes object.
cdef enum:
    SPARE_MIN = 513
    SPARE_MAX = 65536
cdef object _spare = None
cdef Py_ssize_t _spare_cap = 0


cdef inline bytes _new_payload(Py_ssize_t n, Py_ssize_t *cap):
    """An uninitialised bytes object of size ``n``; ``cap[0]``: its buffer capacity."""
    global _spare
    cdef object b = _spare
    if b is not None and n <= _spare_cap and n >= SPARE_MIN:
        _spare = None
        cap[0] = _spare_cap
        nbio_bytes_reuse(b, n)
        return <bytes>b
    cap[0] = n
    return PyBytes_FromStringAndSize(NULL, n)


cdef inline void _keep_payload(bytes b, Py_ssize_t cap) noexcept:
    """``b`` (from ``_new_payload``, capacity ``cap``) is ours again if nothing kept it."""
    global _spare, _spare_cap
    if Py_REFCNT(b) == 1 and SPARE_MIN <= cap <= SPARE_MAX and cap >= _spare_cap:
        _spare = b
        _spare_cap = cap

# Connection states (RFC 6455 section 7): the core exists once the handshake is done.
OPEN = 1
CLOSING = 2
CLOSED = 3

# WebSocketCore._flags bits (F_*) are declared in _protocol.pxd.
cdef enum:
    M_COMPRESSED = 1     # current message has RSV1 (permessage-deflate)
    M_DISCARD = 2        # current message started after our Close: parse, don't deliver

    STACK_TEXT = 1024    # small masked text frames are unmasked on the stack


cdef class Handler:
    """Per-listener receiver of a core's events; subclass and override what you need."""

    cpdef on_message(self, object conn, object data, bint is_text):
        """A complete message: ``data`` is ``str`` (text) or ``bytes`` (binary)."""

    cpdef on_ping(self, object conn, bytes payload):
        """A Ping; reply with ``core.pong(payload)``."""

    cpdef on_pong(self, object conn, bytes payload):
        """A Pong."""

    cpdef on_close(self, object conn, int code, str reason):
        """The peer closed (or the core failed the connection); send ``core.close_reply()``."""


cdef inline Py_ssize_t _header_size(const unsigned char *p) noexcept:
    cdef Py_ssize_t h = 2
    cdef unsigned int l7 = p[1] & 0x7F
    if l7 == 126:
        h = 4
    elif l7 == 127:
        h = 10
    if p[1] & 0x80:
        h += 4
    return h


cdef inline void _parse_header(const unsigned char *p, FrameHeader *hd) noexcept:
    """Decode a complete header (``_header_size(p)`` bytes available)."""
    cdef unsigned int l7 = p[1] & 0x7F
    cdef Py_ssize_t h = 2
    cdef int j
    hd.fin = (p[0] >> 7) & 1
    hd.rsv1 = p[0] & 0x70        # all three RSV bits; _check splits them
    hd.opcode = p[0] & 0x0F
    hd.masked = (p[1] >> 7) & 1
    if l7 < 126:
        hd.length = l7
    elif l7 == 126:
        hd.length = (<uint64_t>p[2] << 8) | p[3]
        h = 4
    else:
        hd.length = 0
        for j in range(8):
            hd.length = (hd.length << 8) | p[2 + j]
        h = 10
    if hd.masked:
        memcpy(hd.key, p + h, 4)
        h += 4
    hd.size = h


@cython.no_gc
cdef class WebSocketCore:
    """One WebSocket connection's protocol state after the handshake (sans-IO).

    ``is_client`` selects masking rules; ``max_size`` caps a message (and a frame) in bytes
    after decompression (``<= 0``: no limit) and answers 1009 beyond it; ``deflate`` is the
    negotiated :class:`nbio.ws.deflate.PerMessageDeflate` or ``None``.

    Memory: ``sys.getsizeof()`` of an idle core is 88 bytes on 64-bit CPython (no GC header,
    no ``__dict__``); buffers are ``None`` between messages.
    """

    def __init__(self, bint is_client=False, max_size=1 << 20, deflate=None):
        self._flags = F_CLIENT if is_client else 0
        self._max_size = max_size or 0
        self._deflate = deflate

    # ------------------------------------------------------------------ receiving

    def feed(self, data, Handler handler not None, conn=None) -> None:
        """Parse ``data`` (any bytes-like; only an incomplete header/control frame is kept),
        calling ``handler``'s methods with ``conn`` for each event."""
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            self.feed_c(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                        handler, conn)
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.feed_c(<const unsigned char *>view.buf, view.len, handler, conn)
        finally:
            PyBuffer_Release(&view)

    cdef int feed_c(self, const unsigned char *buf, Py_ssize_t n, Handler h,
                    object conn) except -1:
        """Engine entry point: parse ``buf[:n]`` (valid only during the call)."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t r
        if self._flags & F_STOPPED:
            return 0
        if self._remaining:
            pos = self._stream(buf, n, h, conn)
        elif self._tail is not None:
            pos = self._feed_tail(buf, n, h, conn)
        while pos < n:
            if self._flags & F_STOPPED:
                return 0
            if self._remaining:     # only after a stashed header completed mid-call
                pos += self._stream(buf + pos, n - pos, h, conn)
                continue
            r = self._frame_at(buf + pos, n - pos, h, conn)
            if r == 0:
                tail = PyBytes_FromStringAndSize(<const char *>buf + pos, n - pos)
                self._tail = bytearray(tail)
                return 0
            pos += r
        return 0

    cdef int _check(self, FrameHeader *hd, const char **why) noexcept:
        """Validate a header against RFC 6455 section 5; returns 0 or a close code."""
        cdef unsigned int op = hd.opcode
        cdef bint rsv1 = hd.rsv1 & 0x40
        if hd.rsv1 & 0x30:
            why[0] = "reserved bits RSV2/RSV3 set"
            return 1002
        if (3 <= op <= 7) or op >= 11:
            why[0] = "reserved opcode"
            return 1002
        if self._flags & F_CLIENT:
            if hd.masked:
                why[0] = "masked frame from server"
                return 1002
        elif not hd.masked:
            why[0] = "unmasked frame from client"
            return 1002
        if hd.length >> 63:
            why[0] = "frame length has the most significant bit set"
            return 1002
        if op >= 8:
            if not hd.fin:
                why[0] = "fragmented control frame"
                return 1002
            if hd.length > 125:
                why[0] = "control frame payload over 125 bytes"
                return 1002
            if rsv1:
                why[0] = "RSV1 set on a control frame"
                return 1002
            return 0
        if op == 0:
            if self._msg_op == 0:
                why[0] = "continuation frame without a message in progress"
                return 1002
            if rsv1:
                why[0] = "RSV1 set on a continuation frame"
                return 1002
        else:
            if self._msg_op != 0:
                why[0] = "new data frame while a fragmented message is in progress"
                return 1002
            if rsv1 and self._deflate is None:
                why[0] = "RSV1 set without a negotiated extension"
                return 1002
        if self._max_size > 0:
            if hd.length > <uint64_t>self._max_size:
                why[0] = "frame too big"
                return 1009
            if (op == 0 and self._frag is not None and not (self._mflags & M_COMPRESSED)
                    and hd.length + <uint64_t>len(self._frag) > <uint64_t>self._max_size):
                why[0] = "message too big"
                return 1009
        return 0

    cdef Py_ssize_t _frame_at(self, const unsigned char *p, Py_ssize_t avail, Handler h,
                              object conn) except -1:
        """Handle the frame starting at ``p``; returns the bytes consumed, 0 to stash."""
        cdef FrameHeader hd
        cdef const char *why = NULL
        cdef int code
        if avail < 2 or avail < _header_size(p):
            return 0
        _parse_header(p, &hd)
        code = self._check(&hd, &why)
        if code:
            self._fail(code, why.decode("ascii"), h, conn)
            return avail
        if hd.opcode >= 8:
            if <uint64_t>(avail - hd.size) < hd.length:
                return 0
            self._control(&hd, p + hd.size, h, conn)
            return hd.size + <Py_ssize_t>hd.length
        return hd.size + self._data_begin(&hd, p + hd.size, avail - hd.size, h, conn)

    cdef Py_ssize_t _feed_tail(self, const unsigned char *p, Py_ssize_t avail, Handler h,
                               object conn) except -1:
        """Complete the stashed partial frame from ``p``; returns the bytes consumed."""
        cdef object t = self._tail
        cdef Py_ssize_t tl = PyByteArray_GET_SIZE(t)
        cdef Py_ssize_t used = 0, need, k
        cdef FrameHeader hd
        cdef const char *why = NULL
        cdef int code
        need = 2
        while True:
            if tl >= 2:
                need = _header_size(<const unsigned char *>PyByteArray_AS_STRING(t))
                if tl >= need:
                    _parse_header(<const unsigned char *>PyByteArray_AS_STRING(t), &hd)
                    if hd.opcode < 8 or hd.length > 125:
                        break
                    need = hd.size + <Py_ssize_t>hd.length
                    if tl >= need:
                        break
            k = min(need - tl, avail - used)
            if k <= 0:
                return used
            PyByteArray_Resize(t, tl + k)
            memcpy(PyByteArray_AS_STRING(t) + tl, p + used, k)
            tl += k
            used += k
        self._tail = None
        code = self._check(&hd, &why)
        if code:
            self._fail(code, why.decode("ascii"), h, conn)
            return avail
        if hd.opcode >= 8:
            self._control(&hd, <const unsigned char *>PyByteArray_AS_STRING(t) + hd.size, h, conn)
            return used
        return used + self._data_begin(&hd, p + used, avail - used, h, conn)

    cdef Py_ssize_t _data_begin(self, FrameHeader *hd, const unsigned char *body,
                                Py_ssize_t avail, Handler h, object conn) except -1:
        """Start a (checked) data frame whose payload begins at ``body``."""
        cdef uint64_t n = hd.length
        if hd.opcode != 0:
            self._mflags = (M_COMPRESSED if hd.rsv1 else 0) | (
                M_DISCARD if self._flags & F_CLOSE_SENT else 0)
            if hd.fin and self._mflags == 0 and <uint64_t>avail >= n:
                self._deliver(hd, body, h, conn)      # hot path: whole message here
                return <Py_ssize_t>n
            self._msg_op = hd.opcode
            self._utf8 = 0
            if not self._mflags:
                if hd.fin:   # one frame, known size: fill the final bytes object in place
                    self._frag = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
                else:
                    self._frag = bytearray()
            elif self._mflags == M_COMPRESSED:
                self._frag = bytearray()
        memcpy(self._key, hd.key, 4)
        self._mask_off = 0
        self._fbits = hd.masked | (hd.fin << 1)
        self._remaining = n
        if n == 0:
            self._frame_end(h, conn)
            return 0
        return self._stream(body, avail, h, conn)

    cdef Py_ssize_t _stream(self, const unsigned char *p, Py_ssize_t avail, Handler h,
                            object conn) except -1:
        """Consume up to ``avail`` payload bytes of the current data frame."""
        cdef Py_ssize_t k = avail
        if <uint64_t>k > self._remaining:
            k = <Py_ssize_t>self._remaining
        if k == 0:
            return 0
        self._chunk(p, k, h, conn)
        if self._flags & F_STOPPED:
            return avail
        self._remaining -= k
        self._mask_off = (self._mask_off + k) & 3
        if self._remaining == 0:
            self._frame_end(h, conn)
        return k

    cdef int _chunk(self, const unsigned char *p, Py_ssize_t k, Handler h,
                    object conn) except -1:
        """Unmask payload bytes into the message buffer (or through the inflater)."""
        cdef object frag
        cdef unsigned char *dst
        cdef Py_ssize_t old
        cdef bytes raw
        if self._mflags & M_DISCARD:
            return 0
        if self._mflags & M_COMPRESSED:
            raw = PyBytes_FromStringAndSize(NULL, k)
            dst = <unsigned char *>PyBytes_AS_STRING(raw)
            if self._fbits & 1:
                nbio_ws_mask(dst, p, k, self._key, self._mask_off)
            else:
                memcpy(dst, p, k)
            try:
                out = self._deflate.decompress(raw, self._room())
            except MessageTooBig:
                return self._fail(1009, "message too big", h, conn)
            except zlib.error:
                return self._fail(1007, "invalid compressed data", h, conn)
            return self._append(out, h, conn)
        frag = self._frag
        if PyBytes_CheckExact(frag):
            dst = <unsigned char *>PyBytes_AS_STRING(frag) + (
                PyBytes_GET_SIZE(frag) - <Py_ssize_t>self._remaining)
        else:
            old = PyByteArray_GET_SIZE(frag)
            PyByteArray_Resize(frag, old + k)
            dst = <unsigned char *>PyByteArray_AS_STRING(frag) + old
        if self._fbits & 1:
            nbio_ws_mask(dst, p, k, self._key, self._mask_off)
        else:
            memcpy(dst, p, k)
        if self._msg_op == 1:
            self._utf8 = nbio_utf8_feed(self._utf8, dst, k)
            if self._utf8 == NBIO_UTF8_REJECT:
                return self._fail(1007, "invalid UTF-8 in text message", h, conn)
        return 0

    cdef Py_ssize_t _room(self):
        if self._max_size <= 0:
            return -1
        return <Py_ssize_t>self._max_size - PyByteArray_GET_SIZE(self._frag)

    cdef int _append(self, object data, Handler h, object conn) except -1:
        """Append decompressed bytes to the message buffer (UTF-8 checked for text)."""
        cdef Py_ssize_t k = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t old
        cdef unsigned char *dst
        if k == 0:
            return 0
        old = PyByteArray_GET_SIZE(self._frag)
        PyByteArray_Resize(self._frag, old + k)
        dst = <unsigned char *>PyByteArray_AS_STRING(self._frag) + old
        memcpy(dst, PyBytes_AS_STRING(data), k)
        if self._msg_op == 1:
            self._utf8 = nbio_utf8_feed(self._utf8, dst, k)
            if self._utf8 == NBIO_UTF8_REJECT:
                return self._fail(1007, "invalid UTF-8 in text message", h, conn)
        return 0

    cdef int _frame_end(self, Handler h, object conn) except -1:
        """A data frame's payload is complete: deliver the message on FIN."""
        cdef uint8_t op = self._msg_op
        cdef object frag
        cdef object data
        if not (self._fbits & 2):
            return 0
        self._msg_op = 0
        if self._mflags & M_DISCARD:
            self._frag = None
            return 0
        if self._mflags & M_COMPRESSED:
            try:
                out = self._deflate.decompress_end(self._room())
            except MessageTooBig:
                return self._fail(1009, "message too big", h, conn)
            except zlib.error:
                return self._fail(1007, "invalid compressed data", h, conn)
            self._append(out, h, conn)
            if self._flags & F_STOPPED:
                return 0
        frag = self._frag
        self._frag = None
        if op == 1:
            if self._utf8 != 0:
                return self._fail(1007, "incomplete UTF-8 sequence at end of text message",
                                  h, conn)
            if PyBytes_CheckExact(frag):
                data = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(frag), PyBytes_GET_SIZE(frag),
                                            NULL)
            else:
                data = PyUnicode_DecodeUTF8(PyByteArray_AS_STRING(frag),
                                            PyByteArray_GET_SIZE(frag), NULL)
            h.on_message(conn, data, True)
        else:
            if not PyBytes_CheckExact(frag):
                frag = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(frag),
                                                 PyByteArray_GET_SIZE(frag))
            h.on_message(conn, frag, False)
        return 0

    cdef int _deliver(self, FrameHeader *hd, const unsigned char *body, Handler h,
                      object conn) except -1:
        """Hot path: an unfragmented, uncompressed message whose payload is all here."""
        cdef Py_ssize_t n = <Py_ssize_t>hd.length
        cdef bytes data
        cdef Py_ssize_t cap
        cdef unsigned char stack[STACK_TEXT]
        cdef unsigned char *tmp
        if hd.opcode == 2:
            data = _new_payload(n, &cap)
            if hd.masked:
                nbio_ws_mask(<unsigned char *>PyBytes_AS_STRING(data), body, n, hd.key, 0)
            else:
                memcpy(PyBytes_AS_STRING(data), body, n)
            h.on_message(conn, data, False)
            _keep_payload(data, cap)
            return 0
        if not hd.masked:
            tmp = <unsigned char *>body
        elif n <= STACK_TEXT:
            tmp = stack
        else:
            tmp = <unsigned char *>PyMem_Malloc(n)
            if tmp == NULL:
                raise MemoryError()
        try:
            if hd.masked:
                nbio_ws_mask(tmp, body, n, hd.key, 0)
            text = PyUnicode_DecodeUTF8(<const char *>tmp, n, NULL)
        except UnicodeDecodeError:
            text = None
        finally:
            if hd.masked and n > STACK_TEXT:
                PyMem_Free(tmp)
        if text is None:
            return self._fail(1007, "invalid UTF-8 in text message", h, conn)
        h.on_message(conn, text, True)
        return 0

    cdef int _control(self, FrameHeader *hd, const unsigned char *body, Handler h,
                      object conn) except -1:
        cdef Py_ssize_t n = <Py_ssize_t>hd.length
        cdef bytes payload = PyBytes_FromStringAndSize(NULL, n)
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(payload)
        cdef int code
        if hd.masked:
            nbio_ws_mask(<unsigned char *>p, body, n, hd.key, 0)
        else:
            memcpy(<unsigned char *>p, body, n)
        if hd.opcode == 9:
            h.on_ping(conn, payload)
        elif hd.opcode == 10:
            h.on_pong(conn, payload)
        else:
            if n == 0:
                code = 1005
                reason = ""
            elif n == 1:
                return self._fail(1002, "close frame payload of 1 byte", h, conn)
            else:
                code = (p[0] << 8) | p[1]
                if check_close_code(code) != 0:
                    return self._fail(1002, f"invalid close code {code}", h, conn)
                if nbio_utf8_feed(0, p + 2, n - 2) != 0:
                    return self._fail(1007, "close reason is not valid UTF-8", h, conn)
                reason = PyUnicode_DecodeUTF8(<const char *>p + 2, n - 2, NULL)
            self._flags |= F_STOPPED
            if not (self._flags & F_CLOSE_SENT):
                self._close_code = code
                self._reason = reason
            self._drop_input()
            h.on_close(conn, code, reason)
        return 0

    cdef void _drop_input(self) noexcept:
        self._tail = None
        self._frag = None
        self._remaining = 0
        self._msg_op = 0

    cdef int _fail(self, int code, str reason, Handler h, object conn) except -1:
        """The peer broke the protocol: stop reading, owe a Close(code), tell the handler."""
        if self._flags & F_STOPPED:
            return 0
        if not (self._flags & F_CLOSE_SENT):
            self._flags |= F_LOCAL_FIRST
        self._close_code = code
        self._reason = reason
        self._flags |= F_STOPPED | F_FAILED
        self._drop_input()
        h.on_close(conn, code, reason)
        return 0

    # ------------------------------------------------------------------ sending

    cpdef bytes encode_message(self, object data, Py_ssize_t max_frame_size=0):
        """Frame a message (``str`` -> text, bytes-like -> binary) for this side: masked
        by a client, compressed when permessage-deflate is on and the message reaches the
        extension's threshold, fragmented at ``max_frame_size`` payload bytes when > 0."""
        cdef Py_buffer view
        cdef const char *s
        cdef Py_ssize_t n
        cdef unsigned int op
        cdef bint mask = self._flags & F_CLIENT
        if self._flags & F_CLOSE_SENT:
            raise ConnectionClosed(self._close_code or None, "close frame already sent")
        if self._deflate is not None and len(data) >= self._deflate.threshold:
            op = 1 if isinstance(data, str) else 2
            if op == 1:
                data = (<str>data).encode("utf-8")
            data = self._deflate.compress(data)
            return build_frames(op, <const unsigned char *>PyBytes_AS_STRING(data),
                                PyBytes_GET_SIZE(data), True, mask, max_frame_size)
        if isinstance(data, str):
            s = PyUnicode_AsUTF8AndSize(data, &n)
            return build_frames(1, <const unsigned char *>s, n, False, mask, max_frame_size)
        if PyBytes_CheckExact(data):
            return build_frames(2, <const unsigned char *>PyBytes_AS_STRING(data),
                                PyBytes_GET_SIZE(data), False, mask, max_frame_size)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return build_frames(2, <const unsigned char *>view.buf, view.len, False, mask,
                                max_frame_size)
        finally:
            PyBuffer_Release(&view)

    cdef bytes _control_frame(self, unsigned int op, object payload):
        cdef Py_buffer view
        if isinstance(payload, str):
            payload = (<str>payload).encode("utf-8")
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            if view.len > 125:
                raise ValueError("control frame payload over 125 bytes")
            return build_frames(op, <const unsigned char *>view.buf, view.len, False,
                                self._flags & F_CLIENT, 0)
        finally:
            PyBuffer_Release(&view)

    def ping(self, payload=b"") -> bytes:
        """A Ping frame (payload <= 125 bytes)."""
        return self._control_frame(9, payload)

    cpdef bytes pong(self, object payload):
        """A Pong frame answering a Ping's ``payload``."""
        return self._control_frame(10, payload)

    def send_close(self, code=1000, str reason="") -> bytes:
        """Start (or answer) the closing handshake: a Close frame with ``code`` (None: no
        status) and ``reason`` (<= 123 UTF-8 bytes). Returns b"" if a Close was already
        sent. Raises ValueError for a code that must not be sent (1004-1006, 1015, ...)."""
        cdef bytes r = reason.encode("utf-8")
        if code is None:
            if r:
                raise ValueError("a close reason needs a close code")
            payload = b""
        else:
            if check_close_code(code) != 0:
                raise ValueError(f"invalid close code {code}")
            if len(r) > 123:
                raise ValueError("close reason longer than 123 bytes")
            payload = bytes(((code >> 8) & 0xFF, code & 0xFF)) + r
        if self._flags & F_CLOSE_SENT:
            return b""
        if not (self._flags & F_STOPPED):
            self._flags |= F_LOCAL_FIRST
            self._close_code = 1005 if code is None else code
            self._reason = reason
        self._flags |= F_CLOSE_SENT
        return self._control_frame(8, payload)

    cpdef bytes close_reply(self):
        """The Close frame we owe after the peer's Close (echoing its code) or after failing
        the connection (our error code); b"" when nothing is owed."""
        cdef bytes r
        if not (self._flags & F_STOPPED) or self._flags & F_CLOSE_SENT:
            return b""
        self._flags |= F_CLOSE_SENT
        if self._flags & F_FAILED:
            r = (<str>self._reason).encode("utf-8")[:123]
            payload = bytes(((self._close_code >> 8) & 0xFF, self._close_code & 0xFF)) + r
        elif self._close_code == 1005:
            payload = b""
        else:
            payload = bytes(((self._close_code >> 8) & 0xFF, self._close_code & 0xFF))
        return self._control_frame(8, payload)

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> int:
        """OPEN (1), CLOSING (2: one Close sent or received) or CLOSED (3: both)."""
        cdef uint8_t f = self._flags & (F_CLOSE_SENT | F_STOPPED)
        if f == 0:
            return OPEN
        if f == F_CLOSE_SENT | F_STOPPED:
            return CLOSED
        return CLOSING

    @property
    def is_client(self) -> bool:
        return bool(self._flags & F_CLIENT)

    @property
    def max_size(self) -> int:
        return self._max_size

    @max_size.setter
    def max_size(self, value) -> None:
        self._max_size = value or 0

    @property
    def deflate(self):
        """The negotiated permessage-deflate state, or None."""
        return self._deflate

    @property
    def close_code(self):
        """The close code of the closing handshake (the first Close, or the failure code)."""
        return self._close_code if self._close_code else None

    @property
    def close_reason(self):
        return self._reason

    @property
    def closed_by(self):
        """"local" if we started closing (or failed the connection), "remote" if the peer
        did, None while open."""
        if self._flags & F_LOCAL_FIRST:
            return "local"
        if self._flags & F_STOPPED:
            return "remote"
        return None

    @property
    def failed(self) -> bool:
        """True when the core failed the connection because of a protocol violation."""
        return bool(self._flags & F_FAILED)

    @property
    def exception(self):
        """The typed error (MessageTooBig for 1009, else ProtocolError) when ``failed``."""
        if not (self._flags & F_FAILED):
            return None
        cls = MessageTooBig if self._close_code == 1009 else ProtocolError
        exc = cls(self._reason)
        exc.close_code = self._close_code
        return exc

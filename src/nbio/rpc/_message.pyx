# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""arpc wire format, compiled: Message, frame encoder and incremental frame reader.

Same public behaviour as the pure-Python fallback in :mod:`nbio.rpc.message`, which
re-exports these names when this extension is built. Layout of a frame (little endian)::

    [0:4]  body length = len(method) + len(payload)
    [4]    coder flag bits (bit 7 gzip, bit 0 tracer)
    [5]    command in the low 6 bits; 0x80 stream-local, 0x40 stream-EOF
    [6]    flags: 0x01 error, 0x02 async
    [7]    method length
    [8:16] seq (the stream id for streams)
    then the method, then the payload
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

from nbio.errors import MessageTooBig, ProtocolError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

DEFAULT_MAX_BODY_LEN = 1024 * 1024 * 64 - 16
cdef bytes _EMPTY = b""


cdef inline void _append(bytearray buf, const unsigned char* p, Py_ssize_t n) except *:
    cdef Py_ssize_t old = len(buf)
    PyByteArray_Resize(buf, old + n)
    memcpy(PyByteArray_AS_STRING(buf) + old, p, n)


cdef inline uint32_t _u32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0]) | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _u64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>_u32(p)) | ((<uint64_t>_u32(p + 4)) << 32)


cdef inline void _put_u32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


cdef inline void _put_u64(unsigned char* p, uint64_t v) noexcept nogil:
    _put_u32(p, <uint32_t>(v & 0xFFFFFFFFu))
    _put_u32(p + 4, <uint32_t>(v >> 32))


cdef bytes _method_bytes(object method):
    cdef Py_ssize_t size
    cdef const char* s
    if type(method) is str:
        try:
            s = PyUnicode_AsUTF8AndSize(method, &size)
        except UnicodeEncodeError:
            # lone surrogates from a method that was not valid UTF-8 on the wire
            return (<str>method).encode("utf-8", "surrogateescape")
        return PyBytes_FromStringAndSize(s, size)
    if isinstance(method, str):
        return (<str>method).encode("utf-8", "surrogateescape")
    return bytes(method)


cdef Message _build(const unsigned char* p, Py_ssize_t size, bint strict):
    """A Message from one whole frame of ``size`` bytes; None if its method length is bad
    and not ``strict``. Raises ProtocolError for an unknown command."""
    cdef Py_ssize_t body_len = size - HEADER_SIZE
    cdef unsigned char cmd_byte = p[5]
    cdef unsigned char cmd = cmd_byte & CMD_MASK
    cdef Py_ssize_t ml = p[7]
    cdef Message msg
    if cmd == 0 or cmd > C_CMD_STREAM:
        raise ProtocolError(f"invalid cmd [{cmd}]")
    if cmd == C_CMD_PING or cmd == C_CMD_PONG:
        if ml > body_len:
            ml = body_len
    elif ml == 0 or ml > MAX_METHOD_LEN or ml > body_len:
        if strict:
            raise ProtocolError(f"invalid method length {ml} (body length {body_len})")
        return None
    msg = Message.__new__(Message)
    msg.coder_flags = p[4]
    msg.cmd_byte = cmd_byte
    msg.flags = p[6]
    msg.seq = _u64(p + 8)
    if ml:
        msg.method = PyUnicode_DecodeUTF8(<const char*>p + HEADER_SIZE, ml, "surrogateescape")
    else:
        msg.method = ""
    if body_len > ml:
        msg.payload = PyBytes_FromStringAndSize(<const char*>p + HEADER_SIZE + ml, body_len - ml)
    else:
        msg.payload = _EMPTY
    return msg


cdef class Message:
    """One arpc message, parsed. Fields are read-only; build frames with :func:`encode`.

    ``cmd_byte`` is the raw command byte (with a stream's 0x80/0x40 bits), ``cmd`` the
    command alone. ``method`` is decoded as UTF-8 with ``surrogateescape`` so that any
    byte sequence round-trips.
    """

    def __init__(self, int cmd, method="", uint64_t seq=0, payload=b"", int flags=0,
                 int coder_flags=0):
        self.cmd_byte = <unsigned char>cmd
        self.method = method if isinstance(method, str) else bytes(method).decode(
            "utf-8", "surrogateescape")
        self.seq = seq
        self.payload = bytes(payload) if not isinstance(payload, str) else payload.encode()
        self.flags = <unsigned char>flags
        self.coder_flags = <unsigned char>coder_flags
        if cmd < 0 or cmd > 255 or flags < 0 or flags > 255 or coder_flags < 0 or coder_flags > 255:
            raise ValueError("cmd, flags and coder_flags are bytes (0..255)")

    @property
    def cmd(self) -> int:
        """The command (CMD_REQUEST ... CMD_STREAM), without a stream's bits."""
        return self.cmd_byte & CMD_MASK

    @property
    def is_error(self) -> bool:
        return (self.flags & FLAG_ERROR) != 0

    @property
    def is_async(self) -> bool:
        return (self.flags & FLAG_ASYNC) != 0

    @property
    def is_stream_local(self) -> bool:
        """Stream frame sent by the side that created the stream."""
        return (self.cmd_byte & STREAM_LOCAL) != 0

    @property
    def is_stream_eof(self) -> bool:
        """Last stream frame from its sender."""
        return (self.cmd_byte & STREAM_EOF) != 0

    @property
    def stream_id(self) -> int:
        return self.seq

    @property
    def body_len(self) -> int:
        """len(method) + len(payload) in bytes, as in the header."""
        return len(_method_bytes(self.method)) + len(self.payload)

    @property
    def error(self):
        """The remote error text of an error response, else None."""
        if self.flags & FLAG_ERROR:
            return self.payload.decode("utf-8", "replace")
        return None

    def to_bytes(self) -> bytes:
        """The frame of this message."""
        return encode(self.cmd_byte, self.method, self.seq, self.payload, self.flags,
                      self.coder_flags)

    def _key(self):
        return (self.cmd_byte, self.flags, self.coder_flags, self.seq, self.method, self.payload)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        return self._key() == (<Message>other)._key()

    __hash__ = None

    def __repr__(self):
        return (f"Message(cmd={self.cmd}, method={self.method!r}, seq={self.seq}, "
                f"flags=0x{self.flags:02x}, cmd_byte=0x{self.cmd_byte:02x}, "
                f"coder_flags=0x{self.coder_flags:02x}, payload={self.payload[:64]!r}"
                f"{'...' if len(self.payload) > 64 else ''})")


cdef bytes _method_utf8(object method, const char** mp, Py_ssize_t* ml):
    """Point ``mp``/``ml`` at the method's UTF-8 bytes; returns the bytes object that must
    stay alive while they are used (None when they live in the str itself)."""
    cdef bytes mb
    if type(method) is str:
        try:
            mp[0] = PyUnicode_AsUTF8AndSize(method, ml)
            return None
        except UnicodeEncodeError:
            pass
    mb = _method_bytes(method)
    mp[0] = PyBytes_AS_STRING(mb)
    ml[0] = PyBytes_GET_SIZE(mb)
    return mb


cpdef bytes encode(int cmd, object method, uint64_t seq, object payload=b"", int flags=0,
                   int coder_flags=0):
    """Build one frame. ``cmd`` is the whole command byte (a stream's bits included);
    ``payload`` is bytes-like (a str is sent as UTF-8)."""
    cdef Py_ssize_t ml
    cdef const char* mp
    cdef bytes mb = _method_utf8(method, &mp, &ml)
    cdef Py_buffer view
    cdef const char* pp
    cdef Py_ssize_t plen
    cdef bint release = False
    cdef bytes out
    cdef unsigned char* o
    if cmd < 0 or cmd > 255 or flags < 0 or flags > 255 or coder_flags < 0 or coder_flags > 255:
        raise ValueError("cmd, flags and coder_flags are bytes (0..255)")
    if ml > MAX_METHOD_LEN:
        raise ValueError(f"invalid method length: {ml}, should <= {MAX_METHOD_LEN}")
    if type(payload) is bytes:
        pp = PyBytes_AS_STRING(payload)
        plen = PyBytes_GET_SIZE(payload)
    elif isinstance(payload, str):
        payload = (<str>payload).encode("utf-8")
        pp = PyBytes_AS_STRING(payload)
        plen = PyBytes_GET_SIZE(payload)
    elif payload is None:
        pp = NULL
        plen = 0
    else:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        release = True
        pp = <const char*>view.buf
        plen = view.len
    try:
        if ml + plen > 0xFFFFFFFF:
            raise MessageTooBig(f"invalid body length: {ml + plen}")
        out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + ml + plen)
        o = <unsigned char*>PyBytes_AS_STRING(out)
        _put_u32(o, <uint32_t>(ml + plen))
        o[4] = <unsigned char>coder_flags
        o[5] = <unsigned char>cmd
        o[6] = <unsigned char>flags
        o[7] = <unsigned char>ml
        _put_u64(o + 8, seq)
        if ml:
            memcpy(o + HEADER_SIZE, mp, ml)
        if plen:
            memcpy(o + HEADER_SIZE + ml, pp, plen)
        return out
    finally:
        if release:
            PyBuffer_Release(&view)


cpdef bytes encode_header(int cmd, object method, uint64_t seq, Py_ssize_t payload_len,
                          int flags=0, int coder_flags=0):
    """Header and method of a frame whose payload (``payload_len`` bytes) is written
    separately, e.g. with writev."""
    cdef Py_ssize_t ml
    cdef const char* mp
    cdef bytes mb = _method_utf8(method, &mp, &ml)
    cdef bytes out
    cdef unsigned char* o
    if cmd < 0 or cmd > 255 or flags < 0 or flags > 255 or coder_flags < 0 or coder_flags > 255:
        raise ValueError("cmd, flags and coder_flags are bytes (0..255)")
    if ml > MAX_METHOD_LEN:
        raise ValueError(f"invalid method length: {ml}, should <= {MAX_METHOD_LEN}")
    if payload_len < 0 or ml + payload_len > 0xFFFFFFFF:
        raise MessageTooBig(f"invalid body length: {ml + payload_len}")
    out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + ml)
    o = <unsigned char*>PyBytes_AS_STRING(out)
    _put_u32(o, <uint32_t>(ml + payload_len))
    o[4] = <unsigned char>coder_flags
    o[5] = <unsigned char>cmd
    o[6] = <unsigned char>flags
    o[7] = <unsigned char>ml
    _put_u64(o + 8, seq)
    if ml:
        memcpy(o + HEADER_SIZE, mp, ml)
    return out


def parse_frame(data, Py_ssize_t max_body_len=DEFAULT_MAX_BODY_LEN) -> Message:
    """Parse exactly one whole frame; any malformation raises ProtocolError (strict)."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef uint32_t body_len
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        if view.len < HEADER_SIZE:
            raise ProtocolError(f"truncated frame: {view.len} bytes, header is {HEADER_SIZE}")
        body_len = _u32(p)
        if body_len > max_body_len:
            raise MessageTooBig(f"invalid body length: {body_len} (limit {max_body_len})")
        if view.len != HEADER_SIZE + <Py_ssize_t>body_len:
            raise ProtocolError(
                f"frame length {view.len} does not match body length {body_len} + {HEADER_SIZE}")
        return _build(p, view.len, True)
    finally:
        PyBuffer_Release(&view)


cdef class FrameReader:
    """Incremental frame reader (sans-IO).

    ``feed(data)`` takes any bytes-like object (a memoryview valid only during the call is
    fine: only the unparsed tail is copied) and returns the list of complete messages, or,
    when a ``callback`` was given, calls ``callback(msg)`` for each and returns None.

    Raises :class:`~nbio.errors.MessageTooBig` for a body over ``max_body_len`` (checked as
    soon as the 4 length bytes arrive) and :class:`~nbio.errors.ProtocolError` for an
    unknown command: the caller closes the connection. A message whose method length is
    invalid (0 or > 127 on anything but ping/pong, or longer than the body) is dropped and
    counted in ``dropped``, as arpc does. Truncated input waits for more.

    ``coders`` (objects with ``flag`` and ``decode(frame) -> frame``) are applied, last
    first, to frames whose coder byte has their flag bit, before the frame is parsed.
    An idle reader holds no buffer.
    """

    def __init__(self, callback=None, Py_ssize_t max_body_len=DEFAULT_MAX_BODY_LEN,
                 coders=()):
        if max_body_len < 0 or max_body_len > 0xFFFFFFFF:
            raise ValueError("max_body_len must be within 0 .. 2**32-1")
        self._tail = None
        self._max_body_len = <uint32_t>max_body_len
        self._callback = callback
        self._coders = tuple(coders)
        mask = 0
        for c in self._coders:
            mask |= int(c.flag)
        self._coder_mask = <unsigned char>(mask & 0xFF)
        self.dropped = 0

    @property
    def max_body_len(self) -> int:
        return self._max_body_len

    @property
    def pending(self) -> int:
        """Bytes buffered of an incomplete frame."""
        return 0 if self._tail is None else len(self._tail)

    def reset(self):
        """Drop any buffered partial frame."""
        self._tail = None

    def feed(self, data):
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t n, used = 0, t, take, need, total
        cdef uint32_t body_len
        cdef bytearray tail
        cdef list out = [] if self._callback is None else None
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = <const unsigned char*>view.buf
            n = view.len
            if self._tail is not None:
                tail = self._tail
                t = len(tail)
                if t >= HEADER_SIZE and HEADER_SIZE + <Py_ssize_t>_u32(
                        <const unsigned char*>PyByteArray_AS_STRING(tail)) <= t:
                    # whole frames were left in the tail by a callback that raised:
                    # parse tail + data together (rare, not the fast path)
                    _append(tail, p, n)
                    self._tail = None
                    t = len(tail)
                    used = self._parse(<const unsigned char*>PyByteArray_AS_STRING(tail), t, out)
                    if used < t:
                        self._tail = tail[used:]
                    return out
                if t < HEADER_SIZE:
                    take = min(HEADER_SIZE - t, n)
                    _append(tail, p, take)
                    used = take
                    t += take
                    if t >= 4:
                        body_len = _u32(<const unsigned char*>PyByteArray_AS_STRING(tail))
                        if body_len > self._max_body_len:
                            raise MessageTooBig(
                                f"invalid body length: {body_len} (limit {self._max_body_len})")
                    if t < HEADER_SIZE:
                        return out
                body_len = _u32(<const unsigned char*>PyByteArray_AS_STRING(tail))
                total = HEADER_SIZE + <Py_ssize_t>body_len
                need = total - t
                take = min(need, n - used)
                if take > 0:
                    _append(tail, p + used, take)
                    used += take
                if take < need:
                    return out
                self._tail = None
                try:
                    self._deliver(<const unsigned char*>PyByteArray_AS_STRING(tail), total, out)
                except BaseException:
                    if used < n:
                        self._tail = PyByteArray_FromStringAndSize(<const char*>p + used, n - used)
                    raise
            used += self._parse(p + used, n - used, out)
            if used < n:
                self._tail = PyByteArray_FromStringAndSize(<const char*>p + used, n - used)
            return out
        finally:
            PyBuffer_Release(&view)

    cdef Py_ssize_t _parse(self, const unsigned char* p, Py_ssize_t n, list out) except -1:
        cdef Py_ssize_t off = 0, total
        cdef uint32_t body_len
        while n - off >= 4:
            body_len = _u32(p + off)
            if body_len > self._max_body_len:
                raise MessageTooBig(f"invalid body length: {body_len} (limit {self._max_body_len})")
            total = HEADER_SIZE + <Py_ssize_t>body_len
            if n - off < total:
                break
            try:
                self._deliver(p + off, total, out)
            except BaseException:
                off += total
                if off < n:
                    self._tail = PyByteArray_FromStringAndSize(<const char*>p + off, n - off)
                raise
            off += total
        return off

    cdef int _deliver(self, const unsigned char* p, Py_ssize_t size, list out) except -1:
        cdef Message msg
        cdef bytes frame
        cdef const unsigned char* fp
        cdef uint32_t body_len
        if p[4] & self._coder_mask:
            frame = PyBytes_FromStringAndSize(<const char*>p, size)
            for coder in reversed(self._coders):
                if frame[4] & coder.flag:
                    frame = bytes(coder.decode(frame))
                    if PyBytes_GET_SIZE(frame) < HEADER_SIZE:
                        raise ProtocolError("coder produced a truncated frame")
            fp = <const unsigned char*>PyBytes_AS_STRING(frame)
            body_len = _u32(fp)
            if body_len > self._max_body_len:
                raise MessageTooBig(f"invalid body length: {body_len} (limit {self._max_body_len})")
            if PyBytes_GET_SIZE(frame) != HEADER_SIZE + <Py_ssize_t>body_len:
                raise ProtocolError("coder produced a frame whose length does not match")
            msg = _build(fp, PyBytes_GET_SIZE(frame), False)
        else:
            msg = _build(p, size, False)
        if msg is None:
            self.dropped += 1
            return 0
        return self._emit(msg, out)

    cdef int _emit(self, Message msg, list out) except -1:
        if out is not None:
            out.append(msg)
        else:
            self._callback(msg)
        return 0


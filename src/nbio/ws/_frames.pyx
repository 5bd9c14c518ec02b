# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""RFC 6455 frame building, masking, UTF-8 and close-payload helpers (Python-facing).

The C primitives live in ``_frames.pxd`` so the protocol core inlines them; this module
exposes them to Python and owns the random mask-key pool (``os.urandom`` drawn 4 KiB at a
time, 4 bytes per frame).
"""

import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy

from nbio.errors import ProtocolError

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

cdef enum:
    POOL_SIZE = 4096

cdef bytes _pool = b""
cdef Py_ssize_t _pool_pos = POOL_SIZE
_urandom = os.urandom


cdef int fill_mask_key(unsigned char *key) except -1:
    global _pool, _pool_pos
    if _pool_pos + 4 > POOL_SIZE:
        _pool = _urandom(POOL_SIZE)
        _pool_pos = 0
    memcpy(key, PyBytes_AS_STRING(_pool) + _pool_pos, 4)
    _pool_pos += 4
    return 0


cdef inline Py_ssize_t _hsize(Py_ssize_t m, bint mask) noexcept:
    cdef Py_ssize_t h = 2 if m < 126 else (4 if m <= 0xFFFF else 10)
    return h + 4 if mask else h


cdef bytes build_frames(unsigned int opcode, const unsigned char *p, Py_ssize_t n,
                        bint rsv1, bint mask, Py_ssize_t max_frame):
    cdef Py_ssize_t total, off, m, h, chunk
    cdef unsigned char key[4]
    cdef unsigned char *out
    cdef bytes result
    cdef const unsigned char *kp = key if mask else NULL
    if max_frame <= 0 or n <= max_frame:
        h = _hsize(n, mask)
        result = PyBytes_FromStringAndSize(NULL, h + n)
        out = <unsigned char *>PyBytes_AS_STRING(result)
        if mask:
            fill_mask_key(key)
        h = nbio_ws_header(out, opcode, 1, rsv1, kp, <uint64_t>n)
        if mask:
            nbio_ws_mask(out + h, p, n, key, 0)
        elif n:
            memcpy(out + h, p, n)
        return result
    # Fragmented: first frame carries the opcode (and RSV1), the rest are continuations.
    total = 0
    off = 0
    while off < n:
        m = min(max_frame, n - off)
        total += _hsize(m, mask) + m
        off += m
    result = PyBytes_FromStringAndSize(NULL, total)
    out = <unsigned char *>PyBytes_AS_STRING(result)
    off = 0
    while off < n:
        m = min(max_frame, n - off)
        if mask:
            fill_mask_key(key)
        h = nbio_ws_header(out, opcode if off == 0 else 0, off + m >= n,
                           rsv1 and off == 0, kp, <uint64_t>m)
        if mask:
            nbio_ws_mask(out + h, p + off, m, key, 0)
        else:
            memcpy(out + h, p + off, m)
        out += h + m
        off += m
    return result


cdef int check_close_code(int code) noexcept:
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return 0
    return -1


def encode_frame(int opcode, payload, bint fin=True, bint rsv1=False, bint mask=False):
    """Build one frame: ``opcode`` (0-15), ``payload`` (bytes-like or str, UTF-8 encoded).

    ``mask=True`` (client to server) draws a fresh random key from ``os.urandom``. No
    protocol validation beyond the field ranges: build any frame, valid or not (tests need
    both); use :class:`~nbio.ws.protocol.WebSocketProtocol` to send correct messages.
    """
    cdef Py_buffer view
    cdef unsigned char key[4]
    cdef unsigned char *out
    cdef Py_ssize_t h
    cdef bytes result
    if not 0 <= opcode <= 15:
        raise ValueError("opcode must be 0..15")
    if isinstance(payload, str):
        payload = (<str>payload).encode("utf-8")
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        result = PyBytes_FromStringAndSize(NULL, _hsize(view.len, mask) + view.len)
        out = <unsigned char *>PyBytes_AS_STRING(result)
        if mask:
            fill_mask_key(key)
        h = nbio_ws_header(out, opcode, fin, rsv1, key if mask else NULL, <uint64_t>view.len)
        if mask:
            nbio_ws_mask(out + h, <const unsigned char *>view.buf, view.len, key, 0)
        elif view.len:
            memcpy(out + h, view.buf, view.len)
        return result
    finally:
        PyBuffer_Release(&view)


def encode_message(payload, *, bint mask=False, bint rsv1=False, Py_ssize_t max_frame_size=0):
    """Frame a whole message (str -> text, bytes-like -> binary), fragmenting it into
    frames of at most ``max_frame_size`` payload bytes when that is > 0."""
    cdef Py_buffer view
    cdef unsigned int opcode = 2
    if isinstance(payload, str):
        payload = (<str>payload).encode("utf-8")
        opcode = 1
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        return build_frames(opcode, <const unsigned char *>view.buf, view.len, rsv1, mask,
                            max_frame_size)
    finally:
        PyBuffer_Release(&view)


def apply_mask(data, key):
    """XOR ``data`` with the 4-byte masking ``key`` (masking and unmasking are the same)."""
    cdef Py_buffer view
    cdef const unsigned char[:] k = key
    cdef bytes result
    if k.shape[0] != 4:
        raise ValueError("mask key must be 4 bytes")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        result = PyBytes_FromStringAndSize(NULL, view.len)
        nbio_ws_mask(<unsigned char *>PyBytes_AS_STRING(result),
                     <const unsigned char *>view.buf, view.len, &k[0], 0)
        return result
    finally:
        PyBuffer_Release(&view)


def validate_utf8(data) -> bool:
    """True when ``data`` (bytes-like) is complete, valid UTF-8."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return nbio_utf8_feed(0, <const unsigned char *>view.buf, view.len) == 0
    finally:
        PyBuffer_Release(&view)


cdef class Utf8Validator:
    """Incremental UTF-8 validator: ``feed()`` returns False as soon as the bytes seen so
    far cannot start valid UTF-8; ``complete`` tells whether they end on a code point."""

    cdef uint32_t _state

    def feed(self, data) -> bool:
        cdef Py_buffer view
        if self._state == NBIO_UTF8_REJECT:
            return False
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._state = nbio_utf8_feed(self._state, <const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return self._state != NBIO_UTF8_REJECT

    @property
    def complete(self) -> bool:
        return self._state == 0

    def reset(self) -> None:
        self._state = 0


def is_valid_close_code(int code) -> bool:
    """True for codes allowed in a Close frame: 1000-1003, 1007-1014, 3000-4999."""
    return check_close_code(code) == 0


def encode_close_payload(code=1000, str reason="") -> bytes:
    """Close frame payload: 2-byte code + UTF-8 reason (<= 123 bytes); ``code=None`` -> empty
    payload (no status). Raises ValueError for codes that must not be sent."""
    cdef bytes r
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if check_close_code(code) != 0:
        raise ValueError(f"invalid close code {code}")
    r = reason.encode("utf-8")
    if len(r) > 123:
        raise ValueError("close reason longer than 123 bytes")
    return bytes(((code >> 8) & 0xFF, code & 0xFF)) + r


def parse_close_payload(payload) -> tuple:
    """Decode a received Close payload into ``(code, reason)``; empty -> ``(1005, "")``.

    Raises :class:`~nbio.errors.ProtocolError` whose ``close_code`` attribute is 1002 for a
    1-byte payload or a forbidden code, 1007 for a reason that is not UTF-8.
    """
    cdef const unsigned char[:] p = bytes(payload)
    cdef int code
    if p.shape[0] == 0:
        return 1005, ""
    if p.shape[0] == 1:
        raise _error(1002, "close frame payload of 1 byte")
    if p.shape[0] > 125:
        raise _error(1002, "close frame payload over 125 bytes")
    code = (p[0] << 8) | p[1]
    if check_close_code(code) != 0:
        raise _error(1002, f"invalid close code {code}")
    if nbio_utf8_feed(0, &p[0] + 2, p.shape[0] - 2) != 0:
        raise _error(1007, "close reason is not valid UTF-8")
    return code, bytes(p[2:]).decode("utf-8")


def _error(int code, str reason):
    exc = ProtocolError(reason)
    exc.close_code = code
    return exc

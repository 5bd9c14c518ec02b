# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-connection WebSocket object and the engine-facing handlers (callback API core).

A WebSocket connection after the upgrade is two small objects: the engine's connection
(``conn``) and a :class:`WebSocketConn` in ``conn.session``. ``WebSocketConn`` *is* the
sans-IO core (:class:`nbio.ws._protocol.WebSocketCore`) plus four references (144 bytes
with its GC header), so an idle connection holds no buffer, task, future or timer. The callbacks and settings are shared by
all the connections of an upgrader in one :class:`Dispatch`; the engine calls one
:class:`EngineSide` per dispatch, which feeds the engine's read buffer straight into the
core (no copy, no Python call for the parsing).

Keepalive uses no timer per connection: one sweep per upgrader pings the connections that
were silent for a whole interval and arms the engine's read deadline (the pong timeout); any
data read clears it.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from nbio.engine._conn cimport ConnBase
from nbio.ws._frames cimport nbio_ws_header
from nbio.ws._protocol cimport F_CLIENT, Handler, WebSocketCore

import logging

from nbio.errors import (
    ClosedByPeer,
    ConnectionClosed,
    DeadlineExceeded,
    MessageTooBig,
    WriteBufferOverflow,
)

logger = logging.getLogger("nbio.ws")

cdef extern from "Python.h":
    bint PyMemoryView_Check(object o)
    Py_buffer *PyMemoryView_GET_BUFFER(object o)
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL

# The native engine's C write (nbio.engine._native.write_capsule): writes a[:an] + b[:bn]
# to one of its Conn objects with a gathered write and no Python call. The engine is
# Linux-only, so it is looked up at import instead of cimported.
ctypedef int (*write_fn)(object conn, const char *a, Py_ssize_t an, const char *b,
                         Py_ssize_t bn) except -1

cdef write_fn _native_write = NULL
cdef type _NativeConn = None
try:
    from nbio.engine import _native
except ImportError:      # not Linux: the portable backend only
    pass
else:
    _NativeConn = _native.Conn
    _native_write = <write_fn>PyCapsule_GetPointer(_native.write_capsule,
                                                  b"nbio.engine._native.write")

cdef enum:
    W_CLOSED = 1          # the TCP connection is gone (or being closed); user notified
    W_RECEIVED = 2        # data arrived since the last keepalive sweep
    W_PING_SENT = 4       # keepalive ping outstanding, read deadline armed
    W_CLOSE_WAIT = 8      # we sent Close and wait for the peer's (read deadline armed)
    W_NOTIFIED = 16       # on_close was delivered
    W_NATIVE = 32         # _conn is the native engine's Conn: write through _native_write

# Close codes reported to on_close when the closing handshake did not complete
ABNORMAL = 1006


cdef class Dispatch(Handler):
    """The callbacks and settings shared by every connection of one upgrader (or client
    configuration). Receives the core's events for all of them."""

    cdef readonly object cb_open
    cdef readonly object cb_message
    cdef readonly object cb_close
    cdef readonly object cb_ping
    cdef readonly object cb_pong
    cdef readonly bint is_client
    cdef readonly Py_ssize_t max_frame_size
    cdef readonly Py_ssize_t max_write_buffer
    cdef readonly double close_timeout
    cdef readonly double ping_interval
    cdef readonly double ping_timeout
    cdef public object request          # the upgrade request while on_open runs, else None
    cdef readonly EngineSide engine_side

    def __init__(self, on_message, on_open=None, on_close=None, on_ping=None, on_pong=None,
                 *, bint is_client=False, max_frame_size=0, max_write_buffer=None,
                 double close_timeout=10.0, ping_interval=None, ping_timeout=None):
        if on_message is None:
            raise TypeError("on_message is required")
        self.cb_message = on_message
        self.cb_open = on_open
        self.cb_close = on_close
        self.cb_ping = on_ping
        self.cb_pong = on_pong
        self.is_client = is_client
        self.max_frame_size = max_frame_size or 0
        self.max_write_buffer = max_write_buffer or 0
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval or 0.0
        self.ping_timeout = (ping_timeout or self.ping_interval) if self.ping_interval else 0.0
        self.engine_side = EngineSide(self)

    # -- core events ----------------------------------------------------------------------

    cpdef on_message(self, object conn, object data, bint is_text):
        self.cb_message(conn, data, is_text)

    cpdef on_ping(self, object conn, bytes payload):
        cdef WebSocketConn ws = <WebSocketConn>conn
        if ws._flags_open():
            ws._write(ws.pong(payload))
        if self.cb_ping is not None:
            self.cb_ping(ws, payload)

    cpdef on_pong(self, object conn, bytes payload):
        if self.cb_pong is not None:
            self.cb_pong(conn, payload)

    cpdef on_close(self, object conn, int code, str reason):
        """The peer's Close arrived, or the core failed the connection."""
        cdef WebSocketConn ws = <WebSocketConn>conn
        cdef bytes reply = ws.close_reply()
        cdef object c = ws._conn
        if c is None:
            return
        if reply:
            ws._write(reply)
        if ws._conn is None:
            return
        try:
            ws._notify(code, reason)
        finally:
            if self.is_client and not ws.failed:
                # RFC 6455 7.1.1: the server closes the TCP connection first; wait for it
                ws._w |= W_CLOSE_WAIT
                c.set_read_deadline(self.close_timeout)
            else:
                c.close()

    # -- connection lifecycle --------------------------------------------------------------

    cdef int lost(self, WebSocketConn ws, object exc) except -1:
        """The engine closed the TCP connection (``exc``: the engine's reason)."""
        cdef int code
        cdef str reason
        ws._w |= W_CLOSED
        ws._conn = None
        if not (ws._w & W_NOTIFIED):
            if ws.state == 3:      # closing handshake complete
                code = ws.close_code or 1005
                reason = ws.close_reason or ""
            elif isinstance(exc, WriteBufferOverflow):
                code, reason = 1008, str(exc)
            elif isinstance(exc, DeadlineExceeded):
                code = ABNORMAL
                if ws._w & W_CLOSE_WAIT:
                    reason = "closing handshake timed out"
                elif ws._w & W_PING_SENT:
                    reason = "keepalive ping timed out"
                else:
                    reason = str(exc)
            elif exc is None:
                code, reason = ABNORMAL, "connection closed locally"
            elif isinstance(exc, ClosedByPeer):
                code, reason = ABNORMAL, "connection closed by peer without a close frame"
            else:
                code, reason = ABNORMAL, f"{type(exc).__name__}: {exc}"
            ws._notify(code, reason)
        ws.session = None
        return 0


@cython.final
cdef class EngineSide:
    """The engine handler of a :class:`Dispatch`'s connections (``conn.set_handler``)."""

    cdef readonly Dispatch dispatch

    def __init__(self, Dispatch dispatch):
        self.dispatch = dispatch

    @cython.binding(False)      # a plain method descriptor: the engine's call per read is cheaper
    def on_data(self, conn, data):
        # Plain engine connections are ConnBase objects (C fields); TLS connections
        # (nbio.engine.tls.TLSConn) offer the same API in Python.
        cdef bint plain = isinstance(conn, ConnBase)
        cdef WebSocketConn ws = <WebSocketConn>((<ConnBase>conn).session if plain else conn.session)
        cdef Py_buffer *b
        cdef Py_buffer view
        if (ws._w & (W_PING_SENT | W_RECEIVED)) != W_RECEIVED:
            ws._w |= W_RECEIVED
            if ws._w & W_PING_SENT:
                ws._w &= ~W_PING_SENT
                if not (ws._w & W_CLOSE_WAIT):
                    if plain:
                        (<ConnBase>conn).read_dl = 0
                    else:
                        conn.set_read_deadline(None)
        try:
            if PyMemoryView_Check(data):
                b = PyMemoryView_GET_BUFFER(data)
                ws.feed_c(<const unsigned char *>b.buf, b.len, self.dispatch, ws)
            elif PyBytes_CheckExact(data):
                ws.feed_c(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                          self.dispatch, ws)
            else:
                PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
                try:
                    ws.feed_c(<const unsigned char *>view.buf, view.len, self.dispatch, ws)
                finally:
                    PyBuffer_Release(&view)
        except Exception as exc:
            ws._internal_error(exc)

    def on_close(self, conn, exc):
        session = (<ConnBase>conn).session if isinstance(conn, ConnBase) else conn.session
        if type(session) is WebSocketConn or isinstance(session, WebSocketConn):
            self.dispatch.lost(<WebSocketConn>session, exc)


cdef enum:
    EMIT_COPY = 4096     # frames up to this size are copied to the stack and sent whole


cdef int _emit(object conn, unsigned int op, const char *p, Py_ssize_t n) except -1:
    """Write one unmasked, uncompressed final frame to a native ``conn``: small frames are
    assembled on the stack and go out with one ``send`` (cheaper in the kernel than a
    two-part ``writev``), larger ones as header + payload in one gathered write."""
    cdef unsigned char buf[EMIT_COPY]
    cdef Py_ssize_t hn
    if n <= EMIT_COPY - 10:
        hn = nbio_ws_header(buf, op, 1, 0, NULL, <uint64_t>n)
        memcpy(buf + hn, p, n)
        return _native_write(conn, <const char *>buf, hn + n, NULL, 0)
    hn = nbio_ws_header(buf, op, 1, 0, NULL, <uint64_t>n)
    return _native_write(conn, <const char *>buf, hn, p, n)


cdef class WebSocketConn(WebSocketCore):
    """One WebSocket connection of the callback API (``ws`` in ``on_open(ws)``,
    ``on_message(ws, data, is_text)``, ``on_close(ws, code, reason)``).

    ``send``, ``ping``, ``close`` may be called from anywhere on the loop's thread.
    ``session`` is yours (per-connection state); it is cleared after ``on_close`` so that
    cycles through it cannot leak. The object is also the connection's sans-IO core
    (:class:`~nbio.ws._protocol.WebSocketCore`): its byte-returning methods
    (``encode_message``, ``send_close``...) are for the library.
    """

    cdef object _conn
    cdef Dispatch _disp
    cdef public object session
    cdef object _subprotocol
    cdef uint8_t _w

    def __init__(self, Dispatch dispatch not None, conn, *, max_size=1 << 20, deflate=None,
                 subprotocol=None):
        WebSocketCore.__init__(self, dispatch.is_client, max_size, deflate)
        self._disp = dispatch
        self._conn = conn
        self._subprotocol = subprotocol
        if _native_write != NULL and type(conn) is _NativeConn:
            self._w |= W_NATIVE

    def __repr__(self):
        state = ("closed" if self._w & W_CLOSED else
                 ("open" if self.state == 1 else "closing"))
        return f"<nbio.ws.WebSocketConn {state} {self.remote_address!r}>"

    # -- internals --------------------------------------------------------------------------

    cdef inline bint _flags_open(self):
        return not (self._w & W_CLOSED) and self.open_c()

    cdef int _write(self, bytes frame) except -1:
        """Write a frame; enforce the dispatch's max write buffer."""
        if self._w & W_NATIVE:
            _native_write(self._conn, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame),
                          NULL, 0)
        else:
            self._conn.write(frame)
        return self._check_buffer()

    cdef inline int _check_buffer(self) except -1:
        """After a write: enforce the dispatch's max write buffer."""
        cdef object c = self._conn
        cdef Py_ssize_t limit = self._disp.max_write_buffer
        cdef Py_ssize_t queued
        if limit and c is not None:
            queued = (<ConnBase>c).wbuf if isinstance(c, ConnBase) else c.buffered
            if queued > limit:
                self._overflow(queued, limit)
        return 0

    cdef int _send_plain(self, object data) except -1:
        """``send`` on the native engine without compression or masking: one frame built
        without a frame object (see ``_emit``). Returns 0 when ``data`` needs the general
        path."""
        cdef Py_ssize_t n
        cdef const char *p
        cdef unsigned int op = 2
        cdef Py_ssize_t max_frame = self._disp.max_frame_size
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            p = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        elif isinstance(data, str):
            p = PyUnicode_AsUTF8AndSize(data, &n)
            op = 1
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                if 0 < max_frame < view.len:
                    return 0
                _emit(self._conn, op, <const char *>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
            return 1
        if 0 < max_frame < n:
            return 0
        _emit(self._conn, op, p, n)
        return 1

    cdef int _overflow(self, Py_ssize_t queued, Py_ssize_t limit) except -1:
        cdef object c = self._conn
        exc = WriteBufferOverflow(queued, limit)
        logger.warning("nbio.ws: closing %r: %s", self, exc)
        self._conn = None
        self._w |= W_CLOSED
        self._notify(1008, str(exc))
        c.abort()
        return 0

    cdef int _notify(self, int code, str reason) except -1:
        """Deliver on_close once, then drop the references that could form cycles."""
        cb = self._disp.cb_close
        if self._w & W_NOTIFIED:
            return 0
        self._w |= W_NOTIFIED
        try:
            if cb is not None:
                cb(self, code, reason)
        finally:
            if self._w & W_CLOSED:
                self.session = None
        return 0

    cdef int _internal_error(self, object exc) except -1:
        """A callback raised while handling input: log it, send Close 1011, close."""
        cdef object c = self._conn
        logger.error("nbio.ws: %s in a WebSocket callback", type(exc).__name__,
                     exc_info=(type(exc), exc, exc.__traceback__))
        if c is None:
            return 0
        try:
            frame = self.send_close(1011, "internal error")
            if frame:
                c.write(frame)
        except Exception:
            pass
        self._w |= W_CLOSE_WAIT
        c.close()
        return 0

    def _ws_flags(self):
        return self._w

    def _keepalive(self):
        """Called by the upgrader's sweep: ping if nothing was read for a whole interval."""
        cdef object c = self._conn
        if c is None or not self.open_c():
            return False
        if self._w & W_RECEIVED:
            self._w &= ~W_RECEIVED
            return False
        if self._w & W_PING_SENT:
            return False
        self._w |= W_PING_SENT
        c.set_read_deadline(self._disp.ping_timeout)
        self._write(WebSocketCore.ping(self, b""))
        return True

    def _feed(self, data):
        """Process bytes that arrived with the handshake (the engine handler does the rest)."""
        if data:
            self._disp.engine_side.on_data(self._conn, data)

    # -- public API -------------------------------------------------------------------------

    # send/send_frame are plain method descriptors (binding False): CPython's fast method
    # call from the user's code, no function object in between.
    @cython.binding(False)
    def send(self, data):
        """Send a message: ``str`` as text, any bytes-like object as binary (compressed
        when permessage-deflate was negotiated and the message reaches its threshold).
        Raises :class:`~nbio.errors.ConnectionClosed` once closing or closed."""
        self._send(data)

    @cython.binding(False)
    def send_frame(self, bytes frame):
        """Write pre-built frame bytes (e.g. from :func:`nbio.ws.broadcast`)."""
        if self._conn is None or not self.open_c():
            raise ConnectionClosed(self.close_code, self.close_reason or "connection closed")
        self._write(frame)

    cdef int _send(self, object data) except -1:
        if self._conn is None or not self.open_c():
            raise ConnectionClosed(self.close_code, self.close_reason or "connection closed")
        if (self._w & W_NATIVE and self._deflate is None and not (self._flags & F_CLIENT)
                and self._send_plain(data)):
            return self._check_buffer()
        return self._write(self.encode_message(data, self._disp.max_frame_size))

    def ping(self, payload=b""):
        """Send a Ping (payload <= 125 bytes); the Pong arrives in ``on_pong``."""
        if self._conn is None or not self.open_c():
            raise ConnectionClosed(self.close_code, self.close_reason or "connection closed")
        self._write(WebSocketCore.ping(self, payload))

    def close(self, code=1000, str reason=""):
        """Start the closing handshake (``code`` None: no status). The TCP connection is
        closed when the peer answers, or after the dispatch's ``close_timeout``. No-op
        when already closing."""
        cdef object c = self._conn
        if c is None:
            return
        frame = self.send_close(code, reason)
        if frame:
            self._write(frame)
        if self._conn is None:
            return
        if self.state == 3:
            if not self._disp.is_client:
                c.close()
        else:
            self._w |= W_CLOSE_WAIT
            c.set_read_deadline(self._disp.close_timeout)

    def abort(self):
        """Drop the TCP connection at once (``on_close`` reports 1006)."""
        if self._conn is not None:
            self._conn.abort()

    @property
    def conn(self):
        """The engine connection (None once closed)."""
        return self._conn

    @property
    def closed(self):
        """True once the TCP connection is closed."""
        return bool(self._w & W_CLOSED)

    @property
    def open(self):
        """True while messages can be sent."""
        return self._conn is not None and self.open_c()

    @property
    def subprotocol(self):
        """The negotiated subprotocol, or None."""
        return self._subprotocol

    @property
    def request(self):
        """The HTTP upgrade request while ``on_open`` runs (nothing is kept afterwards)."""
        return self._disp.request

    @property
    def buffered(self):
        """Bytes written but not yet taken by the kernel."""
        if self._conn is None:
            return 0
        if isinstance(self._conn, ConnBase):
            return (<ConnBase>self._conn).wbuf
        return self._conn.buffered

    @property
    def remote_address(self):
        return None if self._conn is None else self._conn.remote_address

    @property
    def local_address(self):
        return None if self._conn is None else self._conn.local_address

    @property
    def dispatch(self):
        return self._disp


def open_conn(Dispatch dispatch not None, conn, leftover=b"", *, max_size=1 << 20,
              deflate=None, subprotocol=None, request=None, session=None):
    """Turn ``conn`` (whose handshake is done) into a WebSocket connection of ``dispatch``:
    set its handler and session, call ``on_open`` (with ``request`` visible as
    ``ws.request``), then process ``leftover`` bytes. Returns the :class:`WebSocketConn`."""
    cdef WebSocketConn ws = WebSocketConn(dispatch, conn, max_size=max_size, deflate=deflate,
                                          subprotocol=subprotocol)
    ws.session = session
    conn.session = ws
    conn.set_idle_timeout(None)     # the HTTP server's keep-alive timeout no longer applies
    conn.set_handler(dispatch.engine_side)
    if dispatch.cb_open is not None:
        dispatch.request = request
        try:
            dispatch.cb_open(ws)
        except Exception as exc:
            dispatch.request = None
            ws._internal_error(exc)
            return ws
        dispatch.request = None
    if leftover and ws._conn is not None:
        ws._feed(leftover)
    return ws

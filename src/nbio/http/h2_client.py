"""HTTP/2 client connections (RFC 9113) for :class:`nbio.http.HttpClient`.

One :class:`H2ClientConnection` is an engine connection (TLS with ALPN ``h2``, or plaintext
h2c with prior knowledge) driven by the sans-IO ``h2`` package, shared by every concurrent
request to its origin: each request is an :class:`H2Stream`.

* Concurrency: at most the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` streams are open
  (one until the server's first SETTINGS arrives: some servers, hypercorn among them, treat
  a stream beyond their limit as a connection error); further requests wait in a FIFO
  queue.
* Flow control, sending: request bodies go out in DATA frames no larger than the stream's and
  the connection's send windows and the peer's maximum frame size, waiting for WINDOW_UPDATE
  (and for the engine's write queue to drain) as needed.
* Flow control, receiving: each stream may have ``stream_window`` bytes (1 MiB) in flight;
  the stream's window is re-opened only as the caller consumes the body (``next_event``), so a
  slow reader holds the server back without blocking the other streams. The connection
  window (16 MiB) is re-opened as data arrives: what is buffered is bounded per stream.
* RST_STREAM fails that request with :class:`~nbio.errors.StreamReset` (``REFUSED_STREAM``:
  :class:`~nbio.errors.RequestNotProcessed`, which the client retries); a reset with
  ``NO_ERROR`` after a complete response only stops the request body (RFC 9113 8.1).
* GOAWAY: no new streams on this connection; streams above ``last_stream_id`` fail with
  :class:`~nbio.errors.RequestNotProcessed` (the client sends them again on a new
  connection); streams at or below it run to completion (``h2`` closes its state machine on
  GOAWAY, see python-hyper/h2#1181: it is kept open for those streams, which is safe since
  this side opens no stream after a GOAWAY).
* :meth:`H2ClientConnection.ping` measures a round trip (a liveness check).
* Connection health (one ``loop.call_at`` timer per connection, re-armed lazily, no task):
  with ``idle_timeout``, a connection without open streams for that long is closed with
  GOAWAY (NO_ERROR); with ``ping_interval``, a PING goes out once that long passes without
  a byte from the server, and if nothing (its ACK or any frame) arrives within
  ``ping_timeout`` the connection fails with :class:`~nbio.errors.ConnectionLost`: streams
  in flight fail with it, and the client opens a new connection for new requests.

Events handed to the caller are the HTTP/1.1 client's (:class:`~nbio.http.h1.Response` with
``http_version`` ``b"2"``, :class:`~nbio.http.h1.Data`, :class:`~nbio.http.h1.EndOfMessage`
with the trailers), so :class:`~nbio.http.client.ClientResponse` serves both protocols.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from nbio.errors import (
    ConnectionClosed,
    ConnectionLost,
    DeadlineExceeded,
    HTTPMessageTooBig,
    HTTPProtocolError,
    RequestNotProcessed,
    StreamReset,
)
from nbio.http._events import EventQueue
from nbio.http.h1 import Data, EndOfMessage, Response

__all__ = ["H2ClientConnection", "H2Stream", "request_headers"]

Headers = List[Tuple[bytes, bytes]]

STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24
_STREAMS_BEFORE_SETTINGS = 1
_MAX_HEADER_LIST = 1 << 16
# RFC 9113 8.2.2: connection-specific fields are not allowed in HTTP/2
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


def request_headers(method: bytes, scheme: str, target: str, headers: Sequence[Tuple[bytes, bytes]],
                    content_length: Optional[int]) -> Headers:
    """The HEADERS of a request: pseudo-header fields first (``:authority`` from the Host
    field), names lowercased, HTTP/1.1 connection-specific fields dropped (``te`` kept only as
    ``trailers``), and ``content-length`` for a body of known size."""
    authority = b""
    rest: Headers = []
    has_length = False
    for name, value in headers:
        name = name.lower()
        if name == b"host":
            authority = authority or value
        elif name in _HOP_BY_HOP:
            continue
        elif name == b"te":
            if value.strip().lower() == b"trailers":
                rest.append((name, b"trailers"))
        else:
            has_length = has_length or name == b"content-length"
            rest.append((name, value))
    if content_length is not None and not has_length and (content_length or method not in (
            b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE")):
        rest.append((b"content-length", b"%d" % content_length))
    out = [(b":method", method), (b":scheme", scheme.encode("ascii")),
           (b":authority", authority), (b":path", target.encode("latin-1"))]
    if method == b"CONNECT":
        out = [out[0], out[2]]
    out.extend(rest)
    return out


class _H2Connection(h2.connection.H2Connection):
    """``h2`` closes its state machine on receiving GOAWAY, so the frames that follow (in
    the same read, too) raise; but the streams at or below ``last_stream_id`` may still
    complete (RFC 9113 6.8; python-hyper/h2#1181). Keep receiving: this side opens no stream
    after a GOAWAY (:attr:`H2ClientConnection.usable`)."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return result


class H2Stream(EventQueue):
    """One request/response exchange on an :class:`H2ClientConnection`.

    The caller reads the response with :meth:`next_event` (the HTTP/1.1 client's events) and
    ends its interest with :meth:`release` (which resets a stream not finished)."""

    __slots__ = (
        "acked_pending",
        "link",
        "local_ended",
        "received",
        "remote_ended",
        "responded",
        "stop_sending",
        "stream_id",
        "trailers",
        "window_waiter",
    )

    def __init__(self, link: H2ClientConnection, stream_id: int) -> None:
        EventQueue.__init__(self)
        self.link = link
        self.stream_id = stream_id
        self.window_waiter: Optional[asyncio.Future[None]] = None
        self.trailers: Headers = []
        self.local_ended = False
        self.remote_ended = False
        self.stop_sending = False
        self.responded = False  # any frame of the response arrived
        self.received = 0
        self.acked_pending = 0

    def __repr__(self) -> str:
        return f"<H2Stream {self.stream_id} of {self.link!r}>"

    @property
    def closed(self) -> bool:
        """True once this stream no longer counts against the connection's streams."""
        return self.link.streams.get(self.stream_id) is not self

    async def next_event(self, read_timeout: Optional[float]) -> Any:
        """The next response event; raises the stream's error once the events before it
        are consumed, :class:`~nbio.errors.DeadlineExceeded` (``"read"``) after
        ``read_timeout`` seconds without one."""
        ev = await self._next(read_timeout)
        if type(ev) is Data:
            self.link._consumed(self, len(ev.data))
        return ev

    def release(self, complete: bool) -> None:
        """The caller is done with the response: a stream not finished both ways is reset
        (CANCEL), which frees its slot."""
        if not self.closed:
            self.link._reset(self, ErrorCodes.CANCEL)

    # -- fed by the connection ---------------------------------------------------------------

    def _push(self, ev: Any) -> None:
        self.events.append(ev)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()
        self._wake_sender()

    def _wake_sender(self) -> None:
        w = self.window_waiter
        if w is not None:
            self.window_waiter = None
            if not w.done():
                w.set_result(None)


class H2ClientConnection:
    """An HTTP/2 connection to one origin over an engine connection ``conn`` (already
    open; the caller routes the engine's ``on_data``/``on_eof``/``on_close`` to
    :meth:`feed`/:meth:`eof`/:meth:`lost`). ``on_gone(self)`` is called once the connection
    takes no more requests (GOAWAY, error, close).

    Health (seconds; None disables): ``idle_timeout`` closes the connection (GOAWAY NO_ERROR)
    once it has had no open stream for that long; ``ping_interval`` sends a PING when that
    long passes without anything received, and when ``ping_timeout`` more passes still
    without anything received it fails the connection with
    :class:`~nbio.errors.ConnectionLost`. Create it on the running event loop when either is
    set."""

    def __init__(self, conn: Any, origin: Tuple[str, str, int], *,
                 max_body_size: Optional[int] = None,
                 stream_window: int = STREAM_WINDOW,
                 connection_window: int = CONNECTION_WINDOW,
                 on_gone: Optional[Callable[[H2ClientConnection], None]] = None,
                 idle_timeout: Optional[float] = None,
                 ping_interval: Optional[float] = None,
                 ping_timeout: float = 20.0) -> None:
        self.conn = conn
        self.origin = origin
        self.max_body_size = max_body_size
        self.stream_window = stream_window
        self.on_gone = on_gone
        self.streams: Dict[int, H2Stream] = {}
        self.slot_waiters: Deque[asyncio.Future[None]] = deque()
        self.error: Optional[BaseException] = None
        self.goaway: Optional[Tuple[int, int]] = None  # (error code, last stream id)
        self.settings_received = False
        self.streams_opened = 0
        self._gone = False
        self._conn_unacked = 0
        self._conn_window = connection_window
        self._pings: Dict[bytes, asyncio.Future[None]] = {}
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.keepalive_pings = 0  # PINGs sent for ping_interval
        self._watch = idle_timeout is not None or ping_interval is not None
        self._loop: Any = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._last_rx = self._idle_since = 0.0
        if self._watch:
            self._loop = asyncio.get_running_loop()
            self._last_rx = self._idle_since = self._loop.time()
        self._ping_due: Optional[float] = None  # the keepalive PING's reply is due by then
        h2c = _H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None))
        h2c.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
        })
        h2c.initiate_connection()
        if connection_window > 65535:
            h2c.increment_flow_control_window(connection_window - 65535)
        self.h2 = h2c
        self._flush()
        if self._watch:
            self._on_timer()

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return f"<H2ClientConnection {scheme}://{host}:{port} streams={len(self.streams)}>"

    # -- state ---------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Takes new requests: open, no GOAWAY received, stream ids left."""
        return (self.error is None and self.goaway is None and not self._gone
                and not self.conn.closed)

    @property
    def max_streams(self) -> int:
        """Streams this connection may have open at once (the server's limit)."""
        limit = int(self.h2.remote_settings.max_concurrent_streams)
        return limit if self.settings_received else min(limit, _STREAMS_BEFORE_SETTINGS)

    # -- engine side ---------------------------------------------------------------------------

    def feed(self, data: Any) -> None:
        """Bytes from the server."""
        if self.error is not None:
            return
        if self._watch:
            self._last_rx = now = self._loop.time()
            if self._ping_due is not None:  # the keepalive PING is answered: next one due
                self._ping_due = None
                self._arm(now + self.ping_interval)
        try:
            events = self.h2.receive_data(bytes(data))
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(exc)
            return
        for ev in events:
            handler = _HANDLERS.get(type(ev))
            if handler is not None:
                handler(self, ev)
        self._flush()

    def eof(self) -> None:
        self.lost(None)

    def lost(self, exc: Optional[BaseException]) -> None:
        """The engine connection closed: every stream still open fails."""
        if self.error is None:
            if self.goaway is not None and self.goaway[0] != 0:
                why = f"connection closed after GOAWAY ({_code_name(self.goaway[0])})"
            elif exc is not None:
                why = f"connection closed ({exc!r})"
            else:
                why = "connection closed by the server"
            self.error = ConnectionClosed(None, why)
        self._fail_all(self.error)

    def close(self) -> None:
        """Send GOAWAY and close the connection; open streams fail."""
        self._shutdown(ConnectionClosed(None, "the client closed the connection"))

    def _shutdown(self, error: BaseException) -> None:
        """GOAWAY (NO_ERROR), then close after flushing; open streams fail with ``error``."""
        if self.error is None:
            self.error = error
            try:
                self.h2.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self._flush()
        self._fail_all(self.error)
        if not self.conn.closed:
            self.conn.close()

    # -- requests ------------------------------------------------------------------------------

    async def open_stream(self, headers: Headers, end_stream: bool) -> H2Stream:
        """Wait for a free stream slot (FIFO) and send the request HEADERS. Raises
        :class:`~nbio.errors.RequestNotProcessed` if the connection stops taking requests
        meanwhile."""
        self._check_usable()
        if len(self.streams) >= self.max_streams or any(not f.done() for f in self.slot_waiters):
            loop = asyncio.get_running_loop()
            front = False
            while True:  # FIFO: a waiter woken but beaten to the slot keeps its place
                fut: asyncio.Future[None] = loop.create_future()
                if front:
                    self.slot_waiters.appendleft(fut)
                else:
                    self.slot_waiters.append(fut)
                try:
                    await fut
                finally:
                    try:
                        self.slot_waiters.remove(fut)
                    except ValueError:
                        pass
                self._check_usable()
                if len(self.streams) < self.max_streams:
                    break
                front = True
        self._check_usable()
        try:
            sid = self.h2.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self._retire()
            raise RequestNotProcessed(None, "HTTP/2 stream ids exhausted") from None
        stream = H2Stream(self, sid)
        self.streams[sid] = stream
        self.streams_opened += 1
        self.h2.send_headers(sid, headers, end_stream=end_stream)
        stream.local_ended = end_stream
        self._flush()
        self._wake_slot()  # the next waiter, if a slot is still free
        return stream

    async def send_body(self, stream: H2Stream, data: Any, end: bool) -> None:
        """Send ``data`` on ``stream`` within the flow-control windows (waiting for
        WINDOW_UPDATE and for the write queue to drain); ``end`` ends the request."""
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        sid = stream.stream_id
        while True:
            if stream.stop_sending:
                return
            self._check_stream(stream)
            if not view:
                if end:
                    self.h2.end_stream(sid)
                    stream.local_ended = True
                    self._flush()
                    self._maybe_close(stream)
                return
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                stream.window_waiter = fut
                await fut
                continue
            chunk, view = view[:window], view[window:]
            last = end and not view
            self.h2.send_data(sid, bytes(chunk), end_stream=last)
            if last:
                stream.local_ended = True
            self._flush()
            if last:
                self._maybe_close(stream)
                return
            await self.conn.drain()

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Send a PING and wait for its acknowledgement; returns the round trip in seconds."""
        self._check_usable()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        opaque = self._send_ping()
        self._pings[opaque] = fut
        start = loop.time()
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("read") from None
        finally:
            self._pings.pop(opaque, None)
        return loop.time() - start

    # -- internals -----------------------------------------------------------------------------

    def _send_ping(self) -> bytes:
        """Send a PING with fresh opaque data (returned)."""
        opaque = os.urandom(8)
        self.h2.ping(opaque)
        self._flush()
        return opaque

    def _on_timer(self) -> None:
        """The health timer: close an idle connection, send a keepalive PING or give up on
        one; then re-arm for the next thing due (reads only move timestamps: the timer finds
        out when it fires)."""
        self._timer = None
        if self.error is not None or self.conn.closed:
            return
        now = self._loop.time()
        due: Optional[float] = None
        if self.idle_timeout is not None and not self.streams:
            due = self._idle_since + self.idle_timeout
            if now >= due:
                self._shutdown(ConnectionClosed(
                    None, f"idle for more than {self.idle_timeout} s: closed by the client"))
                return
        if self.ping_interval is not None:
            if self._ping_due is not None:
                if now >= self._ping_due:
                    self._lost_peer()
                    return
                ping_due = self._ping_due
            else:
                ping_due = self._last_rx + self.ping_interval
                if now >= ping_due:
                    self._send_ping()
                    self.keepalive_pings += 1
                    ping_due = self._ping_due = now + self.ping_timeout
            due = ping_due if due is None else min(due, ping_due)
        if due is not None:
            self._arm(due)

    def _arm(self, when: float) -> None:
        """Have the health timer fire at ``when`` at the latest."""
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _lost_peer(self) -> None:
        """No reply to the keepalive PING: fail the connection now (no graceful close: the
        peer is not reading)."""
        self.error = ConnectionLost(
            f"HTTP/2 connection to {self.origin[1]}:{self.origin[2]} lost: nothing received "
            f"within {self.ping_timeout} s of a PING")
        self._fail_all(self.error)
        if not self.conn.closed:
            self.conn.abort()

    def _check_usable(self) -> None:
        if self.error is not None and not isinstance(self.error, RequestNotProcessed):
            raise RequestNotProcessed(None, str(self.error))
        if not self.usable:
            why = ("GOAWAY received" if self.goaway is not None
                   else "the connection takes no more requests")
            raise RequestNotProcessed(None, why)

    def _check_stream(self, stream: H2Stream) -> None:
        if stream.error is not None:
            raise stream.error
        if self.error is not None:
            raise self.error
        if stream.closed:
            raise ConnectionClosed(None, f"stream {stream.stream_id} is closed")

    def _flush(self) -> None:
        out = self.h2.data_to_send()
        if out and not self.conn.closed:
            try:
                self.conn.write(out)
            except ConnectionClosed:
                pass

    def _consumed(self, stream: H2Stream, n: int) -> None:
        """The caller took ``n`` body bytes of ``stream``: re-open its window in batches."""
        stream.acked_pending += n
        if stream.remote_ended or stream.closed or self.error is not None:
            return
        if stream.acked_pending >= self.stream_window // 4:
            n, stream.acked_pending = stream.acked_pending, 0
            try:
                self.h2.increment_flow_control_window(n, stream.stream_id)
            except h2.exceptions.StreamClosedError:
                return
            self._flush()

    def _reset(self, stream: H2Stream, code: int) -> None:
        if self.error is None and not self.conn.closed:
            try:
                self.h2.reset_stream(stream.stream_id, code)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self._flush()
        stream._fail(ConnectionClosed(None, f"stream {stream.stream_id} cancelled"))
        self._drop(stream)

    def _maybe_close(self, stream: H2Stream) -> None:
        if stream.local_ended and stream.remote_ended:
            self._drop(stream)

    def _drop(self, stream: H2Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            self._wake_slot()
            if self.goaway is not None and not self.streams and not self.conn.closed:
                self.conn.close()  # drained after GOAWAY
            elif self.idle_timeout is not None and not self.streams:
                self._idle_since = self._loop.time()
                self._arm(self._idle_since + self.idle_timeout)

    def _wake_slot(self) -> None:
        free = self.max_streams - len(self.streams)
        for fut in self.slot_waiters:
            if free <= 0:
                break
            if not fut.done():
                fut.set_result(None)
                free -= 1

    def _wake_all(self) -> None:
        for fut in self.slot_waiters:
            if not fut.done():
                fut.set_result(None)

    def _retire(self) -> None:
        """No more requests on this connection."""
        if not self._gone:
            self._gone = True
            self._wake_all()
            if self.on_gone is not None:
                self.on_gone(self)

    def _fail_all(self, exc: BaseException) -> None:
        self._retire()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in list(self.streams.values()):
            stream._fail(exc)
        self.streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(exc)

    def _protocol_error(self, exc: Exception) -> None:
        self.error = HTTPProtocolError(None, f"HTTP/2 protocol error from the server: {exc}")
        try:
            self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR)
        except h2.exceptions.ProtocolError:
            pass
        self._flush()
        self._fail_all(self.error)
        if not self.conn.closed:
            self.conn.close()

    # -- h2 events -----------------------------------------------------------------------------

    def _on_response(self, ev: h2.events.ResponseReceived) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None:
            return
        status = 0
        headers: Headers = []
        for name, value in ev.headers:
            if name == b":status":
                status = int(value)
            elif not name.startswith(b":"):
                headers.append((name, value))
        stream.responded = True
        stream._push(Response(status, headers, b"", b"2"))

    def _on_informational(self, ev: h2.events.InformationalResponseReceived) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is not None:
            stream.responded = True

    def _on_trailers(self, ev: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is not None:
            stream.trailers = [(n, v) for n, v in ev.headers if not n.startswith(b":")]

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        flow = ev.flow_controlled_length
        self._conn_unacked += flow
        if self._conn_unacked >= self._conn_window // 2:
            self.h2.increment_flow_control_window(self._conn_unacked)
            self._conn_unacked = 0
        stream = self.streams.get(ev.stream_id)
        if stream is None:
            return
        data = ev.data
        stream.acked_pending += flow - len(data)  # padding: nobody consumes it
        if not data:
            return
        stream.received += len(data)
        if self.max_body_size is not None and stream.received > self.max_body_size:
            stream._fail(HTTPMessageTooBig(
                None, f"response body larger than {self.max_body_size} bytes"))
            self._reset(stream, ErrorCodes.CANCEL)
            return
        stream._push(Data(data))

    def _on_end(self, ev: h2.events.StreamEnded) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None:
            return
        stream.remote_ended = True
        stream._push(EndOfMessage(stream.trailers))
        self._maybe_close(stream)

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        stream = self.streams.get(ev.stream_id)
        if stream is None:
            return
        code = int(ev.error_code or 0)
        if code == ErrorCodes.NO_ERROR and stream.remote_ended:
            stream.stop_sending = True  # the response is complete: stop the request body
            stream._wake_sender()
        elif code == ErrorCodes.REFUSED_STREAM and not stream.responded:
            stream._fail(RequestNotProcessed(None, f"stream {ev.stream_id} refused"))
        else:
            stream._fail(StreamReset(code, ev.stream_id,
                                     f"HTTP/2 stream {ev.stream_id} reset by the server: "
                                     f"{_code_name(code)}"))
        self._drop(stream)

    def _on_goaway(self, ev: h2.events.ConnectionTerminated) -> None:
        code, last = int(ev.error_code or 0), int(ev.last_stream_id or 0)
        self.goaway = (code, last)
        self._retire()
        unprocessed = RequestNotProcessed(
            None, f"GOAWAY ({_code_name(code)}, last stream {last}): not processed")
        for sid, stream in list(self.streams.items()):
            if sid > last:
                stream._fail(unprocessed)
                self._drop(stream)
        if not self.streams and not self.conn.closed:
            self.conn.close()

    def _on_window(self, ev: h2.events.WindowUpdated) -> None:
        if ev.stream_id:
            stream = self.streams.get(ev.stream_id)
            if stream is not None:
                stream._wake_sender()
        else:
            for stream in self.streams.values():
                stream._wake_sender()

    def _on_settings(self, ev: h2.events.RemoteSettingsChanged) -> None:
        self.settings_received = True
        for stream in self.streams.values():
            stream._wake_sender()
        self._wake_slot()

    def _on_ping_ack(self, ev: h2.events.PingAckReceived) -> None:
        fut = self._pings.pop(bytes(ev.ping_data), None)
        if fut is not None and not fut.done():
            fut.set_result(None)


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error code {code:#x}"


_HANDLERS: Dict[type, Callable[[H2ClientConnection, Any], None]] = {
    h2.events.ResponseReceived: H2ClientConnection._on_response,
    h2.events.InformationalResponseReceived: H2ClientConnection._on_informational,
    h2.events.TrailersReceived: H2ClientConnection._on_trailers,
    h2.events.DataReceived: H2ClientConnection._on_data,
    h2.events.StreamEnded: H2ClientConnection._on_end,
    h2.events.StreamReset: H2ClientConnection._on_reset,
    h2.events.ConnectionTerminated: H2ClientConnection._on_goaway,
    h2.events.WindowUpdated: H2ClientConnection._on_window,
    h2.events.RemoteSettingsChanged: H2ClientConnection._on_settings,
    h2.events.PingAckReceived: H2ClientConnection._on_ping_ack,
}

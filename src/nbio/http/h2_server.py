"""HTTP/2 for :class:`nbio.http.server.HttpServer` (and the ASGI adapter), on the sans-IO ``h2``
package.

A connection becomes HTTP/2 in one of three ways (RFC 9113 section 3): TLS with ALPN ``h2``;
plaintext that starts with the connection preface (h2c with prior knowledge); an HTTP/1.1
request with ``Upgrade: h2c`` and ``HTTP2-Settings`` (answered 101, that request becomes
stream 1; RFC 7540 section 3.2). The connection's ``session`` is then an :class:`H2Session`
and its engine handler the server's :class:`H2Handler`.

Each stream is one :class:`~nbio.http.server.HttpRequest` handled by the same application as
HTTP/1.1: the native handler (``app(request)`` returning a ``Response``,
``StreamingResponse`` or ``FileResponse``, or an awaitable of one) or the ASGI app of an
:class:`~nbio.http.asgi.AsgiServer` (``http_version`` is ``"2"`` in the scope). The request's
``http_version`` is ``b"2"``; the ``:authority`` pseudo-header is given as ``host`` when the
request has none, and split ``cookie`` fields are joined (RFC 9113 section 8.2.3).

Flow control, both ways: a response body goes out in DATA frames no larger than the stream's
and the connection's send windows and the peer's maximum frame size, waiting for
WINDOW_UPDATE (streamed bodies wait too: backpressure); received DATA is acknowledged (the
window reopened) as the application consumes it -- up to 64 KiB buffered per stream.
Limits: ``max_concurrent_streams`` (SETTINGS), the header list size (the server's
``max_header_bytes``), the body size (``max_body_size``: 413), a stream reset by the client
cancels its handler. Abuse: more than ``h2_max_resets`` streams reset by the client within a
second (rapid reset, CVE-2023-44487) and floods of CONTINUATION frames (h2 caps them at 64 per
header block) close that connection with GOAWAY. Graceful shutdown
(:meth:`HttpServer.drain`, RFC 9113 section 6.8) sends GOAWAY with the largest stream id
and a PING; after the PING's answer (one round trip: requests the client sent meanwhile are
taken) or at most ``DRAIN_PING_TIMEOUT`` seconds, a second GOAWAY gives the last stream
actually taken; those streams finish, then the connection closes. A connection without
streams for ``keep_alive_timeout`` seconds (frames such as PING do not count, as in Go's and
gRPC's servers) gets GOAWAY (NO_ERROR, the last stream id) before it closes (RFC 9113
section 6.8). Every close after a GOAWAY
(drain, idle, the client's GOAWAY, a connection error) is a lingering close
(:class:`~nbio.http._linger.Lingering`): the socket is half-closed and the client's late
frames are read and discarded for a while, so that closing does not reset the connection and
make the client lose the last responses and the GOAWAY.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import struct
from typing import Any, Dict, List, Optional, Set, Tuple

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from nbio.engine import Handler, TLSConn
from nbio.errors import ConnectionClosed
from nbio.http._linger import Lingering
from nbio.http._server import HttpRequest, Response
from nbio.http.h1 import Request, date_header

__all__ = ["DRAIN_PING_TIMEOUT", "PREFACE", "H2Handler", "H2Session", "H2cUpgrader"]

logger = logging.getLogger("nbio.http.h2")

#: The client connection preface (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
     b"http2-settings")
)
_STREAM_HIGH_WATER = 65536     # received body bytes held per stream before the window stops
_WRITE_HIGH_WATER = 65536      # bytes queued on the connection before streamed bodies wait
_FILE_CHUNK = 65536
_MAX_STREAM_ID = 2**31 - 1
_DRAIN_PING = b"nbio-end"      # opaque data of the PING that times the graceful shutdown
#: Longest wait (seconds) for the answer to the graceful shutdown's PING before the final GOAWAY.
DRAIN_PING_TIMEOUT = 1.0
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_DISCONNECT = {"type": "http.disconnect"}
_NO_BODY_STATUS = (204, 304)
# RFC 9110 field names (lowercase for HTTP/2, RFC 9113 8.2.1) and values without CR, LF, NUL.
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+").fullmatch
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$").search


def _b(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("latin-1")
    if isinstance(v, int):
        return b"%d" % v
    return bytes(v)


def response_headers(status: int, headers: Any, length: Optional[int],
                     alt_svc: bytes = b"") -> List[Tuple[bytes, bytes]]:
    """HTTP/2 response header fields: ``:status``, the given fields with lowercased names and
    the connection-specific ones dropped, ``content-length`` (when ``length`` is given and
    the app set none), ``date`` and, when given, ``alt-svc`` (RFC 7838, e.g. HTTP/3)."""
    out = [(b":status", b"%d" % status)]
    if alt_svc:
        out.append((b"alt-svc", alt_svc))
    has_length = has_date = False
    for name, value in headers:
        n = _b(name).lower()
        if n in _HOP_BY_HOP:
            continue
        v = _b(value)
        if not _FIELD_NAME(n) or _BAD_VALUE(v):
            # (h2's own outbound validation is off: this is the part that matters here)
            raise ValueError(f"invalid response header {name!r}: {value!r}")
        if n == b"content-length":
            has_length = True
        elif n == b"date":
            has_date = True
        out.append((n, v))
    if length is not None and not has_length and status not in _NO_BODY_STATUS:
        out.append((b"content-length", b"%d" % length))
    if not has_date:
        out.append((b"date", date_header()))
    return out


def request_head(headers: Any, version: bytes = b"2") -> Request:
    """The :class:`~nbio.http.h1.Request` of an HTTP/2 or HTTP/3 request's header fields
    (pseudo-headers become method/target, empty when missing; ``:authority`` becomes
    ``host`` if absent; cookies are joined; an invalid content-length counts as none)."""
    method = b""
    path = b""
    authority = None
    fields: List[Tuple[bytes, bytes]] = []
    cookies: List[bytes] = []
    has_host = False
    length: Optional[int] = None
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            has_host = True
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        fields.append((name, value))
    if authority is not None and not has_host:
        fields.insert(0, (b"host", authority))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    return Request(method, path, fields, version, content_length=length)


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class _Stream:
    """One HTTP/2 stream: the ``session`` an :class:`HttpRequest` talks to (body input
    pausing) and the response's output queue (flow control)."""

    __slots__ = ("conn", "cycle", "id", "input_paused", "out", "out_end", "out_trailers",
                 "pending", "req", "responded", "session", "started", "task", "unacked",
                 "waiter")

    def __init__(self, session: H2Session, stream_id: int, req: Optional[HttpRequest]) -> None:
        self.session = session
        self.id = stream_id
        self.conn: Any = session.conn       # None once the stream is closed or reset
        self.req = req
        self.input_paused = False
        self.unacked = 0                    # received bytes not yet given back (window)
        self.task: Optional[asyncio.Task[Any]] = None
        self.pending: Any = None            # the handler's awaitable, until its task starts
        self.out: List[bytes] = []          # body bytes waiting for window
        self.out_end = False                # END_STREAM once ``out`` is sent
        self.out_trailers: Optional[List[Tuple[bytes, bytes]]] = None
        self.started = False                # response HEADERS sent
        self.responded = False              # response complete (END_STREAM queued)
        self.waiter: Optional[asyncio.Future[None]] = None
        self.cycle: Any = None

    # the HttpRequest's session interface
    loop = None

    def send_continue(self) -> None:
        pass

    def pause_input(self) -> None:
        self.input_paused = True

    def resume_input(self) -> None:
        self.input_paused = False
        self.session._ack(self)

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)


# ---------------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------------


class H2Session:
    """The HTTP/2 state of one connection (``conn.session``): an ``h2`` connection and its
    streams, answered by the server's application."""

    rx = None           # HttpServer bookkeeping shared with the HTTP/1.1 sessions
    head_since = 0.0
    # shutdown state (class defaults: set on the few connections that get that far)
    notice_sent = False     # graceful shutdown's first GOAWAY (2^31-1) and PING sent
    goaway_sent = False     # a GOAWAY with the real last stream id sent (ours or h2's)
    lingering = False       # closing: the socket belongs to ``linger`` now
    drain_timer: Optional[asyncio.TimerHandle] = None
    # keep-alive: one timer, re-armed only when it fires early (not per stream)
    idle_timer: Optional[asyncio.TimerHandle] = None
    idle_since = 0.0        # when the last stream ended (or the connection began)
    linger: Optional[Lingering] = None   # the handler of the lingering close (set by adopt)

    def __init__(self, server: Any, conn: Any) -> None:
        self.server = server
        alt_svc = getattr(server, "alt_svc", None)
        self.alt_svc: bytes = alt_svc.encode("latin-1") if alt_svc else b""
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        # Outbound fields are checked and normalised by response_headers (cheaper than h2's
        # generic per-field validation); everything received is still validated by h2.
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: server.max_header_bytes,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: server.h2_initial_window_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        # enforced from the start (h2 applies it only once the client acknowledges SETTINGS)
        self.h2.decoder.max_header_list_size = server.max_header_bytes
        self.streams: Dict[int, _Stream] = {}
        self.blocked: Set[_Stream] = set()     # streams waiting for window
        self.asgi = getattr(server, "app_asgi", None) is not None
        self.scheme = "https" if isinstance(conn, TLSConn) else "http"
        self.going_away = False
        self.last_stream = 0
        self.resets: List[float] = []          # client resets in the last second
        self.flush_pending = False

    # -- HttpServer bookkeeping -------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Streams are being answered."""
        return bool(self.streams)

    def start(self, upgrade: Optional[Tuple[bytes, HttpRequest]] = None) -> None:
        """Send our SETTINGS (for ``Upgrade: h2c``: after the 101, with the client's
        ``HTTP2-Settings``, and answer the upgrading request as stream 1)."""
        if upgrade is None:
            self.h2.initiate_connection()
        else:
            self.h2.initiate_upgrade_connection(upgrade[0])
        self.conn.set_idle_timeout(None)  # the keep-alive timeout is ours (_idle_check)
        self._flush()
        if upgrade is not None:
            req = upgrade[1]
            stream = _Stream(self, 1, req)
            req._session = stream
            self.streams[1] = stream
            self.last_stream = 1
            self._dispatch(stream)
            self._flush()
        else:
            self._idle_check()

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: Any) -> None:
        """Bytes from the connection."""
        try:
            events: List[Any] = self.h2.receive_data(bytes(data))
        except h2.exceptions.ProtocolError as exc:
            logger.debug("nbio.http2: protocol error from %r: %s", self.conn, exc)
            self.goaway_sent = True  # h2 queued the GOAWAY
            self._close_lingering()
            return
        for ev in events:
            t = type(ev)
            if t is h2.events.RequestReceived:
                self._on_request(ev)
            elif t is h2.events.DataReceived:
                self._on_data(ev)
            elif t is h2.events.StreamEnded:
                self._on_end(ev.stream_id, ())
            elif t is h2.events.WindowUpdated or t is h2.events.RemoteSettingsChanged:
                self._pump_blocked()
            elif t is h2.events.StreamReset:
                self._on_reset(ev)
            elif t is h2.events.TrailersReceived:
                self._on_end(ev.stream_id, tuple(ev.headers), trailers_only=True)
            elif t is h2.events.ConnectionTerminated:
                self.going_away = True
                if ev.error_code == h2.errors.ErrorCodes.NO_ERROR:
                    # h2 would send nothing more after a GOAWAY, but the streams the client
                    # opened are still answered (RFC 9113 section 6.8)
                    self.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
                if not self.streams or ev.error_code != h2.errors.ErrorCodes.NO_ERROR:
                    self._close_lingering()
            elif t is h2.events.PingAckReceived:
                if ev.ping_data == _DRAIN_PING:
                    self._final_goaway()  # one round trip after the first GOAWAY
            if self.conn is None or self.lingering:
                return
        self._flush()

    def _on_request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        if self.going_away:
            self.h2.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        self.last_stream = max(self.last_stream, sid)
        head = request_head(ev.headers)
        req = HttpRequest(head, None)
        stream = _Stream(self, sid, req)
        req._session = stream
        self.streams[sid] = stream
        limit = self.server.max_body_size
        if limit is not None and head.content_length is not None and head.content_length > limit:
            self._respond_error(stream, 413)
            return
        if ev.stream_ended is None and (self.asgi or self.server.stream_request_body):
            self._dispatch(stream)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        stream = self.streams.get(ev.stream_id)
        size = ev.flow_controlled_length
        if stream is None or stream.req is None or stream.req._complete:
            if size:
                self.h2.acknowledge_received_data(size, ev.stream_id)
            return
        req = stream.req
        if not req._dispatched:
            limit = self.server.max_body_size
            if limit is not None and req._size + len(ev.data) > limit:
                self.h2.acknowledge_received_data(size, ev.stream_id)
                self._respond_error(stream, 413)
                return
        stream.unacked += size
        if ev.data:
            req._feed(ev.data)
        if not stream.input_paused:
            self._ack(stream)

    def _ack(self, stream: _Stream) -> None:
        n = stream.unacked
        if n and self.conn is not None:
            stream.unacked = 0
            self.h2.acknowledge_received_data(n, stream.id)
            self._flush_soon()

    def _on_end(self, sid: int, trailers: Any, trailers_only: bool = False) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.req is None or stream.req._complete:
            return
        req = stream.req
        req._end(trailers)
        if not req._dispatched and stream.conn is not None and not stream.started:
            self._dispatch(stream)

    def _on_reset(self, ev: h2.events.StreamReset) -> None:
        stream = self.streams.pop(ev.stream_id, None)
        if stream is None:
            return
        if ev.remote_reset and not stream.responded:
            self._count_reset()
        self._drop(stream, ConnectionClosed(None, "stream reset by the client"))
        self._idle_check()

    def _count_reset(self) -> None:
        """Rapid reset (CVE-2023-44487): too many client resets within a second close the
        connection with ENHANCE_YOUR_CALM."""
        now = self.loop.time()
        resets = self.resets
        resets.append(now)
        if len(resets) > self.server.h2_max_resets:
            while resets and now - resets[0] > 1.0:
                resets.pop(0)
            if len(resets) > self.server.h2_max_resets:
                logger.info("nbio.http2: rapid reset from %r: closing", self.conn)
                self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                         last_stream_id=self.last_stream)
                self.goaway_sent = True
                self._close_lingering()

    def _drop(self, stream: _Stream, exc: BaseException) -> None:
        """Forget a stream (reset or connection gone): fail its request, cancel its task."""
        stream.conn = None
        self.blocked.discard(stream)
        req = stream.req
        if req is not None and not req._complete:
            req._fail(exc)
        cycle = stream.cycle
        if cycle is not None:
            cycle.disconnected = True
            if req is not None:
                req._wake()
        stream.wake()
        task = stream.task
        if task is not None and self.server.cancel_on_disconnect:  # (ASGI: http.disconnect)
            stream.task = None
            task.cancel()
            pending = stream.pending
            if pending is not None:  # the task never started: close its awaitable
                stream.pending = None
                close = getattr(pending, "close", None)
                if close is not None:
                    close()

    # -- answering ------------------------------------------------------------------------

    def _dispatch(self, stream: _Stream) -> None:
        req = stream.req
        assert req is not None
        req._dispatched = True
        if self.asgi:
            stream.task = self.loop.create_task(self._run_asgi(stream))
            return
        try:
            result: Any = self.server.app(req)
        except Exception as exc:
            self._failed(stream, exc)
            return
        self._result(stream, result)

    def _result(self, stream: _Stream, result: Any) -> None:
        from nbio.http.server import FileResponse, StreamingResponse

        if type(result) is Response:
            try:
                self.respond(stream, result)
            except ValueError as exc:  # e.g. a response field HTTP/2 forbids
                self._failed(stream, exc)
        elif isinstance(result, (StreamingResponse, FileResponse)):
            stream.task = self.loop.create_task(self._run(stream, result))
        elif hasattr(result, "__await__"):
            stream.pending = result
            stream.task = self.loop.create_task(self._run(stream, result))
        else:
            self._failed(stream, TypeError(f"the handler returned {result!r}, not a response"))

    def respond(self, stream: _Stream, resp: Response) -> None:
        """Send a complete response on ``stream``."""
        body = resp.body
        if stream.req is not None and stream.req.method == b"HEAD":
            self.send_headers(stream, resp.status, resp.headers, len(body), end=True)
        elif not body:
            self.send_headers(stream, resp.status, resp.headers, 0, end=True)
        else:
            self.send_headers(stream, resp.status, resp.headers, len(body), end=False)
            self.send_body(stream, body, end=True)

    async def _run(self, stream: _Stream, awaitable: Any) -> None:
        from nbio.http.server import FileResponse, StreamingResponse

        stream.pending = None
        try:
            resp = awaitable if not hasattr(awaitable, "__await__") else await awaitable
            if stream.conn is None:
                return
            if isinstance(resp, StreamingResponse):
                await self._stream_body(stream, resp)
            elif isinstance(resp, FileResponse):
                await self._send_file(stream, resp)
            elif isinstance(resp, Response):
                self.respond(stream, resp)
            else:
                raise TypeError(f"the handler returned {resp!r}, not a response")
        except ConnectionClosed:
            pass
        except Exception as exc:
            if stream.conn is not None:
                self._failed(stream, exc)
        finally:
            stream.task = None
            self._flush()

    async def _stream_body(self, stream: _Stream, resp: Any) -> None:
        head_only = stream.req is not None and stream.req.method == b"HEAD"
        self.send_headers(stream, resp.status, resp.headers, None, end=False)
        content = resp.content
        if hasattr(content, "__aiter__"):
            aiter = content.__aiter__()
            try:
                if not head_only:
                    async for chunk in aiter:
                        await self.write(stream, chunk.encode() if isinstance(chunk, str) else chunk)
            finally:
                aclose = getattr(aiter, "aclose", None)
                if aclose is not None:
                    await aclose()
        elif not head_only:
            for chunk in content:
                await self.write(stream, chunk.encode() if isinstance(chunk, str) else chunk)
        trailers = resp.trailers
        if callable(trailers):
            trailers = trailers()
        self.end(stream, trailers or None)

    async def _send_file(self, stream: _Stream, resp: Any) -> None:
        file = resp.file
        resp.file = None
        try:
            await self.send_file(stream, file, resp.status, resp.headers)
        finally:
            file.close()

    async def send_file(self, stream: _Stream, file: Any, status: int, headers: Any) -> None:
        """Send the open ``file`` (from its start) as the response, flow-controlled."""
        size = os.fstat(file.fileno()).st_size
        headers = [h for h in headers if _b(h[0]).lower() != b"content-length"]
        head_only = stream.req is not None and stream.req.method == b"HEAD"
        if head_only or not size:
            self.send_headers(stream, status, headers, size, end=True)
            return
        self.send_headers(stream, status, headers, size, end=False)
        left = size
        while left > 0:
            chunk = file.read(min(_FILE_CHUNK, left))
            if not chunk:
                raise OSError("the file shrank while being sent")
            left -= len(chunk)
            if left:
                await self.write(stream, chunk)
            else:
                self.send_body(stream, chunk, end=True)

    def _failed(self, stream: _Stream, exc: BaseException) -> None:
        """The application failed: 500 if nothing was sent yet, else reset the stream."""
        logger.error("nbio.http2: request handler failed for %r", stream.req, exc_info=exc)
        if stream.conn is None:
            return
        if stream.started:
            self.reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        else:
            self.respond(stream, Response(b"Internal Server Error", 500,
                                          content_type=b"text/plain"))

    def _respond_error(self, stream: _Stream, status: int) -> None:
        text = {413: b"Payload Too Large"}.get(status, b"Error")
        req = stream.req
        if req is not None:
            req._dispatched = True
        self.respond(stream, Response(text, status, content_type=b"text/plain"))

    # -- output (used by the native path and the ASGI cycle) ----------------------------------

    def send_headers(self, stream: _Stream, status: int, headers: Any, length: Optional[int],
                     end: bool) -> None:
        """Send the response head of ``stream`` (``end``: it has no body)."""
        if stream.conn is None:
            raise ConnectionClosed(None, "the stream is closed")
        hdrs = response_headers(status, headers, length, self.alt_svc)  # ValueError: not sent
        stream.started = True
        if self.server.draining and not self.going_away:
            self.goaway()
        try:
            self.h2.send_headers(stream.id, hdrs, end_stream=end)
        except h2.exceptions.ProtocolError as exc:  # the connection or stream is gone
            self.reset(stream)
            raise ConnectionClosed(None, "the stream is closed") from exc
        if end:
            self._finished(stream)
        self._flush_soon()

    def send_body(self, stream: _Stream, data: bytes, end: bool = False,
                  trailers: Optional[List[Tuple[bytes, bytes]]] = None) -> None:
        """Queue body bytes (and the end of the response); they go out as windows allow."""
        if stream.conn is None:
            raise ConnectionClosed(None, "the stream is closed")
        if data:
            stream.out.append(data)
        if end:
            stream.out_end = True
            stream.out_trailers = trailers
        try:
            self._pump(stream)
        except h2.exceptions.ProtocolError as exc:
            self.reset(stream)
            raise ConnectionClosed(None, "the stream is closed") from exc
        self._flush_soon()

    def end(self, stream: _Stream, trailers: Any = None) -> None:
        """End the response of ``stream`` (with trailer fields, if any)."""
        tr = None
        if trailers:
            tr = [(_b(k).lower(), _b(v)) for k, v in trailers]
        self.send_body(stream, b"", end=True, trailers=tr)

    async def write(self, stream: _Stream, data: bytes) -> None:
        """Send a piece of a streamed body, waiting while windows or the socket are full."""
        if data:
            self.send_body(stream, data)
        await self.writable(stream)

    async def writable(self, stream: _Stream) -> None:
        """Wait until the stream's queued body is sent and the connection has room."""
        while stream.out:
            if stream.conn is None:
                raise ConnectionClosed(None, "the stream is closed")
            w = stream.waiter
            if w is None or w.done():
                w = stream.waiter = self.loop.create_future()
            await w
        if stream.conn is None:
            raise ConnectionClosed(None, "the stream is closed")
        conn = self.conn
        if conn is not None and conn.buffered > _WRITE_HIGH_WATER:
            self._flush()
            await conn.drain()

    def reset(self, stream: _Stream, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Reset ``stream`` (RST_STREAM)."""
        if self.streams.pop(stream.id, None) is not None and self.conn is not None:
            try:
                self.h2.reset_stream(stream.id, code)
            except h2.exceptions.StreamClosedError:
                pass
            self._flush_soon()
        self._drop(stream, ConnectionClosed(None, "stream reset"))
        self._idle_check()

    def _pump(self, stream: _Stream) -> None:
        h = self.h2
        sid = stream.id
        out = stream.out
        while out:
            window = h.local_flow_control_window(sid)
            if window <= 0:
                self.blocked.add(stream)
                return
            size = min(window, h.max_outbound_frame_size)
            chunk = out[0]
            if len(chunk) <= size:
                out.pop(0)
                last = not out and stream.out_end and stream.out_trailers is None
                h.send_data(sid, chunk, end_stream=last)
                if last:
                    self.blocked.discard(stream)
                    stream.wake()
                    self._finished(stream)
                    return
            else:
                out[0] = chunk[size:]
                h.send_data(sid, chunk[:size])
        self.blocked.discard(stream)
        stream.wake()
        if stream.out_end and not stream.responded:
            if stream.out_trailers is not None:
                h.send_headers(sid, stream.out_trailers, end_stream=True)
            else:
                h.end_stream(sid)
            self._finished(stream)

    def _pump_blocked(self) -> None:
        for stream in list(self.blocked):
            if stream.conn is not None:
                try:
                    self._pump(stream)
                except h2.exceptions.ProtocolError:
                    self.reset(stream)
            else:
                self.blocked.discard(stream)

    def _finished(self, stream: _Stream) -> None:
        stream.responded = True
        req = stream.req
        if req is not None:
            req._wake()  # an ASGI receive() waiting for http.disconnect
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            if req is not None and not req._complete:
                # the response is complete before the request body: stop the body
                # (RFC 9113 section 8.1)
                try:
                    self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)
                except h2.exceptions.StreamClosedError:
                    pass
                stream.conn = None
                req._fail(ConnectionClosed(None, "the response was sent before the body"))
        self._idle_check()

    def _idle_check(self) -> None:
        """The last stream ended: close if going away, else start the keep-alive wait."""
        if self.streams or self.conn is None or self.lingering:
            return
        if self.going_away:
            self._close_lingering()
            return
        timeout = self.server.keep_alive_timeout
        if timeout:
            self.idle_since = self.loop.time()
            if self.idle_timer is None:
                self.idle_timer = self.loop.call_later(timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        """The keep-alive timer: GOAWAY and close if no stream was open since
        ``keep_alive_timeout`` s, else wait the rest (or, with streams open, for the next
        :meth:`_idle_check`)."""
        self.idle_timer = None
        if self.streams or self.conn is None or self.lingering:
            return
        left = self.idle_since + self.server.keep_alive_timeout - self.loop.time()
        if left > 0.001:
            self.idle_timer = self.loop.call_later(left, self._idle_timeout)
            return
        logger.debug("nbio.http2: %r idle: GOAWAY", self.conn)
        self._close_lingering()

    # -- writes ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        self.flush_pending = False
        data = self.h2.data_to_send()
        if data and self.conn is not None and not self.lingering:
            try:
                self.conn.write(data)
            except ConnectionClosed:
                pass

    def _flush_soon(self) -> None:
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self._flush)

    # -- shutdown -------------------------------------------------------------------------------

    def goaway(self) -> None:
        """Graceful shutdown (RFC 9113 section 6.8): GOAWAY (NO_ERROR) with the largest stream
        id and a PING; on its answer (or after ``DRAIN_PING_TIMEOUT`` s) a second GOAWAY
        with the last stream taken; those streams finish, then the connection closes."""
        if self.notice_sent or self.going_away or self.conn is None or self.lingering:
            return
        self.notice_sent = True
        self._write_goaway(_MAX_STREAM_ID, h2.errors.ErrorCodes.NO_ERROR)
        try:
            self.h2.ping(_DRAIN_PING)
        except h2.exceptions.ProtocolError:
            self._final_goaway()
            return
        self._flush()
        self.drain_timer = self.loop.call_later(DRAIN_PING_TIMEOUT, self._final_goaway)

    def _final_goaway(self) -> None:
        """The second GOAWAY of a graceful shutdown: no stream after ``last_stream`` is taken."""
        self._stop_drain_timer()
        if self.going_away or self.conn is None or self.lingering:
            return
        self.going_away = True
        self.goaway_sent = True
        self._write_goaway(self.last_stream, h2.errors.ErrorCodes.NO_ERROR)
        self._idle_check()

    def _stop_drain_timer(self) -> None:
        timer = self.drain_timer
        if timer is not None:
            self.drain_timer = None
            timer.cancel()

    def _stop_timers(self) -> None:
        self._stop_drain_timer()
        timer = self.idle_timer
        if timer is not None:
            self.idle_timer = None
            timer.cancel()

    def _write_goaway(self, last_stream: int, code: int) -> None:
        """Write a GOAWAY frame after what h2 has queued. Written past h2's state machine,
        which after a GOAWAY would refuse to send the responses still due."""
        self._flush()
        conn = self.conn
        if conn is not None:
            # 9-byte frame header (length 8, type 7 GOAWAY, no flags, stream 0) + payload
            frame = struct.pack(">HBBBIII", 0, 8, 7, 0, 0, last_stream, code)
            try:
                conn.write(frame)
            except ConnectionClosed:
                pass

    def _close_lingering(self) -> None:
        """Close after a GOAWAY (ours is sent now if none was): the streams still open are
        dropped and the socket closes with a lingering close."""
        conn = self.conn
        if conn is None or self.lingering:
            return
        self.going_away = True
        if not self.goaway_sent:
            self.goaway_sent = True
            self._write_goaway(self.last_stream, h2.errors.ErrorCodes.NO_ERROR)
        else:
            self._flush()
        self.lingering = True
        self._stop_timers()
        self._drop_all(ConnectionClosed(None, "connection closed"))
        if self.linger is not None:
            self.linger.start(conn)
        else:
            conn.close()

    def _drop_all(self, err: BaseException) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        self.blocked.clear()
        for stream in streams:
            self._drop(stream, err)

    def closed(self, exc: Optional[BaseException]) -> None:
        """The connection closed: every stream is dropped."""
        self.server._forget(self)
        self.conn = None
        self._stop_timers()
        self._drop_all(ConnectionClosed(None, "connection closed"))

    # -- ASGI -----------------------------------------------------------------------------------

    async def _run_asgi(self, stream: _Stream) -> None:
        from nbio.http._asgi import EXTENSIONS, addr, scope_path

        server = self.server
        req = stream.req
        assert req is not None
        head = req.head
        conn = self.conn
        scope: Dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "2",
            "method": head.method.decode("ascii"),
            "scheme": self.scheme,
            "path": scope_path(head.path),
            "raw_path": head.path,
            "query_string": head.query,
            "root_path": server.root_path,
            "headers": head.headers,
            "client": addr(conn.remote_address) if conn is not None else None,
            "server": addr(conn.local_address) if conn is not None else None,
            "extensions": EXTENSIONS,
        }
        if server.state is not None:
            scope["state"] = server.state.copy()
        cycle = stream.cycle = _AsgiCycle(self, stream)
        task = asyncio.current_task()
        if task is not None:
            server.tasks.add(task)
        try:
            await server.app_asgi(scope, cycle.receive, cycle.send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if stream.conn is not None and not stream.responded:
                self._failed(stream, exc)
            elif not isinstance(exc, ConnectionClosed):
                logger.error("nbio.http2: ASGI app failed after its response", exc_info=exc)
        else:
            if stream.conn is not None and not stream.responded:
                if not cycle.started:
                    logger.error("nbio.http2: ASGI app returned without a response")
                    self._failed(stream, RuntimeError("no response"))
                else:
                    logger.error("nbio.http2: ASGI app returned before its response was complete")
                    self.reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            if task is not None:
                server.tasks.discard(task)
            if stream.task is task:
                stream.task = None


class _AsgiCycle:
    """The ``receive``/``send`` callables of an http scope on an HTTP/2 stream."""

    __slots__ = ("disconnected", "headers", "session", "started", "status", "stream",
                 "trailers")

    def __init__(self, session: H2Session, stream: _Stream) -> None:
        self.session = session
        self.stream = stream
        self.status = 0
        self.headers: Any = []
        self.started = False
        self.trailers = False
        self.disconnected = False

    async def receive(self) -> Dict[str, Any]:
        stream = self.stream
        req = stream.req
        assert req is not None
        if not stream.responded and not self.disconnected:
            try:
                await req._wait_body()
            except Exception:
                self.disconnected = True
                return _DISCONNECT
            message: Optional[Dict[str, Any]] = req._body_message()
            if message is not None:
                return message
            waiter = self.session.loop.create_future()
            req._waiter = waiter
            try:
                await waiter
            except Exception:
                pass
        return _DISCONNECT

    async def send(self, message: Dict[str, Any]) -> None:
        kind = message["type"]
        session = self.session
        stream = self.stream
        if kind == "http.response.body":
            if not self.started or stream.responded:
                raise RuntimeError(f"unexpected ASGI message {kind!r}")
            if stream.conn is None:
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not stream.started:
                if not more and not self.trailers:
                    head_only = stream.req is not None and stream.req.method == b"HEAD"
                    session.send_headers(stream, self.status, self.headers, len(body),
                                         end=head_only or not body)
                    if body and not head_only:
                        session.send_body(stream, body, end=True)
                    return
                session.send_headers(stream, self.status, self.headers, None, end=False)
            if not more:
                if self.trailers:
                    if body:
                        await session.write(stream, body)
                    return
                session.send_body(stream, body, end=True)
            else:
                await session.write(stream, body)
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers") or []
            self.trailers = bool(message.get("trailers", False))
        elif kind == "http.response.trailers":
            if not self.trailers or stream.responded:
                raise RuntimeError("unexpected http.response.trailers")
            if stream.conn is None:
                return
            if not stream.started:
                raise RuntimeError("http.response.trailers before the body")
            if not message.get("more_trailers", False):
                session.end(stream, message.get("headers") or None)
        elif kind == "http.response.pathsend":
            if not self.started or stream.responded:
                raise RuntimeError("unexpected http.response.pathsend")
            if stream.conn is None:
                return
            with open(message["path"], "rb", buffering=0) as file:
                await session.send_file(stream, file, self.status, self.headers)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an http scope")


# ---------------------------------------------------------------------------------------------
# Engine handlers: HTTP/2 connections, prior-knowledge sniffing, Upgrade: h2c
# ---------------------------------------------------------------------------------------------


class H2Handler(Handler):
    """The engine handler of a server's HTTP/2 connections (``conn.session`` is an
    :class:`H2Session`)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.lingering = Lingering(self, server.linger_timeout, server.linger_max_bytes)

    def on_data(self, conn: Any, data: Any) -> None:
        conn.session.feed(data)

    def on_eof(self, conn: Any) -> bool:
        return False

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        session = conn.session
        if isinstance(session, H2Session):
            session.closed(exc)

    def adopt(self, conn: Any, data: Any = b"",
              upgrade: Optional[Tuple[bytes, HttpRequest]] = None) -> H2Session:
        """Make ``conn`` an HTTP/2 connection of the server (then feed ``data``)."""
        server = self.server
        old = conn.session
        if old is not None and old is not conn and hasattr(old, "h1"):
            server._forget(old)
        session = H2Session(server, conn)
        session.linger = self.lingering
        conn.session = session
        server.sessions.add(session)
        conn.set_handler(self)
        session.start(upgrade)
        if data and session.conn is not None:
            session.feed(data)
        return session


class PriorKnowledge(Handler):
    """The first bytes of a plaintext connection: the HTTP/2 preface makes it h2c, anything
    else goes to HTTP/1.1."""

    def __init__(self, server: Any, h2: H2Handler) -> None:
        self.server = server
        self.h2 = h2
        self.early: Dict[Any, bytes] = {}   # a preface cut short, per connection

    def on_data(self, conn: Any, data: Any) -> None:
        data = bytes(data)
        early = self.early.pop(conn, None)
        if early:
            data = early + data
        n = min(len(data), len(PREFACE))
        if data[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                self.early[conn] = data  # wait for the rest of the preface
                return
            self.h2.adopt(conn, data)
            return
        conn.set_handler(self.server)
        self.server.on_data(conn, data)

    def on_eof(self, conn: Any) -> bool:
        self.early.pop(conn, None)
        return bool(self.server.on_eof(conn))

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        self.early.pop(conn, None)
        self.server.on_close(conn, exc)


class H2cUpgrader:
    """``Upgrade: h2c`` (RFC 7540 section 3.2): 101, then HTTP/2 with the request as
    stream 1. Requests with a body are answered in HTTP/1.1 instead."""

    def __init__(self, h2: H2Handler) -> None:
        self.h2 = h2

    def upgrade(self, conn: Any, request: HttpRequest, leftover: bytes) -> bool:
        if isinstance(conn, TLSConn):
            return False  # h2c is for cleartext only (RFC 9113 section 3.2)
        settings = request.get_header(b"http2-settings")
        connection = (request.get_header(b"connection") or b"").lower()
        if settings is None or b"http2-settings" not in connection:
            return False
        if request.content_length or request.chunked:
            return False
        try:
            base64.urlsafe_b64decode(settings + b"=" * (-len(settings) % 4))
        except ValueError:
            return False
        head = request.head
        fields = [(k, v) for k, v in head.headers
                  if k not in _HOP_BY_HOP and k != b"http2-settings"]
        req = HttpRequest(Request(head.method, head.target, fields, b"2"), None, True)
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                   b"Upgrade: h2c\r\n\r\n")
        try:
            self.h2.adopt(conn, leftover, upgrade=(settings, req))
        except h2.exceptions.ProtocolError:
            conn.close()
        return True

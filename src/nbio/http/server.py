"""HTTP/1.1 server on the nbio engine: the native handler API and the routing of upgrades.

:class:`HttpServer` is an engine handler (``engine.listen(HttpServer(app), host, port)``).
``app(request)`` gets an :class:`HttpRequest` and returns a :class:`Response`, a
:class:`StreamingResponse` or a :class:`FileResponse` -- directly (a plain function: no task
is created, the fastest path) or through an awaitable (``async def``: one task per request).

Per connection, requests are answered one at a time in arrival order (pipelined requests
are parsed ahead and held); keep-alive, chunked bodies both ways, trailers,
``Expect: 100-continue``, HEAD, ``Connection: close`` and HTTP/1.0 follow the sans-IO core
:mod:`nbio.http.h1`. Request bodies are read whole before ``app`` is called (up to
``max_body_size``; ``request.body``), unless ``stream_request_body=True``: then ``app`` is
called when the head arrives and reads with ``await request.read()`` or
``async for chunk in request.stream()``.

Limits close the connection after an error response: 400 malformed, 413 body too large,
414 target too long, 431 header section too large or too many fields, 408 when a request
head is not complete ``header_timeout`` seconds after its first byte (slowloris). An idle
keep-alive connection is closed after ``keep_alive_timeout`` seconds.

Closing while the client may still be sending (after those errors, a response sent before its
request was read whole, a close the server chose on a keep-alive connection) is a lingering
close (:mod:`nbio.http._linger`, RFC 9112 section 9.6): the write side is shut once the
response is written, and what still arrives is read and discarded until the client closes,
``linger_timeout`` seconds pass or ``linger_max_bytes`` arrive -- so the client gets the
response instead of an RST. A request that asked for the close itself and was read whole is
just closed.

Upgrades (``request.upgrade`` set, e.g. ``b"websocket"``) go to the *upgrade handler*
registered for the request's path in ``upgrades`` (``{"/ws": handler}``; the key ``"*"``
matches every path): ``handler.upgrade(conn, request, leftover) -> bool``. ``leftover`` is
what arrived after the request head. Returning True means the handler took the connection
(it wrote the 101 or an error response and called ``conn.set_handler(...)``; it owns
``conn.session`` from then on). Returning False, or no handler for the path, and the
request is answered by ``app`` like any other.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import ssl as _ssl
from typing import (
    Any,
    AsyncIterable,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from nbio.engine import Handler, TLSConn
from nbio.errors import ConnectionClosed, HTTPProtocolError
from nbio.http._linger import LINGER_MAX_BYTES, LINGER_TIMEOUT, Lingering
from nbio.http._server import HttpRequest, Response, SessionCore, make_headers
from nbio.http._server import on_data as _on_data
from nbio.http.h1 import Data, EndOfMessage, Request, ServerConnection, refresh_date

__all__ = [
    "FileResponse",
    "HttpRequest",
    "HttpServer",
    "Response",
    "StreamingResponse",
    "UpgradeHandler",
]

logger = logging.getLogger("nbio.http")

HeaderPart = Union[bytes, str]
HeaderList = List[Tuple[HeaderPart, Union[bytes, str, int]]]
HeadersArg = Optional[Iterable[Tuple[HeaderPart, Union[bytes, str, int]]]]

_CLOSE = (b"connection", b"close")


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


BodyChunks = Union[AsyncIterable[Union[bytes, str]], Iterable[Union[bytes, str]]]
Trailers = Union[Sequence[Tuple[HeaderPart, HeaderPart]], Callable[[], Any], None]


class StreamingResponse:
    """A response whose body comes from an (async) iterable of bytes/str chunks, sent as
    they come with backpressure. Framing: Content-Length if given in ``headers``, else
    chunked (HTTP/1.1) or close-delimited (HTTP/1.0). ``trailers`` (a list of pairs, or a
    callable returning one once the body is done) go out after a chunked body."""

    __slots__ = ("content", "headers", "status", "trailers")

    def __init__(
        self,
        content: BodyChunks,
        status: int = 200,
        headers: HeadersArg = None,
        content_type: Optional[HeaderPart] = None,
        trailers: Trailers = None,
    ) -> None:
        self.status = status
        self.headers = make_headers(headers, content_type)
        self.content = content
        self.trailers = trailers


class FileResponse:
    """A file sent with the kernel's ``sendfile`` (zero-copy on the native engine).

    The file is opened here (so a missing file raises in the handler); the content type is
    guessed from the name unless given."""

    __slots__ = ("file", "headers", "size", "status")

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        status: int = 200,
        headers: HeadersArg = None,
        content_type: Optional[HeaderPart] = None,
    ) -> None:
        if content_type is None:
            guessed, _ = mimetypes.guess_type(os.fspath(path))
            content_type = guessed or "application/octet-stream"
        self.file: Any = open(path, "rb", buffering=0)
        self.size = os.fstat(self.file.fileno()).st_size
        self.status = status
        self.headers = make_headers(headers, content_type)
        self.headers.append((b"content-length", self.size))


AnyResponse = Union[Response, StreamingResponse, FileResponse]
App = Callable[["HttpRequest"], Union[AnyResponse, Awaitable[AnyResponse]]]


# ---------------------------------------------------------------------------------------------
# Per-connection state
# ---------------------------------------------------------------------------------------------


class _AltSvcConnection(ServerConnection):
    """HTTP/1.1 with an ``Alt-Svc`` field in every final response (``HttpServer.alt_svc``)."""

    def __init__(self, *args: Any, alt_svc: bytes = b"", **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.alt_svc = alt_svc

    def _with(self, status: int, headers: Any) -> Any:
        return headers if status < 200 else [*headers, (b"alt-svc", self.alt_svc)]

    def respond(
        self, status: int, headers: Any = (), body: Any = b"", reason: Any = None
    ) -> bytes:
        return super().respond(status, self._with(status, headers), body, reason)

    def start_response(self, status: int, headers: Any = (), reason: Any = None) -> bytes:
        return super().start_response(status, self._with(status, headers), reason)

    def error_response(self, error: Any = None) -> bytes:
        data: bytes = super().error_response(error)
        i = data.index(b"\r\n") + 2
        return data[:i] + b"Alt-Svc: " + self.alt_svc + b"\r\n" + data[i:]


class _Session(SessionCore):
    """The HTTP state of one connection (``conn.session``); the per-request shortcut
    (``feed``, ``fast_path``) is compiled, in :class:`nbio.http._server.SessionCore`."""

    __slots__ = ()

    def __init__(self, server: HttpServer, conn: Any) -> None:
        super().__init__(server, conn)
        self.h1 = (_AltSvcConnection if server.alt_svc else ServerConnection)(
            max_header_bytes=server.max_header_bytes,
            max_header_count=server.max_header_count,
            max_body_size=server.max_body_size,
            max_request_line=server.max_request_line,
            pause_after_message=True,
            **({"alt_svc": server.alt_svc.encode("latin-1")} if server.alt_svc else {}),
        )

    # -- input ------------------------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        return loop if loop is not None else asyncio.get_running_loop()

    def process(self, events: List[Any]) -> None:
        """Handle the events of (at most) one request, then of the held ones as long as
        responses complete synchronously."""
        self.in_process = True
        try:
            while True:
                for ev in events:
                    t = type(ev)
                    if t is Request:
                        self.on_request(ev)
                    elif t is Data:
                        rx = self.rx
                        if rx is not None and rx is self.current:
                            rx._feed(ev.data)
                    elif t is EndOfMessage:
                        self.on_end(ev)
                    else:
                        self.on_error(ev)
                    if self.conn is None:
                        return
                if self.busy or self.rx is not None:
                    return
                h1 = self.h1
                if self.declined:
                    self.declined = False
                    events = h1.decline_upgrade()
                    if events:
                        continue
                if not h1.paused:
                    return
                events = h1.resume()
                if self.input_paused:
                    self.resume_input()
                if not events:
                    return
        finally:
            self.in_process = False

    def _next(self) -> None:
        if not self.busy and self.conn is not None and not self.h1.must_close:
            self.process([])

    def on_request(self, head: Request) -> None:
        if self.head_since:
            self.server._unwatch_head(self)
        req = HttpRequest(head, self)
        if head.upgrade is not None:
            upgrader = self.server._upgrader(head.path, head.upgrade)
            if upgrader is not None:
                conn = self.conn
                if upgrader.upgrade(conn, req, self.h1.trailing_data):
                    self.detach()
                    return
            if head.keep_alive:
                self.declined = True
        self.rx = req
        self.busy = True
        self.started = False
        self.current = req
        if self.server.stream_request_body and (head.chunked or head.content_length):
            self.dispatch(req)
        elif head.expect_continue:
            self.send_continue()

    def on_end(self, eom: EndOfMessage) -> None:
        req = self.rx
        if req is None:
            return
        self.rx = None
        req._end(eom.trailers)
        if not req._dispatched and self.current is req:
            self.dispatch(req)

    def on_error(self, err: HTTPProtocolError) -> None:
        rx = self.rx
        self.rx = None
        if rx is not None:
            rx._fail(err)
        conn = self.conn
        if self.busy and self.started:
            self._abort()
            return
        task = self.task
        if task is not None:
            self.task = None
            task.cancel()
        self.busy = False
        logger.debug("nbio.http: %s from %r", err, conn)
        self.close_with_error(err)

    def close_with_error(self, error: Any) -> None:
        """Write the error answer for ``error`` (an HTTPProtocolError or a status code) unless
        the connection is already closed, then end the connection (lingering if the client
        may still be sending)."""
        try:
            self.conn.write(self.h1.error_response(error))
        except ConnectionClosed:
            pass
        self.end_connection()

    def send_continue(self) -> None:
        data = self.h1.send_100_continue()
        if data and self.conn is not None:
            self.conn.write(data)

    def pause_input(self) -> None:
        self.input_paused = True
        self.conn.pause_reading()

    def resume_input(self) -> None:
        self.input_paused = False
        if self.conn is not None:
            self.conn.resume_reading()

    # -- answering ------------------------------------------------------------------------

    def dispatch(self, req: HttpRequest) -> None:
        req._dispatched = True
        server = self.server
        try:
            result: Any = server.app(req)
        except Exception as exc:
            self._failed(exc)
            return
        self._handle_result(result)

    def _handle_result(self, result: Any) -> None:
        if type(result) is Response:
            self.send(result)
        elif isinstance(result, (StreamingResponse, FileResponse, Response)):
            self.send(result)
        elif hasattr(result, "__await__"):
            self.conn.set_idle_timeout(None)
            self.task = self._loop().create_task(self._run(result))
        else:
            self._failed(TypeError(f"the handler returned {result!r}, not a response"))

    async def _run(self, awaitable: Awaitable[AnyResponse]) -> None:
        try:
            resp = await awaitable
            if self.conn is None:
                return
            if isinstance(resp, StreamingResponse):
                await self._stream(resp)
            elif isinstance(resp, (Response, FileResponse)):
                self.send(resp)
            else:
                raise TypeError(f"the handler returned {resp!r}, not a response")
        except ConnectionClosed:
            pass
        except Exception as exc:
            if self.conn is not None:
                self._failed(exc)
        finally:
            if self.task is asyncio.current_task(self._loop()):
                self.task = None
            conn = self.conn
            if conn is not None and not self.busy:
                conn.set_idle_timeout(self.server.keep_alive_timeout)

    def send(self, resp: AnyResponse) -> None:
        """Write a complete response (or start a streaming one) for the current request."""
        h1 = self.h1
        conn = self.conn
        headers = resp.headers
        if self.server.draining:
            headers = [*headers, _CLOSE]
        if type(resp) is Response:
            try:
                data = h1.respond(resp.status, headers, resp.body)
            except ValueError as exc:
                self._failed(exc)
                return
            conn.write(data)
            self.finished()
        elif type(resp) is FileResponse:
            file = resp.file
            resp.file = None  # the engine's queue holds the file until it is sent
            try:
                head = h1.start_response(resp.status, headers)
            except ValueError as exc:
                file.close()
                self._failed(exc)
                return
            self.started = True
            conn.write(head)
            if resp.size and self.current is not None and self.current.method != b"HEAD":
                conn.sendfile(file, 0, resp.size)
            h1.skip_data(resp.size)
            conn.write(h1.end_response())
            self.finished()
        else:
            assert isinstance(resp, StreamingResponse)
            self.task = self._loop().create_task(self._run_stream(resp))

    async def _run_stream(self, resp: StreamingResponse) -> None:
        self.conn.set_idle_timeout(None)
        try:
            await self._stream(resp)
        except ConnectionClosed:
            pass
        except Exception as exc:
            if self.conn is not None:
                self._failed(exc)
        finally:
            if self.task is asyncio.current_task(self._loop()):
                self.task = None
            if self.conn is not None and not self.busy:
                self.conn.set_idle_timeout(self.server.keep_alive_timeout)

    async def _stream(self, resp: StreamingResponse) -> None:
        h1 = self.h1
        conn = self.conn
        headers = resp.headers
        if self.server.draining:
            headers = [*headers, _CLOSE]
        head = h1.start_response(resp.status, headers)
        self.started = True
        conn.write(head)
        content = resp.content
        head_only = self.current is not None and self.current.method == b"HEAD"
        if hasattr(content, "__aiter__"):
            aiter = content.__aiter__()  # type: ignore[union-attr]
            try:
                if not head_only:
                    async for chunk in aiter:
                        data = h1.send_data(chunk.encode() if isinstance(chunk, str) else chunk)
                        if data:
                            conn.write(data)
                            await conn.drain()
            finally:
                aclose = getattr(aiter, "aclose", None)
                if aclose is not None:
                    await aclose()
        elif not head_only:
            for chunk in content:  # type: ignore[union-attr]
                data = h1.send_data(chunk.encode() if isinstance(chunk, str) else chunk)
                if data:
                    conn.write(data)
                    await conn.drain()
        trailers = resp.trailers
        if callable(trailers):
            trailers = trailers()
        conn.write(h1.end_response(trailers))
        self.finished()

    def _failed(self, exc: BaseException) -> None:
        """The application failed: 500 if nothing was sent yet, else cut the connection."""
        conn = self.conn
        logger.error("nbio.http: request handler failed for %r", self.current, exc_info=exc)
        if conn is None:
            return
        if self.started:
            self._abort()
            return
        self.busy = False
        self.close_with_error(500)

    def _abort(self) -> None:
        conn = self.conn
        self.busy = False
        if conn is not None:
            conn.abort()

    # -- lifecycle ------------------------------------------------------------------------

    def detach(self) -> None:
        """The connection was taken over (upgrade): forget it."""
        self.server._forget(self)
        self.conn = None
        self.rx = None
        self.h1.close()

    def closed(self, exc: Optional[BaseException]) -> None:
        self.server._forget(self)
        self.conn = None
        err = ConnectionClosed(None, "connection closed")
        for req in (self.rx, self.current):
            if req is not None:
                req._fail(err)
        self.rx = None
        self.busy = False
        task = self.task
        if task is not None and self.server.cancel_on_disconnect:
            self.task = None
            task.cancel()
        self.h1.close()


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def _not_found(request: HttpRequest) -> Response:
    return Response(b"Not Found", 404, content_type=b"text/plain")


class UpgradeHandler:
    """What ``upgrades`` values implement (duck-typed): take over a connection."""

    def upgrade(self, conn: Any, request: HttpRequest, leftover: bytes) -> bool:
        """Return True after writing the response (101 or error) and calling
        ``conn.set_handler(...)``; False to let the request be answered normally."""
        raise NotImplementedError


class HttpServer(Handler):
    """An HTTP/1.1 server as an engine handler; see the module documentation.

    ``app(request)`` returns a response or an awaitable of one. ``upgrades`` maps a path
    (str or bytes; ``"*"`` for any) to an upgrade handler. Limits: ``max_header_bytes``,
    ``max_header_count``, ``max_request_line`` (431/414), ``max_body_size`` (413; None for
    no limit), ``header_timeout`` (408), ``keep_alive_timeout`` (idle connections),
    ``linger_timeout`` and ``linger_max_bytes`` (the bounds of a lingering close, HTTP/1.1
    and HTTP/2).
    ``app`` may be None: every request that is not upgraded is answered 404.

    HTTP/2 (:mod:`nbio.http.h2_server`; ``http2=False`` turns it off): ALPN ``h2`` over TLS,
    h2c with prior knowledge or ``Upgrade: h2c``; ``max_concurrent_streams`` per connection,
    ``h2_initial_window_size`` (the receive window of each stream), ``h2_max_resets``
    (client stream resets per second before the connection is closed: rapid reset)."""

    #: the per-connection state class (the ASGI adapter brings its own)
    session_class: Any = _Session
    #: cancel a handler still running when its client disconnects
    cancel_on_disconnect = True

    def __init__(
        self,
        app: Optional[App],
        *,
        upgrades: Optional[Mapping[Union[str, bytes], Any]] = None,
        max_header_bytes: int = 65536,
        max_header_count: int = 100,
        max_request_line: int = 8192,
        max_body_size: Optional[int] = 16 * 1024 * 1024,
        header_timeout: float = 10.0,
        keep_alive_timeout: float = 5.0,
        stream_request_body: bool = False,
        alt_svc: Optional[str] = None,
        http2: bool = True,
        max_concurrent_streams: int = 100,
        h2_initial_window_size: int = 65535,
        h2_max_resets: int = 100,
        linger_timeout: float = LINGER_TIMEOUT,
        linger_max_bytes: int = LINGER_MAX_BYTES,
    ) -> None:
        self.app: App = app if app is not None else _not_found
        self.upgrades: Dict[bytes, Any] = {
            (k.encode("latin-1") if isinstance(k, str) else k): v
            for k, v in (upgrades or {}).items()
        }
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.max_request_line = max_request_line
        self.max_body_size = max_body_size
        self.header_timeout = header_timeout
        self.keep_alive_timeout = keep_alive_timeout
        self.stream_request_body = stream_request_body
        #: ``Alt-Svc`` value added to every response (e.g. ``'h3=":443"; ma=86400'``)
        self.alt_svc = alt_svc
        self.http2 = http2
        self.max_concurrent_streams = max_concurrent_streams
        self.h2_initial_window_size = h2_initial_window_size
        self.h2_max_resets = h2_max_resets
        self.linger_timeout = linger_timeout
        self.linger_max_bytes = linger_max_bytes
        #: the engine handler of HTTP/1.1 connections in a lingering close
        self.lingering = Lingering(self, linger_timeout, linger_max_bytes)
        self._h2: Any = None  # (H2Handler, PriorKnowledge, H2cUpgrader), made on first use
        #: plain-function apps answer bodiless requests on a shortcut (False: never)
        self.fast: Optional[bool] = None
        self.draining = False
        self.sessions: Set[_Session] = set()
        self._heads: Dict[_Session, float] = {}
        self._timer: Optional[asyncio.TimerHandle] = None
        self._idle_waiters: List[asyncio.Future[None]] = []
        self.engine: Any = None
        self.listener: Any = None
        self._own_engine = False

    # -- engine callbacks -------------------------------------------------------------------

    def on_open(self, conn: Any) -> None:
        if self._timer is None:
            self._start_timer()
        if self.http2:
            if isinstance(conn, TLSConn):
                if conn.selected_alpn_protocol() == "h2":
                    self._h2_parts()[0].adopt(conn)
                    return
            else:
                conn.set_handler(self._h2_parts()[1])  # h2c prior knowledge?
        session = self.session_class(self, conn)
        conn.session = session
        self.sessions.add(session)
        if self.keep_alive_timeout:
            conn.set_idle_timeout(self.keep_alive_timeout)

    def _h2_parts(self) -> Any:
        parts = self._h2
        if parts is None:
            from nbio.http.h2_server import H2cUpgrader, H2Handler, PriorKnowledge

            handler = H2Handler(self)
            parts = self._h2 = (handler, PriorKnowledge(self, handler), H2cUpgrader(handler))
        return parts

    on_data = _on_data  # conn.session.feed(data), compiled

    def on_eof(self, conn: Any) -> bool:
        session: _Session = conn.session
        events = session.h1.receive_eof()
        if events:
            session.process(events)
        # A client that stops sending is gone, as for most servers: the connection closes
        # (after flushing) and a handler still running is cancelled.
        return False

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        session = conn.session
        if isinstance(session, _Session):
            session.closed(exc)

    # -- upgrades ---------------------------------------------------------------------------

    def _upgrader(self, path: bytes, upgrade: Optional[bytes] = None) -> Any:
        if upgrade == b"h2c" and self.http2:
            return self._h2_parts()[2]
        upgrades = self.upgrades
        if not upgrades:
            return None
        found = upgrades.get(path)
        return found if found is not None else upgrades.get(b"*")

    # -- timers: Date header and header timeouts ----------------------------------------------

    def _start_timer(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0
        if self.header_timeout:
            interval = max(0.02, min(1.0, self.header_timeout / 4))
        self._timer = loop.call_later(interval, self._tick, loop, interval)
        refresh_date()

    def _tick(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        refresh_date()
        if self._heads:
            now = loop.time()
            limit = self.header_timeout
            for session, since in list(self._heads.items()):
                if now - since < limit:
                    continue
                del self._heads[session]
                session.head_since = 0.0
                conn = session.conn
                if conn is None or not session.h1.receiving_head:
                    continue
                if session.busy:
                    self._watch_head(session)  # a pipelined head behind a long answer
                    continue
                logger.debug("nbio.http: header timeout for %r", conn)
                session.close_with_error(408)
        if self.sessions:
            self._timer = loop.call_later(interval, self._tick, loop, interval)
        else:
            self._timer = None

    def _watch_head(self, session: _Session) -> None:
        if self.header_timeout:
            since = asyncio.get_running_loop().time()
            session.head_since = since
            self._heads[session] = since

    def _unwatch_head(self, session: _Session) -> None:
        session.head_since = 0.0
        self._heads.pop(session, None)

    def _forget(self, session: _Session) -> None:
        self.sessions.discard(session)
        if session.head_since:
            self._unwatch_head(session)
        if self.draining:
            self._wake_idle()

    # -- shutdown ---------------------------------------------------------------------------

    @property
    def busy_connections(self) -> int:
        """Connections with a request being answered."""
        return sum(1 for s in self.sessions if s.busy or s.rx is not None)

    async def drain(self, timeout: Optional[float] = None) -> bool:
        """Graceful stop (after the listener is closed): idle keep-alive connections are
        closed, responses in progress complete (with ``Connection: close``), then their
        connections close. Returns False if some were still busy after ``timeout``."""
        self.draining = True
        for s in list(self.sessions):
            goaway = getattr(s, "goaway", None)
            if goaway is not None:
                goaway()  # HTTP/2: GOAWAY, close once the streams are answered
            elif not s.busy and s.rx is None and s.conn is not None:
                s.conn.close()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.sessions:
            fut = loop.create_future()
            self._idle_waiters.append(fut)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(fut, left)
            except asyncio.TimeoutError:
                return False
        return True

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Stop listening (when started with :meth:`start`) and stop the server's timer;
        connections are closed by the engine (or drained with :meth:`drain`)."""
        if self.listener is not None:
            self.listener.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- convenience: own listener and engine ---------------------------------------------------

    @classmethod
    async def start(
        cls,
        app: Optional[App],
        host: Optional[str] = "127.0.0.1",
        port: int = 0,
        *,
        path: Optional[str] = None,
        engine: Any = None,
        reuse_port: Optional[bool] = None,
        ssl: Optional[_ssl.SSLContext] = None,
        **options: Any,
    ) -> HttpServer:
        """Create a server and listen on ``host:port`` (or the Unix socket ``path``) with
        ``engine`` (default: a new engine, closed by :meth:`wait_closed`). With ``ssl`` (a
        server :class:`ssl.SSLContext`) it serves https; with ``http2`` (the default) the
        context's ALPN is set to ``["h2", "http/1.1"]``.
        ``options`` are the constructor's. Stop with ``close()`` then ``await wait_closed()``."""
        from nbio.engine import Engine

        server = cls(app, **options)
        if engine is None:
            engine = Engine()
            server._own_engine = True
        if ssl is not None and server.http2:
            ssl.set_alpn_protocols(["h2", "http/1.1"])
        server.engine = engine
        server.listener = engine.listen(server, host, port, path=path, reuse_port=reuse_port,
                                        ssl=ssl)
        return server

    @property
    def address(self) -> Any:
        """The listening address (after :meth:`start`)."""
        return self.listener.address if self.listener is not None else None

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """After :meth:`close`: let responses in progress finish (up to ``timeout`` s), then
        close the remaining connections (and the engine when :meth:`start` created it)."""
        await self.drain(timeout)
        for s in list(self.sessions):
            if s.conn is not None:
                s.conn.abort()
        if self._own_engine and self.engine is not None:
            await self.engine.close()
        self.close()

    async def __aenter__(self) -> HttpServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

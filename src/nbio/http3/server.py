"""HTTP/3 server on the nbio engine: aioquic's sans-IO ``H3Connection`` over engine UDP.

:class:`H3Server` serves the same applications as the HTTP/1.1 server:

* a native handler ``app(request)`` getting an :class:`~nbio.http.server.HttpRequest`
  (``http_version`` is ``b"3"``; ``:authority`` is also given as a ``host`` header) and
  returning a :class:`~nbio.http.server.Response`, ``StreamingResponse`` or ``FileResponse``,
  directly or through an awaitable;
* an ASGI 3 application (``asgi=True``): ``http`` scopes with ``http_version`` ``"3"``,
  streamed request bodies, ``http.response.trailers`` and ``http.response.pathsend``; the
  ``lifespan`` scope runs with :meth:`H3Server.startup` / :meth:`H3Server.shutdown`.

Every request stream is answered independently (QUIC multiplexes them: no head-of-line
blocking between requests). Request bodies are read whole before a native handler runs (up
to ``max_body_size``: 413 beyond it) unless ``stream_request_body=True``. A handler that
raises gets a 500, or its stream reset (H3_INTERNAL_ERROR) once the response head was sent;
a client that resets its stream cancels the native handler still running. Connection-specific
header fields (``connection``, ``transfer-encoding``...) are dropped from responses, as HTTP/3
requires (RFC 9114 4.2); ``date`` is added, and ``content-length`` for complete bodies.

Start one with ``await H3Server.start(app, host, port, certfile=..., keyfile=...)`` (or a
``configuration``: an aioquic server ``QuicConfiguration``). Advertise it from the HTTP/1.1
server with ``HttpServer(..., alt_svc='h3=":PORT"; ma=86400')``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration

from nbio.errors import ConnectionClosed
from nbio.http._asgi import Cycle, addr, scope_path
from nbio.http.asgi import Lifespan
from nbio.http.h1 import date_header, refresh_date
from nbio.http.h2_server import request_head
from nbio.http.server import FileResponse, HttpRequest, Response, StreamingResponse
from nbio.http3.quic import QuicLink, QuicProtocol, QuicServerEndpoint

__all__ = ["H3Server", "h3_headers", "server_configuration"]

logger = logging.getLogger("nbio.http3")

#: response fields HTTP/3 forbids (RFC 9114 4.2)
_CONNECTION_SPECIFIC = frozenset(
    [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)
_FILE_CHUNK = 64 * 1024
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_EXTENSIONS: Dict[str, Any] = {"http.response.trailers": {}, "http.response.pathsend": {}}


def _b(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(value, int):
        return b"%d" % value
    return bytes(value)


def h3_headers(status: int, headers: Any, body_len: Optional[int] = None) -> List[Tuple[bytes, bytes]]:
    """HTTP/3 response fields: ``:status`` first, names lowercased, connection-specific
    fields dropped, ``date`` added and ``content-length`` (when ``body_len`` is known and
    the headers give none)."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    out = [(b":status", b"%d" % status)]
    has_length = has_date = False
    for name, value in headers or ():
        key = _b(name).lower()
        if key in _CONNECTION_SPECIFIC:
            continue
        if key == b"content-length":
            has_length = True
        elif key == b"date":
            has_date = True
        out.append((key, _b(value)))
    if not has_date:
        out.append((b"date", date_header()))
    if body_len is not None and not has_length and status >= 200 and status not in (204, 304):
        out.append((b"content-length", b"%d" % body_len))
    return out


def server_configuration(
    certfile: Optional[str] = None,
    keyfile: Optional[str] = None,
    *,
    password: Optional[str] = None,
    alpn_protocols: Optional[List[str]] = None,
    idle_timeout: float = 60.0,
    **options: Any,
) -> QuicConfiguration:
    """A server :class:`QuicConfiguration` with the certificate chain ``certfile`` and its
    ``keyfile`` (ALPN ``h3`` unless given)."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=alpn_protocols or list(H3_ALPN),
        idle_timeout=idle_timeout,
        **options,
    )
    if certfile is not None:
        config.load_cert_chain(certfile, keyfile, password)
    return config


# ---------------------------------------------------------------------------------------------
# One request stream
# ---------------------------------------------------------------------------------------------


class _Stream:
    """One request stream: the :class:`HttpRequest`'s session (``conn`` is the QUIC link
    while the stream is open, else None) and the response writer."""

    __slots__ = (
        "conn",
        "cycle",
        "finished",
        "h3conn",
        "head_only",
        "input_paused",
        "received",
        "req",
        "sid",
        "started",
        "task",
    )

    def __init__(self, h3conn: _H3Connection, sid: int, head_only: bool) -> None:
        self.h3conn = h3conn
        self.sid = sid
        self.conn: Optional[QuicLink] = h3conn.link
        self.req: Optional[HttpRequest] = None
        self.head_only = head_only
        self.input_paused = False
        self.received = 0
        self.started = False
        self.finished = False
        self.task: Optional[asyncio.Task[Any]] = None
        self.cycle: Any = None

    # HttpRequest's session contract
    def send_continue(self) -> None:
        pass  # no 100-continue dance in HTTP/3: the client sends its body

    def pause_input(self) -> None:
        self.input_paused = True  # QUIC flow control bounds what the client may send

    def resume_input(self) -> None:
        self.input_paused = False

    # writing
    def send_head(self, status: int, headers: Any, body_len: Optional[int] = None,
                  end: bool = False) -> None:
        self.started = True
        fields = h3_headers(status, headers, body_len)
        self.h3conn.h3.send_headers(self.sid, fields, end_stream=end)
        if end:
            self._done()
        self.h3conn.link.transmit_soon()

    def send_data(self, data: bytes, end: bool = False) -> None:
        if self.head_only:
            data = b""
            if not end:
                return
        self.h3conn.h3.send_data(self.sid, data, end_stream=end)
        if end:
            self._done()
        self.h3conn.link.transmit_soon()

    def send_trailers(self, trailers: Any) -> None:
        fields = [(_b(k).lower(), _b(v)) for k, v in trailers]
        if self.head_only or not fields:
            self.send_data(b"", end=True)
            return
        self.h3conn.h3.send_headers(self.sid, fields, end_stream=True)
        self._done()
        self.h3conn.link.transmit_soon()

    async def drain(self) -> None:
        link = self.conn
        if link is None:
            raise ConnectionClosed(None, "the client reset the stream")
        await link.drain(self.sid)

    def send_response(self, resp: Response) -> None:
        body = resp.body
        if self.head_only or not body:
            self.send_head(resp.status, resp.headers, len(body), end=True)
        else:
            self.send_head(resp.status, resp.headers, len(body))
            self.send_data(body, end=True)

    def fail(self, exc: BaseException) -> None:
        """The application failed: 500 if nothing was sent yet, else reset the stream."""
        logger.error("nbio.http3: request handler failed for %r", self.req, exc_info=exc)
        if self.conn is None or self.finished:
            return
        if self.started:
            self.reset(ErrorCode.H3_INTERNAL_ERROR)
            return
        body = b"Internal Server Error"
        self.send_head(500, [(b"content-type", b"text/plain")], len(body))
        self.send_data(body, end=True)

    def reset(self, code: int) -> None:
        link = self.conn
        if link is not None and not self.finished:
            self._done()
            quic = link.quic
            try:
                quic.reset_stream(self.sid, code)
                quic.stop_stream(self.sid, code)
            except Exception:  # the stream may be finished on one side already
                pass
            link.transmit_soon()

    def _done(self) -> None:
        self.finished = True
        self.h3conn.streams.pop(self.sid, None)

    def gone(self) -> None:
        """The client reset the stream, or the connection ended."""
        self.conn = None
        self.finished = True
        req = self.req
        if req is not None:
            req._fail(ConnectionClosed(None, "the client reset the stream"))
        task = self.task
        if task is not None and not task.done() and self.cycle is None:
            task.cancel()
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            if req is not None:
                req._wake()


# ---------------------------------------------------------------------------------------------
# ASGI http scope
# ---------------------------------------------------------------------------------------------


class _H3Cycle(Cycle):
    """``receive``/``send`` of an http scope over an HTTP/3 stream (``receive`` is the
    HTTP/1.1 adapter's)."""

    stream: _Stream

    async def send(self, message: Any) -> None:
        kind = message["type"]
        st = self.stream
        if kind == "http.response.body":
            if not self.started or self.done:
                raise RuntimeError(f"unexpected ASGI message {kind!r}")
            if st.conn is None or st.finished:
                return  # the client is gone
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not st.started:
                if not more and not self.trailers:
                    st.send_head(self.status, self.headers, len(body), end=not body)
                    if body:
                        st.send_data(body, end=True)
                    self._finish()
                    return
                st.send_head(self.status, self.headers)
            if body or not (more or self.trailers):
                st.send_data(body, end=not more and not self.trailers)
            if not more:
                if not self.trailers:
                    self._finish()
            else:
                await st.drain()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            self.headers = list(message.get("headers") or ())
            self.trailers = bool(message.get("trailers", False))
        elif kind == "http.response.trailers":
            if not self.trailers or self.done:
                raise RuntimeError("unexpected http.response.trailers")
            if st.conn is None or st.finished:
                return
            if not st.started:
                raise RuntimeError("http.response.trailers before the body")
            if not message.get("more_trailers", False):
                st.send_trailers(message.get("headers") or ())
                self._finish()
        elif kind == "http.response.pathsend":
            if not self.started or self.done:
                raise RuntimeError("unexpected http.response.pathsend")
            if st.conn is None or st.finished:
                return
            headers = [h for h in self.headers if _b(h[0]).lower() != b"content-length"]
            await _send_file(st, self.status, headers, message["path"])
            self._finish()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an http scope")

    def _finish(self) -> None:
        self.done = True
        self.req._wake()


async def _send_file(st: _Stream, status: int, headers: Any, path: Any,
                     file: Any = None) -> None:
    """Send a file as a response body, chunk by chunk with backpressure."""
    if file is None:
        file = open(path, "rb", buffering=0)
    with file:
        size = os.fstat(file.fileno()).st_size
        headers = [h for h in headers if _b(h[0]).lower() != b"content-length"]
        st.send_head(status, headers, size, end=st.head_only or size == 0)
        if st.finished:
            return
        sent = 0
        while sent < size:
            chunk = file.read(min(_FILE_CHUNK, size - sent))
            if not chunk:
                raise OSError(f"{path!r} shrank while being sent")
            sent += len(chunk)
            if st.conn is None:
                raise ConnectionClosed(None, "the client reset the stream")
            st.send_data(chunk, end=sent >= size)
            if sent < size:
                await st.drain()


# ---------------------------------------------------------------------------------------------
# One QUIC connection
# ---------------------------------------------------------------------------------------------


class _H3Connection(QuicProtocol):
    """The HTTP/3 state of one QUIC connection."""

    def __init__(self, server: H3Server) -> None:
        self.server = server
        self.link: Any = None
        self.h3: Any = None
        self.streams: Dict[int, _Stream] = {}

    def connection_made(self, link: QuicLink) -> None:
        self.link = link
        self.h3 = H3Connection(link.quic)
        self.server.connections.add(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.server.connections.discard(self)
        streams, self.streams = self.streams, {}
        for st in streams.values():
            st.gone()

    def quic_event(self, event: Any) -> None:
        t = type(event)
        if t is qe.StreamReset or t is qe.StopSendingReceived:
            st = self.streams.pop(event.stream_id, None)
            if st is not None:
                st.gone()
        for ev in self.h3.handle_event(event):
            te = type(ev)
            if te is h3e.DataReceived:
                self._data(ev)
            elif te is h3e.HeadersReceived:
                st = self.streams.get(ev.stream_id)
                if st is None:
                    self._request(ev)
                elif st.req is not None:  # trailers
                    self._end(st, tuple(ev.headers))

    # -- requests -------------------------------------------------------------------------

    def _request(self, ev: h3e.HeadersReceived) -> None:
        head = request_head(ev.headers, b"3")
        method, path, content_length = head.method, head.target, head.content_length
        server = self.server
        st = _Stream(self, ev.stream_id, method == b"HEAD")
        self.streams[ev.stream_id] = st
        if not method or (not path and method != b"CONNECT"):
            st.send_response(Response(b"Bad Request", 400))
            return
        req = HttpRequest(head, st, ev.stream_ended)
        st.req = req
        limit = server.max_body_size
        if limit is not None and content_length is not None and content_length > limit:
            self._too_big(st)
            return
        if server.asgi:
            self._dispatch_asgi(st, req)
        elif ev.stream_ended or server.stream_request_body:
            self._dispatch(st, req)

    def _data(self, ev: h3e.DataReceived) -> None:
        st = self.streams.get(ev.stream_id)
        if st is None or st.req is None:
            return
        req = st.req
        data = ev.data
        if data:
            st.received += len(data)
            limit = self.server.max_body_size
            if limit is not None and st.received > limit:
                self._too_big(st)
                return
            req._feed(data)
        if ev.stream_ended:
            self._end(st, ())

    def _end(self, st: _Stream, trailers: Tuple[Tuple[bytes, bytes], ...]) -> None:
        req = st.req
        assert req is not None
        req._end(trailers)
        if not req._dispatched and not st.finished:
            self._dispatch(st, req)

    def _too_big(self, st: _Stream) -> None:
        req = st.req
        if req is not None:
            req._fail(ConnectionClosed(None, "request body too large"))
        if not st.started:
            st.send_response(Response(b"Payload Too Large", 413))
        link = self.link
        try:
            link.quic.stop_stream(st.sid, ErrorCode.H3_NO_ERROR)
        except Exception:
            pass
        if not st.finished:
            st.reset(ErrorCode.H3_REQUEST_CANCELLED)
        link.transmit_soon()

    # -- native handler ---------------------------------------------------------------------

    def _dispatch(self, st: _Stream, req: HttpRequest) -> None:
        req._dispatched = True
        try:
            result: Any = self.server.app(req)
        except Exception as exc:
            st.fail(exc)
            return
        if type(result) is Response:
            st.send_response(result)
        elif isinstance(result, (Response, StreamingResponse, FileResponse)) or hasattr(
            result, "__await__"
        ):
            self._spawn(st, self._run(st, result))
        else:
            st.fail(TypeError(f"the handler returned {result!r}, not a response"))

    def _spawn(self, st: _Stream, coro: Awaitable[None]) -> None:
        server = self.server
        task = self.link.loop.create_task(coro)
        st.task = task
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)

    async def _run(self, st: _Stream, result: Any) -> None:
        try:
            if hasattr(result, "__await__"):
                result = await result
            if st.conn is None:
                if isinstance(result, FileResponse) and result.file is not None:
                    result.file.close()
                return
            if isinstance(result, Response):
                st.send_response(result)
            elif isinstance(result, StreamingResponse):
                await self._stream(st, result)
            elif isinstance(result, FileResponse):
                file, result.file = result.file, None
                await _send_file(st, result.status, result.headers, None, file)
            else:
                raise TypeError(f"the handler returned {result!r}, not a response")
        except ConnectionClosed:
            pass
        except Exception as exc:
            st.fail(exc)

    async def _stream(self, st: _Stream, resp: StreamingResponse) -> None:
        st.send_head(resp.status, resp.headers)
        content: Any = resp.content
        if not st.head_only:
            if hasattr(content, "__aiter__"):
                aiter = content.__aiter__()
                try:
                    async for chunk in aiter:
                        await self._chunk(st, chunk)
                finally:
                    aclose = getattr(aiter, "aclose", None)
                    if aclose is not None:
                        await aclose()
            else:
                for chunk in content:
                    await self._chunk(st, chunk)
        trailers = resp.trailers
        if callable(trailers):
            trailers = trailers()
        if st.conn is None:
            return
        if trailers:
            st.send_trailers(trailers)
        else:
            st.send_data(b"", end=True)

    async def _chunk(self, st: _Stream, chunk: Any) -> None:
        if st.conn is None:
            raise ConnectionClosed(None, "the client reset the stream")
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if chunk:
            st.send_data(bytes(chunk))
            await st.drain()

    # -- ASGI -------------------------------------------------------------------------------

    def _dispatch_asgi(self, st: _Stream, req: HttpRequest) -> None:
        req._dispatched = True
        server = self.server
        head = req.head
        link = self.link
        raw_path = head.path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": "3",
            "method": head.method.decode("ascii"),
            "scheme": "https",
            "path": scope_path(raw_path),
            "raw_path": raw_path,
            "query_string": head.query,
            "root_path": server.root_path,
            "headers": head.headers,
            "client": addr(link.remote_address),
            "server": addr(link.local_address),
            "extensions": _EXTENSIONS,
        }
        if server.state is not None:
            scope["state"] = server.state.copy()
        cycle = _H3Cycle(None, req)
        cycle.stream = st
        st.cycle = cycle
        self._spawn(st, self._run_asgi(scope, cycle))

    async def _run_asgi(self, scope: Dict[str, Any], cycle: _H3Cycle) -> None:
        st = cycle.stream
        try:
            await self.server.app(scope, cycle.receive, cycle.send)
        except Exception as exc:
            if not cycle.done:
                st.fail(exc)
            elif not isinstance(exc, ConnectionClosed):
                logger.error("nbio.http3: ASGI app failed after its response", exc_info=exc)
            return
        if st.conn is not None and not st.finished:
            if not cycle.started:
                st.fail(RuntimeError("the ASGI app returned without a response"))
            elif not cycle.done:
                logger.error("nbio.http3: ASGI app returned before its response was complete")
                st.reset(ErrorCode.H3_INTERNAL_ERROR)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class H3Server:
    """An HTTP/3 server (see the module documentation).

    ``app``: a native handler, or an ASGI 3 application with ``asgi=True`` (then
    ``lifespan`` ``"auto"``/``"on"``/``"off"`` and ``root_path`` apply).
    ``max_body_size`` (413 beyond; default 16 MiB for native handlers, None for ASGI),
    ``stream_request_body`` (native handlers run when the head arrives)."""

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        asgi: bool = False,
        max_body_size: Optional[int] = ...,  # type: ignore[assignment]
        stream_request_body: bool = False,
        lifespan: str = "auto",
        root_path: str = "",
    ) -> None:
        self.app = app
        self.asgi = asgi
        if max_body_size is ...:
            max_body_size = None if asgi else 16 * 1024 * 1024
        self.max_body_size = max_body_size
        self.stream_request_body = stream_request_body
        self.root_path = root_path
        self.lifespan: Optional[Lifespan] = Lifespan(app, lifespan) if asgi else None
        self.state: Optional[Dict[str, Any]] = None
        self.connections: Set[_H3Connection] = set()
        self.tasks: Set[asyncio.Task[Any]] = set()
        self.endpoint: Optional[QuicServerEndpoint] = None
        self.listener: Any = None
        self.engine: Any = None
        self._own_engine = False
        self._date_timer: Optional[asyncio.TimerHandle] = None

    def endpoint_for(self, configuration: QuicConfiguration) -> QuicServerEndpoint:
        """The engine UDP handler serving this server with ``configuration``
        (``engine.listen_udp(server.endpoint_for(config), host, port)``)."""
        endpoint = QuicServerEndpoint(configuration, lambda: _H3Connection(self))
        self.endpoint = endpoint
        if self._date_timer is None:
            self._tick_date()
        return endpoint

    def _tick_date(self) -> None:
        refresh_date()
        self._date_timer = asyncio.get_running_loop().call_later(1.0, self._tick_date)

    @classmethod
    async def start(
        cls,
        app: Callable[..., Any],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        certfile: Optional[str] = None,
        keyfile: Optional[str] = None,
        configuration: Optional[QuicConfiguration] = None,
        engine: Any = None,
        reuse_port: Optional[bool] = None,
        **options: Any,
    ) -> H3Server:
        """Create a server and serve UDP ``host:port`` (port 0 picks one) with ``engine``
        (default: a new engine, closed by :meth:`wait_closed`). TLS: ``certfile`` and
        ``keyfile``, or an aioquic server ``configuration``. ``options`` are the
        constructor's. An ASGI app's lifespan startup runs here."""
        from nbio.engine import Engine

        if configuration is None:
            if certfile is None:
                raise ValueError("H3Server.start needs certfile/keyfile or a configuration")
            configuration = server_configuration(certfile, keyfile)
        server = cls(app, **options)
        if server.lifespan is not None:
            await server.startup()
        if engine is None:
            engine = Engine()
            server._own_engine = True
        server.engine = engine
        endpoint = server.endpoint_for(configuration)
        server.listener = engine.listen_udp(
            endpoint, host, port, idle_timeout=configuration.idle_timeout + 5.0,
            reuse_port=reuse_port,
        )
        endpoint.local_address = server.listener.address
        return server

    @property
    def address(self) -> Any:
        """The UDP address served (after :meth:`start`)."""
        return self.listener.address if self.listener is not None else None

    async def startup(self) -> None:
        """Run an ASGI app's lifespan startup."""
        if self.lifespan is not None:
            await self.lifespan.startup()
            if self.lifespan.supported:
                self.state = self.lifespan.state

    async def shutdown(self) -> None:
        """Run an ASGI app's lifespan shutdown."""
        if self.lifespan is not None:
            await self.lifespan.shutdown()

    def close(self) -> None:
        """Stop serving: close every QUIC connection (H3_NO_ERROR) and the UDP socket."""
        if self.endpoint is not None:
            self.endpoint.close_all(ErrorCode.H3_NO_ERROR, "server closing")
        if self.listener is not None:
            self.listener.close()
        if self._date_timer is not None:
            self._date_timer.cancel()
            self._date_timer = None

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """After :meth:`close`: wait for handler tasks (up to ``timeout``, then cancel them),
        run the lifespan shutdown and close the engine :meth:`start` created."""
        tasks = [t for t in self.tasks if not t.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await self.shutdown()
        if self._own_engine and self.engine is not None:
            await self.engine.close()
            self._own_engine = False

    async def __aenter__(self) -> H3Server:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

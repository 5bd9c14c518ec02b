"""HTTP/3 client on the nbio engine: aioquic's ``H3Connection`` over a dialed engine UDP
socket, with the response object of the HTTP/1.1 client
(:class:`~nbio.http.client.ClientResponse`)::

    async with H3Client(cadata=ca_pem) as client:
        resp = await client.get("https://127.0.0.1:4433/items?id=1")
        print(resp.status, resp.http_version, resp.text())   # 200 3 ...

One QUIC connection per origin carries every request to it concurrently (one stream per
request). Bodies: ``bytes``/``str``, ``json=``, or an (async) iterable of chunks (sent as
they come, with backpressure). Responses are read whole unless ``stream=True`` (then read to
the end or ``aclose()``; an unread stream is cancelled with H3_REQUEST_CANCELLED).
Timeouts raise :class:`~nbio.errors.DeadlineExceeded` (``"connect"``, ``"read"``,
``"total"``). Redirects are not followed (the 3xx response is returned).

TLS: the server certificate is verified against the system store, or ``cafile`` /
``cadata``; ``verify=False`` skips it; ``server_name`` overrides the SNI/verified name.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from aioquic.h3 import events as h3e
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration

from nbio.errors import ConnectionClosed, HTTPProtocolError
from nbio.http._events import EventQueue
from nbio.http.client import (
    Body,
    ClientResponse,
    ClientVerbs,
    HeadersIn,
    _header_list,
    request_body,
    within_total,
)
from nbio.http.h1 import Data, EndOfMessage
from nbio.http.h1 import Response as Head
from nbio.http3.quic import QuicLink, QuicProtocol, connect_quic

__all__ = ["H3Client"]

_PAUSE_AT = 1 << 20  # response bytes buffered per stream before its reader is waited for


class _Exchange(EventQueue):
    """One request stream on the client: response events queue here (the ``link`` of a
    :class:`ClientResponse`)."""

    def __init__(self, conn: _H3ClientConn, sid: int) -> None:
        EventQueue.__init__(self)
        self.conn = conn
        self.sid = sid
        self.head_seen = False
        self.done = False

    def push(self, ev: Any) -> None:
        self.events.append(ev)
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    async def next_event(self, read_timeout: Optional[float]) -> Any:
        ev = await self._next(read_timeout)
        if isinstance(ev, BaseException):
            raise ev
        return ev


class _H3ClientConn(QuicProtocol):
    """The HTTP/3 state of the client's QUIC connection to one origin."""

    def __init__(self) -> None:
        self.link: Any = None
        self.h3: Any = None
        self.exchanges: Dict[int, _Exchange] = {}
        self.error: Optional[BaseException] = None

    def connection_made(self, link: QuicLink) -> None:
        self.link = link
        self.h3 = H3Connection(link.quic)

    @property
    def alive(self) -> bool:
        return self.error is None and self.link is not None and not self.link.closed

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.error = ConnectionClosed(None, f"QUIC connection closed ({exc!r})" if exc
                                      else "QUIC connection closed")
        exchanges, self.exchanges = self.exchanges, {}
        for ex in exchanges.values():
            ex.fail(self.error)

    def quic_event(self, event: qe.QuicEvent) -> None:
        if type(event) is qe.StreamReset:
            ex = self.exchanges.pop(event.stream_id, None)
            if ex is not None:
                ex.fail(ConnectionClosed(event.error_code, "the server reset the stream"))
        for ev in self.h3.handle_event(event):
            ex = self.exchanges.get(ev.stream_id)
            if ex is None:
                continue
            if type(ev) is h3e.HeadersReceived:
                if not ex.head_seen:
                    status = 0
                    headers: List[Tuple[bytes, bytes]] = []
                    for k, v in ev.headers:
                        if k == b":status":
                            status = int(v)
                        elif k[:1] != b":":
                            headers.append((k, v))
                    if status < 200:
                        continue  # interim response
                    ex.head_seen = True
                    ex.push(Head(status, headers, http_version=b"3"))
                    if ev.stream_ended:
                        self._end(ex, ())
                else:  # trailers
                    self._end(ex, tuple(ev.headers))
            elif type(ev) is h3e.DataReceived:
                if ev.data:
                    ex.push(Data(ev.data))
                if ev.stream_ended:
                    self._end(ex, ())

    def _end(self, ex: _Exchange, trailers: Tuple[Tuple[bytes, bytes], ...]) -> None:
        ex.done = True
        self.exchanges.pop(ex.sid, None)
        if not ex.head_seen:
            ex.push(HTTPProtocolError(None, "the stream ended without a response"))
        else:
            ex.push(EndOfMessage(trailers))


class H3Client(ClientVerbs):
    """An HTTP/3 client (see the module documentation). Same request methods as
    :class:`~nbio.http.client.HttpClient` (``request``, ``get``, ``post``...), answering
    :class:`~nbio.http.client.ClientResponse` objects (``http_version`` ``"3"``).

    Options: ``verify``, ``cafile``, ``cadata``, ``server_name`` (TLS),
    ``configuration`` (an aioquic client ``QuicConfiguration`` used as a template),
    ``connect_timeout``, ``read_timeout``, ``timeout`` (total), ``headers`` sent with every
    request, ``engine`` (default: the loop's shared engine)."""

    def __init__(
        self,
        *,
        verify: bool = True,
        cafile: Optional[str] = None,
        cadata: Optional[bytes] = None,
        server_name: Optional[str] = None,
        configuration: Optional[QuicConfiguration] = None,
        connect_timeout: Optional[float] = 10.0,
        read_timeout: Optional[float] = 30.0,
        timeout: Optional[float] = None,
        headers: HeadersIn = None,
        engine: Any = None,
    ) -> None:
        self.verify = verify
        self.cafile = cafile
        self.cadata = cadata
        self.server_name = server_name
        self.configuration = configuration
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.timeout = timeout
        self.headers = _header_list(headers)
        self._engine = engine
        self._conns: Dict[Tuple[str, int], _H3ClientConn] = {}
        self._connecting: Dict[Tuple[str, int], asyncio.Future[_H3ClientConn]] = {}
        self._closed = False
        self.connections_opened = 0

    # -- public API -------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: HeadersIn = None,
        body: Body = None,
        json: Any = None,
        stream: bool = False,
        timeout: Optional[float] = ...,  # type: ignore[assignment]
        read_timeout: Optional[float] = ...,  # type: ignore[assignment]
    ) -> ClientResponse:
        """Send a request and return the response (body read unless ``stream``)."""
        if self._closed:
            raise ConnectionClosed(None, "the client is closed")
        total = self.timeout if timeout is ... else timeout
        rt = self.read_timeout if read_timeout is ... else read_timeout
        hdrs, body = request_body(headers, body, json)
        coro = self._exchange(method.upper().encode("ascii"), url, hdrs, body, stream, rt)
        return await within_total(coro, total)

    async def close(self) -> None:
        """Close every QUIC connection (H3_NO_ERROR)."""
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            if c.link is not None:
                c.link.close(ErrorCode.H3_NO_ERROR, "client closing")
                c.link.abort(None)

    async def __aenter__(self) -> H3Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- exchange ---------------------------------------------------------------------------

    async def _exchange(self, method: bytes, url: str, headers: List[Tuple[bytes, bytes]],
                        body: Body, stream: bool, read_timeout: Optional[float]
                        ) -> ClientResponse:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"HTTP/3 needs an https:// URL, not {url!r}")
        host, port = parts.hostname, parts.port or 443
        conn = await self._connection(host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2].encode("idna")
        fields = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", target.encode("latin-1")),
        ]
        for k, v in (*self.headers, *headers):
            k = k.lower()
            if k in (b"host", b"connection", b"transfer-encoding", b"keep-alive", b"upgrade"):
                continue
            fields.append((k, v))
        link = conn.link
        quic = link.quic
        sid = quic.get_next_available_stream_id()
        ex = _Exchange(conn, sid)
        conn.exchanges[sid] = ex
        try:
            if body is None or isinstance(body, (bytes, bytearray, memoryview)):
                if body:
                    fields.append((b"content-length", b"%d" % len(body)))
                conn.h3.send_headers(sid, fields, end_stream=not body)
                if body:
                    conn.h3.send_data(sid, bytes(body), end_stream=True)
                link.transmit_soon()
            else:
                conn.h3.send_headers(sid, fields)
                link.transmit_soon()
                if hasattr(body, "__aiter__"):
                    async for chunk in body:  # type: ignore[union-attr]
                        await self._send_chunk(conn, ex, chunk)
                else:
                    for chunk in body:  # type: ignore[union-attr]
                        await self._send_chunk(conn, ex, chunk)
                conn.h3.send_data(sid, b"", end_stream=True)
                link.transmit_soon()
            while True:
                ev = await ex.next_event(read_timeout)
                if type(ev) is Head:
                    break
            resp = ClientResponse(ev, url, self, ex, read_timeout)  # type: ignore[arg-type]
        except BaseException:
            self._release(ex, False)
            raise
        if not stream:
            await resp.read()
        return resp

    async def _send_chunk(self, conn: _H3ClientConn, ex: _Exchange, chunk: Any) -> None:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if ex.error is not None:
            raise ex.error
        if chunk:
            conn.h3.send_data(ex.sid, bytes(chunk), end_stream=False)
            conn.link.transmit_soon()
            await conn.link.drain(ex.sid)

    def _release(self, ex: Any, complete: bool) -> None:
        """ClientResponse's hook: the response was read to the end, or abandoned."""
        if complete or ex.done or ex.error is not None:
            return
        conn = ex.conn
        conn.exchanges.pop(ex.sid, None)
        ex.done = True
        link = conn.link
        if link is not None and not link.closed:
            try:
                link.quic.stop_stream(ex.sid, ErrorCode.H3_REQUEST_CANCELLED)
                link.quic.reset_stream(ex.sid, ErrorCode.H3_REQUEST_CANCELLED)
            except Exception:
                pass
            link.transmit_soon()

    # -- connections ------------------------------------------------------------------------

    def _config(self, host: str) -> QuicConfiguration:
        base = self.configuration
        if base is not None:
            config = QuicConfiguration(**{**vars(base), "is_client": True})
        else:
            config = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN))
        if not self.verify:
            config.verify_mode = _ssl.CERT_NONE
        if self.cafile or self.cadata:
            config.load_verify_locations(cafile=self.cafile, cadata=self.cadata)
        config.server_name = self.server_name or host
        return config

    async def _connection(self, host: str, port: int) -> _H3ClientConn:
        key = (host, port)
        conn = self._conns.get(key)
        if conn is not None and conn.alive:
            return conn
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_H3ClientConn] = asyncio.get_running_loop().create_future()
        self._connecting[key] = fut
        try:
            conn = _H3ClientConn()
            await connect_quic(host, port, self._config(host), conn, engine=self._engine,
                               timeout=self.connect_timeout)
            self.connections_opened += 1
            self._conns[key] = conn
            fut.set_result(conn)
            return conn
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            del self._connecting[key]

"""HTTP/1.1 client on the nbio engine: a connection pool per origin, keep-alive, chunked and
streaming bodies both ways, timeouts, redirects and HTTP CONNECT proxies.

::

    async with HttpClient() as client:
        resp = await client.get("http://127.0.0.1:8000/items?id=1")
        print(resp.status, resp.header("content-type"), resp.text())
        resp = await client.post(url, body=b"...", headers={"content-type": "text/plain"})
        async with await client.request("GET", url, stream=True) as resp:
            async for chunk in resp.iter_bytes():
                ...

Bodies: ``bytes``/``str`` (Content-Length), ``json=`` (encoded, with its content type), or
an (async) iterable of chunks (sent chunked, with backpressure). Responses are read whole
unless ``stream=True``; a streamed response must be read to the end or closed
(``aclose()`` / ``async with``), which returns its connection to the pool.

Timeouts raise :class:`nbio.errors.DeadlineExceeded` (a ``TimeoutError``) with ``kind``
``"connect"``, ``"read"`` (no byte for that long while waiting for the response) or
``"total"`` (the whole exchange, redirects included, until the response is read).
Redirects (301, 302, 303, 307, 308) are followed up to ``max_redirects``
(:class:`TooManyRedirects` beyond); 301-303 turn the request into a GET without body
(except HEAD), 307/308 resend it (only with a replayable body). With ``proxy="http://host:port"``
every connection is tunnelled through the proxy with CONNECT (``http://`` URLs only).

``https://`` URLs are TLS on the engine: the certificate and host name are verified by default
(``ssl=`` takes your own :class:`ssl.SSLContext`, e.g. one trusting a private CA), the SNI is
the URL's host, and ALPN offers ``h2`` and ``http/1.1``. Pools are per scheme, host and port.

HTTP/2 (``http2=True``, the default): when the server picks ``h2`` in ALPN, every request to
that origin shares ONE connection (multiplexed streams, see :mod:`nbio.http.h2_client`);
otherwise HTTP/1.1 as above. ``http2_prior_knowledge=True`` speaks HTTP/2 to ``http://``
origins directly (h2c). Responses look the same either way (``http_version`` is ``"2"``).
A stream the server resets fails with :class:`nbio.errors.StreamReset`; requests the server
did not process (GOAWAY, REFUSED_STREAM) are sent again on a new connection.

Pooled connections' health: an HTTP/1.1 connection idle in the pool for ``keepalive_expiry``
seconds (5 by default, as httpx) is closed by the engine's idle deadline and never reused; an
HTTP/2 connection without open streams for that long is closed with GOAWAY. A pooled
connection the server closes leaves the pool as soon as the close arrives. With
``http2_ping_interval``, an HTTP/2 connection that receives nothing for that long is sent a
PING, and if nothing arrives within ``http2_ping_timeout`` it fails with
:class:`nbio.errors.ConnectionLost` (requests in flight on it too; new requests get a new
connection), as grpc's keepalive_time / keepalive_timeout.
"""

from __future__ import annotations

import asyncio
import json as _json
import ssl as _ssl
import time
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import urljoin, urlsplit

from nbio.engine import Handler, get_engine
from nbio.errors import (
    ConnectionClosed,
    DeadlineExceeded,
    HTTPProtocolError,
    ProtocolError,
    RequestNotProcessed,
)
from nbio.http._events import EventQueue
from nbio.http.h1 import ClientConnection, Data, EndOfMessage, Response
from nbio.http.h2_client import H2ClientConnection, H2Stream, request_headers

__all__ = ["ClientResponse", "HttpClient", "TooManyRedirects"]

HeadersIn = Union[Mapping[str, str], Sequence[Tuple[Union[str, bytes], Union[str, bytes]]], None]
Body = Union[bytes, bytearray, memoryview, str, AsyncIterable[bytes], Iterable[bytes], None]

_REDIRECTS = (301, 302, 303, 307, 308)
_PORTS = {"http": 80, "https": 443}
_IDEMPOTENT = (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE")
_PAUSE_AT = 1 << 18  # body bytes buffered before reading pauses (streamed responses)
_H2_RETRIES = 3  # sends of a request the server did not process (GOAWAY, REFUSED_STREAM)


class TooManyRedirects(ProtocolError):
    """More redirects than ``max_redirects``."""


# ---------------------------------------------------------------------------------------------
# One pooled connection
# ---------------------------------------------------------------------------------------------


class _Link(Handler):
    """Engine handler of one client connection: ``on_open`` makes its session (HTTP/1.1 or
    HTTP/2, as ALPN decided) with ``make(conn)``; events go to ``conn.session``."""

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make

    def on_open(self, conn: Any) -> None:
        conn.session = self.make(conn)

    def on_data(self, conn: Any, data: Any) -> None:
        conn.session.feed(data)

    def on_eof(self, conn: Any) -> bool:
        conn.session.eof()
        return False

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        session = conn.session
        if session is not None:
            session.lost(exc)


Origin = Tuple[str, str, int]  # scheme, host, port


class _ClientConn(EventQueue):
    """An engine connection speaking HTTP/1.1 to one origin (maybe through a tunnel)."""

    def __init__(self, origin: Origin, max_body_size: Optional[int]) -> None:
        EventQueue.__init__(self)
        self.origin = origin
        self.conn: Any = None
        self.h1 = ClientConnection(max_body_size=max_body_size)
        self.buffered = 0
        self.paused = False
        self.used = 0
        self.idle_since = 0.0  # time.monotonic() when it went into the pool
        self.on_lost: Optional[Callable[[_ClientConn], None]] = None

    # -- engine side ----------------------------------------------------------------------

    def feed(self, data: Any) -> None:
        events = self.h1.receive_data(data)
        if events:
            self._push(events)

    def eof(self) -> None:
        events = self.h1.receive_eof()
        if events:
            self._push(events)
        self.lost(None)

    def lost(self, exc: Optional[BaseException]) -> None:
        if self.error is None:
            self.error = ConnectionClosed(None, f"connection closed ({exc!r})" if exc
                                          else "connection closed by the server")
            if self.on_lost is not None:
                self.on_lost(self)
        self._wake()

    def _push(self, events: List[Any]) -> None:
        for ev in events:
            if type(ev) is Data:
                self.buffered += len(ev.data)
        self.events.extend(events)
        if self.buffered > _PAUSE_AT and not self.paused and self.conn is not None:
            self.paused = True
            self.conn.pause_reading()
        self._wake()

    # -- client side ----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.error is None and self.conn is not None and not self.conn.closed

    async def next_event(self, read_timeout: Optional[float]) -> Any:
        ev = await self._next(read_timeout)
        if type(ev) is Data:
            self.buffered -= len(ev.data)
            if self.paused and self.buffered < _PAUSE_AT // 2 and self.conn is not None:
                self.paused = False
                self.conn.resume_reading()
        elif isinstance(ev, HTTPProtocolError):
            raise ev
        return ev

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.abort()
        self.h1.close()


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


class ClientResponse:
    """A response: ``status``, ``reason``, ``headers`` (list of lowercased-name, value bytes
    pairs), ``http_version``, ``url``, ``history`` (the redirect responses before it),
    ``trailers``; the body with :meth:`read` / :attr:`content` / :meth:`text` /
    :meth:`json`, or streamed with :meth:`iter_bytes`."""

    def __init__(self, head: Response, url: str, client: HttpClient,
                 link: Union[_ClientConn, H2Stream], read_timeout: Optional[float]) -> None:
        self.status = head.status
        self.reason = head.reason.decode("latin-1")
        self.headers = head.headers
        self.http_version = head.http_version.decode("latin-1")
        self.url = url
        self.history: List[ClientResponse] = []
        self.trailers: Tuple[Tuple[bytes, bytes], ...] = ()
        self._client = client
        self._link: Optional[Union[_ClientConn, H2Stream]] = link
        self._read_timeout = read_timeout
        self._body: Optional[bytes] = None
        self._streamed = False

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status} {self.url}>"

    def header(self, name: Union[str, bytes], default: Optional[str] = None) -> Optional[str]:
        """First value of header ``name`` (case-insensitive) as str, or ``default``."""
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return default

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives (once)."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        if self._streamed:
            raise RuntimeError("the body was already streamed")
        self._streamed = True
        link = self._link
        if link is None:
            return
        ok = False
        try:
            while True:
                ev = await link.next_event(self._read_timeout)
                if type(ev) is Data:
                    yield ev.data
                elif type(ev) is EndOfMessage:
                    self.trailers = ev.trailers
                    ok = True
                    return
        finally:
            self._link = None
            self._client._release(link, ok)

    async def read(self) -> bytes:
        """The whole body."""
        if self._body is None:
            chunks = [c async for c in self.iter_bytes()]
            self._body = b"".join(chunks)
        return self._body

    @property
    def content(self) -> bytes:
        """The body (after :meth:`read`; responses not streamed are read already)."""
        if self._body is None:
            raise RuntimeError("the body has not been read: await response.read()")
        return self._body

    def text(self, encoding: Optional[str] = None) -> str:
        """The body decoded (charset from Content-Type, else UTF-8)."""
        if encoding is None:
            ctype = self.header("content-type") or ""
            encoding = "utf-8"
            for part in ctype.split(";")[1:]:
                k, _, v = part.strip().partition("=")
                if k.lower() == "charset" and v:
                    encoding = v.strip('"')
        return self.content.decode(encoding, "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.content)

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was read to the end, else
        closed."""
        link = self._link
        if link is not None:
            self._link = None
            self._client._release(link, False)

    async def __aenter__(self) -> ClientResponse:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


def _header_list(headers: HeadersIn) -> List[Tuple[bytes, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k.encode("latin-1") if isinstance(k, str) else bytes(k),
             v.encode("latin-1") if isinstance(v, str) else bytes(v)) for k, v in items]


def request_body(
    headers: HeadersIn, body: Body, json: Any
) -> Tuple[List[Tuple[bytes, bytes]], Body]:
    """The request's header list and body: ``json`` (if given) becomes the body, with
    ``content-type: application/json`` unless set; a ``str`` body is UTF-8."""
    hdrs = _header_list(headers)
    if json is not None:
        body = _json.dumps(json, separators=(",", ":")).encode()
        if not any(k.lower() == b"content-type" for k, _ in hdrs):
            hdrs.append((b"content-type", b"application/json"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    return hdrs, body


async def within_total(coro: Any, total: Optional[float]) -> Any:
    """Await ``coro``; past ``total`` seconds (None: no limit) raise
    ``DeadlineExceeded("total")``."""
    if total is None:
        return await coro
    try:
        return await asyncio.wait_for(coro, total)
    except asyncio.TimeoutError:
        raise DeadlineExceeded("total") from None


class ClientVerbs:
    """``get``/``head``/``post``/``put``/``patch``/``delete`` shortcuts of ``request``."""

    request: Callable[..., Awaitable[ClientResponse]]

    async def get(self, url: str, **kw: Any) -> ClientResponse:
        return await self.request("GET", url, **kw)

    async def head(self, url: str, **kw: Any) -> ClientResponse:
        return await self.request("HEAD", url, **kw)

    async def post(self, url: str, **kw: Any) -> ClientResponse:
        return await self.request("POST", url, **kw)

    async def put(self, url: str, **kw: Any) -> ClientResponse:
        return await self.request("PUT", url, **kw)

    async def patch(self, url: str, **kw: Any) -> ClientResponse:
        return await self.request("PATCH", url, **kw)

    async def delete(self, url: str, **kw: Any) -> ClientResponse:
        return await self.request("DELETE", url, **kw)


class HttpClient(ClientVerbs):
    """An HTTP/1.1 client with a connection pool per origin (see the module documentation).

    ``max_connections`` per origin; ``connect_timeout``, ``read_timeout``, ``timeout``
    (total) in seconds (None: no limit); ``follow_redirects``, ``max_redirects``;
    ``proxy``: ``"http://host:port"`` for CONNECT tunnelling; ``headers`` sent with every
    request; ``max_body_size`` for responses; ``keep_alive`` to reuse connections;
    ``ssl``: the :class:`ssl.SSLContext` for ``https://`` (default: verifying; with
    ``http2`` its ALPN protocols are set to ``h2``, ``http/1.1``); ``http2``: use HTTP/2 when
    the server picks it in ALPN (one shared connection per origin; needs ``keep_alive``);
    ``http2_prior_knowledge``: HTTP/2 without negotiation to ``http://`` origins (h2c);
    ``keepalive_expiry``: seconds an idle pooled connection is kept (HTTP/1.1: idle in the
    pool; HTTP/2: without open streams, then closed with GOAWAY); None keeps them until the
    server closes them; ``http2_ping_interval``: seconds without anything received on an
    HTTP/2 connection before a PING is sent (None: no keepalive pings),
    ``http2_ping_timeout``: seconds after which, still with nothing received, the connection
    fails with :class:`~nbio.errors.ConnectionLost`;
    ``engine`` (default: the loop's shared engine)."""

    def __init__(
        self,
        *,
        max_connections: int = 10,
        connect_timeout: Optional[float] = 10.0,
        read_timeout: Optional[float] = 30.0,
        timeout: Optional[float] = None,
        follow_redirects: bool = True,
        max_redirects: int = 10,
        proxy: Optional[str] = None,
        headers: HeadersIn = None,
        max_body_size: Optional[int] = None,
        keep_alive: bool = True,
        ssl: Optional[_ssl.SSLContext] = None,
        http2: bool = True,
        http2_prior_knowledge: bool = False,
        keepalive_expiry: Optional[float] = 5.0,
        http2_ping_interval: Optional[float] = None,
        http2_ping_timeout: float = 20.0,
        engine: Any = None,
    ) -> None:
        for name, value in (("keepalive_expiry", keepalive_expiry),
                            ("http2_ping_interval", http2_ping_interval),
                            ("http2_ping_timeout", http2_ping_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.proxy: Optional[Tuple[str, int]] = None
        if proxy is not None:
            p = urlsplit(proxy)
            if p.scheme != "http" or not p.hostname:
                raise ValueError(f"unsupported proxy {proxy!r} (expected http://host:port)")
            self.proxy = (p.hostname, p.port or 8080)
        self.headers = _header_list(headers)
        self.max_body_size = max_body_size
        self.keep_alive = keep_alive
        self.http2 = http2 and keep_alive
        self.http2_prior_knowledge = http2_prior_knowledge
        self.keepalive_expiry = keepalive_expiry
        self.http2_ping_interval = http2_ping_interval
        self.http2_ping_timeout = http2_ping_timeout
        self._engine = engine
        self._ssl = ssl
        self._ssl_alpn_set = False
        self._h2: Dict[Origin, H2ClientConnection] = {}
        self._h2_pending: Dict[Origin, asyncio.Future[None]] = {}
        self._h1_only: set[Origin] = set()
        self._idle: Dict[Origin, List[_ClientConn]] = {}
        self._slots: Dict[Origin, asyncio.Semaphore] = {}
        self._busy: set[_ClientConn] = set()
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
        follow_redirects: Optional[bool] = None,
    ) -> ClientResponse:
        """Send a request and return the response (body read unless ``stream``)."""
        if self._closed:
            raise ConnectionClosed(None, "the client is closed")
        total = self.timeout if timeout is ... else timeout
        rt = self.read_timeout if read_timeout is ... else read_timeout
        hdrs, body = request_body(headers, body, json)
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        coro = self._exchange(method.upper().encode("ascii"), url, hdrs, body, stream, rt,
                              follow)
        return await within_total(coro, total)

    async def close(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        idle = [link for links in self._idle.values() for link in links]
        self._idle.clear()
        for link in idle:
            link.close()
        for link in list(self._busy):
            link.close()
        self._busy.clear()
        for h2c in list(self._h2.values()):
            h2c.close()
        self._h2.clear()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- exchange -----------------------------------------------------------------------------

    async def _exchange(self, method: bytes, url: str, headers: List[Tuple[bytes, bytes]],
                        body: Body, stream: bool, read_timeout: Optional[float],
                        follow: bool) -> ClientResponse:
        history: List[ClientResponse] = []
        while True:
            resp = await self._send_once(method, url, headers, body, read_timeout)
            location = resp.header("location")
            if not (follow and resp.status in _REDIRECTS and location):
                break
            await resp.read()  # drain it: the connection goes back to the pool
            history.append(resp)
            if len(history) > self.max_redirects:
                raise TooManyRedirects(f"more than {self.max_redirects} redirects")
            new_url = urljoin(url, location)
            if resp.status in (301, 302, 303) and method != b"HEAD":
                method, body = b"GET", None
                headers = [h for h in headers
                           if h[0].lower() not in (b"content-type", b"content-length",
                                                   b"transfer-encoding")]
            elif body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
                break  # 307/308 with a body we cannot replay: hand the redirect back
            if urlsplit(new_url)[:2] != urlsplit(url)[:2]:
                headers = [h for h in headers if h[0].lower() not in (b"authorization",
                                                                      b"cookie")]
            url = new_url
        resp.history = history
        if not stream:
            await resp.read()
        return resp

    async def _send_once(self, method: bytes, url: str, headers: List[Tuple[bytes, bytes]],
                         body: Body, read_timeout: Optional[float]) -> ClientResponse:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in _PORTS:
            raise ValueError(f"unsupported URL scheme in {url!r} (http:// or https://)")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        if scheme == "https" and self.proxy is not None:
            raise ValueError("https:// through a proxy is not supported")
        host, port = parts.hostname, parts.port or _PORTS[scheme]
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rpartition("@")[2].encode("idna")
        all_headers = [(b"host", host_header), *self.headers, *headers]
        if not self.keep_alive:
            all_headers.append((b"connection", b"close"))
        origin = (scheme, host, port)
        replayable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        attempt = 0
        while True:
            attempt += 1
            link, reused = await self._acquire(origin)
            if isinstance(link, H2ClientConnection):
                try:
                    return await self._send_h2(link, method, scheme, target, all_headers, body,
                                               url, read_timeout)
                except RequestNotProcessed:
                    # GOAWAY or REFUSED_STREAM: the server never saw it; on a new connection
                    if replayable and attempt <= _H2_RETRIES:
                        continue
                    raise
            try:
                await self._write_request(link, method, target, all_headers, body)
                while True:
                    ev = await link.next_event(read_timeout)
                    if type(ev) is Response and ev.status >= 200:
                        break
                return ClientResponse(ev, url, self, link, read_timeout)
            except ConnectionClosed:
                self._release(link, False)
                # a kept-alive connection the server had closed: once more on a new one
                if (attempt == 1 and reused and replayable and method in _IDEMPOTENT
                        and not link.h1.response_complete):
                    continue
                raise
            except BaseException:
                self._release(link, False)
                raise

    async def _send_h2(self, h2c: H2ClientConnection, method: bytes, scheme: str, target: str,
                       headers: List[Tuple[bytes, bytes]], body: Body, url: str,
                       read_timeout: Optional[float]) -> ClientResponse:
        """One exchange on a stream of the shared HTTP/2 connection."""
        sized = body is None or isinstance(body, (bytes, bytearray, memoryview))
        length = (0 if body is None else len(body)) if sized else None  # type: ignore[arg-type]
        stream = await h2c.open_stream(request_headers(method, scheme, target, headers, length),
                                       end_stream=sized and not length)
        try:
            if sized:
                if length:
                    await h2c.send_body(stream, body, True)
            else:
                async for chunk in _chunks(body):
                    await h2c.send_body(stream, chunk, False)
                await h2c.send_body(stream, b"", True)
            while True:
                ev = await stream.next_event(read_timeout)
                if type(ev) is Response and ev.status >= 200:
                    return ClientResponse(ev, url, self, stream, read_timeout)
        except BaseException:
            stream.release(False)
            raise

    async def _write_request(self, link: _ClientConn, method: bytes, target: str,
                             headers: List[Tuple[bytes, bytes]], body: Body) -> None:
        conn = link.conn
        h1 = link.h1
        if body is None or isinstance(body, (bytes, bytearray, memoryview)):
            conn.write(h1.send_request(method, target, headers, body))
            return
        conn.write(h1.send_request(method, target, headers, stream=True))
        async for chunk in _chunks(body):
            if link.error is not None:
                raise link.error
            data = h1.send_data(chunk)
            if data:
                conn.write(data)
                await conn.drain()
        conn.write(h1.end_request())

    # -- pool ---------------------------------------------------------------------------------

    def _h2_possible(self, origin: Origin) -> bool:
        if origin in self._h1_only:
            return False
        if origin[0] == "https":
            return self.http2
        return self.http2_prior_knowledge

    async def _acquire(self, origin: Origin) -> Tuple[Union[_ClientConn, H2ClientConnection],
                                                      bool]:
        h2_possible = self._h2_possible(origin)
        while h2_possible:
            h2c = self._h2.get(origin)
            if h2c is not None and h2c.usable:
                return h2c, True
            pending = self._h2_pending.get(origin)
            if pending is None:
                break
            # the connection being opened to this origin may be HTTP/2: share it
            await asyncio.shield(pending)
            h2_possible = self._h2_possible(origin)
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self.max_connections)
        await slots.acquire()
        pending = None
        try:
            idle = self._idle.get(origin)
            while idle:
                link = idle.pop()
                if link.alive and link.h1.reusable and not link.events and not self._expired(link):
                    if self.keepalive_expiry is not None:
                        link.conn.set_idle_timeout(None)
                    self._busy.add(link)
                    link.used += 1
                    return link, True
                link.close()
            if h2_possible and origin not in self._h2_pending:
                pending = self._h2_pending[origin] = asyncio.get_running_loop().create_future()
            new = await self._connect(origin)
        except BaseException:
            slots.release()
            raise
        finally:
            if pending is not None:
                del self._h2_pending[origin]
                pending.set_result(None)
        if isinstance(new, H2ClientConnection):
            self._h2[origin] = new  # holds its slot until it is gone (_h2_gone)
            return new, False
        if h2_possible:
            self._h1_only.add(origin)  # the server chose HTTP/1.1
        self._busy.add(new)
        new.used = 1
        return new, False

    async def _connect(self, origin: Origin) -> Union[_ClientConn, H2ClientConnection]:
        engine = self._engine or get_engine()
        tunnel = self.proxy is not None
        prior = origin[0] == "http" and self.http2_prior_knowledge

        def make(conn: Any) -> Union[_ClientConn, H2ClientConnection]:
            if not tunnel and (prior or (origin[0] == "https" and self.http2 and
                                         conn.selected_alpn_protocol() == "h2")):
                return self._new_h2(conn, origin)
            link = _ClientConn(origin, self.max_body_size)
            link.conn = conn
            link.on_lost = self._h1_lost
            return link

        try:
            if origin[0] == "https":
                conn = await engine.dial(_Link(make), origin[1], origin[2],
                                         ssl=self._ssl_context(),
                                         timeout=self.connect_timeout,
                                         ssl_handshake_timeout=self.connect_timeout or 60.0)
            else:
                target = self.proxy or origin[1:]
                conn = await engine.dial(_Link(make), target[0], target[1],
                                         timeout=self.connect_timeout)
        except TimeoutError:
            raise DeadlineExceeded("connect") from None
        self.connections_opened += 1
        link = conn.session
        if tunnel:
            await self._tunnel(link, origin)
            if prior:  # h2c inside the tunnel
                leftover = link.h1.trailing_data
                link = conn.session = self._new_h2(conn, origin)
                if leftover:
                    link.feed(leftover)
        return link

    def _new_h2(self, conn: Any, origin: Origin) -> H2ClientConnection:
        return H2ClientConnection(conn, origin, max_body_size=self.max_body_size,
                                  on_gone=self._h2_gone, idle_timeout=self.keepalive_expiry,
                                  ping_interval=self.http2_ping_interval,
                                  ping_timeout=self.http2_ping_timeout)

    def _expired(self, link: _ClientConn) -> bool:
        """Idle in the pool longer than ``keepalive_expiry`` (the engine's idle deadline
        closes it on its timer tick; this catches one picked just before that tick)."""
        expiry = self.keepalive_expiry
        return expiry is not None and time.monotonic() - link.idle_since >= expiry

    def _h1_lost(self, link: _ClientConn) -> None:
        """An HTTP/1.1 connection closed (by the server, the idle deadline or an error): out
        of the pool if it is idle there."""
        idle = self._idle.get(link.origin)
        if idle and link in idle:
            idle.remove(link)

    def _h2_gone(self, h2c: H2ClientConnection) -> None:
        """An HTTP/2 connection takes no more requests: out of the pool, its slot free."""
        if self._h2.get(h2c.origin) is h2c:
            del self._h2[h2c.origin]
        slots = self._slots.get(h2c.origin)
        if slots is not None:
            slots.release()

    def _ssl_context(self) -> _ssl.SSLContext:
        ctx = self._ssl
        if ctx is None:
            ctx = self._ssl = _ssl.create_default_context(_ssl.Purpose.SERVER_AUTH)
            ctx.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
            self._ssl_alpn_set = True
        elif self.http2 and not self._ssl_alpn_set:
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            self._ssl_alpn_set = True
        return ctx

    async def _tunnel(self, link: _ClientConn, origin: Origin) -> None:
        """CONNECT through the proxy, then speak HTTP to the origin in the tunnel."""
        authority = f"{origin[1]}:{origin[2]}".encode("idna")
        h1 = link.h1
        link.conn.write(h1.send_request(b"CONNECT", authority, [(b"host", authority)]))
        try:
            while True:
                ev = await link.next_event(self.connect_timeout)
                if type(ev) is Response and ev.status >= 200:
                    break
            if not 200 <= ev.status < 300:
                raise HTTPProtocolError(None, f"proxy refused CONNECT: {ev.status}")
            while link.events:  # the EndOfMessage of the CONNECT response
                link.events.popleft()
        except BaseException:
            link.close()
            raise
        leftover = h1.trailing_data
        link.h1 = ClientConnection(max_body_size=self.max_body_size)
        if leftover:
            link.feed(leftover)

    def _release(self, link: Union[_ClientConn, H2Stream], reusable: bool) -> None:
        if type(link) is H2Stream:
            link.release(reusable)
            return
        if link not in self._busy:
            return
        self._busy.discard(link)
        slots = self._slots.get(link.origin)
        if slots is not None:
            slots.release()
        if reusable and self.keep_alive and not self._closed and link.alive \
                and link.h1.reusable:
            link.idle_since = time.monotonic()
            if self.keepalive_expiry is not None:
                link.conn.set_idle_timeout(self.keepalive_expiry)
            self._idle.setdefault(link.origin, []).append(link)
        else:
            link.close()


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    """The chunks of a streamed request body ((async) iterable of bytes or str)."""
    if hasattr(body, "__aiter__"):
        async for chunk in body:
            yield chunk.encode("utf-8") if isinstance(chunk, str) else chunk
    else:
        for chunk in body:
            yield chunk.encode("utf-8") if isinstance(chunk, str) else chunk

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
the URL's host, and ALPN offers ``http/1.1``. Pools are per scheme, host and port.
"""

from __future__ import annotations

import asyncio
import json as _json
import ssl as _ssl
from collections import deque
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Deque,
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
from nbio.errors import ConnectionClosed, DeadlineExceeded, HTTPProtocolError, ProtocolError
from nbio.http.h1 import ClientConnection, Data, EndOfMessage, Response

__all__ = ["ClientResponse", "HttpClient", "TooManyRedirects"]

HeadersIn = Union[Mapping[str, str], Sequence[Tuple[Union[str, bytes], Union[str, bytes]]], None]
Body = Union[bytes, bytearray, memoryview, str, AsyncIterable[bytes], Iterable[bytes], None]

_REDIRECTS = (301, 302, 303, 307, 308)
_PORTS = {"http": 80, "https": 443}
_IDEMPOTENT = (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE")
_PAUSE_AT = 1 << 18  # body bytes buffered before reading pauses (streamed responses)


class TooManyRedirects(ProtocolError):
    """More redirects than ``max_redirects``."""


# ---------------------------------------------------------------------------------------------
# One pooled connection
# ---------------------------------------------------------------------------------------------


class _Link(Handler):
    """Engine handler shared by every client connection: events go to ``conn.session``."""

    def on_data(self, conn: Any, data: Any) -> None:
        conn.session.feed(data)

    def on_eof(self, conn: Any) -> bool:
        conn.session.eof()
        return False

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        session = conn.session
        if isinstance(session, _ClientConn):
            session.lost(exc)


_LINK = _Link()


Origin = Tuple[str, str, int]  # scheme, host, port


class _ClientConn:
    """An engine connection speaking HTTP/1.1 to one origin (maybe through a tunnel)."""

    def __init__(self, origin: Origin, max_body_size: Optional[int]) -> None:
        self.origin = origin
        self.conn: Any = None
        self.h1 = ClientConnection(max_body_size=max_body_size)
        self.events: Deque[Any] = deque()
        self.buffered = 0
        self.paused = False
        self.waiter: Optional[asyncio.Future[None]] = None
        self.error: Optional[BaseException] = None
        self.used = 0

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

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    # -- client side ----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.error is None and self.conn is not None and not self.conn.closed

    async def next_event(self, read_timeout: Optional[float]) -> Any:
        while not self.events:
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, read_timeout)
            except asyncio.TimeoutError:
                raise DeadlineExceeded("read") from None
        ev = self.events.popleft()
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

    def __init__(self, head: Response, url: str, client: HttpClient, link: _ClientConn,
                 read_timeout: Optional[float]) -> None:
        self.status = head.status
        self.reason = head.reason.decode("latin-1")
        self.headers = head.headers
        self.http_version = head.http_version.decode("latin-1")
        self.url = url
        self.history: List[ClientResponse] = []
        self.trailers: Tuple[Tuple[bytes, bytes], ...] = ()
        self._client = client
        self._link: Optional[_ClientConn] = link
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


class HttpClient:
    """An HTTP/1.1 client with a connection pool per origin (see the module documentation).

    ``max_connections`` per origin; ``connect_timeout``, ``read_timeout``, ``timeout``
    (total) in seconds (None: no limit); ``follow_redirects``, ``max_redirects``;
    ``proxy``: ``"http://host:port"`` for CONNECT tunnelling; ``headers`` sent with every
    request; ``max_body_size`` for responses; ``keep_alive`` to reuse connections;
    ``ssl``: the :class:`ssl.SSLContext` for ``https://`` (default: verifying, ALPN
    ``http/1.1``); ``engine`` (default: the loop's shared engine)."""

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
        engine: Any = None,
    ) -> None:
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
        self._engine = engine
        self._ssl = ssl
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
        hdrs = _header_list(headers)
        if json is not None:
            body = _json.dumps(json, separators=(",", ":")).encode()
            if not any(k.lower() == b"content-type" for k, _ in hdrs):
                hdrs.append((b"content-type", b"application/json"))
        if isinstance(body, str):
            body = body.encode("utf-8")
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        coro = self._exchange(method.upper().encode("ascii"), url, hdrs, body, stream, rt,
                              follow)
        if total is None:
            return await coro
        try:
            return await asyncio.wait_for(coro, total)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("total") from None

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

    async def close(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        for links in self._idle.values():
            for link in links:
                link.close()
        self._idle.clear()
        for link in list(self._busy):
            link.close()
        self._busy.clear()

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
        for attempt in (0, 1):
            link, reused = await self._acquire(origin)
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
                if (attempt == 0 and reused and replayable and method in _IDEMPOTENT
                        and not link.h1.response_complete):
                    continue
                raise
            except BaseException:
                self._release(link, False)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write_request(self, link: _ClientConn, method: bytes, target: str,
                             headers: List[Tuple[bytes, bytes]], body: Body) -> None:
        conn = link.conn
        h1 = link.h1
        if body is None or isinstance(body, (bytes, bytearray, memoryview)):
            conn.write(h1.send_request(method, target, headers, body))
            return
        conn.write(h1.send_request(method, target, headers, stream=True))
        if hasattr(body, "__aiter__"):
            async for chunk in body:  # type: ignore[union-attr]
                await self._write_chunk(link, chunk)
        else:
            for chunk in body:  # type: ignore[union-attr]
                await self._write_chunk(link, chunk)
        conn.write(h1.end_request())

    async def _write_chunk(self, link: _ClientConn, chunk: Any) -> None:
        if isinstance(chunk, str):
            chunk = chunk.encode("utf-8")
        if link.error is not None:
            raise link.error
        data = link.h1.send_data(chunk)
        if data:
            link.conn.write(data)
            await link.conn.drain()

    # -- pool ---------------------------------------------------------------------------------

    async def _acquire(self, origin: Origin) -> Tuple[_ClientConn, bool]:
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self.max_connections)
        await slots.acquire()
        try:
            idle = self._idle.get(origin)
            while idle:
                link = idle.pop()
                if link.alive and link.h1.reusable and not link.events:
                    self._busy.add(link)
                    link.used += 1
                    return link, True
                link.close()
            link = await self._connect(origin)
        except BaseException:
            slots.release()
            raise
        self._busy.add(link)
        link.used = 1
        return link, False

    async def _connect(self, origin: Origin) -> _ClientConn:
        engine = self._engine or get_engine()
        link = _ClientConn(origin, self.max_body_size)
        try:
            if origin[0] == "https":
                conn = await engine.dial(_LINK, origin[1], origin[2], ssl=self._ssl_context(),
                                         timeout=self.connect_timeout,
                                         ssl_handshake_timeout=self.connect_timeout or 60.0)
            else:
                target = self.proxy or origin[1:]
                conn = await engine.dial(_LINK, target[0], target[1],
                                         timeout=self.connect_timeout)
        except TimeoutError:
            raise DeadlineExceeded("connect") from None
        conn.session = link
        link.conn = conn
        self.connections_opened += 1
        if self.proxy is not None:
            await self._tunnel(link, origin)
        return link

    def _ssl_context(self) -> _ssl.SSLContext:
        ctx = self._ssl
        if ctx is None:
            ctx = self._ssl = _ssl.create_default_context(_ssl.Purpose.SERVER_AUTH)
            ctx.set_alpn_protocols(["http/1.1"])
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

    def _release(self, link: _ClientConn, reusable: bool) -> None:
        if link not in self._busy:
            return
        self._busy.discard(link)
        slots = self._slots.get(link.origin)
        if slots is not None:
            slots.release()
        if reusable and self.keep_alive and not self._closed and link.alive \
                and link.h1.reusable:
            self._idle.setdefault(link.origin, []).append(link)
        else:
            link.close()

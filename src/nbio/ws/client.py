"""WebSocket client: ``async with nbio.ws.connect(url) as ws`` (``ws://``).

The opening handshake is written and its 101 response parsed by a small engine handler
(``nbio.http.h1.ClientConnection``); once validated, the connection is handed to the
WebSocket engine handler and bytes that came with the response are processed.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generator, Optional, Sequence, Union
from urllib.parse import urlsplit

from nbio.engine import get_engine
from nbio.errors import ClosedByPeer, ConnectionClosed
from nbio.http.h1 import ClientConnection, Response
from nbio.ws.connection import WebSocket, async_dispatch, wrap
from nbio.ws.deflate import DeflateConfig
from nbio.ws.handshake import (
    ClientRequest,
    HandshakeError,
    Headers,
    build_request,
    validate_response,
)

__all__ = ["CLIENT_DEFLATE", "connect"]

#: Default client offer: permessage-deflate, asking for the smallest-memory options the
#: server may grant (client_max_window_bits without a value lets the server choose).
CLIENT_DEFLATE = DeflateConfig()


def _parse_url(url: str) -> tuple[str, int, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r}")
    if parts.hostname is None:
        raise ValueError(f"no host in {url!r}")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL are not supported")
    host = parts.hostname
    default_port = 443 if parts.scheme == "wss" else 80
    port = parts.port or default_port
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    hosthdr = f"[{host}]" if ":" in host else host
    if port != default_port:
        hosthdr += f":{port}"
    return host, port, target, hosthdr


class _Handshake:
    """Engine handler of a client connection until its 101 response is validated."""

    def __init__(self, request: ClientRequest, future: asyncio.Future[Any], finish: Any) -> None:
        self.request = request
        self.future = future
        self.finish = finish
        self.http = ClientConnection(max_header_bytes=65536)

    def on_open(self, conn: Any) -> None:
        # let the HTTP client state machine know the request it is to parse a response for
        head = self.request.request.decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ")
        fields = [(n, v) for n, v in (line.split(": ", 1) for line in head[1:] if line)]
        conn.write(self.http.send_request(method, target, fields))

    def on_data(self, conn: Any, data: Any) -> None:
        if self.future.done():
            return
        for event in self.http.receive_data(data):
            if isinstance(event, Response):
                if event.status < 200 and event.status != 101:
                    continue  # other interim responses
                try:
                    accepted = validate_response(event.status, event.headers, self.request)
                except HandshakeError as exc:
                    exc.response_headers = event.headers  # type: ignore[attr-defined]
                    self._fail(conn, exc)
                    return
                # switch handlers now: frames may follow in the next read
                self.future.set_result(self.finish(conn, accepted, self.http.trailing_data))
                return
            if isinstance(event, Exception):
                self._fail(conn, HandshakeError(400, f"invalid HTTP response: {event}"))
                return

    def _fail(self, conn: Any, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
        conn.abort()

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        if not self.future.done():
            reason = "connection closed during the opening handshake"
            if exc is not None and not isinstance(exc, ClosedByPeer):
                reason += f": {exc!r}"
            self.future.set_exception(ConnectionClosed(None, reason))


class _Connect:
    """Awaitable / async context manager returned by :func:`connect`."""

    def __init__(self, coro_factory: Any) -> None:
        self._factory = coro_factory
        self._ws: Optional[WebSocket] = None

    def __await__(self) -> Generator[Any, None, WebSocket]:
        return self._factory().__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> WebSocket:
        self._ws = await self._factory()
        return self._ws

    async def __aexit__(self, *exc: Any) -> None:
        assert self._ws is not None
        await self._ws.close()


def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    extra_headers: Headers = (),
    origin: Optional[str] = None,
    open_timeout: Optional[float] = 10.0,
    compression: Union[str, DeflateConfig, None] = "deflate",
    max_size: Optional[int] = 1 << 20,
    max_queue: Optional[int] = 16,
    max_frame_size: int = 0,
    max_write_buffer: Optional[int] = 16 << 20,
    ping_interval: Optional[float] = 20.0,
    ping_timeout: Optional[float] = 20.0,
    close_timeout: float = 10.0,
    engine: Any = None,
    ssl: Any = None,
    server_hostname: Optional[str] = None,
) -> _Connect:
    """Open a WebSocket client connection to ``url`` (``ws://host[:port]/path``).

    Use ``async with connect(url) as ws:`` or ``ws = await connect(url)``. Options:
    ``subprotocols`` offered, ``extra_headers`` for the request, ``origin``,
    ``open_timeout`` (TCP connect + handshake; TimeoutError), ``compression``
    (``"deflate"``: offer permessage-deflate; a DeflateConfig; None), ``max_size`` (largest
    message received), and as for the server ``max_queue``, ``max_frame_size``,
    ``max_write_buffer``, ``ping_interval`` / ``ping_timeout``, ``close_timeout``.
    ``wss://`` URLs use TLS: ``ssl`` is a client :class:`ssl.SSLContext` (default: a
    verifying one) and ``server_hostname`` overrides the name sent and checked.
    Raises :class:`~nbio.ws.handshake.HandshakeError` when the server refuses the
    upgrade (``status`` is its HTTP status).
    """
    if compression == "deflate":
        deflate: Optional[DeflateConfig] = CLIENT_DEFLATE
    elif compression is None or isinstance(compression, DeflateConfig):
        deflate = compression
    else:
        raise ValueError(f"unsupported compression {compression!r}")
    host, port, target, hosthdr = _parse_url(url)
    request = build_request(
        hosthdr,
        target,
        subprotocols=subprotocols,
        deflate=deflate,
        origin=origin,
        extra_headers=extra_headers,
    )
    dispatch = async_dispatch(
        is_client=True,
        max_frame_size=max_frame_size,
        max_write_buffer=max_write_buffer,
        close_timeout=close_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )

    async def open_() -> WebSocket:
        eng = engine or get_engine()
        future: asyncio.Future[Any] = eng.loop.create_future()

        def finish(c: Any, accepted: Any, leftover: bytes) -> WebSocket:
            return wrap(
                dispatch,
                c,
                leftover,
                max_size=max_size,
                deflate=accepted.deflate,
                subprotocol=accepted.subprotocol,
                max_queue=max_queue,
            )

        handshake = _Handshake(request, future, finish)
        conn = None

        async def run() -> WebSocket:
            nonlocal conn
            if url.startswith("wss:"):
                conn = await eng.dial(
                    handshake, host, port, ssl=ssl if ssl is not None else True,
                    server_hostname=server_hostname or host,
                )
            else:
                conn = await eng.dial(handshake, host, port)
            return await future  # type: ignore[no-any-return]

        try:
            return await asyncio.wait_for(run(), open_timeout)
        except asyncio.TimeoutError:
            if conn is not None:
                conn.abort()
            raise TimeoutError(f"WebSocket opening handshake with {url} timed out") from None
        except BaseException:
            if conn is not None and not conn.closed:
                conn.abort()
            raise

    return _Connect(open_)

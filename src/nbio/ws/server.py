"""WebSocket server side: the upgrade handler (both APIs), ``adopt``, ``serve``, ``broadcast``.

:class:`WebSocketUpgrader` is what the nbio HTTP server calls for an upgrade request
(``upgrade(conn, request, leftover) -> bool``). It validates the handshake (RFC 6455 section
4.2, RFC 7692 negotiation), writes the 101 (or the error response and closes), then hands
the connection to the WebSocket engine handler. Two APIs:

* callbacks (no task, future or buffer per connection; the way to hold many sockets)::

      class Chat:
          def on_open(self, ws): ...
          def on_message(self, ws, data, is_text): ws.send(data)
          def on_close(self, ws, code, reason): ...

      upgrader = WebSocketUpgrader(Chat())

* async, like ``websockets``: ``WebSocketUpgrader(handler)`` where ``async def
  handler(ws)`` runs once per connection (:class:`nbio.ws.connection.WebSocket`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import (
    Any,
    Awaitable,
    Callable,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Union,
)

from nbio.errors import ConnectionClosed
from nbio.ws._conn import Dispatch, WebSocketConn, open_conn
from nbio.ws.connection import WebSocket, async_dispatch, keepalive, wrap
from nbio.ws.deflate import DeflateConfig
from nbio.ws.handshake import HandshakeError, Headers, accept
from nbio.ws.protocol import BroadcastMessage

__all__ = ["Server", "WebSocketUpgrader", "adopt", "broadcast", "serve"]

logger = logging.getLogger("nbio.ws")

AsyncHandler = Callable[[WebSocket], Awaitable[Any]]
Origins = Union[Sequence[str], Callable[[Optional[str]], bool], None]
#: Default server permessage-deflate: no server context takeover, so the server keeps no
#: compressor per connection and broadcasts are compressed once.
SERVER_DEFLATE = DeflateConfig(server_no_context_takeover=True)


def _deflate_config(compression: Union[str, bool, DeflateConfig, None]) -> Optional[DeflateConfig]:
    if compression is None or compression is False:
        return None
    if compression is True or compression == "deflate":
        return SERVER_DEFLATE
    if isinstance(compression, DeflateConfig):
        return compression
    raise ValueError(f"unsupported compression {compression!r}")


class WebSocketUpgrader:
    """Upgrade handler for the nbio HTTP server, for the callback or the async API.

    ``handler``: an object with ``on_message(ws, data, is_text)`` and optionally
    ``on_open(ws)``, ``on_close(ws, code, reason)``, ``on_ping(ws, payload)``,
    ``on_pong(ws, payload)`` (callback API; the callbacks may also be given as keywords), or
    an ``async def handler(ws)`` (async API; one task per connection, closed with 1000 when
    it returns, 1011 when it raises).

    Options: ``subprotocols`` (ours in preference order, or a callable choosing from the
    client's list), ``origins`` (allowed Origin values, or a callable ``origin -> bool``;
    403 otherwise), ``extra_headers`` (added to the 101), ``compression`` (``"deflate"``
    (default: permessage-deflate with server_no_context_takeover), a
    :class:`~nbio.ws.deflate.DeflateConfig`, or None), ``max_size`` (largest message and
    frame received, after decompression; 1009 beyond), ``max_frame_size`` (outgoing messages
    are fragmented at this size; 0: never), ``max_write_buffer`` (bytes queued for a peer
    that does not read; beyond it the connection is dropped and ``on_close`` gets 1008),
    ``ping_interval`` / ``ping_timeout`` (keepalive: silent connections are pinged and
    closed when no answer comes in time), ``close_timeout`` (closing handshake), and
    ``max_queue`` (async API: messages buffered before reading pauses).
    """

    def __init__(
        self,
        handler: Any = None,
        *,
        on_open: Optional[Callable[[WebSocketConn], Any]] = None,
        on_message: Optional[Callable[[WebSocketConn, Any, bool], Any]] = None,
        on_close: Optional[Callable[[WebSocketConn, int, str], Any]] = None,
        on_ping: Optional[Callable[[WebSocketConn, bytes], Any]] = None,
        on_pong: Optional[Callable[[WebSocketConn, bytes], Any]] = None,
        subprotocols: Union[Sequence[str], Callable[[List[str]], Optional[str]]] = (),
        origins: Origins = None,
        extra_headers: Headers = (),
        compression: Union[str, bool, DeflateConfig, None] = "deflate",
        max_size: Optional[int] = 1 << 20,
        max_frame_size: int = 0,
        max_write_buffer: Optional[int] = 16 << 20,
        ping_interval: Optional[float] = 20.0,
        ping_timeout: Optional[float] = 20.0,
        close_timeout: float = 10.0,
        max_queue: Optional[int] = 16,
    ) -> None:
        self.subprotocols = subprotocols
        self.origins = origins
        self.extra_headers = list(extra_headers)
        self.deflate = _deflate_config(compression)
        self.max_size = max_size
        self.max_queue = max_queue
        self._tasks: Set[asyncio.Task[Any]] = set()
        settings = dict(
            max_frame_size=max_frame_size,
            max_write_buffer=max_write_buffer,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self.handler: Optional[AsyncHandler] = None
        if handler is not None and inspect.iscoroutinefunction(handler):
            self.handler = handler
            self.dispatch: Dispatch = async_dispatch(**settings)  # type: ignore[arg-type]
            return
        if handler is not None:
            on_open = on_open or getattr(handler, "on_open", None)
            on_message = on_message or getattr(handler, "on_message", None)
            on_close = on_close or getattr(handler, "on_close", None)
            on_ping = on_ping or getattr(handler, "on_ping", None)
            on_pong = on_pong or getattr(handler, "on_pong", None)
        if on_message is None:
            raise TypeError("WebSocketUpgrader needs an async handler or on_message")
        self.dispatch = Dispatch(
            on_message,
            on_open,
            on_close,
            on_ping,
            on_pong,
            **settings,  # type: ignore[arg-type]
        )

    # -- the upgrade handler contract ----------------------------------------------------------

    def upgrade(self, conn: Any, request: Any, leftover: bytes = b"") -> bool:
        """Answer the upgrade ``request`` (an :class:`nbio.http.h1.Request`) on ``conn``.
        Always takes the connection over (returns True): on success it is a WebSocket, on
        a bad handshake the error response (400/403/405/426) is written and it is closed."""
        origins = self.origins
        try:
            if callable(origins):
                origin = request.get_header(b"origin")
                if not origins(None if origin is None else origin.decode("latin-1")):
                    raise HandshakeError(403, "origin not allowed")
                origins = None
            version = request.http_version
            accepted = accept(
                request.method,
                version.decode("latin-1") if isinstance(version, bytes) else version,
                request.headers,
                subprotocols=self.subprotocols,
                deflate=self.deflate,
                origins=origins,
                extra_headers=self.extra_headers,
            )
        except HandshakeError as exc:
            conn.write(exc.response())
            conn.close()
            return True
        conn.write(accepted.response)
        self.open(
            conn,
            leftover,
            subprotocol=accepted.subprotocol,
            deflate=accepted.deflate,
            request=request,
        )
        return True

    def open(
        self,
        conn: Any,
        leftover: bytes = b"",
        *,
        subprotocol: Optional[str] = None,
        deflate: Any = None,
        request: Any = None,
    ) -> Union[WebSocketConn, WebSocket]:
        """Serve ``conn`` (101 already written) with this upgrader's API and settings."""
        dispatch = self.dispatch
        if dispatch.ping_interval:
            keepalive(dispatch, conn.engine)
        if self.handler is None:
            return open_conn(
                dispatch,
                conn,
                leftover,
                max_size=self.max_size,
                deflate=deflate,
                subprotocol=subprotocol,
                request=request,
            )
        ws = wrap(
            dispatch,
            conn,
            leftover,
            max_size=self.max_size,
            deflate=deflate,
            subprotocol=subprotocol,
            request=request,
            max_queue=self.max_queue,
        )
        task = conn.engine.loop.create_task(self._run(ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ws

    async def _run(self, ws: WebSocket) -> None:
        assert self.handler is not None
        try:
            await self.handler(ws)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("nbio.ws: error in WebSocket handler")
            await ws.close(1011, "internal error")
            return
        except asyncio.CancelledError:
            ws.abort()
            raise
        await ws.close(1000)

    @property
    def tasks(self) -> Set[asyncio.Task[Any]]:
        """The running handler tasks (async API)."""
        return self._tasks


def adopt(
    conn: Any,
    *,
    leftover: bytes = b"",
    subprotocol: Optional[str] = None,
    deflate: Any = None,
    max_size: Optional[int] = 1 << 20,
    max_queue: Optional[int] = 16,
    request: Any = None,
    **options: Any,
) -> WebSocket:
    """Wrap an engine connection whose 101 response was already written into an async
    :class:`~nbio.ws.connection.WebSocket` (used by the ASGI adapter). ``deflate`` is the
    negotiated :class:`~nbio.ws.deflate.PerMessageDeflate` (``ServerAccept.deflate``);
    ``options`` are :func:`~nbio.ws.connection.async_dispatch`'s (``max_write_buffer``,
    ``ping_interval``, ``ping_timeout``, ``close_timeout``, ``max_frame_size``)."""
    return wrap(
        async_dispatch(**options),
        conn,
        leftover,
        max_size=max_size,
        deflate=deflate,
        subprotocol=subprotocol,
        request=request,
        max_queue=max_queue,
    )


def broadcast(conns: Iterable[Any], message: Union[str, bytes]) -> int:
    """Send ``message`` to many connections (callback :class:`WebSocketConn` or async
    :class:`WebSocket`), framing it once (and compressing it once for connections whose
    permessage-deflate has no server context takeover). Closed connections are skipped.
    Returns the number of connections written to."""
    msg = BroadcastMessage(message)
    sent = 0
    for c in conns:
        core = c if isinstance(c, WebSocketConn) else c.core
        if not core.open:
            continue
        try:
            core.send_frame(msg.frame_for(core))
        except ConnectionClosed:
            continue
        sent += 1
    return sent


# -- serve(): the websockets-style server on the nbio HTTP server ----------------------------


class Server:
    """A running WebSocket server (returned by :func:`serve`): an
    :class:`nbio.http.server.HttpServer` routing upgrades to a :class:`WebSocketUpgrader`."""

    def __init__(self, http_server: Any, upgrader: WebSocketUpgrader) -> None:
        self.http_server = http_server
        self.upgrader = upgrader

    @property
    def address(self) -> Any:
        """The listening address, e.g. ``("127.0.0.1", 8765)``."""
        return self.http_server.address

    @property
    def port(self) -> int:
        return int(self.address[1])

    def connections(self) -> List[WebSocketConn]:
        """The open WebSocket connections (callback-API objects; ``.session`` is the async
        :class:`WebSocket` on the async API)."""
        dispatch = self.upgrader.dispatch
        out = []
        for conn in self.http_server.engine.connections():
            core = conn.session
            if isinstance(core, WebSocketConn) and core.dispatch is dispatch:
                out.append(core)
        return out

    def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting and start the closing handshake of every connection."""
        self.http_server.close()
        for core in self.connections():
            try:
                core.close(code, reason)
            except ConnectionClosed:
                pass

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout`` s) for the connections and handlers to finish, then drop
        what is left and release the engine if ``serve`` created it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        tasks = list(self.upgrader.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        while self.connections() and loop.time() < deadline:
            await asyncio.sleep(0.01)  # closing handshakes in flight (no per-conn future)
        for core in self.connections():
            core.abort()
        await self.http_server.wait_closed(max(0.0, deadline - loop.time()))

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.close()
            await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()


class _Serve:
    """``await serve(...)`` or ``async with serve(...) as server``."""

    def __init__(self, factory: Callable[[], Awaitable[Server]]) -> None:
        self._factory = factory
        self._server: Optional[Server] = None

    def __await__(self) -> Any:
        return self._factory().__await__()

    async def __aenter__(self) -> Server:
        self._server = await self._factory()
        return self._server

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        await self._server.__aexit__(*exc)


def serve(
    handler: Any,
    host: Optional[str] = "127.0.0.1",
    port: int = 0,
    *,
    path: Optional[str] = None,
    engine: Any = None,
    reuse_port: Optional[bool] = None,
    ssl: Any = None,
    **options: Any,
) -> _Serve:
    """Serve WebSocket connections on ``host:port`` through the nbio HTTP server.

    ``handler`` is an ``async def handler(ws)`` (async API), a callback object (see
    :class:`WebSocketUpgrader`, whose options ``serve`` accepts) or an upgrader. ``path``
    limits the upgrade to one path (default: any path; other requests get 404). ``engine``
    defaults to a new engine owned by the server. Use as ``async with serve(...) as
    server`` or ``server = await serve(...)``; ``server.close()`` sends Close 1001 to
    every connection. With ``ssl`` (a server :class:`ssl.SSLContext`) it serves ``wss://``.
    """
    upgrader = (
        handler if isinstance(handler, WebSocketUpgrader) else WebSocketUpgrader(handler, **options)
    )

    async def start() -> Server:
        from nbio.http.server import HttpServer

        http = await HttpServer.start(
            None,
            host,
            port,
            engine=engine,
            reuse_port=reuse_port,
            upgrades={path or "*": upgrader},
            ssl=ssl,
        )
        return Server(http, upgrader)

    return _Serve(start)

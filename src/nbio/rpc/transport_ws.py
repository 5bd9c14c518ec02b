"""RPC over WebSocket: every arpc frame travels as one binary WebSocket message.

Server side, :class:`WebSocketEndpoint` puts a :class:`~nbio.rpc.server.Server`'s router
behind a WebSocket URL. It is both

* an upgrade handler for the nbio HTTP server (``HttpServer(app, upgrades={"/rpc":
  endpoint})``), running on the WebSocket callback API: no task, future or buffer per
  connection, the received message goes straight to the peer's frame reader;
* an ASGI application for a ``websocket`` scope (``WebSocketRoute("/rpc", endpoint)`` in
  Starlette, or any ASGI server), one task per connection as ASGI requires.

Either way each connection is a :class:`~nbio.rpc.client.Peer` of the server, like a TCP
connection: the same handlers, ``server.broadcast``/``for_each``, keepalive, connection
limit, hooks and graceful shutdown, and the peer can ``call``/``notify`` the browser.

Client side, :class:`WebSocketClient` is a :class:`~nbio.rpc.client.Client` that dials a
``ws://`` URL (same API: calls both ways, keepalive, reconnect, streams)::

    async with WebSocketClient("ws://127.0.0.1:8080/rpc") as client:
        await client.call("/echo", "hello", as_type=str)

Several frames written at once by the peer (answers batched during one read) are split
back into one message per frame; received messages are fed to the frame reader as a byte
stream, so a peer that packs several frames in a message (or splits one) is understood too.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import (
    Any,
    Awaitable,
    Callable,
    Deque,
    Iterable,
    List,
    MutableMapping,
    Optional,
    Sequence,
)
from urllib.parse import urlsplit

from nbio.errors import ConnectionClosed, DeadlineExceeded, ProtocolError
from nbio.rpc.client import Client
from nbio.rpc.message import HEADER_SIZE
from nbio.rpc.server import Server
from nbio.ws import WebSocketUpgrader
from nbio.ws import connect as ws_connect
from nbio.ws.handshake import HandshakeError

__all__ = ["WebSocketClient", "WebSocketEndpoint", "WebSocketRefused", "connect_websocket"]

logger = logging.getLogger("nbio.rpc")

_U32 = struct.Struct("<I")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def split_frames(data: Any) -> Sequence[Any]:
    """The arpc frames in ``data`` (one or more whole frames, as written by a Peer)."""
    n = len(data)
    if n >= HEADER_SIZE and _U32.unpack_from(data)[0] + HEADER_SIZE == n:
        return (data,)
    view = memoryview(data)
    frames: List[Any] = []
    off = 0
    while off + HEADER_SIZE <= n:
        end = off + HEADER_SIZE + _U32.unpack_from(data, off)[0]
        frames.append(view[off:end])
        off = end
    if off != n:
        raise ValueError("split_frames: data does not end on a frame boundary")
    return frames


class _FrameConn:
    """What a :class:`~nbio.rpc.client.Peer` writes to over a message transport: the
    engine-connection subset the peer uses, sending each frame as one message."""

    __slots__ = ("local_close", "session")

    def __init__(self) -> None:
        self.session: Any = None
        #: True once this side started closing (the close reason reported is then None).
        self.local_close = False

    def _send(self, frame: Any) -> None:
        raise NotImplementedError

    def write(self, data: Any) -> None:
        for frame in split_frames(data):
            self._send(frame)

    def _close_code(self) -> int:
        peer = self.session
        if peer is not None and isinstance(peer.close_reason, ProtocolError):
            return 1002  # malformed arpc input
        return 1000


class WsConn(_FrameConn):
    """A Peer's connection over an nbio WebSocket (:class:`nbio.ws.WebSocketConn`)."""

    __slots__ = ("ws",)

    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws

    def __repr__(self) -> str:
        return f"<WsConn {self.ws!r}>"

    def _send(self, frame: Any) -> None:
        self.ws.send(frame)

    def write(self, data: Any) -> None:
        frames = split_frames(data)
        if len(frames) == 1:
            self.ws.send(data)
            return
        # answers batched during one read: one message per frame, one write for all
        ws = self.ws
        if not ws.open:
            raise ConnectionClosed(ws.close_code, ws.close_reason or "connection closed")
        ws.send_frame(b"".join([ws.encode_message(f) for f in frames]))

    @property
    def closing(self) -> bool:
        return not self.ws.open

    @property
    def closed(self) -> bool:
        return bool(self.ws.closed)

    def close(self) -> None:
        self.local_close = True
        self.ws.close(self._close_code())

    def abort(self) -> None:
        self.local_close = True
        self.ws.abort()

    @property
    def buffered(self) -> int:
        return int(self.ws.buffered)

    async def drain(self) -> None:
        conn = self.ws.conn
        if conn is None:
            raise ConnectionClosed(None, "connection closed")
        await conn.drain()

    def set_read_deadline(self, timeout: Optional[float]) -> None:
        conn = self.ws.conn
        if conn is not None:
            conn.set_read_deadline(timeout)

    def pause_reading(self) -> None:
        conn = self.ws.conn
        if conn is not None:
            conn.pause_reading()

    def resume_reading(self) -> None:
        conn = self.ws.conn
        if conn is not None:
            conn.resume_reading()

    @property
    def request(self) -> Any:
        """The HTTP upgrade request, while the server's connect hooks run (else None)."""
        return self.ws.request

    @property
    def remote_address(self) -> Any:
        return self.ws.remote_address

    @property
    def local_address(self) -> Any:
        return self.ws.local_address


class AsgiWsConn(_FrameConn):
    """A Peer's connection over an ASGI ``websocket`` scope: frames are queued and sent by
    one writer task (ASGI ``send`` is a coroutine), in order."""

    __slots__ = (
        "_close_code_set",
        "_drained",
        "_loop",
        "_queue",
        "_queued",
        "_read_deadline",
        "_read_timer",
        "_resumed",
        "_send_fn",
        "_wake",
        "_writer",
        "closing",
        "finished",
        "scope",
    )

    #: ``drain()`` waits while more than this is queued.
    high_water = 65536

    def __init__(self, send: Send, scope: Scope, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._send_fn = send
        self.scope = scope
        self._loop = loop
        self._queue: Deque[Any] = deque()
        self._queued = 0
        self._wake: Optional[asyncio.Future[None]] = None
        self._drained: List[asyncio.Future[None]] = []
        self._resumed: Optional[asyncio.Future[None]] = None
        self._close_code_set: Optional[int] = None
        self._read_deadline = 0.0
        self._read_timer: Optional[asyncio.TimerHandle] = None
        self.closing = False
        self.finished = False
        self._writer = loop.create_task(self._write_loop())

    def __repr__(self) -> str:
        return f"<AsgiWsConn client={self.remote_address!r}>"

    # -- sending ------------------------------------------------------------------------------

    def _send(self, frame: Any) -> None:
        if self.closing:
            raise ConnectionClosed(None, "connection closed")
        self._queue.append(bytes(frame))
        self._queued += len(frame)
        self._kick()

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._send_fn
        try:
            while True:
                while queue:
                    frame = queue.popleft()
                    self._queued -= len(frame)
                    await send({"type": "websocket.send", "bytes": frame})
                self._wake_drained()
                if self._close_code_set is not None:
                    await send({"type": "websocket.close", "code": self._close_code_set})
                    return
                if self.finished:
                    return
                self._wake = self._loop.create_future()
                await self._wake
                self._wake = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the ASGI server failed to send: the client is gone
            logger.debug("nbio.rpc: ASGI websocket send failed: %r", exc)
            self.closing = True
            queue.clear()
            self._queued = 0
            self._wake_drained()

    def _wake_drained(self) -> None:
        waiters, self._drained = self._drained, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    @property
    def buffered(self) -> int:
        return self._queued

    async def drain(self) -> None:
        while self._queued > self.high_water:
            if self.closing and self.finished:
                raise ConnectionClosed(None, "connection closed")
            fut = self._loop.create_future()
            self._drained.append(fut)
            await fut

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closing:
            return
        self.local_close = True
        self.closing = True
        self._close_code_set = self._close_code()
        self._kick()

    def abort(self) -> None:
        """Drop what is queued and close (code 1001, going away)."""
        self._queue.clear()
        self._queued = 0
        if not self.closing:
            self.local_close = True
            self.closing = True
            self._close_code_set = 1001
        self._kick()

    @property
    def closed(self) -> bool:
        return self.finished

    async def _finish(self) -> None:
        """The receive loop ended: let the writer send what it can, then stop it."""
        self.finished = True
        self.closing = True
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), 5.0)
        except (asyncio.TimeoutError, Exception):
            self._writer.cancel()
        self._wake_drained()

    # -- reading ------------------------------------------------------------------------------

    def set_read_deadline(self, timeout: Optional[float]) -> None:
        if not timeout:
            self._read_deadline = 0.0
            return
        self._read_deadline = self._loop.time() + timeout
        if self._read_timer is None:
            self._read_timer = self._loop.call_at(self._read_deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        if not deadline or self.finished:
            return
        if self._loop.time() < deadline:
            self._read_timer = self._loop.call_at(deadline, self._check_deadline)
            return
        peer = self.session
        if peer is not None and peer.close_reason is None:
            peer.close_reason = DeadlineExceeded("read")
        self.abort()

    def pause_reading(self) -> None:
        if self._resumed is None:
            self._resumed = self._loop.create_future()

    def resume_reading(self) -> None:
        fut = self._resumed
        self._resumed = None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait_resumed(self) -> None:
        fut = self._resumed
        if fut is not None:
            await fut

    @property
    def request(self) -> Any:
        """The ASGI scope of the connection."""
        return self.scope

    @property
    def remote_address(self) -> Any:
        client = self.scope.get("client")
        return tuple(client) if client else None

    @property
    def local_address(self) -> Any:
        server = self.scope.get("server")
        return tuple(server) if server else None


class WebSocketEndpoint:
    """The WebSocket entry of an RPC :class:`~nbio.rpc.server.Server`.

    Mount it on the nbio HTTP server as an upgrade handler
    (``HttpServer(app, upgrades={"/rpc": endpoint})``), or use it as an ASGI application
    (``endpoint(scope, receive, send)`` for ``websocket`` scopes). Options are those of
    :class:`~nbio.ws.WebSocketUpgrader`: ``subprotocols``, ``origins``, ``extra_headers``,
    ``compression`` (default None: arpc frames are small and often already compact;
    ``"deflate"`` enables permessage-deflate), ``max_size`` (default: the server's largest
    frame), ``max_write_buffer``, ``ping_interval``/``ping_timeout`` (WebSocket-level
    pings; default off, the server's ``keepalive``/``read_timeout`` use arpc pings, which
    browsers' clients answer), ``close_timeout``.
    """

    def __init__(
        self,
        server: Server,
        *,
        subprotocols: Any = (),
        origins: Any = None,
        extra_headers: Any = (),
        compression: Any = None,
        max_size: Optional[int] = None,
        max_write_buffer: Optional[int] = 16 << 20,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.server = server
        if max_size is None:
            max_size = server.max_body_len + HEADER_SIZE
        self.upgrader = WebSocketUpgrader(
            on_open=self._on_open,
            on_message=self._on_message,
            on_close=self._on_close,
            subprotocols=subprotocols,
            origins=origins,
            extra_headers=extra_headers,
            compression=compression,
            max_size=max_size,
            max_write_buffer=max_write_buffer,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
        )

    # -- nbio HTTP server: upgrade handler, callback API ----------------------------------------

    def upgrade(self, conn: Any, request: Any, leftover: bytes = b"") -> bool:
        """The nbio HTTP server's upgrade contract (see :mod:`nbio.http.server`)."""
        server = self.server
        if server._loop is None:
            server._bind_loop()
        # the HTTP keep-alive idle timeout must not apply to the upgraded connection
        conn.set_idle_timeout(None)
        return self.upgrader.upgrade(conn, request, leftover)

    def _on_open(self, ws: Any) -> None:
        conn = WsConn(ws)
        ws.session = conn
        self.server._opened(conn)

    def _on_message(self, ws: Any, data: Any, is_text: bool) -> None:
        conn = ws.session
        if conn is None:
            return
        peer = conn.session
        if peer is not None:
            peer._on_data(data.encode("utf-8") if is_text else data)

    def _on_close(self, ws: Any, code: int, reason: str) -> None:
        conn = ws.session
        if conn is None:
            return
        peer = conn.session
        if peer is not None:
            peer._on_close(conn, None if conn.local_close else ConnectionClosed(code, reason))

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI application: serves ``websocket`` scopes (an ``http`` request gets 426)."""
        if scope["type"] == "http":
            body = b"this endpoint speaks arpc over WebSocket\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 426,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"upgrade", b"websocket"),
                        (b"connection", b"upgrade"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "websocket":
            raise RuntimeError(f"unsupported ASGI scope type {scope['type']!r}")
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        server = self.server
        if server._shutting_down:
            await send({"type": "websocket.close", "code": 1001})
            return
        if server._loop is None:
            server._bind_loop()
        await send({"type": "websocket.accept"})
        conn = AsgiWsConn(send, scope, asyncio.get_running_loop())
        server._opened(conn)
        peer = conn.session
        exc: Optional[BaseException] = None
        try:
            while peer is not None and not conn.finished:
                if conn._resumed is not None:
                    await conn._wait_resumed()
                msg = await receive()
                kind = msg["type"]
                if kind == "websocket.receive":
                    data = msg.get("bytes")
                    if data is None:
                        data = (msg.get("text") or "").encode("utf-8")
                    peer._on_data(data)
                elif kind == "websocket.disconnect":
                    if not conn.local_close:
                        exc = ConnectionClosed(msg.get("code", 1005), msg.get("reason") or "")
                    break
        finally:
            await conn._finish()
            if peer is not None:
                peer._on_close(conn, exc)


class WebSocketRefused(HandshakeError, ConnectionRefusedError):
    """The server refused the WebSocket upgrade (``status`` is its HTTP status). Also a
    ``ConnectionRefusedError``, so a reconnecting client keeps trying."""


class WebSocketClient(Client):
    """An RPC :class:`~nbio.rpc.client.Client` over WebSocket (``ws://host[:port]/path``).

    Same API and options as :class:`~nbio.rpc.client.Client` (``router``, ``codec``,
    ``coders``, ``timeout``, ``connect_timeout``, ``keepalive``, ``read_timeout``,
    ``reconnect``...), plus WebSocket options: ``subprotocols``, ``extra_headers``,
    ``origin``, ``compression`` (None by default; ``"deflate"`` offers
    permessage-deflate), ``max_size`` (largest message; default: the largest frame).
    A refused upgrade raises :class:`WebSocketRefused`.
    """

    def __init__(
        self,
        url: str,
        *,
        subprotocols: Iterable[str] = (),
        extra_headers: Any = (),
        origin: Optional[str] = None,
        compression: Any = None,
        max_size: Optional[int] = None,
        **options: Any,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a WebSocket URL: {url!r}")
        super().__init__(
            parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80), **options
        )
        self.url = url
        self._ws_options = dict(
            subprotocols=tuple(subprotocols),
            extra_headers=list(extra_headers),
            origin=origin,
            compression=compression,
            max_size=max_size if max_size is not None else self._max_body_len + HEADER_SIZE,
        )

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        return f"<WebSocketClient {state} {self.url}>"

    async def _dial(self) -> None:
        from nbio.engine import get_engine

        engine = self._engine or get_engine()
        self._engine = engine
        try:
            ws = await ws_connect(
                self.url,
                open_timeout=self._connect_timeout,
                ping_interval=None,
                max_queue=64,
                engine=engine,
                **self._ws_options,
            )
        except HandshakeError as exc:
            if isinstance(exc, OSError):
                raise
            raise WebSocketRefused(exc.status, exc.reason, exc.headers) from exc
        conn = WsConn(ws.core)
        self._opened(conn)
        self._spawn(self._read_loop(ws, conn))

    async def _read_loop(self, ws: Any, conn: WsConn) -> None:
        exc: Optional[BaseException] = None
        try:
            while True:
                data = await ws.recv()
                if self.conn is not conn:
                    break
                self._on_data(data.encode("utf-8") if isinstance(data, str) else data)
        except ConnectionClosed as e:
            exc = None if conn.local_close else e
        except asyncio.CancelledError:
            ws.abort()
            raise
        except Exception as e:  # a bug in a callback: drop the connection
            logger.exception("nbio.rpc: error while reading %r", self)
            exc = e
            ws.abort()
        finally:
            self._on_close(conn, exc)


async def connect_websocket(url: str, **options: Any) -> WebSocketClient:
    """Create a :class:`WebSocketClient` and connect it."""
    client = WebSocketClient(url, **options)
    await client.connect()
    return client

"""The RPC :class:`Server`: listens on TCP and/or Unix sockets, one :class:`Peer` per connection.

Every connection gets a :class:`~nbio.rpc.client.Peer` (arpc's server-side ``*Client``)
that can ``call``/``notify``/``stream`` back to the client. The server adds what concerns
all connections: ``broadcast`` (encoded once, the same bytes written to every
connection), ``for_each``, a connection limit, server-wide keepalive pings, connect /
disconnect hooks (on the router) and a graceful ``shutdown`` that answers the calls in
flight before closing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from nbio.engine import Engine, get_engine
from nbio.errors import ConnectionLost
from nbio.rpc.client import FIRST_SEQ, Peer, _PeerHandler
from nbio.rpc.codec import Codec, value_to_payload
from nbio.rpc.coder import encode_frame
from nbio.rpc.message import CMD_NOTIFY, DEFAULT_MAX_BODY_LEN, FLAG_ASYNC, PING_FRAME, encode
from nbio.rpc.router import Router

__all__ = ["Server"]

logger = logging.getLogger("nbio.rpc")


class _ServerHandler(_PeerHandler):
    __slots__ = ("server",)

    def __init__(self, server: Server) -> None:
        self.server = server

    def on_open(self, conn: Any) -> None:
        conn.session = None
        self.server._opened(conn)


class Server:
    """An RPC server. ``router`` holds the handlers (one is created if not given;
    ``server.handle(...)`` is a shortcut for ``server.router.handle(...)``).

    Options: ``codec`` (JSON by default), ``coders`` (e.g. ``[GzipCoder()]``),
    ``max_connections`` (connections beyond it are closed at once; counted in
    ``rejected``), ``read_timeout`` (close a connection silent for so long; clients keep
    it alive with pings), ``keepalive`` (ping every connection every so many seconds),
    ``max_body_len``, ``engine`` (default: the loop's shared engine).
    """

    def __init__(
        self,
        router: Optional[Router] = None,
        *,
        codec: Optional[Codec] = None,
        coders: Iterable[Any] = (),
        max_connections: Optional[int] = None,
        read_timeout: Optional[float] = None,
        keepalive: Optional[float] = None,
        max_body_len: int = DEFAULT_MAX_BODY_LEN,
        engine: Optional[Engine] = None,
    ) -> None:
        self.router = router or Router()
        self.codec = codec
        self.coders = tuple(coders)
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.max_body_len = max_body_len
        self._engine = engine
        self._handler = _ServerHandler(self)
        self._listeners: List[Any] = []
        self._peers: Dict[Peer, None] = {}
        self._tasks: Set[asyncio.Task] = set()
        self._seq = FIRST_SEQ
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._keepalive_timer: Optional[asyncio.TimerHandle] = None
        self._shutting_down = False
        self._stopped: Optional[asyncio.Future] = None
        self._all_closed: Optional[asyncio.Future] = None
        #: Connections refused because of ``max_connections``.
        self.rejected = 0

    def handle(self, method: str, handler: Any = None, *, middleware: Any = ()) -> Any:
        """Shortcut for ``server.router.handle(...)`` (usable as a decorator)."""
        return self.router.handle(method, handler, middleware=middleware)

    # -- listening ------------------------------------------------------------------------------

    async def listen(
        self,
        host: Optional[str] = "127.0.0.1",
        port: int = 0,
        *,
        path: Optional[str] = None,
        reuse_port: Optional[bool] = None,
        ssl: Any = None,
    ) -> Any:
        """Listen on TCP ``host:port`` (port 0 picks one) or on the Unix socket ``path``;
        returns the bound address. May be called several times. With ``ssl`` (a server
        :class:`ssl.SSLContext`) the connections are TLS."""
        if self._shutting_down:
            raise RuntimeError("server is shut down")
        self._bind_loop()
        engine = self._engine or get_engine()
        self._engine = engine
        if path is not None:
            listener = engine.listen(self._handler, path=path, reuse_port=reuse_port, ssl=ssl)
        else:
            listener = engine.listen(self._handler, host, port, reuse_port=reuse_port, ssl=ssl)
        self._listeners.append(listener)
        return listener.address

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        """Bind the server to the running loop: on the first ``listen`` or the first
        connection handed over by another transport (WebSocket, HTTP-RPC, ASGI)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._stopped is None:
            self._stopped = loop.create_future()
        if self.keepalive and self._keepalive_timer is None and not self._shutting_down:
            self._keepalive_timer = loop.call_later(self.keepalive, self._keepalive_tick)
        return loop

    @property
    def address(self) -> Any:
        """The address of the first listener."""
        return self._listeners[0].address if self._listeners else None

    @property
    def addresses(self) -> List[Any]:
        return [lst.address for lst in self._listeners]

    async def serve_forever(self) -> None:
        """Wait until :meth:`shutdown` (or :meth:`close`) completes."""
        if self._stopped is None:
            raise RuntimeError("call listen() first")
        await asyncio.shield(self._stopped)

    # -- connections ----------------------------------------------------------------------------

    def _opened(self, conn: Any) -> None:
        if self._shutting_down or (
            self.max_connections is not None and len(self._peers) >= self.max_connections
        ):
            self.rejected += 1
            conn.abort()
            return
        peer = Peer(
            self,
            self.router,
            self.codec,
            self.coders,
            self.max_body_len,
            self.read_timeout,
            self._loop,
        )
        peer._attach(conn)
        self._peers[peer] = None
        self.router.run_hooks(self.router.connect_hooks, peer)

    def _peer_closed(self, peer: Peer, conn: Any, exc: Optional[BaseException]) -> None:
        if self._peers.pop(peer, 0) is None:
            self.router.run_hooks(self.router.disconnect_hooks, peer)
        if not self._peers and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    def _spawn(self, coro: Any) -> asyncio.Task:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def clients(self) -> List[Peer]:
        """The connected peers (a snapshot)."""
        return list(self._peers)

    def __len__(self) -> int:
        return len(self._peers)

    def for_each(self, fn: Callable[[Peer], Any]) -> None:
        """Call ``fn(peer)`` for every connected peer."""
        for peer in list(self._peers):
            fn(peer)

    def broadcast(
        self, method: str, value: Any = None, filter: Optional[Callable[[Peer], bool]] = None
    ) -> int:
        """Notify every connected peer (those for which ``filter(peer)`` is true): the
        frame is encoded once and the same bytes written to each connection. Returns the
        number of peers it was written to."""
        seq = self._seq
        self._seq = seq + 1
        frame = encode(CMD_NOTIFY, method, seq, value_to_payload(value, self.codec), FLAG_ASYNC)
        if self.coders:
            frame = encode_frame(frame, self.coders)
        sent = 0
        for peer in list(self._peers):
            if filter is not None and not filter(peer):
                continue
            try:
                peer._send_raw(frame)
            except ConnectionLost:
                continue
            sent += 1
        return sent

    def _keepalive_tick(self) -> None:
        self._keepalive_timer = None
        if self._shutting_down or self._loop is None:
            return
        for peer in list(self._peers):
            try:
                peer._send_raw(PING_FRAME)
            except ConnectionLost:
                pass
        assert self.keepalive is not None
        self._keepalive_timer = self._loop.call_later(self.keepalive, self._keepalive_tick)

    # -- shutdown -------------------------------------------------------------------------------

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Graceful stop: stop listening, answer new requests with ``server is shutting
        down``, wait (up to ``timeout`` s) until the calls in flight are answered, then
        close every connection (flushing the answers) and cancel leftover handler tasks."""
        loop = asyncio.get_running_loop()
        self._shutting_down = True
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        for lst in self._listeners:
            lst.close()
        deadline = loop.time() + timeout
        waits = []
        for peer in list(self._peers):
            peer._draining = True
            if peer._inflight > 0:
                peer._wait_idle = loop.create_future()
                waits.append(peer._wait_idle)
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - loop.time()))
        if self._peers:
            self._all_closed = loop.create_future()
            for peer in list(self._peers):
                peer.close()
            if self._peers:
                await asyncio.wait([self._all_closed], timeout=max(0.0, deadline - loop.time()))
            for peer in list(self._peers):
                if peer.conn is not None:
                    peer.conn.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def close(self) -> None:
        """Stop at once: like :meth:`shutdown` without waiting for calls in flight."""
        await self.shutdown(timeout=0)

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

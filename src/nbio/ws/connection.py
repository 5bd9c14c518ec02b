"""The async WebSocket API (like the ``websockets`` library) and shared connection plumbing.

:class:`WebSocket` wraps the callback-API connection (:class:`nbio.ws._conn.WebSocketConn`):
messages received are queued (``max_queue``; reading is paused while the queue is full),
``await ws.recv()`` / ``async for message in ws`` take them, ``await ws.send()`` writes
and waits while the engine's write queue is above its high-water mark.

Keepalive (:func:`keepalive`) runs one loop timer per dispatch and engine, never one per
connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from typing import Any, AsyncIterator, Deque, Dict, Optional, Tuple, Union

from nbio.errors import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from nbio.ws._conn import Dispatch, WebSocketConn

__all__ = ["Data", "WebSocket", "async_dispatch", "keepalive", "wrap"]

logger = logging.getLogger("nbio.ws")

Data = Union[str, bytes]
_OK_CODES = (1000, 1001, 1005)


def _closed_error(code: int, reason: str) -> ConnectionClosed:
    cls = ConnectionClosedOK if code in _OK_CODES else ConnectionClosedError
    return cls(code, reason)


class WebSocket:
    """An open WebSocket connection, async style.

    ``request`` (server side) is the HTTP upgrade request (``.path``, ``.headers``...);
    ``subprotocol`` is the negotiated subprotocol. ``close_code`` / ``close_reason`` are set
    once closed.
    """

    def __init__(
        self, core: WebSocketConn, *, request: Any = None, max_queue: Optional[int] = 16
    ) -> None:
        self._core = core
        core.session = self
        conn = core.conn
        self._conn: Any = conn
        self._loop: asyncio.AbstractEventLoop = conn.engine.loop
        self._queue: Deque[Data] = deque()
        self._waiter: Optional[asyncio.Future[None]] = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._exc: Optional[ConnectionClosed] = None
        self._pings: Dict[bytes, asyncio.Future[None]] = {}
        self._max_queue = max_queue or 0
        self._paused = False
        self.request = request
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None

    def __repr__(self) -> str:
        return f"<nbio.ws.WebSocket {'open' if self.open else 'closed'} {self.remote_address!r}>"

    # -- events from the core (via the async dispatch) ---------------------------------------

    def _on_message(self, data: Data) -> None:
        queue = self._queue
        queue.append(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._max_queue and len(queue) >= self._max_queue and not self._paused:
            conn = self._core.conn
            if conn is not None:
                self._paused = True
                conn.pause_reading()

    def _on_pong(self, payload: bytes) -> None:
        fut = self._pings.pop(payload, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_close(self, code: int, reason: str) -> None:
        if self._exc is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self._exc = _closed_error(code, reason)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(_closed_error(code, reason))
                fut.exception()  # mark retrieved: nobody may be waiting
        self._pings.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    # -- receiving --------------------------------------------------------------------------

    async def recv(self) -> Data:
        """The next message (``str`` for text, ``bytes`` for binary). Raises
        :class:`~nbio.errors.ConnectionClosedOK` / :class:`~nbio.errors.ConnectionClosedError`
        once the connection is closed and every received message was taken."""
        queue = self._queue
        while not queue:
            if self._exc is not None:
                raise self._exc
            if self._waiter is not None:
                raise RuntimeError("recv() is already being awaited by another task")
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        data = queue.popleft()
        if self._paused and len(queue) <= self._max_queue // 4:
            self._paused = False
            conn = self._core.conn
            if conn is not None:
                conn.resume_reading()
        return data

    async def __aiter__(self) -> AsyncIterator[Data]:
        """Messages until the connection closes; ends quietly on a normal closure and
        raises :class:`~nbio.errors.ConnectionClosedError` otherwise."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: Data) -> None:
        """Send a text (``str``) or binary (bytes-like) message; waits while the write
        queue is above the engine's high-water mark (backpressure)."""
        core = self._core
        try:
            core.send(message)
            conn = core.conn
            if conn is not None:
                await conn.drain()
        except ConnectionClosed:
            raise self._closed_exception() from None

    async def ping(self, data: Union[str, bytes, None] = None) -> asyncio.Future[None]:
        """Send a Ping; returns a future resolved when the matching Pong arrives."""
        payload = (
            os.urandom(4)
            if data is None
            else (data.encode("utf-8") if isinstance(data, str) else bytes(data))
        )
        fut: asyncio.Future[None] = self._loop.create_future()
        try:
            self._core.ping(payload)
        except ConnectionClosed:
            raise self._closed_exception() from None
        self._pings[payload] = fut
        return fut

    async def pong(self, data: Union[str, bytes] = b"") -> None:
        """Send an unsolicited Pong."""
        core = self._core
        if not core.open:
            raise self._closed_exception()
        conn = core.conn
        conn.write(core.pong(data))

    def _closed_exception(self) -> ConnectionClosed:
        if self._exc is not None:
            return self._exc
        core = self._core
        return _closed_error(core.close_code or 1006, core.close_reason or "connection closed")

    # -- closing ----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or finish) the closing handshake and wait until it completes (at most the
        close timeout, after which the connection is dropped)."""
        try:
            self._core.close(code, reason)
        except ConnectionClosed:
            pass
        await asyncio.shield(self._closed)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await asyncio.shield(self._closed)

    def abort(self) -> None:
        """Drop the connection now (close code 1006)."""
        self._core.abort()

    # -- state ------------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return bool(self._core.open) and self._exc is None

    @property
    def closed(self) -> bool:
        return self._exc is not None

    @property
    def subprotocol(self) -> Optional[str]:
        return self._core.subprotocol  # type: ignore[no-any-return]

    @property
    def remote_address(self) -> Any:
        return self._conn.remote_address

    @property
    def local_address(self) -> Any:
        return self._conn.local_address

    @property
    def core(self) -> WebSocketConn:
        """The callback-API connection underneath (shared by :func:`nbio.ws.broadcast`)."""
        return self._core


# -- the async dispatch: core events go to the WebSocket in ``core.session`` ------------------


def _on_message(core: WebSocketConn, data: Data, is_text: bool) -> None:
    core.session._on_message(data)


def _on_pong(core: WebSocketConn, payload: bytes) -> None:
    ws = core.session
    if ws is not None:
        ws._on_pong(payload)


def _on_close(core: WebSocketConn, code: int, reason: str) -> None:
    ws = core.session
    if ws is not None:
        ws._on_close(code, reason)


_dispatches: Dict[Tuple[Any, ...], Dispatch] = {}


def async_dispatch(
    *,
    is_client: bool = False,
    max_frame_size: int = 0,
    max_write_buffer: Optional[int] = None,
    close_timeout: float = 10.0,
    ping_interval: Optional[float] = None,
    ping_timeout: Optional[float] = None,
) -> Dispatch:
    """The (shared) dispatch that routes core events to :class:`WebSocket` objects."""
    key = (is_client, max_frame_size, max_write_buffer, close_timeout, ping_interval, ping_timeout)
    d = _dispatches.get(key)
    if d is None:
        d = _dispatches[key] = Dispatch(
            _on_message,
            None,
            _on_close,
            None,
            _on_pong,
            is_client=is_client,
            max_frame_size=max_frame_size,
            max_write_buffer=max_write_buffer,
            close_timeout=close_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
    return d


def wrap(
    dispatch: Dispatch,
    conn: Any,
    leftover: bytes = b"",
    *,
    max_size: Optional[int] = 1 << 20,
    deflate: Any = None,
    subprotocol: Optional[str] = None,
    request: Any = None,
    max_queue: Optional[int] = 16,
) -> WebSocket:
    """Make ``conn`` (handshake done) an async :class:`WebSocket` of ``dispatch``."""
    core = WebSocketConn(
        dispatch, conn, max_size=max_size, deflate=deflate, subprotocol=subprotocol
    )
    ws = WebSocket(core, request=request, max_queue=max_queue)
    conn.session = core
    conn.set_idle_timeout(None)  # the HTTP server's keep-alive timeout no longer applies
    conn.set_handler(dispatch.engine_side)
    if dispatch.ping_interval:
        keepalive(dispatch, conn.engine)
    if leftover:
        core._feed(leftover)
    return ws


# -- keepalive: one timer per (dispatch, engine) ----------------------------------------------

# engine implementation -> {dispatch: timer}; an entry goes when its sweep finds nothing
_sweeps: Dict[Any, Dict[Dispatch, asyncio.TimerHandle]] = {}


def keepalive(dispatch: Dispatch, engine: Any) -> None:
    """Make sure ``engine``'s (the engine implementation, ``conn.engine``) connections of ``dispatch`` get keepalive pings: every
    ``ping_interval`` seconds, a connection from which nothing was read during the whole
    interval is pinged and must answer within ``ping_timeout`` (the engine's read deadline),
    else it is closed (``on_close`` code 1006, "keepalive ping timed out")."""
    if not dispatch.ping_interval:
        return
    timers = _sweeps.setdefault(engine, {})
    if dispatch in timers:
        return
    timers[dispatch] = engine.loop.call_later(dispatch.ping_interval, _sweep, dispatch, engine)


def _sweep(dispatch: Dispatch, engine: Any) -> None:
    timers = _sweeps.get(engine)
    if timers is None:
        return
    timers.pop(dispatch, None)
    if not timers:
        del _sweeps[engine]
    found = False
    for conn in engine.connections():
        core = conn.session
        if isinstance(core, WebSocketConn) and core.dispatch is dispatch:
            found = True
            try:
                core._keepalive()
            except Exception as exc:  # pragma: no cover - defensive
                logger.warning("nbio.ws: keepalive ping failed: %r", exc)
    if found:
        keepalive(dispatch, engine)

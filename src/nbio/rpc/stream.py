"""Streams (arpc ``Stream``): ordered messages in both directions under one stream id.

A stream is opened by either side with ``peer.stream(method)``; its id comes from that
side's seq counter. Every frame is command 6 with the stream id as seq; frames from the
side that created the stream carry 0x80, and a sender's last frame carries 0x40 (arpc's
``CloseSend`` sends an empty one; empty frames carry no data). The first frame from the
creator opens the stream on the other side, where the router's stream handler for the
method (``router.handle_stream``) gets it.

``await stream.send(value)``, ``await stream.recv()`` (raises EOFError once the peer
closed its sending side), ``await stream.close_send()``, ``async for value in stream``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Deque, Optional

from nbio.errors import ConnectionLost
from nbio.rpc.codec import payload_to_value, value_to_payload
from nbio.rpc.message import CMD_STREAM, STREAM_EOF, STREAM_LOCAL, encode

__all__ = ["Stream"]

logger = logging.getLogger("nbio.rpc")


class Stream:
    """One stream of a connection. See the module docstring.

    Received frames wait in a queue; when it holds more than ``queue_size`` messages the
    connection stops reading (as arpc's bounded channel does) until it is half empty.
    """

    __slots__ = (
        "_error",
        "_paused",
        "_queue",
        "_recv_closed",
        "_send_closed",
        "_waiter",
        "as_type",
        "id",
        "local",
        "method",
        "peer",
    )

    queue_size = 1024

    def __init__(self, peer: Any, method: str, stream_id: int, local: bool) -> None:
        self.peer = peer
        self.method = method
        self.id = stream_id
        #: True on the side that created the stream.
        self.local = local
        #: Default ``as_type`` of ``recv`` and iteration (``str``/``bytes``: raw payload).
        self.as_type: Any = None
        self._queue: Deque[bytes] = deque()
        self._waiter: Optional[asyncio.Future] = None
        self._recv_closed = False
        self._send_closed = False
        self._error: Optional[BaseException] = None
        self._paused = False

    def __repr__(self) -> str:
        return (
            f"<Stream {self.method!r} id={self.id} local={self.local} "
            f"recv_closed={self._recv_closed} send_closed={self._send_closed}>"
        )

    @property
    def recv_closed(self) -> bool:
        return self._recv_closed

    @property
    def send_closed(self) -> bool:
        return self._send_closed

    # -- receiving ------------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _on_frame(self, msg: Any) -> None:
        if msg.payload and not self._recv_closed:
            self._queue.append(msg.payload)
            if len(self._queue) > self.queue_size and not self._paused:
                conn = self.peer.conn
                if conn is not None:
                    self._paused = True
                    conn.pause_reading()
            self._wake()
        if msg.cmd_byte & STREAM_EOF:
            self._recv_closed = True
            self._wake()
            self._maybe_forget()

    def _connection_lost(self, exc: BaseException) -> None:
        self._error = exc
        self._recv_closed = True
        self._send_closed = True
        self._wake()

    async def recv(self, as_type: Any = None) -> Any:
        """The next value (decoded with the codec, or raw with ``as_type=str``/``bytes``).
        Raises EOFError after the peer's last frame, ConnectionLost if the connection
        dropped."""
        queue = self._queue
        while not queue:
            if self._error is not None:
                raise self._error
            if self._recv_closed:
                raise EOFError(f"stream {self.method!r} id={self.id} closed by the peer")
            self._waiter = self.peer._loop.create_future()
            await self._waiter
        payload = queue.popleft()
        if self._paused and len(queue) <= self.queue_size // 2:
            self._paused = False
            conn = self.peer.conn
            if conn is not None and not conn.closing:
                conn.resume_reading()
        return payload_to_value(payload, self.peer.codec, as_type or self.as_type)

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.recv()
        except EOFError:
            raise StopAsyncIteration from None

    def close_recv(self) -> None:
        """Stop receiving: queued and later frames are dropped."""
        self._recv_closed = True
        self._queue.clear()
        self._wake()
        self._maybe_forget()

    # -- sending --------------------------------------------------------------------------------

    def _frame(self, payload: bytes, eof: bool) -> bytes:
        cmd = CMD_STREAM | (STREAM_LOCAL if self.local else 0) | (STREAM_EOF if eof else 0)
        return encode(cmd, self.method, self.id, payload)

    async def send(self, value: Any) -> None:
        """Send one value; waits while the connection's write queue is above its
        high-water mark."""
        self.send_nowait(value)
        conn = self.peer.conn
        if conn is not None and conn.buffered:
            try:
                await conn.drain()
            except ConnectionError as exc:
                raise ConnectionLost(str(exc)) from None

    def send_nowait(self, value: Any, eof: bool = False) -> None:
        """Send one value without waiting for the write queue (``eof``: as the last)."""
        if self._error is not None:
            raise self._error
        if self._send_closed:
            raise RuntimeError(f"stream {self.method!r} id={self.id} is closed for sending")
        payload = value_to_payload(value, self.peer.codec)
        if eof:
            self._send_closed = True
        self.peer._send(self._frame(payload, eof))
        if eof:
            self._maybe_forget()

    async def send_and_close(self, value: Any) -> None:
        """Send ``value`` as the last frame (arpc ``SendAndClose``)."""
        self.send_nowait(value, eof=True)

    async def close_send(self) -> None:
        """Tell the peer this side sends no more (an empty frame with the EOF bit)."""
        if self._send_closed or self._error is not None:
            return
        self._send_closed = True
        try:
            self.peer._send(self._frame(b"", True))
        finally:
            self._maybe_forget()

    def _maybe_forget(self) -> None:
        if self._recv_closed and self._send_closed:
            self.peer._forget_stream(self)

    def _abandon(self) -> None:
        self._recv_closed = True
        self._send_closed = True
        self.peer._forget_stream(self)

    async def _run_handler(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ConnectionLost:
            pass
        except Exception:
            logger.exception("nbio.rpc: stream handler for %r raised", self.method)
        finally:
            if not self._send_closed and self._error is None:
                try:
                    await self.close_send()
                except ConnectionLost:
                    pass
            self.close_recv()

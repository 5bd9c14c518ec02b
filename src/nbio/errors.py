"""Typed errors shared by every nbio layer.

Engine reasons handed to ``on_close(conn, exc)``:

* ``None`` - closed locally (``conn.close()`` / ``conn.abort()`` / engine shutdown)
* :class:`ClosedByPeer` - the peer closed its side (EOF)
* :class:`ConnectionResetError` (builtin) or another :class:`OSError` - socket error such as a reset
* :class:`DeadlineExceeded` - a read, write or idle deadline fired
* :class:`WriteStalled` - data was queued but the peer accepted no byte of it for
  ``write_stall_timeout`` seconds (it stopped reading)
* :class:`WriteBufferOverflow` - more than ``max_write_buffer`` bytes were already queued
  when a new write arrived (a producer that ignores backpressure)
* any other exception - raised by a user callback for this connection (it is logged too)
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "BackplaneError",
    "BackplaneUnavailable",
    "ClosedByPeer",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionLost",
    "DeadlineExceeded",
    "HTTPMessageTooBig",
    "HTTPProtocolError",
    "MessageTooBig",
    "NbioError",
    "NotConnected",
    "ProtocolError",
    "RequestNotProcessed",
    "RpcError",
    "RpcTimeout",
    "StreamReset",
    "TooManyConnections",
    "WriteBufferOverflow",
    "WriteStalled",
]


class NbioError(Exception):
    """Base class of every error nbio raises on its own behalf."""


class ConnectionClosed(NbioError, ConnectionError):
    """The connection is closed; ``code`` and ``reason`` say how (``code`` is a
    WebSocket close code where there is one, else ``None``)."""

    def __init__(self, code: Optional[int] = None, reason: str = "connection closed") -> None:
        super().__init__(reason if code is None else f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class ClosedByPeer(ConnectionClosed):
    """The peer closed the connection (EOF)."""

    def __init__(self, reason: str = "connection closed by peer") -> None:
        super().__init__(None, reason)


class DeadlineExceeded(NbioError, TimeoutError):
    """A read, write or idle deadline expired; ``kind`` is ``"read"``, ``"write"`` or ``"idle"``."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"{kind} deadline exceeded")
        self.kind = kind


class WriteStalled(DeadlineExceeded):
    """Bytes were queued for the peer but it accepted none of them for ``timeout`` seconds:
    the peer stopped reading (``kind`` is ``"stall"``)."""

    def __init__(self, timeout: float, buffered: int) -> None:
        NbioError.__init__(
            self, f"write stalled: {buffered} bytes queued, peer read nothing for {timeout:g} s")
        self.kind = "stall"
        self.timeout = timeout
        self.buffered = buffered


class WriteBufferOverflow(NbioError):
    """A write arrived while more than ``max_write_buffer`` bytes were already queued for the
    peer: the producer ignored backpressure (``await conn.drain()`` / ``on_drain``). The
    message in flight itself may be of any size."""

    def __init__(self, buffered: int, limit: int) -> None:
        super().__init__(f"write buffer overflow: {buffered} bytes queued, limit {limit}")
        self.buffered = buffered
        self.limit = limit


class TooManyConnections(NbioError):
    """The engine's ``max_connections`` limit was reached."""


class ProtocolError(NbioError):
    """The peer broke the protocol (malformed frame, request or message)."""


class MessageTooBig(ProtocolError):
    """A frame, message or body is larger than the configured limit."""


class RpcError(NbioError):
    """An RPC failed on the remote side; the message is the remote error text."""


class RpcTimeout(RpcError, TimeoutError):
    """An RPC call got no response within its timeout."""


class ConnectionLost(NbioError, ConnectionError):
    """The connection carrying an RPC dropped before the call was answered."""


class HTTPProtocolError(ProtocolError):
    """An HTTP/1.x peer broke the protocol.

    ``status`` is the HTTP status a server answers with before closing the connection
    (400, 413, 414, 431, 501 or 505); it is ``None`` when a client received a malformed
    response. ``reason`` is a short human-readable explanation.
    """

    def __init__(self, status: Optional[int], reason: str) -> None:
        super().__init__(reason if status is None else f"{status} {reason}")
        self.status = status
        self.reason = reason


class HTTPMessageTooBig(HTTPProtocolError, MessageTooBig):
    """An HTTP message body is larger than the configured limit (status 413 on a server)."""


class NotConnected(ConnectionLost):
    """An RPC client is not connected (closed, or between reconnect attempts): nothing was sent."""


class ConnectionClosedOK(ConnectionClosed):
    """A WebSocket closed normally (close code 1000, 1001 or none): ``async for`` ends."""


class ConnectionClosedError(ConnectionClosed):
    """A WebSocket closed with an error code or without a closing handshake (1006)."""


class BackplaneError(NbioError):
    """A pub/sub backplane (see :mod:`nbio.backplane`) could not do its job."""


class BackplaneUnavailable(BackplaneError, ConnectionError):
    """The backplane's broker is unreachable: publishes are dropped (and counted) until it
    reconnects, and messages published elsewhere meanwhile do not arrive."""


class StreamReset(NbioError, ConnectionError):
    """The peer reset an HTTP/2 or HTTP/3 stream (RST_STREAM / RESET_STREAM): the request
    failed. ``error_code`` is the protocol's error code, ``stream_id`` the stream."""

    def __init__(self, error_code: int, stream_id: int, reason: str = "") -> None:
        super().__init__(reason or f"stream {stream_id} reset by the peer "
                                   f"(error code {error_code})")
        self.error_code = error_code
        self.stream_id = stream_id


class RequestNotProcessed(ConnectionClosed):
    """The server did not process the request (an HTTP/2 GOAWAY below its stream, or
    REFUSED_STREAM): sending it again, on another connection, is safe."""

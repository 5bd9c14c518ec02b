"""Sans-IO WebSocket protocol (RFC 6455 + RFC 7692), Python-facing API.

Two ways to drive the same C core (:class:`nbio.ws._protocol.WebSocketCore`):

* callbacks (what the engine uses): ``core.feed_c(buf, n, handler, conn)`` from Cython or
  ``core.feed(data, handler, conn)``, with a per-listener :class:`Handler`;
* events: :class:`WebSocketProtocol` ``.receive_data(data) -> list[Event]`` plus
  ``.data_to_send()`` for the automatic answers (Pong to a Ping, Close reply).

Sending is framing: ``encode_message``, ``ping``, ``pong``, ``send_close``,
``close_reply`` return the bytes to write. :class:`BroadcastMessage` frames a message once
for many server connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

from nbio.errors import ProtocolError
from nbio.ws._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_frame,
    encode_message,
)
from nbio.ws._protocol import CLOSED, CLOSING, OPEN, Handler, WebSocketCore
from nbio.ws.deflate import compress_message

__all__ = [
    "CLOSED",
    "CLOSING",
    "OPEN",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "BroadcastMessage",
    "Close",
    "Event",
    "Handler",
    "Message",
    "Ping",
    "Pong",
    "WebSocketCore",
    "WebSocketProtocol",
    "encode_broadcast",
    "encode_frame",
]


@dataclass(frozen=True)
class Message:
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    data: Union[bytes, str]
    is_text: bool


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Close:
    """The peer's Close (``code`` 1005 when it had none) or, with ``error`` set, our failing
    of the connection because the peer broke the protocol (code 1002, 1007 or 1009)."""

    code: int
    reason: str = ""
    error: Optional[ProtocolError] = None


Event = Union[Message, Ping, Pong, Close]


class _Collector(Handler):
    """Turns core callbacks into events (and automatic answers)."""

    __slots__ = ("auto", "events", "out")

    def __init__(self, auto: bool) -> None:
        self.events: List[Event] = []
        self.out: List[bytes] = []
        self.auto = auto

    def on_message(self, conn: Any, data: Any, is_text: bool) -> None:
        self.events.append(Message(data, is_text))

    def on_ping(self, conn: Any, payload: bytes) -> None:
        self.events.append(Ping(payload))
        if self.auto and conn.state == OPEN:
            self.out.append(conn.pong(payload))

    def on_pong(self, conn: Any, payload: bytes) -> None:
        self.events.append(Pong(payload))

    def on_close(self, conn: Any, code: int, reason: str) -> None:
        self.events.append(Close(code, reason, conn.exception))
        if self.auto:
            self.out.append(conn.close_reply())


class WebSocketProtocol(WebSocketCore):
    """Event-style sans-IO WebSocket connection (after the handshake).

    ``receive_data(data)`` returns the events parsed from ``data``; with ``auto_reply``
    (default) Pongs and the Close reply are queued for :meth:`data_to_send`.
    """

    __slots__ = ("_auto", "_out")

    def __init__(
        self,
        is_client: bool = False,
        max_size: int = 1 << 20,
        deflate: Any = None,
        auto_reply: bool = True,
    ) -> None:
        super().__init__(is_client, max_size, deflate)
        self._auto = auto_reply
        self._out: List[bytes] = []

    def receive_data(self, data: Any) -> List[Event]:
        """Parse bytes received from the peer into events."""
        collector = _Collector(self._auto)
        self.feed(data, collector, self)
        if collector.out:
            self._out.extend(collector.out)
        return collector.events

    def data_to_send(self) -> bytes:
        """Bytes the protocol itself wants written (Pongs, Close reply); clears the queue."""
        out = b"".join(self._out)
        self._out.clear()
        return out


def encode_broadcast(
    data: Union[str, bytes], *, compress: bool = False, level: int = 6, wbits: int = 15
) -> bytes:
    """Frame a server->client message once, to write to many connections.

    With ``compress`` the message is deflated independently of any history (valid for
    connections whose permessage-deflate has server_no_context_takeover and a
    server_max_window_bits >= ``wbits``).
    """
    if not compress:
        return encode_message(data)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    opcode = OP_TEXT if isinstance(data, str) else OP_BINARY
    return encode_frame(opcode, compress_message(payload, level, wbits), rsv1=True)


class BroadcastMessage:
    """One message to send to many server-side connections, framed at most twice (plain
    and compressed) however many connections get it.

    ``frame_for(core)`` picks the shared frame that fits the connection, or frames it
    for that connection alone when the shared bytes cannot be used (client side, or
    permessage-deflate with context takeover).
    """

    __slots__ = ("_frames", "data")

    def __init__(self, data: Union[str, bytes]) -> None:
        self.data = data
        self._frames: Dict[Any, bytes] = {}

    def frame_for(self, core: WebSocketCore) -> bytes:
        """The bytes to write to ``core``'s connection."""
        if core.is_client:
            return core.encode_message(self.data)
        pmd = core.deflate
        if pmd is None or len(self.data) < pmd.threshold:
            key: Any = None
        elif pmd.local_no_context_takeover:
            key = (pmd.level, pmd.local_max_window_bits, pmd.mem_level)
        else:
            return core.encode_message(self.data)
        frame = self._frames.get(key)
        if frame is None:
            if key is None:
                frame = encode_message(self.data)
            else:
                payload = (
                    self.data.encode("utf-8") if isinstance(self.data, str) else bytes(self.data)
                )
                opcode = OP_TEXT if isinstance(self.data, str) else OP_BINARY
                frame = encode_frame(opcode, compress_message(payload, *key), rsv1=True)
            self._frames[key] = frame
        return frame

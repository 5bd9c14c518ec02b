"""Helpers for the WebSocket protocol tests: an independent pure-Python frame builder
(any length encoding, any RSV bits, fixed mask keys) and an event recorder."""

from __future__ import annotations

import struct
from typing import Any, List, Optional, Sequence, Tuple

from nbio.ws.protocol import Handler, WebSocketProtocol

KEY = b"\x37\xfa\x21\x3d"


def mask_py(data: bytes, key: bytes, offset: int = 0) -> bytes:
    """Reference (slow) masking."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(data))


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: Optional[bytes] = KEY,
    length_form: Optional[int] = None,
    length: Optional[int] = None,
) -> bytes:
    """Build a frame by hand. ``rsv`` is the 3 RSV bits (0b100 = RSV1); ``length_form``
    forces the 7-bit (None/7), 16-bit (16) or 64-bit (64) length encoding; ``length``
    overrides the declared length."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    if form == 7:
        head = bytes([b0, mbit | n])
    elif form == 16:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + mask_py(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Recorder(Handler):
    """Records callbacks as tuples: ("message", data, is_text), ("ping", p), ("pong", p),
    ("close", code, reason)."""

    def __init__(self) -> None:
        self.calls: List[Tuple[Any, ...]] = []
        self.conns: List[Any] = []

    def on_message(self, conn: Any, data: Any, is_text: bool) -> None:
        self.conns.append(conn)
        self.calls.append(("message", data, is_text))

    def on_ping(self, conn: Any, payload: bytes) -> None:
        self.calls.append(("ping", payload))

    def on_pong(self, conn: Any, payload: bytes) -> None:
        self.calls.append(("pong", payload))

    def on_close(self, conn: Any, code: int, reason: str) -> None:
        self.calls.append(("close", code, reason))


def server(**kw: Any) -> WebSocketProtocol:
    return WebSocketProtocol(is_client=False, **kw)


def client(**kw: Any) -> WebSocketProtocol:
    return WebSocketProtocol(is_client=True, **kw)


def feed_split(proto: WebSocketProtocol, data: bytes, cuts: Sequence[int]) -> list:
    """receive_data() over ``data`` cut at the given offsets; returns all events."""
    events: list = []
    prev = 0
    for cut in [*sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]:
        events += proto.receive_data(memoryview(data)[prev:cut])
        prev = cut
    return events


def failure(events: list) -> Optional[int]:
    """The close code of a failure event at the end of ``events``, else None."""
    if events and getattr(events[-1], "error", None) is not None:
        return int(events[-1].code)
    return None

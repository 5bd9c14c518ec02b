"""Coder middleware: transformations of whole frames, marked by bits of header byte 4.

arpc's ``MessageCoder`` runs ``Encode`` on every outgoing message, in the order the coders
were added, and ``Decode`` on every incoming one, in the opposite order, before the
message is dispatched. Each coder owns one bit of the header's coder byte and only
touches frames carrying it. Here a coder is any object with

* ``flag``: its bit mask in byte 4 (e.g. ``0x80`` for gzip),
* ``encode(frame: bytes) -> bytes`` and ``decode(frame: bytes) -> bytes`` on whole frames.

:class:`~nbio.rpc.message.FrameReader` takes the coders (``coders=``) and decodes flagged
frames before it parses them; senders call :func:`encode_frame`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterable, Protocol, Sequence, runtime_checkable

from nbio.errors import MessageTooBig, ProtocolError
from nbio.rpc.message import CODER_FLAG_GZIP, DEFAULT_MAX_BODY_LEN, HEADER_SIZE

__all__ = ["Coder", "GzipCoder", "coder_mask", "decode_frame", "encode_frame"]

_U32 = struct.Struct("<I")
# arpc compresses/decompresses Buffer[HeaderIndexReserved+1:], i.e. everything after the
# coder byte: command, flags, method length, seq, method and payload.
_GZIP_OFFSET = 5


@runtime_checkable
class Coder(Protocol):
    """A frame transformation owning the ``flag`` bit(s) of header byte 4."""

    flag: int

    def encode(self, frame: bytes) -> bytes: ...

    def decode(self, frame: bytes) -> bytes: ...


def encode_frame(frame: bytes, coders: Sequence[Coder]) -> bytes:
    """Apply ``coders`` to an outgoing frame, first to last (arpc's send loop)."""
    for coder in coders:
        frame = coder.encode(frame)
    return frame


def decode_frame(frame: bytes, coders: Sequence[Coder]) -> bytes:
    """Undo ``coders`` on an incoming frame, last to first, each only if its bit is set."""
    for coder in reversed(coders):
        if frame[4] & coder.flag:
            frame = coder.decode(frame)
    return frame


class GzipCoder:
    """arpc's gzip middleware (``extension/middleware/coder/gzip``), flag bit 7 (0x80).

    A frame longer than ``threshold`` bytes (header included; arpc's ``gzip.New()`` used
    1024, ``New(n)`` takes it) has everything after byte 4 replaced by a gzip member (RFC
    1952, Go's ``compress/gzip``); the body length becomes ``len(gzip) + 5 - 16`` and bit 7
    is set. It is kept only if the result is shorter than the original. Decoding inflates
    (bounded by ``max_body_len``, against decompression bombs), clears the bit and restores
    the body length.
    """

    __slots__ = ("level", "max_body_len", "threshold")

    flag = CODER_FLAG_GZIP

    def __init__(
        self, threshold: int = 1024, level: int = 6, max_body_len: int = DEFAULT_MAX_BODY_LEN
    ) -> None:
        self.threshold = threshold
        self.level = level
        self.max_body_len = max_body_len

    def encode(self, frame: bytes) -> bytes:
        if len(frame) <= self.threshold or frame[4] & CODER_FLAG_GZIP:
            return frame
        comp = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # wbits 16+15: gzip wrapper
        gz = comp.compress(memoryview(frame)[_GZIP_OFFSET:]) + comp.flush()
        total = _GZIP_OFFSET + len(gz)
        if total >= len(frame):
            return frame
        return _U32.pack(total - HEADER_SIZE) + bytes((frame[4] | CODER_FLAG_GZIP,)) + gz

    def decode(self, frame: bytes) -> bytes:
        if not frame[4] & CODER_FLAG_GZIP:
            return frame
        limit = HEADER_SIZE - _GZIP_OFFSET + self.max_body_len
        data = memoryview(frame)[_GZIP_OFFSET:]
        parts = []
        size = 0
        try:
            while True:  # Go's gzip.Reader reads concatenated members (multistream)
                d = zlib.decompressobj(31)
                chunk = d.decompress(data, limit - size + 1)
                size += len(chunk)
                parts.append(chunk)
                if size > limit or d.unconsumed_tail:
                    raise MessageTooBig(f"gzip body inflates beyond {self.max_body_len} bytes")
                if not d.eof:
                    raise ProtocolError("invalid gzip data: truncated")
                data = memoryview(d.unused_data)
                if not data:
                    break
        except zlib.error as exc:
            raise ProtocolError(f"invalid gzip data: {exc}") from None
        inner = b"".join(parts)
        if len(inner) < HEADER_SIZE - _GZIP_OFFSET:
            raise ProtocolError("invalid gzip data: inflated frame shorter than a header")
        body_len = _GZIP_OFFSET + len(inner) - HEADER_SIZE
        return _U32.pack(body_len) + bytes((frame[4] & ~CODER_FLAG_GZIP & 0xFF,)) + inner


def coder_mask(coders: Iterable[Coder]) -> int:
    """The coder bits handled by ``coders``."""
    mask = 0
    for c in coders:
        mask |= c.flag
    return mask & 0xFF

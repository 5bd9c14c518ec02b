"""arpc wire format: constants, :class:`Message`, frame encoding and the frame reader.

Wire-compatible with Go arpc (github.com/lesismal/arpc, ``proto.go``). Every frame is a
16-byte little-endian header, then the method, then the payload::

    [0:4]  body length (uint32) = len(method) + len(payload)
    [4]    coder flag bits, owned by coder middleware (bit 7 gzip, bit 0 tracer)
    [5]    command in the low 6 bits; for streams 0x80 = sent by the side that created the
           stream, 0x40 = the sender's last frame
    [6]    flags: 0x01 error, 0x02 async
    [7]    method length (1..127; 0 for ping/pong)
    [8:16] seq (uint64; the stream id for streams)

The compiled implementation (``nbio.rpc._message``) is used when built; a pure-Python one
with the same behaviour is the fallback (and the reference the tests compare it with).
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterable, List, Optional, Sequence, Union

from nbio.errors import MessageTooBig, ProtocolError

__all__ = [
    "CMD_MASK",
    "CMD_NONE",
    "CMD_NOTIFY",
    "CMD_PING",
    "CMD_PONG",
    "CMD_REQUEST",
    "CMD_RESPONSE",
    "CMD_STREAM",
    "CODER_FLAG_GZIP",
    "CODER_FLAG_TRACER",
    "DEFAULT_MAX_BODY_LEN",
    "ERR_METHOD_NOT_FOUND",
    "FLAG_ASYNC",
    "FLAG_ERROR",
    "HEADER_SIZE",
    "MAX_METHOD_LEN",
    "PING_FRAME",
    "PONG_FRAME",
    "STREAM_EOF",
    "STREAM_LOCAL",
    "FrameReader",
    "Message",
    "encode",
    "encode_header",
    "error_response",
    "error_response_to",
    "notify",
    "parse_frame",
    "request",
    "response",
    "response_to",
    "stream_frame",
]

# Commands (header byte 5, low 6 bits).
CMD_NONE = 0
CMD_REQUEST = 1
CMD_RESPONSE = 2
CMD_NOTIFY = 3
CMD_PING = 4
CMD_PONG = 5
CMD_STREAM = 6
CMD_MASK = 0x3F
#: Stream bits of the command byte.
STREAM_LOCAL = 0x80
STREAM_EOF = 0x40

# Flags (header byte 6).
FLAG_ERROR = 0x01
FLAG_ASYNC = 0x02

# Coder flag bits (header byte 4), arpc extension/middleware/coder/config.go.
CODER_FLAG_TRACER = 0x01  # FlagBitTracer = 0
CODER_FLAG_GZIP = 0x80  # FlagBitGZip = 7

HEADER_SIZE = 16
MAX_METHOD_LEN = 127
#: arpc DefaultMaxBodyLen: the largest body (method + payload) a reader accepts.
DEFAULT_MAX_BODY_LEN = 1024 * 1024 * 64 - 16
_MAX_U32 = 0xFFFFFFFF

#: Text of the error response to a request for an unknown method (arpc ErrMethodNotFound).
ERR_METHOD_NOT_FOUND = "method not found"

_HEADER = struct.Struct("<IBBBBQ")
_U32 = struct.Struct("<I")

MethodLike = Union[str, bytes]
Payload = Union[bytes, bytearray, memoryview, str, None]


def _method_bytes(method: MethodLike) -> bytes:
    if isinstance(method, str):
        return method.encode("utf-8", "surrogateescape")
    return bytes(method)


def _payload_bytes(payload: Payload) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return bytes(payload)


def _check_bytes(cmd: int, flags: int, coder_flags: int) -> None:
    if not (0 <= cmd <= 255 and 0 <= flags <= 255 and 0 <= coder_flags <= 255):
        raise ValueError("cmd, flags and coder_flags are bytes (0..255)")


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= 0xFFFFFFFFFFFFFFFF:
        raise OverflowError("seq is a uint64")


class Message:
    """One arpc message, parsed. Fields are read-only; build frames with :func:`encode`.

    ``cmd_byte`` is the raw command byte (with a stream's 0x80/0x40 bits), ``cmd`` the
    command alone. ``method`` is decoded as UTF-8 with ``surrogateescape`` so that any
    byte sequence round-trips.
    """

    __slots__ = ("cmd_byte", "coder_flags", "flags", "method", "payload", "seq")

    cmd_byte: int
    flags: int
    coder_flags: int
    seq: int
    method: str
    payload: bytes

    def __init__(
        self,
        cmd: int,
        method: MethodLike = "",
        seq: int = 0,
        payload: Payload = b"",
        flags: int = 0,
        coder_flags: int = 0,
    ) -> None:
        _check_bytes(cmd, flags, coder_flags)
        _check_seq(seq)
        s = object.__setattr__
        s(self, "cmd_byte", cmd)
        s(self, "flags", flags)
        s(self, "coder_flags", coder_flags)
        s(self, "seq", seq)
        s(
            self,
            "method",
            method if isinstance(method, str) else bytes(method).decode("utf-8", "surrogateescape"),
        )
        s(self, "payload", _payload_bytes(payload))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Message.{name} is read-only")

    @property
    def cmd(self) -> int:
        """The command (CMD_REQUEST ... CMD_STREAM), without a stream's bits."""
        return self.cmd_byte & CMD_MASK

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def is_async(self) -> bool:
        return bool(self.flags & FLAG_ASYNC)

    @property
    def is_stream_local(self) -> bool:
        """Stream frame sent by the side that created the stream."""
        return bool(self.cmd_byte & STREAM_LOCAL)

    @property
    def is_stream_eof(self) -> bool:
        """Last stream frame from its sender."""
        return bool(self.cmd_byte & STREAM_EOF)

    @property
    def stream_id(self) -> int:
        return self.seq

    @property
    def body_len(self) -> int:
        """len(method) + len(payload) in bytes, as in the header."""
        return len(_method_bytes(self.method)) + len(self.payload)

    @property
    def error(self) -> Optional[str]:
        """The remote error text of an error response, else None."""
        if self.flags & FLAG_ERROR:
            return self.payload.decode("utf-8", "replace")
        return None

    def to_bytes(self) -> bytes:
        """The frame of this message."""
        return _py_encode(
            self.cmd_byte, self.method, self.seq, self.payload, self.flags, self.coder_flags
        )

    def _key(self) -> tuple:
        return (self.cmd_byte, self.flags, self.coder_flags, self.seq, self.method, self.payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _PyMessage):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        more = "..." if len(self.payload) > 64 else ""
        return (
            f"Message(cmd={self.cmd}, method={self.method!r}, seq={self.seq}, "
            f"flags=0x{self.flags:02x}, cmd_byte=0x{self.cmd_byte:02x}, "
            f"coder_flags=0x{self.coder_flags:02x}, payload={self.payload[:64]!r}{more})"
        )


_PyMessage = Message


def encode(
    cmd: int,
    method: MethodLike,
    seq: int,
    payload: Payload = b"",
    flags: int = 0,
    coder_flags: int = 0,
) -> bytes:
    """Build one frame. ``cmd`` is the whole command byte (a stream's bits included);
    ``payload`` is bytes-like (a str is sent as UTF-8)."""
    _check_bytes(cmd, flags, coder_flags)
    _check_seq(seq)
    mb = _method_bytes(method)
    if len(mb) > MAX_METHOD_LEN:
        raise ValueError(f"invalid method length: {len(mb)}, should <= {MAX_METHOD_LEN}")
    pb = _payload_bytes(payload)
    body_len = len(mb) + len(pb)
    if body_len > _MAX_U32:
        raise MessageTooBig(f"invalid body length: {body_len}")
    return _HEADER.pack(body_len, coder_flags, cmd, flags, len(mb), seq) + mb + pb


_py_encode = encode


def encode_header(
    cmd: int,
    method: MethodLike,
    seq: int,
    payload_len: int,
    flags: int = 0,
    coder_flags: int = 0,
) -> bytes:
    """Header and method of a frame whose payload (``payload_len`` bytes) is written
    separately, e.g. with writev."""
    _check_bytes(cmd, flags, coder_flags)
    _check_seq(seq)
    mb = _method_bytes(method)
    if len(mb) > MAX_METHOD_LEN:
        raise ValueError(f"invalid method length: {len(mb)}, should <= {MAX_METHOD_LEN}")
    body_len = len(mb) + payload_len
    if payload_len < 0 or body_len > _MAX_U32:
        raise MessageTooBig(f"invalid body length: {body_len}")
    return _HEADER.pack(body_len, coder_flags, cmd, flags, len(mb), seq) + mb


def _build(frame: bytes, strict: bool) -> Optional[Message]:
    body_len, coder_flags, cmd_byte, flags, ml, seq = _HEADER.unpack_from(frame)
    cmd = cmd_byte & CMD_MASK
    if cmd == CMD_NONE or cmd > CMD_STREAM:
        raise ProtocolError(f"invalid cmd [{cmd}]")
    if cmd == CMD_PING or cmd == CMD_PONG:
        ml = min(ml, body_len)
    elif ml == 0 or ml > MAX_METHOD_LEN or ml > body_len:
        if strict:
            raise ProtocolError(f"invalid method length {ml} (body length {body_len})")
        return None
    msg = _PyMessage.__new__(_PyMessage)
    s = object.__setattr__
    s(msg, "cmd_byte", cmd_byte)
    s(msg, "flags", flags)
    s(msg, "coder_flags", coder_flags)
    s(msg, "seq", seq)
    s(msg, "method", frame[HEADER_SIZE : HEADER_SIZE + ml].decode("utf-8", "surrogateescape"))
    s(msg, "payload", bytes(frame[HEADER_SIZE + ml : HEADER_SIZE + body_len]))
    return msg


def parse_frame(data: Any, max_body_len: int = DEFAULT_MAX_BODY_LEN) -> Message:
    """Parse exactly one whole frame; any malformation raises ProtocolError (strict)."""
    frame = bytes(data)
    if len(frame) < HEADER_SIZE:
        raise ProtocolError(f"truncated frame: {len(frame)} bytes, header is {HEADER_SIZE}")
    (body_len,) = _U32.unpack_from(frame)
    if body_len > max_body_len:
        raise MessageTooBig(f"invalid body length: {body_len} (limit {max_body_len})")
    if len(frame) != HEADER_SIZE + body_len:
        raise ProtocolError(
            f"frame length {len(frame)} does not match body length {body_len} + {HEADER_SIZE}"
        )
    msg = _build(frame, True)
    assert msg is not None
    return msg


class FrameReader:
    """Incremental frame reader (sans-IO).

    ``feed(data)`` takes any bytes-like object (a memoryview valid only during the call is
    fine: only the unparsed tail is copied) and returns the list of complete messages, or,
    when a ``callback`` was given, calls ``callback(msg)`` for each and returns None.

    Raises :class:`~nbio.errors.MessageTooBig` for a body over ``max_body_len`` (checked as
    soon as the 4 length bytes arrive) and :class:`~nbio.errors.ProtocolError` for an
    unknown command: the caller closes the connection. A message whose method length is
    invalid (0 or > 127 on anything but ping/pong, or longer than the body) is dropped and
    counted in ``dropped``, as arpc does. Truncated input waits for more.

    ``coders`` (objects with ``flag`` and ``decode(frame) -> frame``) are applied, last
    first, to frames whose coder byte has their flag bit, before the frame is parsed.
    An idle reader holds no buffer.
    """

    __slots__ = ("_callback", "_coder_mask", "_coders", "_max_body_len", "_tail", "dropped")

    def __init__(
        self,
        callback: Optional[Callable[[Message], Any]] = None,
        max_body_len: int = DEFAULT_MAX_BODY_LEN,
        coders: Iterable[Any] = (),
    ) -> None:
        if not 0 <= max_body_len <= _MAX_U32:
            raise ValueError("max_body_len must be within 0 .. 2**32-1")
        self._tail: Optional[bytearray] = None
        self._max_body_len = max_body_len
        self._callback = callback
        self._coders: Sequence[Any] = tuple(coders)
        mask = 0
        for c in self._coders:
            mask |= int(c.flag)
        self._coder_mask = mask & 0xFF
        self.dropped = 0

    @property
    def max_body_len(self) -> int:
        return self._max_body_len

    @property
    def pending(self) -> int:
        """Bytes buffered of an incomplete frame."""
        return 0 if self._tail is None else len(self._tail)

    def reset(self) -> None:
        """Drop any buffered partial frame."""
        self._tail = None

    def _too_big(self, body_len: int) -> MessageTooBig:
        return MessageTooBig(f"invalid body length: {body_len} (limit {self._max_body_len})")

    def feed(self, data: Any) -> Optional[List[Message]]:
        out: Optional[List[Message]] = [] if self._callback is None else None
        buf = bytes(data)
        n = len(buf)
        used = 0
        tail = self._tail
        if tail is not None and len(tail) >= HEADER_SIZE:
            if HEADER_SIZE + _U32.unpack_from(tail)[0] <= len(tail):
                # whole frames were left in the tail by a callback that raised
                buf = bytes(tail) + buf
                n = len(buf)
                tail = self._tail = None
        if tail is not None:
            t = len(tail)
            if t < HEADER_SIZE:
                take = min(HEADER_SIZE - t, n)
                tail += buf[:take]
                used = take
                t += take
                if t >= 4:
                    (body_len,) = _U32.unpack_from(tail)
                    if body_len > self._max_body_len:
                        raise self._too_big(body_len)
                if t < HEADER_SIZE:
                    return out
            (body_len,) = _U32.unpack_from(tail)
            total = HEADER_SIZE + body_len
            need = total - t
            take = min(need, n - used)
            if take > 0:
                tail += buf[used : used + take]
                used += take
            if take < need:
                return out
            self._tail = None
            try:
                self._deliver(bytes(tail), out)
            except BaseException:
                if used < n:
                    self._tail = bytearray(buf[used:])
                raise
        while n - used >= 4:
            (body_len,) = _U32.unpack_from(buf, used)
            if body_len > self._max_body_len:
                if used < n:
                    self._tail = bytearray(buf[used:])
                raise self._too_big(body_len)
            total = HEADER_SIZE + body_len
            if n - used < total:
                break
            frame = buf[used : used + total]
            used += total
            try:
                self._deliver(frame, out)
            except BaseException:
                if used < n:
                    self._tail = bytearray(buf[used:])
                raise
        if used < n:
            self._tail = bytearray(buf[used:])
        return out

    def _deliver(self, frame: bytes, out: Optional[List[Message]]) -> None:
        if frame[4] & self._coder_mask:
            for coder in reversed(self._coders):
                if frame[4] & coder.flag:
                    frame = bytes(coder.decode(frame))
                    if len(frame) < HEADER_SIZE:
                        raise ProtocolError("coder produced a truncated frame")
            (body_len,) = _U32.unpack_from(frame)
            if body_len > self._max_body_len:
                raise self._too_big(body_len)
            if len(frame) != HEADER_SIZE + body_len:
                raise ProtocolError("coder produced a frame whose length does not match")
        msg = _build(frame, False)
        if msg is None:
            self.dropped += 1
        elif out is not None:
            out.append(msg)
        else:
            assert self._callback is not None
            self._callback(msg)


#: The pure-Python implementations, kept importable for tests and comparison.
PyMessage = Message
py_encode = encode
py_encode_header = encode_header
py_parse_frame = parse_frame
PyFrameReader = FrameReader

try:  # the compiled implementation, when built
    from nbio.rpc._message import (  # type: ignore[no-redef]
        FrameReader,
        Message,
        encode,
        encode_header,
        parse_frame,
    )

    COMPILED = True
except ImportError:  # pragma: no cover - exercised where the extension is not built
    COMPILED = False

#: A ping and a pong are a bare header: command 4 or 5, everything else zero.
PING_FRAME = encode(CMD_PING, "", 0)
PONG_FRAME = encode(CMD_PONG, "", 0)


def _flags(is_error: bool, is_async: bool) -> int:
    return (FLAG_ERROR if is_error else 0) | (FLAG_ASYNC if is_async else 0)


def _check_method(method: MethodLike) -> None:
    ml = len(_method_bytes(method))
    if ml == 0 or ml > MAX_METHOD_LEN:
        raise ValueError(f"invalid method length: {ml}, should <= {MAX_METHOD_LEN}")


def request(
    method: MethodLike, seq: int, payload: Payload = b"", *, is_async: bool = False
) -> bytes:
    """A Call (``is_async`` for arpc's CallAsync)."""
    _check_method(method)
    return encode(CMD_REQUEST, method, seq, payload, FLAG_ASYNC if is_async else 0)


def notify(method: MethodLike, seq: int, payload: Payload = b"", *, is_async: bool = True) -> bytes:
    """A Notify. arpc's client numbers notifies from its seq counter and sets the async
    flag on them (``newRequestMessage(CmdNotify, ..., isAsync=true)``)."""
    _check_method(method)
    return encode(CMD_NOTIFY, method, seq, payload, FLAG_ASYNC if is_async else 0)


def response(
    method: MethodLike, seq: int, payload: Payload = b"", *, is_async: bool = False
) -> bytes:
    """A successful response: repeats the request's method, seq and async bit."""
    return encode(CMD_RESPONSE, method, seq, payload, FLAG_ASYNC if is_async else 0)


def error_response(method: MethodLike, seq: int, text: str, *, is_async: bool = False) -> bytes:
    """An error response: flag 0x01 and the UTF-8 error text as payload."""
    return encode(CMD_RESPONSE, method, seq, text, _flags(True, is_async))


def response_to(req: Message, payload: Payload = b"") -> bytes:
    """The response to ``req`` (same method, seq and async bit)."""
    return encode(CMD_RESPONSE, req.method, req.seq, payload, req.flags & FLAG_ASYNC)


def error_response_to(req: Message, text: str) -> bytes:
    """The error response to ``req``, e.g. ``error_response_to(req, ERR_METHOD_NOT_FOUND)``."""
    return encode(CMD_RESPONSE, req.method, req.seq, text, FLAG_ERROR | (req.flags & FLAG_ASYNC))


def stream_frame(
    method: MethodLike,
    stream_id: int,
    payload: Payload = b"",
    *,
    local: bool,
    eof: bool = False,
) -> bytes:
    """A stream frame. ``local`` is True on the side that created the stream; ``eof``
    marks the sender's last frame (arpc's CloseSend sends an empty one)."""
    _check_method(method)
    cmd = CMD_STREAM | (STREAM_LOCAL if local else 0) | (STREAM_EOF if eof else 0)
    return encode(cmd, method, stream_id, payload)

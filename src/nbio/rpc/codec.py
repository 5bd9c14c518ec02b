"""Payload codecs and arpc's value -> payload rule.

arpc (``util.ValueToBytes``) sends ``[]byte`` and ``string`` values raw, an ``error`` as its
text, ``nil`` as an empty payload, and everything else through the codec (``encoding/json``
by default). On the receiving side a ``*string`` or ``*[]byte`` target takes the payload
raw and anything else goes through ``Codec.Unmarshal``. :func:`value_to_payload` and
:func:`payload_to_value` are the Python forms of these rules.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Protocol, runtime_checkable

_orjson: Any
try:  # optional speedup
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

__all__ = [
    "DEFAULT_CODEC",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "RawCodec",
    "payload_to_value",
    "value_to_payload",
]


@runtime_checkable
class Codec(Protocol):
    """Turns values into payload bytes and back (arpc ``codec.Codec``)."""

    def marshal(self, value: Any) -> bytes: ...

    def unmarshal(self, data: bytes) -> Any: ...


# encoding/json escapes these inside strings by default (HTML safety, JS line terminators).
# They can only occur inside JSON strings, so a byte-level replace is exact.
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def _go_escape(out: bytes) -> bytes:
    if b"<" not in out and b">" not in out and b"&" not in out and b"\xe2" not in out:
        return out  # the common case (U+2028/U+2029 both start with 0xE2 in UTF-8)
    for raw, esc in _GO_ESCAPES:
        if raw in out:
            out = out.replace(raw, esc)
    return out


class JsonCodec:
    """Compact JSON, the arpc default.

    Output is compact like Go's ``json.Marshal`` (no spaces, non-ASCII as UTF-8) and, with
    ``go_escape`` (default), escapes ``< > &`` and U+2028/U+2029 the way Go does, so common
    values encode byte for byte as in Go. Known differences: floats with an integral value
    (Go ``1``, here ``1.0``) and dict key order (Go sorts map keys; pass ``sort_keys=True``
    for that; Python dicts standing for Go structs keep their order). Uses orjson when it is
    installed, else the standard library.
    """

    __slots__ = ("_go_escape", "_orjson_opts", "_sort_keys", "_use_orjson")

    def __init__(
        self, *, go_escape: bool = True, sort_keys: bool = False, use_orjson: Optional[bool] = None
    ) -> None:
        self._go_escape = go_escape
        self._sort_keys = sort_keys
        self._use_orjson = _orjson is not None if use_orjson is None else use_orjson
        if self._use_orjson and _orjson is None:
            raise RuntimeError("orjson is not installed")
        opts = 0
        if _orjson is not None:
            opts = _orjson.OPT_NON_STR_KEYS | (_orjson.OPT_SORT_KEYS if sort_keys else 0)
        self._orjson_opts = opts

    def marshal(self, value: Any) -> bytes:
        if self._use_orjson:
            out = _orjson.dumps(value, option=self._orjson_opts)
        else:
            out = json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, sort_keys=self._sort_keys
            ).encode("utf-8")
        return _go_escape(out) if self._go_escape else out

    def unmarshal(self, data: bytes) -> Any:
        if self._use_orjson:
            return _orjson.loads(data)
        return json.loads(data)


class MsgpackCodec:
    """MessagePack (optional dependency ``msgpack``): str as str8/16/32, bytes as bin."""

    __slots__ = ("_msgpack",)

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("MsgpackCodec needs the 'msgpack' package (nbio[msgpack])") from exc
        self._msgpack = msgpack

    def marshal(self, value: Any) -> bytes:
        return self._msgpack.packb(value, use_bin_type=True)

    def unmarshal(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, raw=False, strict_map_key=False)


class RawCodec:
    """Bytes in, bytes out: for applications that do their own encoding."""

    __slots__ = ()

    def marshal(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"RawCodec sends bytes-like values only, not {type(value).__name__}")

    def unmarshal(self, data: bytes) -> Any:
        return bytes(data)


DEFAULT_CODEC: Codec = JsonCodec()


def value_to_payload(value: Any, codec: Optional[Codec] = None) -> bytes:
    """arpc's rule: bytes-like and str travel raw (str as UTF-8), an exception as its
    text, None as an empty payload, anything else through ``codec`` (JSON by default)."""
    if value is None:
        return b""
    tp = type(value)
    if tp is bytes:
        return value
    if tp is str:
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, BaseException):
        return str(value).encode("utf-8")
    return (codec or DEFAULT_CODEC).marshal(value)


def payload_to_value(data: bytes, codec: Optional[Codec] = None, as_type: Any = None) -> Any:
    """The receiving side of the rule: ``as_type=str`` gives the payload as text,
    ``as_type=bytes`` raw, otherwise it goes through ``codec``. An empty payload (arpc's
    ``nil``) decodes to None."""
    if as_type is bytes:
        return bytes(data)
    if as_type is str:
        return bytes(data).decode("utf-8")
    if not data:
        return None
    return (codec or DEFAULT_CODEC).unmarshal(data)

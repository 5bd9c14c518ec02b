"""RFC 7692 permessage-deflate: negotiation (both sides) and per-message (de)compression.

Configuration is a :class:`DeflateConfig`; negotiation produces a :class:`PerMessageDeflate`
that :class:`~nbio.ws._protocol.WebSocketCore` uses for each message.

Memory: an idle connection holds no zlib object unless the negotiated parameters require
one (context takeover). Without context takeover, compression uses one shared compressor
per thread (``Z_FULL_FLUSH`` resets the history after every message) and the inflater is
created per message. This is why the server defaults to ``server_no_context_takeover``:
then the server holds no compressor per connection and :func:`nbio.ws.protocol.encode_broadcast`
can compress a message once for many connections.

Window bits 8: zlib cannot compress raw deflate with an 8-bit window, so, like the
``websockets`` library, we never agree to *compress* with 8 bits: a server declines an
offer asking for ``server_max_window_bits=8`` (and a server configured with 8 declines
every offer), a client fails a response setting ``client_max_window_bits=8`` and refuses to
offer 8 (ValueError). Decompressing 8-bit streams is fine.
"""

from __future__ import annotations

import re
import threading
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from nbio.errors import MessageTooBig, ProtocolError

__all__ = [
    "EXTENSION_NAME",
    "DeflateConfig",
    "NegotiationError",
    "PerMessageDeflate",
    "accept_offer",
    "accept_response",
    "build_offer",
]

EXTENSION_NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
_BITS = re.compile(r"^(?:[89]|1[0-5])$")
_PARAMS = (
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
)

Params = Sequence[Tuple[str, Optional[str]]]


class NegotiationError(ProtocolError):
    """A permessage-deflate offer or response is invalid or unacceptable."""


@dataclass
class DeflateConfig:
    """Local permessage-deflate settings.

    Server: ``server_no_context_takeover`` / ``client_no_context_takeover`` are added to the
    response; ``server_max_window_bits`` caps our compression window (9-15);
    ``client_max_window_bits`` asks the client for a smaller window (only if it offered the
    parameter). Client: the same fields make up the offer (``client_max_window_bits=None``
    offers the parameter without a value: "I can use a smaller window if you ask").
    ``threshold``: messages shorter than this many bytes are sent uncompressed.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: Optional[int] = None
    client_max_window_bits: Optional[int] = None
    level: int = 6
    mem_level: int = 8
    threshold: int = 128

    def __post_init__(self) -> None:
        for name in ("server_max_window_bits", "client_max_window_bits"):
            bits = getattr(self, name)
            if bits is not None and not 8 <= bits <= 15:
                raise ValueError(f"{name} must be between 8 and 15")
        if not -1 <= self.level <= 9:
            raise ValueError("level must be between -1 and 9")
        if not 1 <= self.mem_level <= 9:
            raise ValueError("mem_level must be between 1 and 9")


_local = threading.local()


def _shared_compressor(level: int, wbits: int, mem_level: int) -> zlib._Compress:
    """One compressor per thread and parameter set, for messages without context takeover."""
    cache: Optional[Dict[Tuple[int, int, int], zlib._Compress]] = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (level, wbits, mem_level)
    enc = cache.get(key)
    if enc is None:
        enc = cache[key] = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level)
    return enc


def compress_message(data: bytes, level: int = 6, wbits: int = 15, mem_level: int = 8) -> bytes:
    """Compress one whole message independently of any other (no context takeover),
    without the trailing 0x00 0x00 0xff 0xff (RFC 7692 section 7.2.1)."""
    enc = _shared_compressor(level, wbits, mem_level)
    out = enc.compress(data) + enc.flush(zlib.Z_FULL_FLUSH)
    return out[:-4] if out.endswith(_TAIL) else out


class PerMessageDeflate:
    """Negotiated permessage-deflate state of one connection.

    ``local_*`` parameters constrain what we compress, ``remote_*`` what the peer sends.
    """

    __slots__ = (
        "_dec",
        "_enc",
        "level",
        "local_max_window_bits",
        "local_no_context_takeover",
        "mem_level",
        "remote_max_window_bits",
        "remote_no_context_takeover",
        "threshold",
    )

    def __init__(
        self,
        local_no_context_takeover: bool = False,
        remote_no_context_takeover: bool = False,
        local_max_window_bits: int = 15,
        remote_max_window_bits: int = 15,
        *,
        level: int = 6,
        mem_level: int = 8,
        threshold: int = 128,
    ) -> None:
        if not 9 <= local_max_window_bits <= 15:
            raise ValueError("local_max_window_bits must be between 9 and 15")
        if not 8 <= remote_max_window_bits <= 15:
            raise ValueError("remote_max_window_bits must be between 8 and 15")
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.level = level
        self.mem_level = mem_level
        self.threshold = threshold
        self._enc: Optional[zlib._Compress] = None
        self._dec: Optional[zlib._Decompress] = None

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_max_window_bits={self.local_max_window_bits}, "
            f"remote_max_window_bits={self.remote_max_window_bits})"
        )

    # -- sending
    def compress(self, data: bytes) -> bytes:
        """Compress a whole message payload (trailing 0x00 0x00 0xff 0xff removed)."""
        if self.local_no_context_takeover:
            return compress_message(data, self.level, self.local_max_window_bits, self.mem_level)
        enc = self._enc
        if enc is None:
            enc = self._enc = zlib.compressobj(
                self.level, zlib.DEFLATED, -self.local_max_window_bits, self.mem_level
            )
        out = enc.compress(data) + enc.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4] if out.endswith(_TAIL) else out

    # -- receiving
    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        """Inflate a chunk of a message; ``max_length`` (< 0: unlimited) is how many more
        bytes the message may grow by. Raises MessageTooBig as soon as that is exceeded
        (inflating at most ``max_length + 1`` bytes), zlib.error on corrupt data."""
        dec = self._dec
        if dec is None:
            dec = self._dec = zlib.decompressobj(wbits=-self.remote_max_window_bits)
        if max_length < 0:
            return dec.decompress(data)
        out = dec.decompress(data, max_length + 1)
        if len(out) > max_length:
            raise MessageTooBig("decompressed message too big")
        return out

    def decompress_end(self, max_length: int = -1) -> bytes:
        """Finish a message: inflate the implicit 0x00 0x00 0xff 0xff tail, then drop the
        inflater if the peer does not keep its context."""
        out = self.decompress(_TAIL, max_length)
        dec = self._dec
        if self.remote_no_context_takeover or (dec is not None and dec.eof):
            self._dec = None
        return out

    def decompress_message(self, data: bytes, max_length: int = -1) -> bytes:
        """Inflate a whole message payload at once (convenience for tests and tools)."""
        out = self.decompress(data, max_length)
        return out + self.decompress_end(max_length - len(out) if max_length >= 0 else -1)


# ---------------------------------------------------------------- negotiation


def _validate(params: Params) -> Dict[str, Optional[str]]:
    """Check one offer/response's parameters (RFC 7692 section 7.1); raise NegotiationError."""
    seen: Dict[str, Optional[str]] = {}
    for name, value in params:
        if name not in _PARAMS:
            raise NegotiationError(f"unknown permessage-deflate parameter {name!r}")
        if name in seen:
            raise NegotiationError(f"duplicate permessage-deflate parameter {name!r}")
        if name.endswith("no_context_takeover"):
            if value is not None:
                raise NegotiationError(f"{name} takes no value")
        elif value is None:
            if name == "server_max_window_bits":
                raise NegotiationError("server_max_window_bits needs a value")
        elif not _BITS.match(value):
            raise NegotiationError(f"invalid {name} value {value!r}")
        seen[name] = value
    return seen


def _fmt(params: List[Tuple[str, Optional[str]]]) -> str:
    return "; ".join([EXTENSION_NAME] + [n if v is None else f"{n}={v}" for n, v in params])


def accept_offer(params: Params, config: DeflateConfig) -> Optional[Tuple[str, PerMessageDeflate]]:
    """Server side: accept one permessage-deflate offer, or decline it (None) when it is
    invalid or incompatible with ``config``. Returns the response element for the
    Sec-WebSocket-Extensions header and the negotiated state."""
    try:
        offer = _validate(params)
    except NegotiationError:
        return None
    response: List[Tuple[str, Optional[str]]] = []
    snct = "server_no_context_takeover" in offer or config.server_no_context_takeover
    cnct = "client_no_context_takeover" in offer or config.client_no_context_takeover
    if snct:
        response.append(("server_no_context_takeover", None))
    if cnct:
        response.append(("client_no_context_takeover", None))

    offered = offer.get("server_max_window_bits")
    s_bits = config.server_max_window_bits
    if offered is not None:
        s_bits = int(offered) if s_bits is None else min(s_bits, int(offered))
    if s_bits == 8:
        return None  # zlib cannot compress with an 8-bit window
    if s_bits is not None:
        response.append(("server_max_window_bits", str(s_bits)))

    c_bits = config.client_max_window_bits
    if "client_max_window_bits" not in offer:
        if c_bits is not None:
            return None  # may not ask a client that did not offer the parameter
    else:
        offered = offer["client_max_window_bits"]
        if offered is not None:
            c_bits = int(offered) if c_bits is None else min(c_bits, int(offered))
        if c_bits is not None:
            response.append(("client_max_window_bits", str(c_bits)))

    state = PerMessageDeflate(
        local_no_context_takeover=snct,
        remote_no_context_takeover=cnct,
        local_max_window_bits=s_bits or 15,
        remote_max_window_bits=c_bits or 15,
        level=config.level,
        mem_level=config.mem_level,
        threshold=config.threshold,
    )
    return _fmt(response), state


def build_offer(config: DeflateConfig) -> str:
    """Client side: the Sec-WebSocket-Extensions element offering permessage-deflate."""
    if config.client_max_window_bits == 8:
        raise ValueError("client_max_window_bits = 8 is not supported by zlib, use 9")
    params: List[Tuple[str, Optional[str]]] = []
    if config.server_no_context_takeover:
        params.append(("server_no_context_takeover", None))
    if config.client_no_context_takeover:
        params.append(("client_no_context_takeover", None))
    if config.server_max_window_bits is not None:
        params.append(("server_max_window_bits", str(config.server_max_window_bits)))
    bits = config.client_max_window_bits
    params.append(("client_max_window_bits", None if bits is None else str(bits)))
    return _fmt(params)


def accept_response(params: Params, config: DeflateConfig) -> PerMessageDeflate:
    """Client side: validate the server's permessage-deflate response to our
    :func:`build_offer`; raise NegotiationError when it breaks RFC 7692 section 7.1."""
    resp = _validate(params)
    if config.server_no_context_takeover and "server_no_context_takeover" not in resp:
        raise NegotiationError("server ignored server_no_context_takeover")
    s_bits: Optional[int] = None
    if "server_max_window_bits" in resp:
        s_bits = int(resp["server_max_window_bits"] or 15)
        if config.server_max_window_bits is not None and s_bits > config.server_max_window_bits:
            raise NegotiationError("server_max_window_bits larger than offered")
    elif config.server_max_window_bits is not None:
        raise NegotiationError("server ignored server_max_window_bits")
    c_bits: Optional[int] = config.client_max_window_bits
    if "client_max_window_bits" in resp:
        value = resp["client_max_window_bits"]
        if value is None:
            raise NegotiationError("client_max_window_bits in a response needs a value")
        c_bits = int(value)
        if config.client_max_window_bits is not None and c_bits > config.client_max_window_bits:
            raise NegotiationError("client_max_window_bits larger than offered")
        if c_bits == 8:
            raise NegotiationError("client_max_window_bits = 8 is not supported by zlib")
    return PerMessageDeflate(
        local_no_context_takeover="client_no_context_takeover" in resp
        or config.client_no_context_takeover,
        remote_no_context_takeover="server_no_context_takeover" in resp,
        local_max_window_bits=c_bits or 15,
        remote_max_window_bits=s_bits or 15,
        level=config.level,
        mem_level=config.mem_level,
        threshold=config.threshold,
    )

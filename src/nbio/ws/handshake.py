"""RFC 6455 section 4 opening handshake, both sides (sans-IO).

Headers are passed as a sequence of ``(name, value)`` pairs, each ``str`` or ``bytes``
(bytes are decoded as Latin-1, as the HTTP parser hands them over); repeated headers are
allowed and combined as HTTP says. Everything produced is ``bytes`` ready to write.

Server: :func:`accept` validates an upgrade request and returns a :class:`ServerAccept`
(101 response bytes, chosen subprotocol, negotiated permessage-deflate) or raises
:class:`HandshakeError` carrying the HTTP status, reason and extra headers to answer with
(:meth:`HandshakeError.response` builds that answer).

Client: :func:`build_request` makes the GET request and key; :func:`validate_response`
checks the server's answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from nbio.errors import ProtocolError
from nbio.ws.deflate import (
    EXTENSION_NAME,
    DeflateConfig,
    NegotiationError,
    PerMessageDeflate,
    accept_offer,
    accept_response,
    build_offer,
)

__all__ = [
    "GUID",
    "ClientAccept",
    "ClientRequest",
    "HandshakeError",
    "Headers",
    "ServerAccept",
    "accept",
    "accept_key",
    "build_request",
    "parse_extensions",
    "validate_response",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

HeaderPart = Union[str, bytes]
Headers = Sequence[Tuple[HeaderPart, HeaderPart]]
Extension = Tuple[str, List[Tuple[str, Optional[str]]]]

_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    426: "Upgrade Required",
}
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_OWS_RE = re.compile(r"[ \t]*")
_BAD_HEADER_RE = re.compile(r"[\r\n\x00]")


class HandshakeError(ProtocolError):
    """The opening handshake failed. On the server, answer with :meth:`response`
    (``status`` e.g. 400, 403, 405, 426; ``headers`` to include). On the client, ``status``
    is the server's status code."""

    def __init__(self, status: int, reason: str, headers: Sequence[Tuple[str, str]] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = list(headers)

    def response(self) -> bytes:
        """A complete HTTP/1.1 error response (plain-text body, ``Connection: close``)."""
        body = (self.reason + "\n").encode("utf-8")
        lines = [f"HTTP/1.1 {self.status} {_PHRASES.get(self.status, 'Error')}"]
        lines += [f"{n}: {v}" for n, v in self.headers]
        lines += [
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def accept_key(key: Union[str, bytes]) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID))."""
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    return base64.b64encode(hashlib.sha1((key + GUID).encode("latin-1")).digest()).decode()


def _text(s: HeaderPart) -> str:
    return s.decode("latin-1") if isinstance(s, (bytes, bytearray)) else s


def _index(headers: Headers) -> Dict[str, List[str]]:
    """Header values by lowercased name (decoded and stripped once, in order)."""
    idx: Dict[str, List[str]] = {}
    for n, v in headers:
        name = _text(n).lower()
        value = _text(v).strip()
        values = idx.get(name)
        if values is None:
            idx[name] = [value]
        else:
            values.append(value)
    return idx


_NONE: List[str] = []


def _tokens(values: Iterable[str]) -> List[str]:
    """Comma-separated list elements of all header values (lowercased, empties dropped)."""
    return [t.strip().lower() for v in values for t in v.split(",") if t.strip()]


def _list(values: Iterable[str]) -> List[str]:
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def parse_extensions(values: Iterable[str]) -> List[Extension]:
    """Parse Sec-WebSocket-Extensions values (RFC 6455 section 9.1) into
    ``[(name, [(param, value or None), ...]), ...]``; quoted values are unquoted.
    Raises NegotiationError on a malformed header."""
    result: List[Extension] = []
    for text in values:
        pos, n = 0, len(text)
        while pos < n:
            pos = _OWS_RE.match(text, pos).end()  # type: ignore[union-attr]
            if pos < n and text[pos] == ",":  # empty list element
                pos += 1
                continue
            if pos >= n:
                break
            m = _TOKEN_RE.match(text, pos)
            if m is None:
                raise NegotiationError(f"invalid extension header {text!r}")
            name, pos = m.group(), m.end()
            params: List[Tuple[str, Optional[str]]] = []
            while True:
                pos = _OWS_RE.match(text, pos).end()  # type: ignore[union-attr]
                if pos >= n or text[pos] == ",":
                    pos += 1
                    break
                if text[pos] != ";":
                    raise NegotiationError(f"invalid extension header {text!r}")
                pos = _OWS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
                m = _TOKEN_RE.match(text, pos)
                if m is None:
                    raise NegotiationError(f"invalid extension parameter in {text!r}")
                pname, pos = m.group(), m.end()
                pos = _OWS_RE.match(text, pos).end()  # type: ignore[union-attr]
                value: Optional[str] = None
                if pos < n and text[pos] == "=":
                    pos = _OWS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
                    m = _TOKEN_RE.match(text, pos)
                    if m is not None:
                        value = m.group()
                    else:
                        m = _QUOTED_RE.match(text, pos)
                        if m is None:
                            raise NegotiationError(f"invalid extension parameter in {text!r}")
                        value = re.sub(r"\\(.)", r"\1", m.group(1))
                        if not _TOKEN_RE.fullmatch(value):
                            raise NegotiationError(f"invalid quoted value in {text!r}")
                    pos = m.end()
                params.append((pname, value))
            result.append((name, params))
    return result


def _check_extra(headers: Headers) -> List[Tuple[str, str]]:
    out = []
    for n, v in headers:
        name, value = _text(n), _text(v)
        if not _TOKEN_RE.fullmatch(name) or _BAD_HEADER_RE.search(value):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        out.append((name, value))
    return out


# ---------------------------------------------------------------- server


@dataclass
class ServerAccept:
    """A validated upgrade: write ``response``, then speak WebSocket."""

    response: bytes
    subprotocol: Optional[str] = None
    deflate: Optional[PerMessageDeflate] = None
    extensions: Optional[str] = None


def accept(
    method: HeaderPart,
    http_version: str,
    headers: Headers,
    *,
    subprotocols: Union[Sequence[str], Callable[[List[str]], Optional[str]]] = (),
    deflate: Optional[DeflateConfig] = None,
    origins: Optional[Sequence[str]] = None,
    extra_headers: Headers = (),
) -> ServerAccept:
    """Validate a client's upgrade request and build the 101 response.

    ``http_version`` is e.g. ``"1.1"`` (as the HTTP parser reports it).
    ``subprotocols``: ours in preference order (the first one the client offered wins; none
    in common -> no subprotocol) or a callable choosing from the client's list.
    ``deflate``: enable permessage-deflate with these settings (the first acceptable offer
    wins; invalid offers are declined). ``origins``: if given, the Origin header must be
    one of them (403 otherwise). Raises :class:`HandshakeError` (400, 403, 405 or 426).
    """
    if _text(method).upper() != "GET":
        raise HandshakeError(405, "WebSocket upgrade needs GET", [("Allow", "GET")])
    if http_version not in ("1.1", "HTTP/1.1") and not http_version.startswith(("2", "3")):
        raise HandshakeError(400, f"WebSocket upgrade needs HTTP/1.1, not {http_version}")
    upgrade_hint = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    h = _index(headers)
    if "websocket" not in _tokens(h.get("upgrade", _NONE)):
        raise HandshakeError(426, "missing Upgrade: websocket", upgrade_hint)
    if "upgrade" not in _tokens(h.get("connection", _NONE)):
        raise HandshakeError(426, "missing Connection: upgrade", upgrade_hint)
    if not h.get("host", _NONE):
        raise HandshakeError(400, "missing Host header")
    versions = h.get("sec-websocket-version", _NONE)
    if versions != ["13"]:
        raise HandshakeError(
            426, "unsupported Sec-WebSocket-Version", [("Sec-WebSocket-Version", "13")]
        )
    keys = h.get("sec-websocket-key", _NONE)
    if len(keys) != 1:
        raise HandshakeError(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0]
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    if origins is not None:
        origin = h.get("origin", _NONE)
        if len(origin) != 1 or origin[0] not in origins:
            raise HandshakeError(403, "origin not allowed")

    offered = _list(h.get("sec-websocket-protocol", _NONE))
    subprotocol: Optional[str] = None
    if offered:
        if callable(subprotocols):
            subprotocol = subprotocols(offered)
        else:
            subprotocol = next((p for p in subprotocols if p in offered), None)
        if subprotocol is not None and subprotocol not in offered:
            raise ValueError(f"selected subprotocol {subprotocol!r} was not offered")

    state: Optional[PerMessageDeflate] = None
    ext_header: Optional[str] = None
    if deflate is not None:
        try:
            exts = parse_extensions(h.get("sec-websocket-extensions", _NONE))
        except NegotiationError as exc:
            raise HandshakeError(400, str(exc)) from None
        for name, params in exts:
            if name.lower() == EXTENSION_NAME:
                accepted = accept_offer(params, deflate)
                if accepted is not None:
                    ext_header, state = accepted
                    break

    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if ext_header is not None:
        lines.append(f"Sec-WebSocket-Extensions: {ext_header}")
    lines += [f"{n}: {v}" for n, v in _check_extra(extra_headers)]
    response = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return ServerAccept(response, subprotocol, state, ext_header)


# ---------------------------------------------------------------- client


@dataclass
class ClientRequest:
    """The client's upgrade request: write ``request``; keep the object to validate the
    response with :func:`validate_response`."""

    request: bytes
    key: str
    subprotocols: List[str] = field(default_factory=list)
    deflate: Optional[DeflateConfig] = None


@dataclass
class ClientAccept:
    """A validated 101 response."""

    subprotocol: Optional[str] = None
    deflate: Optional[PerMessageDeflate] = None


def build_request(
    host: str,
    path: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    deflate: Optional[DeflateConfig] = None,
    origin: Optional[str] = None,
    extra_headers: Headers = (),
    key: Optional[str] = None,
) -> ClientRequest:
    """Build the GET upgrade request for ``host`` (``"example.com:8080"``) and ``path``
    (with query). ``key`` defaults to 16 random bytes, base64-encoded."""
    if key is None:
        key = base64.b64encode(os.urandom(16)).decode()
    if _BAD_HEADER_RE.search(host) or _BAD_HEADER_RE.search(path) or " " in path:
        raise ValueError("invalid host or path")
    lines = [
        f"GET {path or '/'} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if subprotocols:
        for p in subprotocols:
            if not _TOKEN_RE.fullmatch(p):
                raise ValueError(f"invalid subprotocol {p!r}")
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    if deflate is not None:
        lines.append(f"Sec-WebSocket-Extensions: {build_offer(deflate)}")
    lines += [f"{n}: {v}" for n, v in _check_extra(extra_headers)]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return ClientRequest(request, key, list(subprotocols), deflate)


def validate_response(status: int, headers: Headers, request: ClientRequest) -> ClientAccept:
    """Check the server's response to ``request``; raise :class:`HandshakeError`
    (``status`` = the response's status) if the upgrade did not happen correctly."""
    if status != 101:
        raise HandshakeError(status, f"server answered {status} instead of 101")
    h = _index(headers)
    if "websocket" not in _tokens(h.get("upgrade", _NONE)):
        raise HandshakeError(status, "missing Upgrade: websocket")
    if "upgrade" not in _tokens(h.get("connection", _NONE)):
        raise HandshakeError(status, "missing Connection: upgrade")
    if h.get("sec-websocket-accept", _NONE) != [accept_key(request.key)]:
        raise HandshakeError(status, "invalid Sec-WebSocket-Accept")

    protocols = _list(h.get("sec-websocket-protocol", _NONE))
    subprotocol: Optional[str] = None
    if protocols:
        if len(protocols) > 1:
            raise HandshakeError(status, "several subprotocols selected")
        if protocols[0] not in request.subprotocols:
            raise HandshakeError(status, f"subprotocol {protocols[0]!r} was not offered")
        subprotocol = protocols[0]

    state: Optional[PerMessageDeflate] = None
    try:
        exts = parse_extensions(h.get("sec-websocket-extensions", _NONE))
        for name, params in exts:
            if name.lower() != EXTENSION_NAME or request.deflate is None:
                raise NegotiationError(f"extension {name!r} was not offered")
            if state is not None:
                raise NegotiationError("permessage-deflate accepted twice")
            state = accept_response(params, request.deflate)
    except NegotiationError as exc:
        raise HandshakeError(status, str(exc)) from None
    return ClientAccept(subprotocol, state)

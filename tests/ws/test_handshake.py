"""RFC 6455 section 4: opening handshake, server and client sides, cross-checked with
the ``websockets`` sans-IO handshake and parsed with httptools."""

from __future__ import annotations

from typing import Any, List, Tuple

import httptools
import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from nbio.ws.deflate import DeflateConfig, NegotiationError
from nbio.ws.handshake import (
    HandshakeError,
    accept,
    accept_key,
    build_request,
    parse_extensions,
    validate_response,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD: List[Tuple[str, str]] = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def with_headers(**changes: Any) -> list:
    """GOOD headers with some replaced (None removes); names use underscores."""
    names = {n.lower().replace("-", "_"): n for n, _ in GOOD}
    out = [(n, v) for n, v in GOOD if n.lower().replace("-", "_") not in changes]
    for key, value in changes.items():
        if value is not None:
            out.append((names.get(key, key), value))
    return out


def parse_http(data: bytes, response: bool = False) -> tuple:
    """Parse an HTTP head with httptools: (method or status, headers as bytes pairs)."""
    headers: list = []

    class P:
        def on_header(self, name: bytes, value: bytes) -> None:
            headers.append((name, value))

    parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(P())
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    first = parser.get_status_code() if response else parser.get_method()
    return first, parser.get_http_version(), headers


def test_accept_key_rfc_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(KEY.encode()) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_server_accepts_valid_request() -> None:
    result = accept("GET", "1.1", GOOD, extra_headers=[("Server", "nbio")])
    assert result.response == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nServer: nbio\r\n\r\n"
    )
    assert result.subprotocol is None and result.deflate is None


def test_server_accepts_bytes_headers_and_token_lists() -> None:
    headers = [
        (n.encode(), v.encode())
        for n, v in with_headers(connection="keep-alive, Upgrade", upgrade="WebSocket")
    ]
    assert accept(b"GET", "1.1", headers).response.startswith(b"HTTP/1.1 101 ")


BAD_REQUESTS = [
    ("POST", "1.1", GOOD, 405),
    ("GET", "1.0", GOOD, 400),
    ("GET", "1.1", with_headers(upgrade=None), 426),
    ("GET", "1.1", with_headers(upgrade="h2c"), 426),
    ("GET", "1.1", with_headers(connection="keep-alive"), 426),
    ("GET", "1.1", with_headers(host=None), 400),
    ("GET", "1.1", with_headers(sec_websocket_key=None), 400),
    ("GET", "1.1", with_headers(sec_websocket_key="not base64!"), 400),
    ("GET", "1.1", with_headers(sec_websocket_key="AAAA"), 400),  # 3 bytes
    ("GET", "1.1", [*GOOD, ("Sec-WebSocket-Key", KEY)], 400),
    ("GET", "1.1", with_headers(sec_websocket_version="8"), 426),
    ("GET", "1.1", with_headers(sec_websocket_version=None), 426),
]


@pytest.mark.parametrize("method,version,headers,status", BAD_REQUESTS)
def test_server_rejects(method: str, version: str, headers: list, status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        accept(method, version, headers)
    assert info.value.status == status
    response = info.value.response()
    code, _, hdrs = parse_http(response, response=True)
    assert code == status
    if status == 426 and "version" in info.value.reason.lower():
        assert (b"Sec-WebSocket-Version", b"13") in hdrs


def test_origin_check() -> None:
    ok = accept(
        "GET", "1.1", [*GOOD, ("Origin", "https://a.example")], origins=["https://a.example"]
    )
    assert ok.response
    with pytest.raises(HandshakeError) as info:
        accept("GET", "1.1", [*GOOD, ("Origin", "https://evil")], origins=["https://a.example"])
    assert info.value.status == 403


def test_subprotocol_selection() -> None:
    headers = [
        *GOOD,
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Protocol", "v3"),
    ]
    assert accept("GET", "1.1", headers, subprotocols=["v3", "chat"]).subprotocol == "v3"
    assert accept("GET", "1.1", headers, subprotocols=["other"]).subprotocol is None
    assert accept("GET", "1.1", headers, subprotocols=lambda offered: offered[1]).subprotocol == (
        "superchat"
    )
    res = accept("GET", "1.1", headers, subprotocols=["chat"])
    assert b"\r\nSec-WebSocket-Protocol: chat\r\n" in res.response


def test_extension_negotiation_picks_first_acceptable_offer() -> None:
    headers = [
        *GOOD,
        (
            "Sec-WebSocket-Extensions",
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8, "
            "permessage-deflate; client_max_window_bits",
        ),
    ]
    res = accept("GET", "1.1", headers, deflate=DeflateConfig(client_max_window_bits=12))
    assert res.extensions == "permessage-deflate; client_max_window_bits=12"
    assert res.deflate is not None and res.deflate.remote_max_window_bits == 12
    assert accept("GET", "1.1", headers).deflate is None  # not enabled
    bad = [*GOOD, ("Sec-WebSocket-Extensions", "permessage-deflate; =")]
    with pytest.raises(HandshakeError):
        accept("GET", "1.1", bad, deflate=DeflateConfig())


def test_header_injection_rejected() -> None:
    with pytest.raises(ValueError):
        accept("GET", "1.1", GOOD, extra_headers=[("X", "a\r\nSet-Cookie: x")])
    with pytest.raises(ValueError):
        build_request("example.com", "/a b")


def test_parse_extensions() -> None:
    assert parse_extensions(['foo, bar; baz=2;qux, deflate; a="b"', "x"]) == [
        ("foo", []),
        ("bar", [("baz", "2"), ("qux", None)]),
        ("deflate", [("a", "b")]),
        ("x", []),
    ]
    for bad in ["foo;", "foo bar", 'foo; a="b c"', "foo; a=", ";"]:
        with pytest.raises(NegotiationError):
            parse_extensions([bad])


# ------------------------------------------------------------------ client


def test_client_request_and_response_roundtrip() -> None:
    req = build_request(
        "example.com:8080",
        "/chat?x=1",
        subprotocols=["chat", "v2"],
        deflate=DeflateConfig(),
        origin="http://example.com",
        extra_headers=[(b"Authorization", b"Bearer t")],
    )
    method, version, headers = parse_http(req.request)
    assert method == b"GET" and version == "1.1"
    res = accept("GET", version, headers, subprotocols=["v2"], deflate=DeflateConfig())
    status, _, resp_headers = parse_http(res.response, response=True)
    acc = validate_response(status, resp_headers, req)
    assert acc.subprotocol == "v2"
    assert acc.deflate is not None


BAD_RESPONSES = [
    (200, []),
    (101, [("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "{accept}")]),
    (101, [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", "{accept}")]),
    (101, [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "x")]),
    (
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "{accept}"),
            ("Sec-WebSocket-Protocol", "nope"),
        ],
    ),
    (
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "{accept}"),
            ("Sec-WebSocket-Protocol", "chat, v2"),
        ],
    ),
    (
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "{accept}"),
            ("Sec-WebSocket-Extensions", "x-other"),
        ],
    ),
    (
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "{accept}"),
            ("Sec-WebSocket-Extensions", "permessage-deflate, permessage-deflate"),
        ],
    ),
]


@pytest.mark.parametrize("status,headers", BAD_RESPONSES)
def test_client_rejects_bad_responses(status: int, headers: list) -> None:
    req = build_request("h", subprotocols=["chat", "v2"], deflate=DeflateConfig())
    headers = [(n, v.format(accept=accept_key(req.key))) for n, v in headers]
    with pytest.raises(HandshakeError) as info:
        validate_response(status, headers, req)
    assert info.value.status == status


def test_client_rejects_deflate_when_not_offered() -> None:
    req = build_request("h")
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(req.key)),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
    ]
    with pytest.raises(HandshakeError):
        validate_response(101, headers, req)


# ------------------------------------------------------------------ websockets peer


def test_websockets_client_against_our_server() -> None:
    ws = ClientProtocol(
        parse_uri("ws://example.com/path"),
        subprotocols=["chat"],
        extensions=[ClientPerMessageDeflateFactory()],
    )
    request = ws.connect()
    ws.send_request(request)
    data = ws.data_to_send()[0]
    method, version, headers = parse_http(data)
    res = accept(method, version, headers, subprotocols=["chat"], deflate=DeflateConfig())
    ws.receive_data(res.response)
    (response,) = ws.events_received()
    assert ws.handshake_exc is None and response.status_code == 101
    assert ws.subprotocol == "chat"
    assert [type(e).__name__ for e in ws.extensions] == ["PerMessageDeflate"]


def test_our_client_against_websockets_server() -> None:
    ws = ServerProtocol(subprotocols=["v2"], extensions=[ServerPerMessageDeflateFactory()])
    req = build_request("example.com", "/x", subprotocols=["v1", "v2"], deflate=DeflateConfig())
    ws.receive_data(req.request)
    (request,) = ws.events_received()
    assert isinstance(request, Request)
    response = ws.accept(request)
    assert ws.handshake_exc is None
    ws.send_response(response)
    status, _, headers = parse_http(ws.data_to_send()[0], response=True)
    acc = validate_response(status, headers, req)
    assert acc.subprotocol == "v2" and acc.deflate is not None
    assert isinstance(response, Response) and StreamReader

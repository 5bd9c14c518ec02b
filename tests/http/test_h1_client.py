"""Client side: ClientConnection request building and response parsing (RFC 9112 6.3 message
body length rules: HEAD, 1xx, 204, 304, close-delimited; 101 and CONNECT; keep-alive reuse)."""

from __future__ import annotations

from typing import Any, List

import pytest

from nbio.errors import HTTPMessageTooBig, HTTPProtocolError
from nbio.http.h1 import ClientConnection, Data, EndOfMessage, Response

HOST = [(b"Host", b"example.com")]


def merge(events: List[Any]) -> List[Any]:
    out: List[Any] = []
    for ev in events:
        if type(ev) is Data and out and type(out[-1]) is Data:
            out[-1] = Data(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def client(method: bytes = b"GET", **kw: Any) -> ClientConnection:
    conn = ClientConnection(**kw)
    conn.send_request(method, b"/", HOST)
    return conn


def bytewise(conn: ClientConnection, data: bytes) -> List[Any]:
    events: List[Any] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
    return merge(events)


# ---------------------------------------------------------------------------------------------
# Building requests
# ---------------------------------------------------------------------------------------------


def test_get_request() -> None:
    raw = ClientConnection().send_request(b"GET", b"/a?b=1", [(b"Host", b"x"), (b"Accept", b"*/*")])
    assert raw == b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"


def test_str_arguments() -> None:
    raw = ClientConnection().send_request("GET", "/", [("Host", "x")])
    assert raw == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_body_gets_content_length() -> None:
    raw = ClientConnection().send_request(b"POST", b"/", HOST, b"hello")
    assert raw.endswith(b"Content-Length: 5\r\n\r\nhello")


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"PATCH"])
def test_empty_body_methods_send_zero_length(method: bytes) -> None:
    assert b"Content-Length: 0\r\n" in ClientConnection().send_request(method, b"/", HOST)


def test_get_without_body_has_no_length() -> None:
    assert b"Content-Length" not in ClientConnection().send_request(b"GET", b"/", HOST)


def test_streaming_chunked_request() -> None:
    conn = ClientConnection()
    head = conn.send_request(b"POST", b"/", HOST, stream=True)
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert conn.send_data(b"abc") == b"3\r\nabc\r\n"
    assert conn.end_request([(b"X-T", b"1")]) == b"0\r\nX-T: 1\r\n\r\n"


def test_streaming_with_content_length() -> None:
    conn = ClientConnection()
    head = conn.send_request(b"PUT", b"/", [*HOST, (b"Content-Length", b"3")], stream=True)
    assert b"Transfer-Encoding" not in head
    assert conn.send_data(b"ab") == b"ab"
    with pytest.raises(ValueError):
        conn.send_data(b"cd")


def test_streaming_too_short_is_never_reused() -> None:
    conn = ClientConnection()
    conn.send_request(b"PUT", b"/", [*HOST, (b"Content-Length", b"3")], stream=True)
    conn.send_data(b"ab")
    with pytest.raises(ValueError):
        conn.end_request()
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not conn.reusable


@pytest.mark.parametrize(
    "args",
    [
        (b"GET", b"/", []),  # no Host
        (b"G ET", b"/", HOST),
        (b"", b"/", HOST),
        (b"GET", b"/a b", HOST),
        (b"GET", b"", HOST),
        (b"GET", b"/\r\n", HOST),
        (b"GET", b"/", [*HOST, (b"X", b"a\r\nb")]),
    ],
)
def test_invalid_requests(args: Any) -> None:
    with pytest.raises(ValueError):
        ClientConnection().send_request(*args)


def test_body_and_stream_conflict() -> None:
    with pytest.raises(ValueError):
        ClientConnection().send_request(b"POST", b"/", HOST, b"x", stream=True)
    with pytest.raises(ValueError):
        ClientConnection().send_request(b"POST", b"/", [*HOST, (b"Content-Length", b"5")])
    with pytest.raises(ValueError):
        ClientConnection().send_request(b"POST", b"/", [*HOST, (b"Content-Length", b"5")], b"x")


def test_one_request_at_a_time() -> None:
    conn = client()
    with pytest.raises(RuntimeError):
        conn.send_request(b"GET", b"/", HOST)
    with pytest.raises(RuntimeError):
        conn.send_data(b"x")


# ---------------------------------------------------------------------------------------------
# Parsing responses
# ---------------------------------------------------------------------------------------------

RESPONSES = [
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
        [
            Response(200, [(b"content-length", b"5"), (b"x-a", b"b")], b"OK", content_length=5),
            Data(b"hello"),
            EndOfMessage(),
        ],
        True,
        id="content-length",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT: 1\r\n\r\n",
        [
            Response(200, [(b"transfer-encoding", b"chunked")], b"OK", chunked=True),
            Data(b"hi"),
            EndOfMessage([(b"t", b"1")]),
        ],
        True,
        id="chunked-trailers",
    ),
    pytest.param(
        b"HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        [Response(200, [(b"content-length", b"5")], b"OK", content_length=5), EndOfMessage()],
        True,
        id="head",
    ),
    pytest.param(
        b"HEAD",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        [Response(200, [(b"transfer-encoding", b"chunked")], b"OK", chunked=True), EndOfMessage()],
        True,
        id="head-chunked",
    ),
    pytest.param(
        b"HEAD",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        [
            Response(100, [], b"Continue"),
            Response(200, [(b"content-length", b"5")], b"OK", content_length=5),
            EndOfMessage(),
        ],
        True,
        id="head-after-interim",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        [Response(204, [], b"No Content"), EndOfMessage()],
        True,
        id="204",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        [
            Response(304, [(b"content-length", b"10")], b"Not Modified", content_length=10),
            EndOfMessage(),
        ],
        True,
        id="304-with-length",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        [
            Response(100, [], b"Continue"),
            Response(103, [(b"link", b"x")], b"Early Hints"),
            Response(200, [(b"content-length", b"0")], b"OK", content_length=0),
            EndOfMessage(),
        ],
        True,
        id="interim-responses",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        [
            Response(
                200,
                [(b"connection", b"close"), (b"content-length", b"1")],
                b"OK",
                keep_alive=False,
                content_length=1,
            ),
            Data(b"x"),
            EndOfMessage(),
        ],
        False,
        id="connection-close",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
        [
            Response(
                200, [(b"content-length", b"1")], b"OK", b"1.0", keep_alive=False, content_length=1
            ),
            Data(b"x"),
            EndOfMessage(),
        ],
        False,
        id="http10",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
        [
            Response(
                200,
                [(b"connection", b"keep-alive"), (b"content-length", b"1")],
                b"OK",
                b"1.0",
                content_length=1,
            ),
            Data(b"x"),
            EndOfMessage(),
        ],
        True,
        id="http10-keep-alive",
    ),
    pytest.param(
        b"GET",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        [Response(200, [(b"content-length", b"0")], b"", content_length=0), EndOfMessage()],
        True,
        id="no-reason",
    ),
]


@pytest.mark.parametrize("method, data, expected, reusable", RESPONSES)
def test_responses(method: bytes, data: bytes, expected: List[Any], reusable: bool) -> None:
    conn = client(method)
    assert merge(conn.receive_data(data)) == expected
    assert conn.response_complete and conn.reusable is reusable
    conn = client(method)
    assert bytewise(conn, data) == expected
    assert conn.reusable is reusable


def test_close_delimited_body() -> None:
    conn = client()
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\n\r\nsome ")
    events += conn.receive_data(b"body")
    assert events[0] == Response(200, [], b"OK", keep_alive=False)
    assert merge(events[1:]) == [Data(b"some body")]
    assert not conn.response_complete
    assert conn.receive_eof() == [EndOfMessage()]
    assert conn.response_complete and not conn.reusable


@pytest.mark.parametrize(
    "partial",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ],
)
def test_eof_mid_response(partial: bytes) -> None:
    conn = client()
    conn.receive_data(partial)
    events = conn.receive_eof()
    if partial:
        assert len(events) == 1 and isinstance(events[0], HTTPProtocolError)
        assert events[0].status is None
    assert not conn.reusable


def test_eof_mid_head_response() -> None:
    conn = client(b"HEAD")
    conn.receive_data(b"HTTP/1.1 200 OK\r\n")
    (err,) = conn.receive_eof()
    assert isinstance(err, HTTPProtocolError)


def test_keep_alive_reuse_cycle() -> None:
    conn = ClientConnection()
    for i in range(3):
        conn.send_request(b"GET", b"/%d" % i, HOST)
        assert not conn.reusable
        events = conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
        assert events[1] == Data(b"%d" % i)
        assert conn.reusable
    conn.send_request(b"HEAD", b"/", HOST)
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    assert conn.reusable
    conn.send_request(b"GET", b"/", HOST)
    assert conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")[1] == Data(b"ok")


def test_we_sent_connection_close() -> None:
    conn = ClientConnection()
    conn.send_request(b"GET", b"/", [*HOST, (b"Connection", b"close")])
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert conn.response_complete and not conn.reusable


def test_early_response_while_body_streams() -> None:
    conn = ClientConnection()
    conn.send_request(b"POST", b"/", [*HOST, (b"Expect", b"100-continue")], stream=True)
    events = conn.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert events == [Response(100, [], b"Continue")]
    conn.send_data(b"abc")
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert events[-1] == EndOfMessage() and not conn.reusable
    conn.end_request()
    assert conn.reusable


def test_switching_protocols() -> None:
    conn = ClientConnection()
    conn.send_request(
        b"GET", b"/ws", [*HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    )
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi"
    )
    events = conn.receive_data(data)
    assert [e.status for e in events] == [101]
    assert conn.trailing_data == b"\x81\x02hi"
    assert conn.receive_data(b"more") == []
    assert conn.trailing_data == b"\x81\x02himore"
    assert not conn.reusable


def test_connect_tunnel() -> None:
    conn = ClientConnection()
    conn.send_request(b"CONNECT", b"example.com:443", HOST)
    events = conn.receive_data(b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01")
    assert events == [
        Response(200, [], b"Connection Established"),
        EndOfMessage(),
    ]
    assert conn.trailing_data == b"\x16\x03\x01" and not conn.reusable


def test_connect_refused_goes_on() -> None:
    conn = ClientConnection()
    conn.send_request(b"CONNECT", b"example.com:443", HOST)
    events = conn.receive_data(b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n")
    assert [type(e) for e in events] == [Response, EndOfMessage]
    assert conn.reusable


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",  # no Upgrade field
        b"garbage\r\n\r\n",
    ],
)
def test_malformed_responses(data: bytes) -> None:
    conn = client()
    events = conn.receive_data(data)
    assert isinstance(events[-1], HTTPProtocolError) and events[-1].status is None
    assert not conn.reusable
    assert conn.receive_data(b"x") == []


def test_response_without_request() -> None:
    conn = ClientConnection()
    (err,) = conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(err, HTTPProtocolError)


def test_extra_data_after_head_response() -> None:
    conn = client(b"HEAD")
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert isinstance(events[-1], HTTPProtocolError)
    assert not conn.reusable


def test_limits() -> None:
    conn = client(max_body_size=3)
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd")
    assert len(events) == 1 and isinstance(events[0], HTTPMessageTooBig)
    conn = client(max_body_size=3)
    events = conn.receive_data(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"
    )
    assert isinstance(events[-1], HTTPMessageTooBig)
    conn = client(max_header_count=2)
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert isinstance(events[-1], HTTPProtocolError) and events[-1].status is None
    conn = client(b"HEAD", max_header_bytes=100)
    events = conn.receive_data(b"HTTP/1.1 200 OK\r\nA: " + b"x" * 200)
    assert isinstance(events[-1], HTTPProtocolError)

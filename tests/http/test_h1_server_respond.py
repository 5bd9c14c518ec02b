"""Server-side serialization: ServerConnection.respond / start_response / send_data /
end_response, keep-alive decisions (RFC 9112 9.3), no-body rules (RFC 9110 6.4.1), 100-continue
(RFC 9110 10.1.1), Date caching."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest

from nbio.errors import HTTPProtocolError
from nbio.http import h1
from nbio.http.h1 import ServerConnection

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def conn_with(*requests: bytes, **kw: Any) -> ServerConnection:
    conn = ServerConnection(**kw)
    events = conn.receive_data(b"".join(requests))
    assert not any(isinstance(e, HTTPProtocolError) for e in events), events
    return conn


def split_response(raw: bytes) -> Tuple[bytes, List[Tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = [tuple(line.split(b": ", 1)) for line in lines[1:]]
    return lines[0], fields, body  # type: ignore[return-value]


def names(fields: List[Tuple[bytes, bytes]]) -> List[bytes]:
    return [n.lower() for n, _ in fields]


# ---------------------------------------------------------------------------------------------
# Status line and fields
# ---------------------------------------------------------------------------------------------


def test_respond_basic() -> None:
    conn = conn_with(GET)
    raw = conn.respond(200, [(b"Content-Type", b"text/plain")], b"hello")
    status, fields, body = split_response(raw)
    assert status == b"HTTP/1.1 200 OK"
    assert fields[0] == (b"Content-Type", b"text/plain")
    assert (b"Content-Length", b"5") in fields
    assert b"date" in names(fields)
    assert body == b"hello"
    assert not conn.must_close and conn.pending_requests == 0


@pytest.mark.parametrize(
    "status, line",
    [
        (200, b"HTTP/1.1 200 OK"),
        (404, b"HTTP/1.1 404 Not Found"),
        (418, b"HTTP/1.1 418 I'm a Teapot"),
        (599, b"HTTP/1.1 599 "),
        (799, b"HTTP/1.1 799 "),
    ],
)
def test_status_lines(status: int, line: bytes) -> None:
    assert split_response(conn_with(GET).respond(status))[0] == line


def test_custom_reason() -> None:
    raw = conn_with(GET).respond(200, reason=b"Fine")
    assert raw.startswith(b"HTTP/1.1 200 Fine\r\n")
    with pytest.raises(ValueError):
        conn_with(GET).respond(200, reason=b"a\r\nb")


@pytest.mark.parametrize("status", [0, 99, 1000, -1])
def test_invalid_status(status: int) -> None:
    with pytest.raises(ValueError):
        conn_with(GET).respond(status)


def test_str_and_int_header_values_are_accepted() -> None:
    raw = conn_with(GET).respond(200, [("X-Name", "välue"), (b"x-n", 5)], b"")
    assert b"X-Name: v\xe4lue\r\n" in raw and b"x-n: 5\r\n" in raw


@pytest.mark.parametrize(
    "header",
    [
        (b"X", b"a\r\nInjected: yes"),
        (b"X", b"a\nb"),
        (b"X", b"a\x00b"),
        (b"X Y", b"v"),
        (b"X:Y", b"v"),
        (b"", b"v"),
        (b"X\r\n", b"v"),
    ],
)
def test_header_injection_is_refused(header: Tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError):
        conn_with(GET).respond(200, [header])


def test_user_date_is_kept() -> None:
    raw = conn_with(GET).respond(200, [(b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT")])
    assert raw.count(b"Date: ") == 1 and b"1970" in raw


def test_refresh_date() -> None:
    assert h1.refresh_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert h1.date_header() == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in conn_with(GET).respond(200)
    assert h1.refresh_date(86400.9) == b"Fri, 02 Jan 1970 00:00:00 GMT"
    now = h1.refresh_date()
    assert now.endswith(b" GMT") and len(now) == 29


# ---------------------------------------------------------------------------------------------
# Framing: Content-Length, chunked, close-delimited
# ---------------------------------------------------------------------------------------------


def test_streaming_chunked_with_trailers() -> None:
    conn = conn_with(GET)
    head = conn.start_response(200, [(b"Trailer", b"X-Sum")])
    assert b"Transfer-Encoding: chunked\r\n" in head and b"Content-Length" not in head
    assert conn.send_data(b"hello") == b"5\r\nhello\r\n"
    assert conn.send_data(b"") == b""  # an empty chunk would end the body
    assert conn.send_data(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert conn.end_response([(b"X-Sum", b"1")]) == b"0\r\nX-Sum: 1\r\n\r\n"
    assert conn.pending_requests == 0 and not conn.must_close


def test_streaming_chunked_without_trailers() -> None:
    conn = conn_with(GET)
    conn.start_response(200)
    assert conn.end_response() == b"0\r\n\r\n"


def test_trailers_cannot_carry_framing() -> None:
    conn = conn_with(GET)
    conn.start_response(200)
    with pytest.raises(ValueError):
        conn.end_response([(b"Content-Length", b"3")])


def test_streaming_with_content_length() -> None:
    conn = conn_with(GET)
    head = conn.start_response(200, [(b"Content-Length", b"6")])
    assert b"Transfer-Encoding" not in head
    assert conn.send_data(b"abc") == b"abc"
    assert conn.send_data(memoryview(b"def")) == b"def"
    assert conn.end_response() == b""


def test_streaming_too_much_data() -> None:
    conn = conn_with(GET)
    conn.start_response(200, [(b"content-length", b"2")])
    with pytest.raises(ValueError):
        conn.send_data(b"abc")


def test_streaming_too_little_data_forces_close() -> None:
    conn = conn_with(GET)
    conn.start_response(200, [(b"content-length", b"5")])
    conn.send_data(b"abc")
    with pytest.raises(ValueError):
        conn.end_response()
    assert conn.must_close


def test_respond_content_length_must_match() -> None:
    with pytest.raises(ValueError):
        conn_with(GET).respond(200, [(b"Content-Length", b"3")], b"ab")
    raw = conn_with(GET).respond(200, [(b"Content-Length", b"2")], b"ab")
    assert raw.count(b"Content-Length") == 1


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"1"), (b"Content-Length", b"1")],
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"1x")],
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"1")],
    ],
)
def test_bad_framing_headers(headers: List[Tuple[bytes, bytes]]) -> None:
    with pytest.raises(ValueError):
        conn_with(GET).start_response(200, headers)


def test_user_transfer_encoding_chunked_is_not_doubled() -> None:
    head = conn_with(GET).start_response(200, [(b"Transfer-Encoding", b"chunked")])
    assert head.lower().count(b"transfer-encoding") == 1


def test_http10_streaming_is_close_delimited() -> None:
    conn = conn_with(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head = conn.start_response(200)
    assert b"Transfer-Encoding" not in head and b"Connection: close\r\n" in head
    assert conn.send_data(b"raw") == b"raw"
    assert conn.end_response() == b""
    assert conn.must_close


def test_http10_keep_alive_is_announced() -> None:
    conn = conn_with(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    raw = conn.respond(200, body=b"x")
    assert b"Connection: keep-alive\r\n" in raw and not conn.must_close


def test_send_without_response_is_an_error() -> None:
    conn = conn_with(GET)
    with pytest.raises(RuntimeError):
        conn.send_data(b"x")
    with pytest.raises(RuntimeError):
        conn.end_response()
    with pytest.raises(RuntimeError):
        ServerConnection().respond(200)


def test_second_response_while_streaming_is_an_error() -> None:
    conn = conn_with(GET, GET)
    conn.start_response(200)
    with pytest.raises(RuntimeError):
        conn.respond(200)


# ---------------------------------------------------------------------------------------------
# Messages without a body (RFC 9110 6.4.1, 9.3.2, 15.3.5, 15.4.5)
# ---------------------------------------------------------------------------------------------


def test_head_response_has_length_but_no_body() -> None:
    conn = conn_with(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    raw = conn.respond(200, [], b"hello")
    _status, fields, body = split_response(raw)
    assert (b"Content-Length", b"5") in fields and body == b""


def test_head_streaming_drops_body() -> None:
    conn = conn_with(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = conn.start_response(200)
    assert b"Transfer-Encoding" not in head
    assert conn.send_data(b"ignored") == b""
    assert conn.end_response([(b"x", b"y")]) == b""
    assert not conn.must_close


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    conn = conn_with(GET)
    raw = conn.respond(status)
    assert b"Content-Length" not in raw and b"Transfer-Encoding" not in raw
    assert raw.endswith(b"\r\n\r\n")
    with pytest.raises(ValueError):
        conn_with(GET).respond(status, body=b"x")
    conn = conn_with(GET)
    conn.start_response(status)
    with pytest.raises(ValueError):
        conn.send_data(b"x")
    assert conn.end_response() == b""


def test_interim_responses_keep_the_request_pending() -> None:
    conn = conn_with(GET)
    assert conn.respond(103, [(b"Link", b"</s.css>; rel=preload")]).startswith(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n"
    )
    assert conn.pending_requests == 1
    assert conn.respond(200).startswith(b"HTTP/1.1 200 OK")
    assert conn.pending_requests == 0


# ---------------------------------------------------------------------------------------------
# Keep-alive decision (RFC 9112 9.3, 9.6)
# ---------------------------------------------------------------------------------------------

KEEP_ALIVE = [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [], False),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", [], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", [], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [(b"Connection", b"close")], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [(b"Connection", b"foo, Close")], True),
    (b"GET / HTTP/1.0\r\n\r\n", [], True),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", [], False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", [(b"Connection", b"close")], True),
]


@pytest.mark.parametrize("request_bytes, headers, close", KEEP_ALIVE)
def test_keep_alive_decision(request_bytes: bytes, headers: Any, close: bool) -> None:
    conn = conn_with(request_bytes)
    raw = conn.respond(200, headers, b"ok")
    assert conn.must_close is close
    head = raw.split(b"\r\n\r\n")[0].lower()
    assert (b"close" in head) is close


def test_nothing_after_a_close_request_is_processed() -> None:
    # RFC 9112 9.6: the server MUST NOT process further requests on that connection
    conn = ServerConnection()
    events = conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET)
    assert [type(e) for e in events] == [h1.Request, h1.EndOfMessage]
    assert conn.receive_data(GET) == [] and conn.receive_eof() == []
    conn.respond(200)
    assert conn.must_close and conn.pending_requests == 0


def test_nothing_after_a_http10_request_is_processed() -> None:
    conn = ServerConnection()
    events = conn.receive_data(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    assert [type(e) for e in events] == [h1.Request, h1.EndOfMessage]


def test_pipelined_responses_follow_request_order() -> None:
    conn = conn_with(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", GET)
    assert conn.pending_requests == 2
    assert conn.respond(200, body=b"abc").endswith(b"\r\n\r\n")  # HEAD: no body
    assert conn.respond(200, body=b"abc").endswith(b"\r\n\r\nabc")


def test_error_response() -> None:
    conn = ServerConnection()
    (err,) = conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    raw = conn.error_response(err)
    status, fields, body = split_response(raw)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert (b"Connection", b"close") in fields
    assert (b"Content-Length", str(len(body)).encode()) in fields
    assert body == b"duplicate Host header"
    assert conn.must_close
    assert (
        ServerConnection()
        .error_response(431)
        .startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    )
    assert ServerConnection().error_response().startswith(b"HTTP/1.1 400 Bad Request\r\n")


# ---------------------------------------------------------------------------------------------
# Expect: 100-continue (RFC 9110 10.1.1)
# ---------------------------------------------------------------------------------------------

EXPECT = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def test_100_continue_sent_once_when_reading_starts() -> None:
    conn = conn_with(EXPECT)
    assert conn.send_100_continue() == CONTINUE
    assert conn.send_100_continue() == b""
    assert conn.receive_data(b"abc")[-1] == h1.EndOfMessage()
    conn.respond(200)
    assert not conn.must_close


def test_no_100_continue_after_body_started() -> None:
    conn = conn_with(EXPECT)
    conn.receive_data(b"a")
    assert conn.send_100_continue() == b""
    conn.receive_data(b"bc")
    conn.respond(200)
    assert not conn.must_close


def test_no_100_continue_without_expectation() -> None:
    conn = conn_with(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    assert conn.send_100_continue() == b""
    assert ServerConnection().send_100_continue() == b""


def test_final_response_without_continue_closes() -> None:
    """The client may never send the announced body: the connection cannot be reused."""
    conn = conn_with(EXPECT)
    raw = conn.respond(413, body=b"too big")
    assert b"Connection: close" in raw and conn.must_close


def test_no_100_continue_once_response_started() -> None:
    conn = conn_with(EXPECT)
    conn.start_response(200)
    assert conn.send_100_continue() == b""


def test_expect_with_empty_body_needs_no_continue() -> None:
    conn = conn_with(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
    )
    assert conn.send_100_continue() == b""
    conn.respond(200)
    assert not conn.must_close

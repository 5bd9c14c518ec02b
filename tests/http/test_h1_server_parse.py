"""Server-side parsing (nbio.http.h1.ServerConnection.receive_data), byte-level and table-driven.

Grouped by RFC 9112 section. Every case is also fed byte by byte: the events must not depend
on how the stream is split.
"""

from __future__ import annotations

from typing import Any, List

import pytest

from nbio.errors import HTTPMessageTooBig, HTTPProtocolError
from nbio.http.h1 import Data, EndOfMessage, Request, ServerConnection

H = (b"host", b"a")


def feed(data: bytes, **kw: Any) -> List[Any]:
    conn = ServerConnection(**kw)
    return conn.receive_data(data)


def feed_bytewise(data: bytes, **kw: Any) -> List[Any]:
    conn = ServerConnection(**kw)
    events: List[Any] = []
    for i in range(len(data)):
        events += conn.receive_data(data[i : i + 1])
    return merge_data(events)


def merge_data(events: List[Any]) -> List[Any]:
    """Coalesce adjacent Data events (their split depends on how the input was fed)."""
    out: List[Any] = []
    for ev in events:
        if type(ev) is Data and out and type(out[-1]) is Data:
            out[-1] = Data(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def req(method: bytes = b"GET", target: bytes = b"/", headers: Any = (H,), **kw: Any) -> Request:
    return Request(method, target, list(headers), **kw)


# ---------------------------------------------------------------------------------------------
# Valid messages: (raw bytes, expected events)
# ---------------------------------------------------------------------------------------------

VALID = [
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        [req(), EndOfMessage()],
        id="minimal",
    ),
    pytest.param(
        b"GET /p/a?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: Value \t\r\n\r\n",
        [req(target=b"/p/a?x=1&y=2", headers=[H, (b"x-mixed-case", b"Value")]), EndOfMessage()],
        id="names-lowercased-ows-stripped",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\nY:\r\n\r\n",
        [req(headers=[H, (b"x", b""), (b"y", b"")]), EndOfMessage()],
        id="empty-values",
    ),
    pytest.param(
        b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        [
            req(b"POST", b"/u", [H, (b"content-length", b"5")], content_length=5),
            Data(b"hello"),
            EndOfMessage(),
        ],
        id="content-length",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        [req(b"POST", b"/", [H, (b"content-length", b"0")], content_length=0), EndOfMessage()],
        id="content-length-zero",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        [
            req(b"POST", b"/", [H, (b"transfer-encoding", b"chunked")], chunked=True),
            Data(b"hello world"),
            EndOfMessage(),
        ],
        id="chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"A;name=value;x\r\n0123456789\r\n0;last\r\n\r\n",
        [
            req(b"POST", b"/", [H, (b"transfer-encoding", b"Chunked")], chunked=True),
            Data(b"0123456789"),
            EndOfMessage(),
        ],
        id="chunk-extensions-uppercase-hex",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: a b\r\n\r\n",
        [
            req(b"POST", b"/", [H, (b"transfer-encoding", b"chunked")], chunked=True),
            Data(b"abc"),
            EndOfMessage([(b"x-checksum", b"42"), (b"x-other", b"a b")]),
        ],
        id="trailers",
    ),
    pytest.param(
        b"GET / HTTP/1.0\r\n\r\n",
        [req(headers=[], http_version=b"1.0", keep_alive=False), EndOfMessage()],
        id="http10-no-host-closes",
    ),
    pytest.param(
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        [
            req(headers=[(b"connection", b"Keep-Alive")], http_version=b"1.0"),
            EndOfMessage(),
        ],
        id="http10-keep-alive",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
        [req(headers=[H, (b"connection", b"keep-alive, close")], keep_alive=False), EndOfMessage()],
        id="http11-close-wins",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        [req(headers=[H, (b"connection", b"keep-alive")]), EndOfMessage()],
        id="http11-explicit-keep-alive",
    ),
    pytest.param(
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        [req(), EndOfMessage()],
        id="leading-empty-lines",  # RFC 9112 2.2: SHOULD ignore at least one
    ),
    pytest.param(
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        [req(b"OPTIONS", b"*"), EndOfMessage()],
        id="asterisk-form",
    ),
    pytest.param(
        b"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n",
        [req(target=b"http://a/b?c"), EndOfMessage()],
        id="absolute-form",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nhi",
        [
            req(
                b"POST",
                b"/",
                [H, (b"expect", b"100-Continue"), (b"content-length", b"2")],
                content_length=2,
                expect_continue=True,
            ),
            Data(b"hi"),
            EndOfMessage(),
        ],
        id="expect-100-continue",
    ),
    pytest.param(
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        [
            req(
                b"POST",
                b"/",
                [(b"expect", b"100-continue"), (b"content-length", b"2")],
                http_version=b"1.0",
                keep_alive=False,
                content_length=2,
            ),
            Data(b"hi"),
            EndOfMessage(),
        ],
        id="expect-ignored-in-http10",  # RFC 9110 10.1.1
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        [req(headers=[H, (b"upgrade", b"websocket")]), EndOfMessage()],
        id="upgrade-without-connection-upgrade-is-plain",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        [req(headers=[H, (b"cookie", b"a=1"), (b"cookie", b"b=2")]), EndOfMessage()],
        id="repeated-fields-kept-in-order",
    ),
]


@pytest.mark.parametrize("data, expected", VALID)
def test_valid(data: bytes, expected: List[Any]) -> None:
    assert merge_data(feed(data)) == expected
    assert feed_bytewise(data) == expected


def test_path_and_query() -> None:
    (r, _) = feed(b"GET /a/b?x=1?y HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.path, r.query) == (b"/a/b", b"x=1?y")
    (r, _) = feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.path, r.query) == (b"/a", b"")
    assert r.get_header(b"HOST") == b"a" and r.get_header("x", b"d") == b"d"


# ---------------------------------------------------------------------------------------------
# Errors: (raw bytes, status to answer)
# ---------------------------------------------------------------------------------------------

ERRORS = [
    # RFC 9112 2.2 / 5: message syntax
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, id="leading-space-first-field"),
    pytest.param(b"GET / HTTP/1.1\nHost: a\n\n", 400, id="bare-lf"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, id="bare-cr"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n", 400, id="nul-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400, id="ctl-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: b\r\n\r\n", 400, id="bad-name-char"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400, id="empty-name"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400, id="no-colon"),
    # RFC 9112 3: request line
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="space-in-target"),
    pytest.param(b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="del-in-target"),
    pytest.param(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400, id="lowercase-method"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, id="tls-client-hello"),
    pytest.param(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, id="space-after-version"),
    pytest.param(b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400, id="bad-minor"),
    # RFC 9112 2.3 / RFC 9110 15.6.6: version
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, id="http2"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, id="http09"),
    pytest.param(b"GET /\r\n\r\n", 505, id="http09-simple-request"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, id="http12"),
    pytest.param(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, id="http3"),
    # RFC 9112 3.2: Host
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="missing-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="duplicate-host"),
    pytest.param(b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400, id="duplicate-host-10"),
    # RFC 9112 6.1 / 6.3: framing, smuggling
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
        id="cl-then-te",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"0\r\n\r\n",
        400,
        id="te-then-cl",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
        id="duplicate-cl-different",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
        id="duplicate-cl-same",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400, id="cl-list"
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, id="cl-negative"
    ),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400, id="cl-plus"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400, id="cl-hex"),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nabc", 400, id="cl-space"
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        400,
        id="cl-overflow",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
        id="te-chunked-not-last",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        400,
        id="te-without-chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
        400,
        id="te-split-chunked-not-last",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        400,
        id="te-chunked-twice",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        id="te-gzip-chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x, chunked\r\n\r\n0\r\n\r\n",
        501,
        id="te-unknown-coding",
    ),
    pytest.param(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="te-in-http10"
    ),
    # RFC 9112 7.1: chunked coding
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        id="chunk-bad-hex",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        400,
        id="chunk-negative",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\n",
        400,
        id="chunk-0x",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc",
        400,
        id="chunk-size-trailing-space",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
        400,
        id="chunk-missing-crlf",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0",
        400,
        id="chunk-bare-lf-after-data",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
        400,
        id="chunk-size-bare-lf",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        400,
        id="chunk-size-overflow",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n",
        400,
        id="trailer-bad-name",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n",
        400,
        id="trailer-obs-fold",
    ),
]


@pytest.mark.parametrize("data, status", ERRORS)
def test_errors(data: bytes, status: int) -> None:
    for events in (feed(data), feed_bytewise(data)):
        assert events, "no error reported"
        err = events[-1]
        assert isinstance(err, HTTPProtocolError), events
        assert err.status == status, err
        # nothing before the error belongs to a request that was not fully valid
        assert all(type(e) is not EndOfMessage for e in events[:-1])


def test_obs_text_in_value_is_kept() -> None:
    # RFC 9110 5.5: field values may carry obs-text (bytes >= 0x80); DEL is refused.
    (r, _) = feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n")
    assert r.get_header(b"x") == b"caf\xc3\xa9"
    (err,) = feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n")
    assert err.status == 400


def test_unknown_method_is_rejected() -> None:
    (ev,) = feed(b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(ev, HTTPProtocolError) and ev.status == 400


def test_error_is_final() -> None:
    conn = ServerConnection()
    (err,) = conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert isinstance(err, HTTPProtocolError)
    assert conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []
    assert conn.receive_eof() == []


def test_events_before_error_are_kept() -> None:
    data = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nX\x00: b\r\n\r\n"
    events = feed(data)
    assert events[:2] == [req(target=b"/1"), EndOfMessage()]
    assert isinstance(events[2], HTTPProtocolError) and events[2].status == 400
    assert len(events) == 3


# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------


def test_request_line_limit_414() -> None:
    ok = b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert type(feed(ok, max_request_line=100)[0]) is Request
    bad = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    for events in (feed(bad, max_request_line=100), feed_bytewise(bad, max_request_line=100)):
        assert [e.status for e in events] == [414]


def test_header_bytes_limit_431() -> None:
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1000 + b"\r\n\r\n"
    assert type(feed(big, max_header_bytes=2000)[0]) is Request
    for events in (feed(big, max_header_bytes=500), feed_bytewise(big, max_header_bytes=500)):
        assert [e.status for e in events] == [431]


def test_header_bytes_limit_counts_many_small_fields() -> None:
    many = (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(50))
        + b"\r\n"
    )
    (err,) = feed(many, max_header_bytes=300, max_header_count=1000)
    assert err.status == 431


def test_unterminated_huge_header_is_cut_off() -> None:
    """A field value that never ends is refused once a feed pushes the head over the limit,
    without waiting for the field to complete (httptools buffers partial fields)."""
    conn = ServerConnection(max_header_bytes=4096)
    assert conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: ") == []
    events: List[Any] = []
    for _ in range(10):
        events += conn.receive_data(b"v" * 1024)
        if events:
            break
    assert [e.status for e in events] == [431]


def test_unterminated_request_line_is_cut_off() -> None:
    conn = ServerConnection(max_request_line=1000)
    conn.receive_data(b"GET /")
    events: List[Any] = []
    for _ in range(5):
        events += conn.receive_data(b"a" * 600)
    assert [e.status for e in events] == [414]


def test_header_count_limit_431() -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 9 + b"\r\n"
    assert type(feed(data, max_header_count=10)[0]) is Request
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 10 + b"\r\n"
    assert [e.status for e in feed(data, max_header_count=10)] == [431]


def test_trailers_count_against_header_limits() -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        + b"T: 1\r\n" * 5
        + b"\r\n"
    )
    events = feed(data, max_header_count=4)
    assert isinstance(events[-1], HTTPProtocolError) and events[-1].status == 431


def test_body_limit_from_content_length_413_before_body() -> None:
    conn = ServerConnection(max_body_size=10)
    (err,) = conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    assert isinstance(err, HTTPMessageTooBig) and err.status == 413


def test_body_limit_exact_is_fine() -> None:
    events = feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", max_body_size=10
    )
    assert events[1:] == [Data(b"0123456789"), EndOfMessage()]


def test_body_limit_chunked_413_while_reading() -> None:
    conn = ServerConnection(max_body_size=10)
    events = conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n"
    )
    assert events[1:] == [Data(b"abcdef")]
    events = conn.receive_data(b"5\r\nghijk\r\n")
    assert len(events) == 1 and isinstance(events[0], HTTPMessageTooBig)
    assert events[0].status == 413


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ServerConnection(max_header_bytes=0)
    with pytest.raises(ValueError):
        ServerConnection(max_body_size=-1)
    with pytest.raises(ValueError):
        ServerConnection(max_request_line=1)


# ---------------------------------------------------------------------------------------------
# Pipelining and backpressure (RFC 9112 9.3.2)
# ---------------------------------------------------------------------------------------------

PIPELINE = (
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
    b"GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
)
PIPELINE_EVENTS = [
    req(target=b"/1"),
    EndOfMessage(),
    req(b"POST", b"/2", [H, (b"content-length", b"3")], content_length=3),
    Data(b"abc"),
    EndOfMessage(),
    req(b"POST", b"/3", [H, (b"transfer-encoding", b"chunked")], chunked=True),
    Data(b"de"),
    EndOfMessage([(b"t", b"1")]),
    req(target=b"/4", headers=[H, (b"connection", b"close")], keep_alive=False),
    EndOfMessage(),
]


def test_pipelined_one_feed() -> None:
    assert feed(PIPELINE) == PIPELINE_EVENTS


@pytest.mark.parametrize("split", range(1, len(PIPELINE)))
def test_pipelined_every_split_point(split: int) -> None:
    conn = ServerConnection()
    events = conn.receive_data(PIPELINE[:split]) + conn.receive_data(PIPELINE[split:])
    assert merge_data(events) == PIPELINE_EVENTS


def test_memoryview_input_only_valid_during_call() -> None:
    conn = ServerConnection()
    buf = bytearray(PIPELINE)
    events = conn.receive_data(memoryview(buf))
    buf[:] = b"\x00" * len(buf)  # the caller reuses its buffer
    assert events == PIPELINE_EVENTS


def test_pause_after_message() -> None:
    conn = ServerConnection(pause_after_message=True)
    assert not conn.paused
    got = conn.receive_data(PIPELINE)
    assert got == PIPELINE_EVENTS[:2] and conn.paused
    assert conn.receive_data(b"") == []
    assert conn.resume() == PIPELINE_EVENTS[2:5] and conn.paused
    assert conn.resume() == PIPELINE_EVENTS[5:8]
    assert conn.resume() == PIPELINE_EVENTS[8:]
    assert conn.paused
    assert conn.resume() == [] and not conn.paused


def test_pause_holds_later_input_and_resumes_in_order() -> None:
    conn = ServerConnection(pause_after_message=True)
    cut = PIPELINE.index(b"POST /3")
    assert conn.receive_data(PIPELINE[:40]) == PIPELINE_EVENTS[:2]
    assert conn.receive_data(PIPELINE[40:cut]) == []  # parsed, held
    assert conn.receive_data(PIPELINE[cut:]) == []
    out = []
    while conn.paused:
        out += conn.resume()
    assert merge_data(out) == PIPELINE_EVENTS[2:]


def test_pause_then_partial_message_flows_after_resume() -> None:
    conn = ServerConnection(pause_after_message=True)
    first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    second = b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab"
    assert conn.receive_data(first + second) == [req(target=b"/1"), EndOfMessage()]
    resumed = conn.resume()
    assert resumed == [
        req(b"POST", b"/2", [H, (b"content-length", b"4")], content_length=4),
        Data(b"ab"),
    ]
    assert not conn.paused
    assert conn.receive_data(b"cd") == [Data(b"cd"), EndOfMessage()]
    assert conn.paused


def test_pause_flag_can_be_switched_off() -> None:
    conn = ServerConnection(pause_after_message=True)
    conn.receive_data(PIPELINE)
    conn.pause_after_message = False
    assert conn.resume() == PIPELINE_EVENTS[2:]


def test_error_while_paused_is_held_in_order() -> None:
    conn = ServerConnection(pause_after_message=True)
    events = conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/9.9\r\n\r\n")
    assert events == [req(), EndOfMessage()]
    (err,) = conn.resume()
    assert isinstance(err, HTTPProtocolError) and err.status == 505


# ---------------------------------------------------------------------------------------------
# Upgrade and CONNECT (RFC 9110 7.8, 9.3.6)
# ---------------------------------------------------------------------------------------------

WS = (
    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_upgrade_hands_back_trailing_bytes() -> None:
    conn = ServerConnection()
    events = conn.receive_data(WS + b"\x81\x85frame")
    assert type(events[0]) is Request and events[0].upgrade == b"websocket"
    assert events[1:] == [EndOfMessage()]
    assert conn.trailing_data == b"\x81\x85frame"
    assert conn.receive_data(b"more") == []
    assert conn.trailing_data == b"\x81\x85framemore"
    assert conn.start_response(101, [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])
    assert conn.upgraded and not conn.must_close


@pytest.mark.parametrize("split", range(1, len(WS) + 3))
def test_upgrade_every_split_point(split: int) -> None:
    data = WS + b"xyz"
    conn = ServerConnection()
    events = conn.receive_data(data[:split]) + conn.receive_data(data[split:])
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert conn.trailing_data == b"xyz"


def test_connect_is_an_upgrade() -> None:
    conn = ServerConnection()
    events = conn.receive_data(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03")
    assert events[0].method == b"CONNECT" and events[0].target == b"a:443"
    assert events[0].upgrade == b"connect"
    assert conn.trailing_data == b"\x16\x03"


def test_declined_upgrade_goes_on_in_http() -> None:
    conn = ServerConnection()
    events = conn.receive_data(WS + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    assert events[0].upgrade == b"websocket"
    assert conn.respond(426, [], b"no")
    assert not conn.must_close
    assert conn.decline_upgrade() == [req(target=b"/next"), EndOfMessage()]


def test_upgrade_with_body_cannot_keep_alive() -> None:
    (r, _) = feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    assert r.upgrade == b"h2c" and not r.keep_alive


def test_decline_without_upgrade_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ServerConnection().decline_upgrade()


# ---------------------------------------------------------------------------------------------
# End of input
# ---------------------------------------------------------------------------------------------


def test_eof_between_requests_is_clean() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn.receive_eof() == []


@pytest.mark.parametrize(
    "partial",
    [
        b"GET / HT",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ],
)
def test_eof_mid_request(partial: bytes) -> None:
    conn = ServerConnection()
    conn.receive_data(partial)
    (err,) = conn.receive_eof()
    assert isinstance(err, HTTPProtocolError) and err.status == 400

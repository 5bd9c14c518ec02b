"""Cross-checks with h11, an independent HTTP/1.1 implementation, plus hypothesis round trips.

* requests built by h11's client parse with our server the same way h11's server parses them;
* responses built by our server parse with h11's client as intended;
* requests built by our client parse with h11's server as intended;
* random requests/responses, split at random points, give the same events as in one piece.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbio.http.h1 import (
    ClientConnection,
    Data,
    EndOfMessage,
    Request,
    Response,
    ServerConnection,
)

Fields = List[Tuple[bytes, bytes]]

# ---------------------------------------------------------------------------------------------
# Normalized views of both libraries' events
# ---------------------------------------------------------------------------------------------


def norm_ours(events: Sequence[Any]) -> List[Tuple[Any, ...]]:
    out: List[Tuple[Any, ...]] = []
    body = b""
    for ev in events:
        if type(ev) is Request:
            out.append(("head", ev.method, ev.target, ev.http_version, list(ev.headers)))
        elif type(ev) is Response:
            out.append(("head", ev.status, ev.http_version, list(ev.headers)))
        elif type(ev) is Data:
            body += ev.data
        elif type(ev) is EndOfMessage:
            out.append(("body", body))
            out.append(("end", list(ev.trailers)))
            body = b""
        else:
            raise AssertionError(f"unexpected event {ev!r}")
    return out


def norm_h11(events: Sequence[Any]) -> List[Tuple[Any, ...]]:
    out: List[Tuple[Any, ...]] = []
    body = b""
    for ev in events:
        if isinstance(ev, h11.Request):
            out.append(("head", ev.method, ev.target, ev.http_version, list(ev.headers)))
        elif isinstance(ev, (h11.Response, h11.InformationalResponse)):
            out.append(("head", ev.status_code, ev.http_version, list(ev.headers)))
        elif isinstance(ev, h11.Data):
            body += bytes(ev.data)
        elif isinstance(ev, h11.EndOfMessage):
            out.append(("body", body))
            out.append(("end", list(ev.headers)))
            body = b""
    return out


def h11_events(conn: h11.Connection, data: bytes, *, eof: bool = False) -> List[Any]:
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    events = []
    while True:
        ev = conn.next_event()
        if ev in (h11.NEED_DATA, h11.PAUSED) or isinstance(ev, h11.ConnectionClosed):
            break
        events.append(ev)
    return events


def h11_client_request(
    method: bytes,
    target: bytes,
    headers: Fields,
    body: Optional[bytes],
    chunks: Sequence[bytes] = (),
    trailers: Fields = (),
) -> bytes:
    c = h11.Connection(h11.CLIENT)
    out = c.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if body:
        out += c.send(h11.Data(data=body)) or b""
    for chunk in chunks:
        out += c.send(h11.Data(data=chunk)) or b""
    out += c.send(h11.EndOfMessage(headers=list(trailers))) or b""
    return out


# ---------------------------------------------------------------------------------------------
# Fixed cases
# ---------------------------------------------------------------------------------------------

H11_REQUESTS = [
    (b"GET", b"/", [(b"Host", b"a")], None, (), ()),
    (b"GET", b"/x?y=1", [(b"Host", b"a"), (b"Accept", b"*/*"), (b"X-Empty", b"")], None, (), ()),
    (b"POST", b"/up", [(b"Host", b"a"), (b"Content-Length", b"5")], b"hello", (), ()),
    (
        b"PUT",
        b"/c",
        [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")],
        None,
        (b"ab", b"c" * 1000),
        [(b"X-T", b"1")],
    ),
    (b"OPTIONS", b"*", [(b"Host", b"a")], None, (), ()),
    (b"GET", b"/", [(b"Host", b"a"), (b"Connection", b"close")], None, (), ()),
]


@pytest.mark.parametrize("method, target, headers, body, chunks, trailers", H11_REQUESTS)
def test_h11_built_requests_parse_the_same(
    method: bytes, target: bytes, headers: Fields, body: Any, chunks: Any, trailers: Any
) -> None:
    raw = h11_client_request(method, target, headers, body, chunks, trailers)
    theirs = norm_h11(h11_events(h11.Connection(h11.SERVER), raw))
    ours = norm_ours(ServerConnection().receive_data(raw))
    assert ours == theirs


RESPONSES = [
    (b"GET", 200, [(b"Content-Type", b"text/plain")], [b"hello"], None, False),
    (b"GET", 404, [], [b""], None, False),
    (b"GET", 200, [(b"X-A", b"b")], [b"ab", b"", b"c" * 5000], [(b"X-T", b"v")], True),
    (b"GET", 200, [(b"Content-Length", b"3")], [b"a", b"bc"], None, True),
    (b"HEAD", 200, [], [b"not sent"], None, False),
    (b"HEAD", 200, [], [b"not sent"], None, True),
    (b"GET", 204, [], [], None, False),
    (b"GET", 304, [(b"ETag", b'"x"')], [], None, True),
]


@pytest.mark.parametrize("method, status, headers, chunks, trailers, stream", RESPONSES)
def test_our_responses_parse_with_h11(
    method: bytes, status: int, headers: Fields, chunks: List[bytes], trailers: Any, stream: bool
) -> None:
    server = ServerConnection()
    raw_req = h11_client_request(method, b"/", [(b"Host", b"a")], None)
    server.receive_data(raw_req)
    if stream:
        raw = server.start_response(status, headers)
        for chunk in chunks:
            raw += server.send_data(chunk)
        raw += server.end_response(trailers)
    else:
        raw = server.respond(status, headers, b"".join(chunks))
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"a")]))
    client.send(h11.EndOfMessage())
    events = h11_events(client, raw)
    assert isinstance(events[0], h11.Response) and events[0].status_code == status
    sent = [(n.lower(), v) for n, v in headers]
    assert [f for f in events[0].headers if f in sent] == sent
    assert isinstance(events[-1], h11.EndOfMessage)
    body = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
    no_body = method == b"HEAD" or status in (204, 304)
    assert body == (b"" if no_body else b"".join(chunks))
    assert list(events[-1].headers) == [(n.lower(), v) for n, v in (trailers or [])]
    assert client.their_state is h11.DONE
    client.start_next_cycle()  # keep-alive agreed on both sides


def test_our_http10_close_delimited_response_parses_with_h11() -> None:
    server = ServerConnection()
    server.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    raw = server.start_response(200) + server.send_data(b"abc") + server.end_response()
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"a")]))
    client.send(h11.EndOfMessage())
    events = h11_events(client, raw, eof=True)
    assert [type(e) for e in events] == [h11.Response, h11.Data, h11.EndOfMessage]
    assert events[1].data == b"abc"


def test_our_interim_and_continue_parse_with_h11() -> None:
    server = ServerConnection()
    server.receive_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    raw = server.send_100_continue() + server.respond(103, [(b"Link", b"x")]) + server.respond(200)
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method=b"POST",
            target=b"/",
            headers=[(b"Host", b"a"), (b"Expect", b"100-continue"), (b"Content-Length", b"2")],
        )
    )
    events = h11_events(client, raw)
    assert [getattr(e, "status_code", None) for e in events[:3]] == [100, 103, 200]


@pytest.mark.parametrize("method, target, headers, body, chunks, trailers", H11_REQUESTS)
def test_our_requests_parse_with_h11(
    method: bytes, target: bytes, headers: Fields, body: Any, chunks: Any, trailers: Any
) -> None:
    client = ClientConnection()
    hdrs = [h for h in headers if h[0].lower() not in (b"content-length", b"transfer-encoding")]
    if chunks:
        raw = client.send_request(method, target, hdrs, stream=True)
        for chunk in chunks:
            raw += client.send_data(chunk)
        raw += client.end_request(trailers)
    else:
        raw = client.send_request(method, target, hdrs, body)
    events = h11_events(h11.Connection(h11.SERVER), raw)
    assert isinstance(events[0], h11.Request)
    assert (events[0].method, events[0].target) == (method, target)
    sent = [(n.lower(), v) for n, v in hdrs]
    assert [f for f in events[0].headers if f in sent] == sent
    got = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
    assert got == (body or b"") + b"".join(chunks)
    assert list(events[-1].headers) == [(n.lower(), v) for n, v in trailers]


def test_h11_server_responses_parse_with_our_client() -> None:
    for method in (b"GET", b"HEAD"):
        server = h11.Connection(h11.SERVER)
        client = ClientConnection()
        server.receive_data(client.send_request(method, b"/", [(b"Host", b"a")]))
        assert isinstance(server.next_event(), h11.Request)
        raw = server.send(h11.Response(status_code=200, headers=[(b"X", b"y")])) or b""
        if method == b"GET":
            raw += server.send(h11.Data(data=b"chunk")) or b""
        raw += server.send(h11.EndOfMessage()) or b""
        events = client.receive_data(raw)
        assert events[0].status == 200 and (b"x", b"y") in events[0].headers
        assert b"".join(e.data for e in events if type(e) is Data) == (
            b"chunk" if method == b"GET" else b""
        )
        assert type(events[-1]) is EndOfMessage and client.reusable


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------

TOKEN = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
).map(str.encode)
VALUE = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F).strip()
) | st.sampled_from([b"", b"a b", b"x\tz"])
NAME = TOKEN.filter(
    lambda n: (
        n.lower()
        not in (
            b"host",
            b"content-length",
            b"transfer-encoding",
            b"connection",
            b"upgrade",
            b"expect",
            b"te",
            b"trailer",
        )
    )
)
TARGET = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789/-._~%!$&'()*+,;=:@?", max_size=40
).map(lambda t: ("/" + t).encode())
METHOD = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])


@st.composite
def requests(draw: Any) -> Tuple[bytes, List[Tuple[Any, ...]]]:
    """A request serialized by our client side, and the events a server must see."""
    method = draw(METHOD)
    target = draw(TARGET)
    headers = [(b"Host", b"h"), *draw(st.lists(st.tuples(NAME, VALUE), max_size=6))]
    client = ClientConnection()
    mode = draw(st.sampled_from(["none", "length", "chunked"]))
    trailers: Fields = []
    if mode == "chunked":
        chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5))
        trailers = draw(st.lists(st.tuples(NAME, VALUE), max_size=3))
        raw = client.send_request(method, target, headers, stream=True)
        raw += b"".join(client.send_data(c) for c in chunks) + client.end_request(trailers)
        body = b"".join(chunks)
    elif mode == "length":
        body = draw(st.binary(max_size=100))
        raw = client.send_request(method, target, headers, body)
    else:
        body = b""
        raw = client.send_request(method, target, headers)
    # what must be seen: reparse the client's own output once with h11 as the reference
    expected = norm_h11(h11_events(h11.Connection(h11.SERVER), raw))
    assert expected[-1] == ("end", [(n.lower(), v) for n, v in trailers])
    assert expected[-2] == ("body", body)
    return raw, expected


def feed_in_pieces(conn: Any, data: bytes, cuts: List[int]) -> List[Any]:
    events: List[Any] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += conn.receive_data(data[last:cut])
        last = cut
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_random_pipelined_requests_split_anywhere(reqs: Any, data: Any) -> None:
    stream = b"".join(raw for raw, _ in reqs)
    expected = [ev for _, evs in reqs for ev in evs]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    ours = norm_ours(feed_in_pieces(ServerConnection(), stream, cuts))
    assert ours == expected
    assert norm_ours(ServerConnection().receive_data(stream)) == expected


@st.composite
def responses(draw: Any) -> Tuple[bytes, int, Fields, bytes, Fields, bytes]:
    method = draw(st.sampled_from([b"GET", b"HEAD"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
    headers = draw(st.lists(st.tuples(NAME, VALUE), max_size=5))
    chunks = draw(st.lists(st.binary(max_size=50), max_size=4))
    trailers: Fields = []
    server = ServerConnection()
    server.receive_data(method + b" / HTTP/1.1\r\nHost: h\r\n\r\n")
    no_body = status in (204, 304)
    if no_body:
        chunks = []
    if draw(st.booleans()):
        raw = server.respond(status, headers, b"".join(chunks))
    else:
        chunked = draw(st.booleans())
        hdrs = (
            headers if chunked else [*headers, (b"Content-Length", b"%d" % sum(map(len, chunks)))]
        )
        raw = server.start_response(status, hdrs)
        raw += b"".join(server.send_data(c) for c in chunks)
        if chunked and not no_body and method != b"HEAD":
            trailers = draw(st.lists(st.tuples(NAME, VALUE), max_size=2))
        raw += server.end_response(trailers)
    body = b"" if (no_body or method == b"HEAD") else b"".join(chunks)
    return method, status, headers, body, trailers, raw


@settings(max_examples=300, deadline=None)
@given(responses(), st.data())
def test_random_responses_round_trip(resp: Any, data: Any) -> None:
    method, status, headers, body, trailers, raw = resp
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=6))
    client = ClientConnection()
    client.send_request(method, b"/", [(b"Host", b"h")])
    events = norm_ours(feed_in_pieces(client, raw, cuts))
    assert events[0][1] == status
    sent = [(n.lower(), v) for n, v in headers]
    assert [f for f in events[0][3] if f in sent] == sent
    assert events[1:] == [("body", body), ("end", [(n.lower(), v) for n, v in trailers])]
    assert client.reusable
    # and h11 agrees
    h = h11.Connection(h11.CLIENT)
    h.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"h")]))
    h.send(h11.EndOfMessage())
    assert norm_h11(h11_events(h, raw))[1:] == events[1:]

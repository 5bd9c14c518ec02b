"""HttpClient over HTTP/2 against a scripted server on the h2 package, for what a real server
does not do on demand: stream resets, REFUSED_STREAM, GOAWAY with streams in flight, small
windows, trailers, early responses, protocol errors. Grouped by RFC 9113 section."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from _h2_client_support import Req, ScriptedServer
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from nbio.engine import BACKENDS, Engine
from nbio.errors import HTTPMessageTooBig, HTTPProtocolError, StreamReset
from nbio.http.client import HttpClient
from nbio.http.h2_client import STREAM_WINDOW, request_headers

per_backend = pytest.mark.parametrize("backend", BACKENDS)


async def ok(req: Req) -> None:
    await req.conn.respond(req.stream_id, 200, b"%s %d" % (req.path.encode(), len(req.body)))


def h2c(engine: Engine, **kw: Any) -> HttpClient:
    return HttpClient(engine=engine, http2_prior_knowledge=True, **kw)


# -- 8.3 request pseudo-header fields, 8.2.2 connection-specific fields ---------------------------


@pytest.mark.parametrize("method, headers, length, expected", [
    (b"GET", [(b"host", b"a:1")], 0,
     [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a:1"), (b":path", b"/p")]),
    (b"POST", [(b"Host", b"a"), (b"X-Y", b"1")], 0,
     [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/p"),
      (b"x-y", b"1"), (b"content-length", b"0")]),
    (b"PUT", [(b"host", b"a"), (b"connection", b"close"), (b"keep-alive", b"5"),
              (b"transfer-encoding", b"chunked"), (b"upgrade", b"x"),
              (b"proxy-connection", b"k"), (b"te", b"gzip")], None,
     [(b":method", b"PUT"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/p")]),
    (b"POST", [(b"host", b"a"), (b"TE", b"Trailers"), (b"content-length", b"3")], 3,
     [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/p"),
      (b"te", b"trailers"), (b"content-length", b"3")]),
])
def test_request_headers(method: bytes, headers: List[Any], length: Any,
                         expected: List[Any]) -> None:
    assert request_headers(method, "https", "/p", headers, length) == expected


# -- 5.1 streams, 5.1.2 concurrency ----------------------------------------------------------------


@per_backend
async def test_max_concurrent_streams_is_respected(backend: str) -> None:
    server = ScriptedServer(ok, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    async with server as base, Engine(backend=backend) as engine, h2c(engine) as c:
        rs = await asyncio.gather(*[c.get(f"{base}/{i}") for i in range(30)])
        assert [r.content for r in rs] == [b"/%d 0" % i for i in range(30)]
        assert c.connections_opened == 1
    assert len(server.peers) == 1 and server.peers[0].max_open <= 2


# -- 5.2 / 6.9 flow control ----------------------------------------------------------------------


@per_backend
async def test_request_body_waits_for_window_updates(backend: str) -> None:
    server = ScriptedServer(ok, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    body = bytes(range(256)) * 1200  # 307,200 bytes through a 1,000-byte stream window
    async with server as base, Engine(backend=backend) as engine, h2c(engine) as c:
        # first the SETTINGS exchange (h2 as a server counts data sent under the default
        # window before its SETTINGS arrived against the smaller one)
        await c.get(base + "/warm")
        rs = await asyncio.gather(c.post(base + "/a", body=body), c.post(base + "/b", body=body))
        assert [r.content for r in rs] == [b"/a 307200", b"/b 307200"]
    assert [bytes(r.body) == body for r in server.seen[1:]] == [True, True]


@per_backend
async def test_slow_reader_holds_the_server_to_the_stream_window(backend: str) -> None:
    blocked = asyncio.Event()
    progress: List[int] = []
    body = b"z" * (3 * STREAM_WINDOW)

    async def big(req: Req) -> None:
        await req.conn.respond(req.stream_id, 200, body, progress=progress, blocked=blocked)

    server = ScriptedServer(big)
    async with server as base, Engine(backend=backend) as engine, h2c(engine) as c:
        async with await c.get(base + "/big", stream=True) as r:
            await blocked.wait()  # nothing read yet: the server is stopped by the window
            assert progress[-1] == STREAM_WINDOW
            other = await c.get(base + "/other")  # the connection is not blocked
            assert other.content == b"z" * len(body)
            assert await r.read() == body
        assert c.connections_opened == 1


# -- 8.1 HTTP message framing: trailers, early responses ------------------------------------------


@per_backend
async def test_trailers(backend: str) -> None:
    async def with_trailers(req: Req) -> None:
        await req.conn.respond(req.stream_id, 200, b"body", trailers=[(b"x-sum", b"42")])

    async with ScriptedServer(with_trailers) as base, Engine(backend=backend) as engine:
        async with h2c(engine) as c:
            r = await c.get(base + "/")
            assert (r.content, r.trailers) == (b"body", ((b"x-sum", b"42"),))


@per_backend
async def test_early_response_then_reset_no_error_stops_the_upload(backend: str) -> None:
    async def early(req: Req) -> None:
        if req.path != "/up":
            return
        await req.conn.respond(req.stream_id, 413, b"too big")
        req.conn.reset(req.stream_id, ErrorCodes.NO_ERROR)

    server = ScriptedServer(ok, on_headers=early)
    async with server as base, Engine(backend=backend) as engine, h2c(engine) as c:
        r = await c.post(base + "/up", body=b"u" * (4 << 20))
        assert (r.status, r.content) == (413, b"too big")
        assert len(server.seen[0].body) < 4 << 20
        assert (await c.get(base + "/next")).status == 200


@per_backend
async def test_max_body_size(backend: str) -> None:
    async def big(req: Req) -> None:
        await req.conn.respond(req.stream_id, 200, b"b" * 5000)

    async with ScriptedServer(big) as base, Engine(backend=backend) as engine:
        async with h2c(engine, max_body_size=1000) as c:
            with pytest.raises(HTTPMessageTooBig):
                await c.get(base + "/")


# -- 6.4 RST_STREAM, 8.7 REFUSED_STREAM -----------------------------------------------------------


@per_backend
async def test_reset_stream_fails_only_that_request(backend: str) -> None:
    async def handler(req: Req) -> None:
        if req.path == "/reset":
            req.conn.reset(req.stream_id, ErrorCodes.INTERNAL_ERROR)
        else:
            await ok(req)

    async with ScriptedServer(handler) as base, Engine(backend=backend) as engine:
        async with h2c(engine) as c:
            bad, good = await asyncio.gather(c.get(base + "/reset"), c.get(base + "/fine"),
                                             return_exceptions=True)
            assert isinstance(bad, StreamReset)
            assert bad.error_code == ErrorCodes.INTERNAL_ERROR and "INTERNAL_ERROR" in str(bad)
            assert good.content == b"/fine 0"  # type: ignore[union-attr]
            assert c.connections_opened == 1


@per_backend
async def test_refused_stream_is_sent_again(backend: str) -> None:
    refused: List[int] = []

    async def handler(req: Req) -> None:
        if not refused:
            refused.append(req.stream_id)
            req.conn.reset(req.stream_id, ErrorCodes.REFUSED_STREAM)
        else:
            await ok(req)

    server = ScriptedServer(handler)
    async with server as base, Engine(backend=backend) as engine, h2c(engine) as c:
        r = await c.post(base + "/x", body=b"abc")
        assert r.content == b"/x 3"
    assert [req.path for req in server.seen] == ["/x", "/x"]


# -- 6.8 GOAWAY -------------------------------------------------------------------------------------


@per_backend
async def test_goaway_sends_unprocessed_streams_again_on_a_new_connection(backend: str) -> None:
    server: ScriptedServer
    held: List[Req] = []

    async def handler(req: Req) -> None:
        index = server.peers.index(req.conn)
        if index > 0 or req.path == "/warm":
            await req.conn.respond(req.stream_id, 200, b"conn%d %s" % (index, req.path.encode()))
            return
        held.append(req)
        if len(held) == 3:
            first = held[0].conn
            lowest = min(r.stream_id for r in held)
            first.goaway_raw(lowest)  # the streams above it were not processed
            await first.respond(lowest, 200, b"conn0 " + first.requests[lowest].path.encode())
            first.writer.close()

    server = ScriptedServer(handler)
    async with server as base, Engine(backend=backend) as engine, h2c(engine) as c:
        await c.get(base + "/warm")  # the connection is open, SETTINGS exchanged
        rs = await asyncio.gather(*[c.get(f"{base}/{i}") for i in range(3)])
        bodies = sorted(r.content for r in rs)
        assert bodies[0].startswith(b"conn0 /") and [b[:6] for b in bodies[1:]] == [b"conn1 "] * 2
        assert sorted(b.split()[1] for b in bodies) == [b"/0", b"/1", b"/2"]
        r = await c.get(base + "/later")  # new requests go to the new connection
        assert r.content == b"conn1 /later"
        assert c.connections_opened == 2


# -- 5.4.1 connection errors, 6.7 PING --------------------------------------------------------------


@per_backend
async def test_protocol_error_from_the_server(backend: str) -> None:
    async def garbage(req: Req) -> None:
        # a DATA frame on stream 0: a connection error of type PROTOCOL_ERROR
        req.conn.writer.write(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd")

    async with ScriptedServer(garbage) as base, Engine(backend=backend) as engine:
        async with h2c(engine) as c:
            with pytest.raises(HTTPProtocolError, match="HTTP/2 protocol error"):
                await c.get(base + "/")
            assert not c._h2  # that connection is out of the pool


@per_backend
async def test_ping(backend: str) -> None:
    async with ScriptedServer(ok) as base, Engine(backend=backend) as engine, h2c(engine) as c:
        await c.get(base + "/")
        (conn,) = c._h2.values()  # the shared connection
        assert 0 <= await conn.ping(timeout=5) < 5

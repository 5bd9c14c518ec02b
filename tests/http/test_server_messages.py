"""HttpServer: requests and responses over real sockets, on both engine backends.

Grouped by RFC 9112 / RFC 9110 topic: message framing (Content-Length, chunked, trailers),
persistence (keep-alive, pipelining, Connection: close, HTTP/1.0), HEAD, 100-continue,
streaming both ways, file responses. Responses are parsed by h11 (an independent parser).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, List

import h11
import pytest
from tests.http._server_support import BACKENDS, RawClient, h11_exchange, read_response, serving

from nbio.http import FileResponse, HttpRequest, Response, StreamingResponse

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def echo(req: HttpRequest) -> Response:
    """Sync handler: method, target, body and trailers echoed back."""
    trailers = b";".join(b"%s=%s" % t for t in req.trailers)
    return Response(
        req.method + b" " + req.target + b" " + req.body + b" " + trailers,
        headers=[("x-version", req.http_version)],
    )


async def aecho(req: HttpRequest) -> Response:
    body = await req.read()
    return Response(b"async " + req.method + b" " + body)


# -- RFC 9112 6: message body framing --------------------------------------------------------


async def test_get_sync_handler(backend: str) -> None:
    async with serving(echo, backend) as (_, addr):
        [(head, body)] = await h11_exchange(
            addr, [(h11.Request(method="GET", target="/a?b=1", headers=[("host", "x")]), [])]
        )
    assert head.status_code == 200
    assert body == b"GET /a?b=1  "
    assert dict(head.headers)[b"x-version"] == b"1.1"
    assert b"date" in dict(head.headers)


async def test_content_length_body_and_async_handler(backend: str) -> None:
    async with serving(aecho, backend) as (_, addr):
        req = h11.Request(method="POST", target="/", headers=[("host", "x"),
                                                              ("content-length", "11")])
        [(head, body)] = await h11_exchange(addr, [(req, [b"hello", b" world"])])
    assert (head.status_code, body) == (200, b"async POST hello world")


async def test_chunked_request_body_with_trailers(backend: str) -> None:
    async with serving(echo, backend) as (_, addr):
        raw = (b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n"
               b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nx-sum: 7\r\n\r\n")
        out = await read_response(addr, raw)
    assert out.endswith(b"\r\n\r\nPOST /c abcdefg x-sum=7")


async def test_streaming_response_chunked_with_trailers(backend: str) -> None:
    async def app(req: HttpRequest) -> StreamingResponse:
        async def gen() -> Any:
            for i in range(3):
                yield b"part%d;" % i
                await asyncio.sleep(0)
            yield "text"
        return StreamingResponse(gen(), trailers=lambda: [("x-done", "yes")])

    async with serving(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, trailers = await client.response()
        await client.close()
    assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
    assert body == b"part0;part1;part2;text"
    assert trailers == [(b"x-done", b"yes")]


async def test_streaming_response_with_content_length_from_sync_iterable(backend: str) -> None:
    def app(req: HttpRequest) -> StreamingResponse:
        return StreamingResponse([b"ab", b"cd"], headers=[("content-length", "4")])

    async with serving(app, backend) as (_, addr):
        [(head, body)] = await h11_exchange(
            addr, [(h11.Request(method="GET", target="/", headers=[("host", "x")]), [])]
        )
    assert dict(head.headers)[b"content-length"] == b"4"
    assert body == b"abcd"


async def test_large_streaming_response_backpressure(backend: str) -> None:
    chunk = b"x" * 65536

    async def app(req: HttpRequest) -> StreamingResponse:
        async def gen() -> Any:
            for _ in range(64):  # 4 MiB: more than the write high-water mark many times
                yield chunk
        return StreamingResponse(gen())

    async with serving(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _, body, _ = await client.response()
        await client.close()
    assert len(body) == 64 * 65536


async def test_streaming_request_body(backend: str) -> None:
    got: List[bytes] = []

    async def app(req: HttpRequest) -> Response:
        async for chunk in req.stream():
            got.append(chunk)
        return Response(b"%d" % sum(map(len, got)))

    async with serving(app, backend, stream_request_body=True) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(50):
            client.send(b"1000\r\n" + bytes([65 + i % 26]) * 4096 + b"\r\n")
            await client.writer.drain()
        client.send(b"0\r\n\r\n")
        _head, body, _ = await client.response(b"PUT")
        await client.close()
    assert body == b"%d" % (50 * 4096)
    assert b"".join(got) == b"".join(bytes([65 + i % 26]) * 4096 for i in range(50))


async def test_request_body_too_large_for_streaming_is_paused_not_lost(backend: str) -> None:
    """A slow consumer pauses reading: all bytes still arrive, in order."""
    async def app(req: HttpRequest) -> Response:
        total = 0
        async for chunk in req.stream():
            total += len(chunk)
            await asyncio.sleep(0)
        return Response(b"%d" % total)

    async with serving(app, backend, stream_request_body=True) as (_, addr):
        client = await RawClient.connect(addr)
        size = 2 * 1024 * 1024
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        client.send(b"y" * size)
        _, body, _ = await client.response(b"POST")
        await client.close()
    assert body == b"%d" % size


# -- RFC 9110 9.3.2: HEAD ----------------------------------------------------------------------


async def test_head_has_length_but_no_body(backend: str) -> None:
    async with serving(lambda req: Response(b"0123456789"), backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, _ = await client.response(b"HEAD")
        assert dict(head.headers)[b"content-length"] == b"10" and body == b""
        head, body, _ = await client.response()
        assert body == b"0123456789"
        await client.close()


# -- RFC 9112 9: persistence, pipelining ---------------------------------------------------------


async def test_keep_alive_many_requests_one_connection(backend: str) -> None:
    async with serving(echo, backend) as (_server, addr):
        reqs = [(h11.Request(method="GET", target=f"/{i}", headers=[("host", "x")]), [])
                for i in range(20)]
        out = await h11_exchange(addr, reqs)
    assert [b for _, b in out] == [b"GET /%d  " % i for i in range(20)]


async def test_pipelined_responses_in_request_order(backend: str) -> None:
    async def app(req: HttpRequest) -> Response:
        n = int(req.path[1:])
        for _ in range(10 - n):  # the first request takes the longest
            await asyncio.sleep(0)
        return Response(b"r%d" % n)

    async with serving(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10)))
        bodies = []
        for _ in range(10):
            _, body, _ = await client.response()
            bodies.append(body)
        await client.close()
    assert bodies == [b"r%d" % i for i in range(10)]


async def test_many_pipelined_sync_requests_in_one_packet(backend: str) -> None:
    async with serving(lambda req: Response(b"k"), backend) as (_, addr):
        n = 2000
        raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (n - 1)
        raw += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        out = await read_response(addr, raw)
    assert out.count(b"HTTP/1.1 200 OK") == n


async def test_connection_close_request(backend: str) -> None:
    async with serving(echo, backend) as (_, addr):
        out = await read_response(
            addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                  b"GET /ignored HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in out


async def test_http10_closes_unless_keep_alive(backend: str) -> None:
    async with serving(echo, backend) as (_, addr):
        out = await read_response(addr, b"GET / HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"GET /  ")
        client = await RawClient.connect(addr)
        client.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = await client.reader.readuntil(b"GET /1  ")
        assert b"Connection: keep-alive" in data
        client.send(b"GET /2 HTTP/1.0\r\n\r\n")
        rest = await client.read_all()
        assert rest.endswith(b"GET /2  ")
        await client.close()


async def test_http10_streaming_response_is_close_delimited(backend: str) -> None:
    async with serving(lambda req: StreamingResponse([b"a", b"b"]), backend) as (_, addr):
        out = await read_response(addr, b"GET / HTTP/1.0\r\n\r\n")
    assert b"chunked" not in out and out.endswith(b"\r\n\r\nab")


# -- RFC 9110 10.1.1: Expect: 100-continue -------------------------------------------------------


async def test_expect_100_continue(backend: str) -> None:
    async with serving(aecho, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        interim = await client.reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"body")
        _head, body, _ = await client.response(b"POST")
        await client.close()
    assert body == b"async POST body"


async def test_expect_100_continue_streaming_sent_on_read(backend: str) -> None:
    started = asyncio.Event()

    async def app(req: HttpRequest) -> Response:
        started.set()
        return Response(await req.read())

    async with serving(app, backend, stream_request_body=True) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        assert await client.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert started.is_set()
        client.send(b"ok")
        _, body, _ = await client.response(b"POST")
        await client.close()
    assert body == b"ok"


# -- file responses ------------------------------------------------------------------------------


async def test_file_response_sendfile(backend: str, tmp_path: Any) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    (tmp_path / "page.html").write_bytes(b"<p>hi</p>")

    def app(req: HttpRequest) -> FileResponse:
        return FileResponse(path if req.path == b"/blob" else tmp_path / "page.html")

    async with serving(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, _ = await client.response()
        assert body == data
        assert dict(head.headers)[b"content-type"] == b"application/octet-stream"
        client.send(b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\nGET /page HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, _ = await client.response(b"HEAD")
        assert body == b"" and dict(head.headers)[b"content-length"] == b"9"
        head, body, _ = await client.response()
        assert body == b"<p>hi</p>" and dict(head.headers)[b"content-type"] == b"text/html"
        await client.close()


# -- application errors ----------------------------------------------------------------------------


async def test_handler_exception_is_500_and_isolated(backend: str, caplog: Any) -> None:
    def app(req: HttpRequest) -> Response:
        if req.path == b"/boom":
            raise RuntimeError("boom")
        return Response(b"fine")

    async with serving(app, backend) as (_, addr):
        good = await RawClient.connect(addr)
        good.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await good.response())[1] == b"fine"
        out = await read_response(addr, b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500 ")
        good.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await good.response())[1] == b"fine"
        await good.close()
    assert "boom" in caplog.text


async def test_streaming_failure_after_head_aborts(backend: str, caplog: Any) -> None:
    async def app(req: HttpRequest) -> StreamingResponse:
        async def gen() -> Any:
            yield b"partial"
            raise ValueError("mid-stream")
        return StreamingResponse(gen())

    async with serving(app, backend) as (_, addr):
        out = await read_response(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"partial" in out
    assert not out.endswith(b"0\r\n\r\n")


async def test_client_disconnect_cancels_handler(backend: str) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def app(req: HttpRequest) -> Response:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(b"never")

    async with serving(app, backend) as (_server, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await entered.wait()
        client.writer.transport.abort()
        await cancelled.wait()
        await client.close()

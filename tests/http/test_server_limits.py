"""HttpServer limits: each answered with the right status, then a clean close; a bad client
never disturbs the others. Both engine backends."""

from __future__ import annotations

import asyncio

import pytest
from tests.http._server_support import BACKENDS, RawClient, read_response, serving

from nbio.http import HttpRequest, Response

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def ok(req: HttpRequest) -> Response:
    return Response(b"ok:" + req.body)


def status_of(out: bytes) -> int:
    return int(out.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "raw, status",
    [
        # RFC 9112 3: malformed request line / fields
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),                        # obs-fold
        (b"GET / HTTP/1.1\r\n\r\n", 400),                                     # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),               # two Hosts
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),               # TLS hello
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
        # RFC 9112 6.3: smuggling-prone framing
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        # limits
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 2000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(30))
         + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"200\r\n" + b"z" * 512 + b"\r\n" + b"200\r\n" + b"z" * 512 + b"\r\n", 413),
    ],
)
async def test_bad_request_status_then_close(backend: str, raw: bytes, status: int) -> None:
    limits = dict(max_request_line=256, max_header_bytes=1024, max_header_count=20,
                  max_body_size=1000)
    async with serving(ok, backend, **limits) as (_, addr):
        out = await read_response(addr, raw)
    assert status_of(out) == status, out
    assert b"Connection: close" in out


async def test_body_at_the_limit_is_accepted(backend: str) -> None:
    async with serving(ok, backend, max_body_size=10) as (_, addr):
        out = await read_response(
            addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close"
                  b"\r\n\r\n0123456789")
    assert out.endswith(b"ok:0123456789")


async def test_error_after_good_pipelined_request(backend: str) -> None:
    async with serving(ok, backend) as (_, addr):
        out = await read_response(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
    first, _, second = out.partition(b"ok:")
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 400")


async def test_header_timeout_408(backend: str) -> None:
    """Slowloris: a head still incomplete header_timeout s after its first byte gets 408."""
    async with serving(ok, backend, header_timeout=0.2) as (_server, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        for i in range(3):     # trickling bytes does not push the deadline back
            await client.writer.drain()
            client.send(b"X-%d: y\r\n" % i)
        out = await client.read_all()
        await client.close()
        assert status_of(out) == 408 and b"Connection: close" in out
        # and a good client is served normally meanwhile
        good = await read_response(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert good.endswith(b"ok:")


async def test_idle_keep_alive_timeout_closes(backend: str) -> None:
    async with serving(ok, backend, keep_alive_timeout=0.2) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        out = await client.read_all()  # the response, then EOF once idle
        await client.close()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok:")


async def test_slow_async_handler_is_not_cut_by_keep_alive_timeout(backend: str) -> None:
    gate = asyncio.Event()

    async def app(req: HttpRequest) -> Response:
        await gate.wait()
        return Response(b"late")

    async with serving(app, backend, keep_alive_timeout=0.1) as (_server, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # the idle deadline would have fired several times over while the handler waits
        loop = asyncio.get_running_loop()
        loop.call_later(0.4, gate.set)
        _, body, _ = await client.response()
        await client.close()
    assert body == b"late"


async def test_eof_mid_request_closes(backend: str) -> None:
    async with serving(ok, backend) as (_server, addr):
        client = await RawClient.connect(addr)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        client.writer.write_eof()
        out = await client.read_all()
        await client.close()
    assert out == b"" or status_of(out) == 400


async def test_bad_clients_do_not_affect_others(backend: str) -> None:
    async with serving(ok, backend, max_header_bytes=1024) as (_, addr):
        good = await RawClient.connect(addr)
        bads = [await RawClient.connect(addr) for _ in range(5)]
        for i, bad in enumerate(bads):
            bad.send([b"\x00\x01garbage\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"v" * 4000,
                      b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                      b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                      b"GET /\xff\x00 HTTP/1.1\r\n\r\n"][i])
        for _ in range(5):
            good.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await good.response())[1] == b"ok:"
        for bad in bads:
            bad.writer.transport.abort()
        good.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await good.response())[1] == b"ok:"
        await good.close()
        for bad in bads:
            await bad.close()

"""HttpClient against independent servers: aiohttp.web and an h11-based server, plus a
small CONNECT proxy. Both engine backends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, List, Tuple

import h11
import pytest
from aiohttp import web

from nbio.engine import BACKENDS, Engine
from nbio.errors import DeadlineExceeded
from nbio.http.client import HttpClient, TooManyRedirects

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


@contextlib.asynccontextmanager
async def aiohttp_server() -> AsyncIterator[str]:
    gate = asyncio.Event()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.query.get('who', 'you')}",
                            headers={"x-peer-port": str(request.transport.get_extra_info(
                                "peername")[1])})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"method": request.method, "len": len(body),
                                  "chunked": request.headers.get("transfer-encoding"),
                                  "ct": request.headers.get("content-type"),
                                  "body": body[:100].decode("latin-1")})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(100):
            await resp.write(b"%04d," % i)
        await resp.write_eof()
        return resp

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"b" * 3_000_000)

    async def redirect(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/redirect/{n - 1}" if n > 1 else "/hello?who=redirected")

    async def r307(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/echo")

    async def r303(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/echo")

    async def slow(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="late")

    app = web.Application()
    app.add_routes([web.get("/hello", hello), web.route("*", "/echo", echo),
                    web.get("/chunked", chunked), web.get("/big", big),
                    web.get("/redirect/{n}", redirect), web.post("/r307", r307),
                    web.post("/r303", r303), web.get("/slow", slow)])
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        gate.set()
        await runner.cleanup()


async def test_get_keep_alive_and_pool(backend: str) -> None:
    async with Engine(backend=backend) as engine, aiohttp_server() as base:
        async with HttpClient(engine=engine) as client:
            ports = set()
            for i in range(5):
                r = await client.get(f"{base}/hello?who={i}")
                assert (r.status, r.text()) == (200, f"hello {i}")
                ports.add(r.header("x-peer-port"))
            assert len(ports) == 1 and client.connections_opened == 1
            rs = await asyncio.gather(*[client.get(f"{base}/hello") for _ in range(8)])
            assert all(r.status == 200 for r in rs)
            assert client.connections_opened <= 10


async def test_bodies(backend: str) -> None:
    async with Engine(backend=backend) as engine, aiohttp_server() as base:
        async with HttpClient(engine=engine) as client:
            r = await client.post(f"{base}/echo", body=b"x" * 200_000)
            got = r.json()
            assert got["len"] == 200_000 and got["chunked"] is None
            r = await client.post(f"{base}/echo", json={"a": 1})
            assert r.json()["ct"] == "application/json" and r.json()["body"] == '{"a":1}'

            async def gen() -> AsyncIterator[bytes]:
                for _ in range(50):
                    yield b"y" * 10_000
            r = await client.put(f"{base}/echo", body=gen())
            assert r.json()["len"] == 500_000 and r.json()["chunked"] == "chunked"
            r = await client.post(f"{base}/echo", body=[b"a", b"b", "c"])
            assert r.json()["body"] == "abc"
            r = await client.get(f"{base}/chunked")
            assert r.content == b"".join(b"%04d," % i for i in range(100))
            r = await client.request("GET", f"{base}/big", stream=True)
            n = 0
            async for chunk in r.iter_bytes():
                n += len(chunk)
            assert n == 3_000_000
            r = await client.head(f"{base}/hello")
            assert r.status == 200 and r.content == b""
            r = await client.get(f"{base}/hello")  # the pool still works after all that
            assert r.text() == "hello you"


async def test_redirects(backend: str) -> None:
    async with Engine(backend=backend) as engine, aiohttp_server() as base:
        async with HttpClient(engine=engine, max_redirects=5) as client:
            r = await client.get(f"{base}/redirect/3")
            assert r.text() == "hello redirected" and [h.status for h in r.history] == [302] * 3
            r = await client.post(f"{base}/r307", body=b"keep me")
            assert r.json()["method"] == "POST" and r.json()["body"] == "keep me"
            r = await client.post(f"{base}/r303", body=b"drop me")
            assert r.json()["method"] == "GET" and r.json()["len"] == 0
            with pytest.raises(TooManyRedirects):
                await client.get(f"{base}/redirect/9")
            r = await client.get(f"{base}/redirect/1", follow_redirects=False)
            assert r.status == 302 and r.header("location") == "/hello?who=redirected"


async def test_timeouts(backend: str) -> None:
    async with Engine(backend=backend) as engine, aiohttp_server() as base:
        async with HttpClient(engine=engine, read_timeout=0.2) as client:
            with pytest.raises(DeadlineExceeded) as info:
                await client.get(f"{base}/slow")
            assert info.value.kind == "read"
            with pytest.raises(DeadlineExceeded) as info:
                await client.get(f"{base}/slow", read_timeout=None, timeout=0.2)
            assert info.value.kind == "total"
            assert (await client.get(f"{base}/hello")).status == 200


async def test_connection_refused(backend: str, free_port: int) -> None:
    async with Engine(backend=backend) as engine:
        async with HttpClient(engine=engine) as client:
            with pytest.raises(ConnectionRefusedError):
                await client.get(f"http://127.0.0.1:{free_port}/")


# -- an h11 server: trailers, Connection: close, stale keep-alive connections -----------------


@contextlib.asynccontextmanager
async def h11_server(close_after: int = 0) -> AsyncIterator[Tuple[str, List[int]]]:
    conns: List[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        conns.append(1)
        served = 0
        try:
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(ev, h11.Request):
                    target = ev.target
                elif isinstance(ev, h11.EndOfMessage):
                    served += 1
                    headers = [("transfer-encoding", "chunked")]
                    if target == b"/close":
                        headers.append(("connection", "close"))
                    out = conn.send(h11.Response(status_code=200, headers=headers))
                    out += conn.send(h11.Data(data=b"from h11 " + target))
                    out += conn.send(h11.EndOfMessage(headers=[("x-trailer", "t")]))
                    writer.write(out)
                    if conn.our_state is h11.MUST_CLOSE or (close_after and
                                                            served >= close_after):
                        return
                    conn.start_next_cycle()
                elif isinstance(ev, h11.ConnectionClosed):
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", conns
    finally:
        server.close()
        await server.wait_closed()


async def test_h11_server_trailers_and_close(backend: str) -> None:
    async with Engine(backend=backend) as engine, h11_server() as (base, conns):
        async with HttpClient(engine=engine) as client:
            r = await client.get(f"{base}/a")
            assert r.content == b"from h11 /a" and r.trailers == ((b"x-trailer", b"t"),)
            r = await client.get(f"{base}/close")
            assert r.content == b"from h11 /close"
            r = await client.get(f"{base}/b")
            assert r.content == b"from h11 /b"
            assert len(conns) == 2


async def test_stale_pooled_connection_is_retried(backend: str) -> None:
    async with Engine(backend=backend) as engine, h11_server(close_after=1) as (base, conns):
        async with HttpClient(engine=engine) as client:
            for i in range(3):
                r = await client.get(f"{base}/{i}")
                assert r.content == b"from h11 /%d" % i
            assert len(conns) == 3


# -- CONNECT proxy -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect_proxy() -> AsyncIterator[Tuple[str, List[bytes]]]:
    seen: List[bytes] = []

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        finally:
            w.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        seen.append(line)
        method, authority, _ = line.split(b" ")
        if method != b"CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        host, port = authority.rsplit(b":", 1)
        ur, uw = await asyncio.open_connection(host.decode(), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, uw), pipe(ur, writer), return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


async def test_connect_proxy(backend: str) -> None:
    async with Engine(backend=backend) as engine, aiohttp_server() as base, \
            connect_proxy() as (proxy, seen):
        async with HttpClient(engine=engine, proxy=proxy) as client:
            r = await client.get(f"{base}/hello?who=tunnel")
            assert r.text() == "hello tunnel"
            r = await client.post(f"{base}/echo", body=b"through")
            assert r.json()["body"] == "through"
        assert seen == [b"CONNECT " + base[7:].encode() + b" HTTP/1.1"]

"""HTTP-RPC: one arpc frame per POST, on the nbio HTTP server and as an ASGI route; the
Python HttpRpcClient; bytes checked with an independent HTTP client (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Dict, List, Tuple, cast

import aiohttp
import pytest
from tests.rpc._support import BACKENDS, GOLDEN_ANSWER, GOLDEN_CALL

from nbio.engine import Engine
from nbio.errors import NotConnected, ProtocolError, RpcError, RpcTimeout
from nbio.http.asgi import AsgiServer
from nbio.http.server import HttpServer
from nbio.rpc import GzipCoder, Router, Server
from nbio.rpc.message import (
    CMD_NOTIFY,
    CMD_PING,
    CMD_PONG,
    CMD_REQUEST,
    CMD_RESPONSE,
    CMD_STREAM,
    FLAG_ERROR,
    encode,
    parse_frame,
)
from nbio.rpc.transport_http import HttpRpcClient, HttpRpcEndpoint


class App:
    """Handlers plus what the tests observe."""

    def __init__(self) -> None:
        self.router = Router()
        self.notes: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        r = self.router
        r.handle("/echo", lambda ctx: ctx.bind(bytes))
        r.handle("/note", lambda ctx: self.notes.put_nowait(ctx.bind()))

        @r.handle("/add")
        async def add(ctx: Any) -> Any:
            await asyncio.sleep(0)
            a, b = ctx.bind()
            return a + b

        @r.handle("/fail")
        def fail(ctx: Any) -> None:
            raise RpcError("no luck")

        @r.handle("/silent")
        async def silent(ctx: Any) -> None:
            await asyncio.sleep(0)

        @r.handle("/slow")
        async def slow(ctx: Any) -> str:
            self.started.set()
            await self.release.wait()
            return "done"

        @r.handle("/callback")
        def callback(ctx: Any) -> str:
            try:
                ctx.client.notify("/x", 1)
            except NotConnected as exc:
                return f"cannot: {exc}"
            return "sent?"


@contextlib.asynccontextmanager
async def http_serving(
    backend: str, app: App, **server_kw: Any
) -> AsyncIterator[Tuple[Server, str, Engine]]:
    engine = Engine(backend=backend)
    server = Server(app.router, engine=engine, **server_kw)
    http = await HttpServer.start(HttpRpcEndpoint(server), "127.0.0.1", 0, engine=engine)
    try:
        yield server, f"http://127.0.0.1:{http.address[1]}/rpc", engine
    finally:
        await server.close()
        http.close()
        await http.wait_closed()
        await engine.close()


class Posted:
    """What an independent HTTP client (aiohttp) got back."""

    def __init__(self, status: int, headers: Any, content: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content


async def post(url: str, body: bytes, method: str = "POST") -> Posted:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, data=body) as resp:
            return Posted(resp.status, resp.headers, await resp.read())


# -- the wire, seen by an independent HTTP client ----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_golden_call_is_the_body_both_ways(backend: str) -> None:
    async with http_serving(backend, App()) as (_s, url, _e):
        resp = await post(url, GOLDEN_CALL)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/octet-stream"
        assert resp.content == GOLDEN_ANSWER


@pytest.mark.parametrize("backend", BACKENDS)
async def test_notify_ping_and_unknown_method(backend: str) -> None:
    app = App()
    async with http_serving(backend, app) as (_s, url, _e):
        resp = await post(url, encode(CMD_NOTIFY, "/note", 2, b'{"a":1}'))
        assert (resp.status_code, resp.content) == (200, b"")
        assert await asyncio.wait_for(app.notes.get(), 5) == {"a": 1}
        resp = await post(url, encode(CMD_PING, "", 0))
        assert parse_frame(resp.content).cmd == CMD_PONG
        resp = await post(url, encode(CMD_REQUEST, "/nope", 7, b""))
        msg = parse_frame(resp.content)
        assert (msg.cmd, msg.seq, msg.flags & FLAG_ERROR) == (CMD_RESPONSE, 7, FLAG_ERROR)
        assert bytes(msg.payload) == b"method not found"


BAD_BODIES: List[Tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated header", GOLDEN_CALL[:10]),
    ("truncated body", GOLDEN_CALL[:-1]),
    ("two frames", GOLDEN_CALL + GOLDEN_CALL),
    ("a response frame", GOLDEN_ANSWER),
    ("a stream frame", encode(CMD_STREAM, "/s", 2, b"x")),
    ("unknown command", GOLDEN_CALL[:5] + b"\x3f" + GOLDEN_CALL[6:]),
    ("method length over 127", GOLDEN_CALL[:7] + b"\xff" + GOLDEN_CALL[8:]),
    ("method longer than the body", GOLDEN_CALL[:7] + b"\x0b" + GOLDEN_CALL[8:]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,body", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_malformed_bodies_get_400(backend: str, name: str, body: bytes) -> None:
    async with http_serving(backend, App()) as (_s, url, _e):
        resp = await post(url, body)
        assert resp.status_code == 400, resp.content
        assert (await post(url, GOLDEN_CALL)).content == GOLDEN_ANSWER


@pytest.mark.parametrize("backend", BACKENDS)
async def test_only_post(backend: str) -> None:
    async with http_serving(backend, App()) as (_s, url, _e):
        resp = await post(url, b"", method="GET")
        assert resp.status_code == 405
        assert resp.headers["allow"] == "POST"


# -- the Python client -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_client_calls(backend: str) -> None:
    app = App()
    async with http_serving(backend, app) as (_s, url, engine):
        async with HttpRpcClient(url, engine=engine, timeout=5) as client:
            assert await client.call("/echo", b"hi", as_type=bytes) == b"hi"
            assert await client.call("/add", [2, 3]) == 5
            with pytest.raises(RpcError, match="no luck"):
                await client.call("/fail")
            with pytest.raises(RpcError, match="method not found"):
                await client.call("/nope")
            with pytest.raises(RpcError, match="no answer"):
                await client.call("/silent")
            assert (await client.call("/callback", as_type=str)).startswith("cannot: ")
            await client.notify("/note", [1])
            assert await asyncio.wait_for(app.notes.get(), 5) == [1]
            await client.ping()
            got = await asyncio.gather(*(client.call("/add", [i, i]) for i in range(50)))
            assert got == [2 * i for i in range(50)]
            assert client._http.connections_opened <= 16  # kept alive, reused


@pytest.mark.parametrize("backend", BACKENDS)
async def test_client_timeout_and_shutdown(backend: str) -> None:
    app = App()
    async with http_serving(backend, app) as (server, url, engine):
        async with HttpRpcClient(url, engine=engine) as client:
            with pytest.raises(RpcTimeout):
                await client.call("/slow", timeout=0.05)
            call = asyncio.ensure_future(client.call("/slow", as_type=str))
            await app.started.wait()
            app.release.set()
            assert await asyncio.wait_for(call, 5) == "done"
            await server.shutdown(timeout=1)
            with pytest.raises(RpcError, match="shutting down"):
                await client.call("/echo", b"late")
        with pytest.raises(NotConnected):
            await client.call("/echo", b"closed")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_gzip_coder_both_ways(backend: str) -> None:
    app = App()
    async with http_serving(backend, app, coders=[GzipCoder(threshold=16)]) as (_s, url, eng):
        async with HttpRpcClient(url, engine=eng, coders=[GzipCoder(threshold=16)]) as client:
            big = b"z" * 5000
            assert await client.call("/echo", big, as_type=bytes) == big


async def test_client_rejects_other_urls_and_reports_unreachable_servers() -> None:
    with pytest.raises(ValueError):
        HttpRpcClient("ws://127.0.0.1/rpc")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with HttpRpcClient(f"http://127.0.0.1:{port}/rpc") as client:
        with pytest.raises(ConnectionError):
            await client.call("/echo", b"x")


async def test_bad_answer_is_a_protocol_error() -> None:
    engine = Engine()

    def wrong(request: Any) -> Any:
        from nbio.http.server import Response

        return Response(encode(CMD_RESPONSE, "/echo", 999, b"x"), 200)

    http = await HttpServer.start(wrong, "127.0.0.1", 0, engine=engine)
    try:
        async with HttpRpcClient(f"http://127.0.0.1:{http.address[1]}/", engine=engine) as c:
            with pytest.raises(ProtocolError):
                await c.call("/echo", b"x")
    finally:
        http.close()
        await http.wait_closed()
        await engine.close()


# -- ASGI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_asgi_route_in_starlette(backend: str) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Route

    app = App()
    engine = Engine(backend=backend)
    server = Server(app.router, engine=engine)
    endpoint = HttpRpcEndpoint(server)
    starlette = Starlette(routes=[Route("/rpc", endpoint.asgi, methods=["POST"])])
    asgi = await AsgiServer.start(
        cast(Any, starlette), "127.0.0.1", 0, engine=engine, lifespan="off"
    )
    url = f"http://127.0.0.1:{asgi.address[1]}/rpc"
    try:
        assert (await post(url, GOLDEN_CALL)).content == GOLDEN_ANSWER
        async with HttpRpcClient(url, engine=engine, timeout=5) as client:
            assert await client.call("/add", [20, 22]) == 42
        assert (await post(url, GOLDEN_ANSWER)).status_code == 400
    finally:
        await server.close()
        asgi.close()
        await asgi.wait_closed()
        await engine.close()


class _FakeAsgi:
    def __init__(self, messages: List[Dict[str, Any]]) -> None:
        self.incoming = list(messages)
        self.sent: List[Dict[str, Any]] = []

    async def receive(self) -> Dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def test_asgi_body_in_pieces_limits_and_methods() -> None:
    server = Server(App().router, max_body_len=64)
    endpoint = HttpRpcEndpoint(server)
    pieces = [
        {"type": "http.request", "body": GOLDEN_CALL[:3], "more_body": True},
        {"type": "http.request", "body": GOLDEN_CALL[3:], "more_body": False},
    ]
    fake = _FakeAsgi(pieces)
    await endpoint.asgi({"type": "http", "method": "POST"}, fake.receive, fake.send)
    assert fake.sent[0]["status"] == 200
    assert fake.sent[1]["body"] == GOLDEN_ANSWER
    fake = _FakeAsgi([{"type": "http.request", "body": b"x" * 100}])
    await endpoint.asgi({"type": "http", "method": "POST"}, fake.receive, fake.send)
    assert fake.sent[0]["status"] == 413
    fake = _FakeAsgi([])
    await endpoint.asgi({"type": "http", "method": "GET"}, fake.receive, fake.send)
    assert fake.sent[0]["status"] == 405
    fake = _FakeAsgi([{"type": "websocket.connect"}])
    await endpoint.asgi({"type": "websocket"}, fake.receive, fake.send)
    assert fake.sent == [{"type": "websocket.close", "code": 1003}]
    await server.close()

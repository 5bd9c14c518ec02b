"""RPC over WebSocket: the endpoint on the nbio HTTP server (callback API) and as an ASGI
route, the Python WebSocket client, and the wire (one arpc frame per binary message)
checked with an independent WebSocket peer (the ``websockets`` library)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Dict, List, Tuple

import pytest
import websockets
from tests.rpc._support import (
    BACKENDS,
    GOLDEN_ANSWER,
    GOLDEN_CALL,
    client_for,
    echo_router,
    wait_until,
)

from nbio.engine import Engine
from nbio.errors import ConnectionLost, NotConnected, RpcError
from nbio.http.asgi import AsgiServer
from nbio.http.server import HttpServer, Response
from nbio.rpc import Router, Server
from nbio.rpc.message import (
    CMD_NOTIFY,
    CMD_PING,
    CMD_PONG,
    CMD_REQUEST,
    CMD_RESPONSE,
    FLAG_ERROR,
    encode,
    parse_frame,
)
from nbio.rpc.transport_ws import (
    WebSocketClient,
    WebSocketEndpoint,
    WebSocketRefused,
    split_frames,
)


def ws_router() -> Router:
    """``echo_router`` plus "/callback", which calls the WebSocket client back."""
    r = echo_router()

    @r.handle("/callback")
    async def callback(ctx: Any) -> Any:
        return await ctx.client.call("/hello", ctx.bind(str), as_type=str, timeout=5)

    return r


@contextlib.asynccontextmanager
async def ws_serving(
    backend: str, router: Any = None, *, http_kw: Any = None, ws_kw: Any = None, **server_kw: Any
) -> AsyncIterator[Tuple[Server, str, Engine]]:
    """An RPC server reachable at ``ws://.../rpc`` through the nbio HTTP server."""
    engine = Engine(backend=backend)
    server = Server(router or ws_router(), engine=engine, **server_kw)
    endpoint = WebSocketEndpoint(server, **(ws_kw or {}))
    http = await HttpServer.start(
        lambda req: Response("page"),
        "127.0.0.1",
        0,
        engine=engine,
        upgrades={"/rpc": endpoint},
        **(http_kw or {}),
    )
    try:
        yield server, f"ws://127.0.0.1:{http.address[1]}/rpc", engine
    finally:
        await server.close()
        http.close()
        await http.wait_closed()
        await engine.close()


@contextlib.asynccontextmanager
async def ws_client(url: str, engine: Engine, **kw: Any) -> AsyncIterator[WebSocketClient]:
    client = WebSocketClient(url, engine=engine, **kw)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def raw_ws(url: str) -> AsyncIterator[Any]:
    """An independent WebSocket peer (the ``websockets`` library)."""
    ws = await websockets.connect(url, compression=None)
    try:
        yield ws
    finally:
        await ws.close()


# -- splitting written data into frames --------------------------------------------------------


def test_split_frames_one_frame_is_returned_as_is() -> None:
    assert split_frames(GOLDEN_CALL) == (GOLDEN_CALL,)


def test_split_frames_several() -> None:
    ping = encode(CMD_PING, "", 0)
    frames = [bytes(f) for f in split_frames(GOLDEN_CALL + ping + GOLDEN_ANSWER)]
    assert frames == [GOLDEN_CALL, ping, GOLDEN_ANSWER]


def test_split_frames_rejects_partial_data() -> None:
    with pytest.raises(ValueError):
        split_frames(GOLDEN_CALL + GOLDEN_CALL[:20])


# -- the wire, seen by an independent WebSocket peer -------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_golden_call_is_one_binary_message_each_way(backend: str) -> None:
    async with ws_serving(backend) as (_server, url, _engine), raw_ws(url) as ws:
        await ws.send(GOLDEN_CALL)
        answer = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(answer, bytes)
        assert answer == GOLDEN_ANSWER


@pytest.mark.parametrize("backend", BACKENDS)
async def test_frames_batched_in_one_read_go_out_as_separate_messages(backend: str) -> None:
    async with ws_serving(backend) as (_server, url, _engine), raw_ws(url) as ws:
        calls = [encode(CMD_REQUEST, "/echo", seq, b"m%d" % seq) for seq in (2, 3, 4)]
        await ws.send(b"".join(calls) + encode(CMD_PING, "", 0))  # four frames, one message
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(4)]
        msgs = [parse_frame(m) for m in got]
        assert [m.cmd for m in msgs[:3]] == [CMD_RESPONSE] * 3
        assert [(m.seq, bytes(m.payload)) for m in msgs[:3]] == [(2, b"m2"), (3, b"m3"), (4, b"m4")]
        assert msgs[3].cmd == CMD_PONG
        assert all(len(m) == 16 + parse_frame(m).body_len for m in got)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_frame_split_across_messages_and_text_messages(backend: str) -> None:
    async with ws_serving(backend) as (_server, url, _engine), raw_ws(url) as ws:
        await ws.send(GOLDEN_CALL[:7])
        await ws.send(GOLDEN_CALL[7:])
        assert await asyncio.wait_for(ws.recv(), 5) == GOLDEN_ANSWER
        # a text message is taken as its UTF-8 bytes (arpc does not look at the type)
        await ws.send(GOLDEN_CALL.decode("latin-1"))  # all ASCII
        assert await asyncio.wait_for(ws.recv(), 5) == GOLDEN_ANSWER


@pytest.mark.parametrize("backend", BACKENDS)
async def test_unknown_method_and_unknown_notify(backend: str) -> None:
    async with ws_serving(backend) as (_server, url, _engine), raw_ws(url) as ws:
        await ws.send(encode(CMD_NOTIFY, "/nope", 2, b"x"))
        await ws.send(encode(CMD_REQUEST, "/nope", 3, b"x"))
        msg = parse_frame(await asyncio.wait_for(ws.recv(), 5))
        assert (msg.cmd, msg.seq, msg.flags & FLAG_ERROR) == (CMD_RESPONSE, 3, FLAG_ERROR)
        assert bytes(msg.payload) == b"method not found"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_malformed_frame_closes_only_that_connection_with_1002(backend: str) -> None:
    async with ws_serving(backend) as (server, url, engine):
        async with ws_client(url, engine) as good, raw_ws(url) as bad:
            await wait_until(lambda: len(server) == 2)
            bad_frame = bytearray(GOLDEN_CALL)
            bad_frame[5] = 0x3F  # unknown command
            await bad.send(bytes(bad_frame))
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(bad.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1002
            await wait_until(lambda: len(server) == 1)
            assert await good.call("/echo", b"still here", as_type=bytes) == b"still here"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_server_keepalive_pings_reach_websocket_peers(backend: str) -> None:
    async with ws_serving(backend, keepalive=0.05) as (_server, url, _engine), raw_ws(url) as ws:
        msg = parse_frame(await asyncio.wait_for(ws.recv(), 5))
        assert msg.cmd == CMD_PING


# -- Python client over WebSocket --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_calls_both_ways(backend: str) -> None:
    client_router = Router()
    client_router.handle("/hello", lambda ctx: "hello " + ctx.bind(str))
    async with ws_serving(backend) as (_server, url, engine):
        async with ws_client(url, engine, router=client_router, timeout=5) as client:
            assert await client.call("/echo", b"hi", as_type=bytes) == b"hi"
            assert await client.call("/add", [2, 3]) == 5
            assert await client.call("/aecho", {"a": [1, None]}) == {"a": [1, None]}
            assert await client.call("/callback", "browser", as_type=str) == "hello browser"
            with pytest.raises(RpcError, match="method not found"):
                await client.call("/missing", 1)
            got = await asyncio.gather(*(client.call("/add", [i, i]) for i in range(200)))
            assert got == [2 * i for i in range(200)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_callback_style_call_and_notify(backend: str) -> None:
    router = ws_router()
    seen: asyncio.Queue[Any] = asyncio.Queue()
    router.handle("/note", lambda ctx: seen.put_nowait(ctx.bind()))
    async with ws_serving(backend, router) as (_server, url, engine):
        async with ws_client(url, engine) as client:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            client.call_async("/add", [1, 2], lambda v, e: done.set_result((v, e)))
            assert await done == (3, None)
            client.notify("/note", {"x": 1})
            assert await asyncio.wait_for(seen.get(), 5) == {"x": 1}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_broadcast_reaches_websocket_and_tcp_clients(backend: str) -> None:
    got: asyncio.Queue[Tuple[str, Any]] = asyncio.Queue()

    def router_for(name: str) -> Router:
        r = Router()
        r.handle("/news", lambda ctx: got.put_nowait((name, ctx.bind())))
        return r

    async with ws_serving(backend) as (server, url, engine):
        tcp_addr = await server.listen("127.0.0.1", 0)
        async with ws_client(url, engine, router=router_for("ws")):
            tcp = await client_for(engine, tcp_addr, router=router_for("tcp"))
            try:
                await wait_until(lambda: len(server) == 2)
                assert server.broadcast("/news", {"n": 1}) == 2
                received = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
                assert sorted(received, key=lambda r: r[0]) == [("tcp", {"n": 1}), ("ws", {"n": 1})]
            finally:
                await tcp.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_streams_over_websocket(backend: str) -> None:
    router = ws_router()

    async def upper(stream: Any) -> None:
        stream.as_type = str  # str values travel raw
        async for value in stream:
            await stream.send(value.upper())
        await stream.close_send()

    router.handle_stream("/upper", upper)
    async with ws_serving(backend, router) as (_server, url, engine):
        async with ws_client(url, engine) as client:
            st = client.stream("/upper")
            st.as_type = str
            for word in ("a", "b", "c"):
                await st.send(word)
            await st.close_send()
            assert [v async for v in st] == ["A", "B", "C"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_connect_hook_sees_upgrade_request_and_peer_calls_client(backend: str) -> None:
    router = ws_router()
    paths: List[Any] = []
    answers: asyncio.Queue[Any] = asyncio.Queue()

    def on_connect(peer: Any) -> None:
        paths.append(peer.conn.request.path)
        peer.call_async("/hello", "hook", lambda v, e: answers.put_nowait((v, e)), as_type=str)

    router.on_connect(on_connect)
    client_router = Router()
    client_router.handle("/hello", lambda ctx: "hi " + ctx.bind(str))
    async with ws_serving(backend, router) as (_server, url, engine):
        async with ws_client(url, engine, router=client_router):
            assert await asyncio.wait_for(answers.get(), 5) == ("hi hook", None)
    assert paths == [b"/rpc"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_pending_calls_fail_when_the_server_drops_the_connection(backend: str) -> None:
    router = ws_router()
    started = asyncio.Event()

    @router.handle("/hang")
    async def hang(ctx: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async with ws_serving(backend, router) as (server, url, engine):
        async with ws_client(url, engine) as client:
            call = asyncio.ensure_future(client.call("/hang", None))
            await started.wait()
            for peer in server.clients:
                peer.conn.abort()
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(call, 5)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_client_reconnects_after_a_lost_connection(backend: str) -> None:
    async with ws_serving(backend) as (server, url, engine):
        reconnected = asyncio.Event()
        async with ws_client(
            url,
            engine,
            reconnect=True,
            reconnect_interval=0.01,
            on_reconnect=lambda c: reconnected.set(),
        ) as client:
            await wait_until(lambda: len(server) == 1)
            for peer in server.clients:
                peer.conn.abort()
            await wait_until(lambda: not client.connected)
            with pytest.raises(NotConnected):
                await client.call("/echo", b"x")
            await asyncio.wait_for(reconnected.wait(), 5)
            assert client.reconnects == 1
            assert await client.call("/echo", b"again", as_type=bytes) == b"again"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_max_connections_applies_to_websocket_peers(backend: str) -> None:
    async with ws_serving(backend, max_connections=1) as (server, url, engine):
        async with ws_client(url, engine) as first, raw_ws(url) as second:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(second.recv(), 5)
            assert server.rejected == 1
            assert await first.call("/echo", b"ok", as_type=bytes) == b"ok"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_graceful_shutdown_answers_calls_in_flight(backend: str) -> None:
    router = ws_router()
    release = asyncio.Event()
    started = asyncio.Event()

    @router.handle("/slow")
    async def slow(ctx: Any) -> str:
        started.set()
        await release.wait()
        return "done"

    async with ws_serving(backend, router) as (server, url, engine):
        async with ws_client(url, engine) as client:
            call = asyncio.ensure_future(client.call("/slow", None, as_type=str))
            await started.wait()
            stop = asyncio.ensure_future(server.shutdown(timeout=5))
            await wait_until(lambda: server._shutting_down)
            with pytest.raises(RpcError, match="shutting down"):
                await client.call("/echo", b"late")
            release.set()
            assert await asyncio.wait_for(call, 5) == "done"
            await asyncio.wait_for(stop, 5)
            await wait_until(lambda: not client.connected)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_upgraded_connection_ignores_the_http_keep_alive_timeout(backend: str) -> None:
    # regression: the HTTP server's idle timeout used to stay on the upgraded connection
    async with ws_serving(backend, http_kw={"keep_alive_timeout": 0.05}) as (_s, url, engine):
        async with ws_client(url, engine) as client:
            await asyncio.sleep(0.3)  # several idle periods: the time itself is under test
            assert await client.call("/echo", b"alive", as_type=bytes) == b"alive"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_refused_upgrade_raises_a_typed_error(backend: str) -> None:
    async with ws_serving(backend) as (_server, url, engine):
        client = WebSocketClient(url.replace("/rpc", "/elsewhere"), engine=engine)
        with pytest.raises(WebSocketRefused) as info:
            await client.connect()
        assert info.value.status == 200
        assert isinstance(info.value, ConnectionRefusedError)
        await client.close()


def test_client_rejects_non_websocket_urls() -> None:
    with pytest.raises(ValueError):
        WebSocketClient("http://127.0.0.1:1/rpc")


# -- ASGI ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def asgi_serving(backend: str, app_for: Any, **server_kw: Any) -> AsyncIterator[Any]:
    engine = Engine(backend=backend)
    server = Server(ws_router(), engine=engine, **server_kw)
    endpoint = WebSocketEndpoint(server)
    asgi = await AsgiServer.start(app_for(endpoint), "127.0.0.1", 0, engine=engine, lifespan="off")
    try:
        yield server, f"ws://127.0.0.1:{asgi.address[1]}/rpc", engine
    finally:
        await server.close()
        asgi.close()
        await asgi.wait_closed()
        await engine.close()


def starlette_app(endpoint: WebSocketEndpoint) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route, WebSocketRoute

    async def home(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("home")

    return Starlette(routes=[Route("/", home), WebSocketRoute("/rpc", endpoint)])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_asgi_route_in_starlette(backend: str) -> None:
    pytest.importorskip("starlette")
    client_router = Router()
    client_router.handle("/hello", lambda ctx: "hello " + ctx.bind(str))
    async with asgi_serving(backend, starlette_app) as (server, url, engine):
        async with ws_client(url, engine, router=client_router, timeout=5) as client:
            assert await client.call("/echo", b"asgi", as_type=bytes) == b"asgi"
            assert await client.call("/callback", "asgi", as_type=str) == "hello asgi"
            got = await asyncio.gather(*(client.call("/add", [i, 1]) for i in range(100)))
            assert got == [i + 1 for i in range(100)]
            assert len(server) == 1
        await wait_until(lambda: len(server) == 0)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_asgi_golden_bytes_and_malformed_input(backend: str) -> None:
    async with asgi_serving(backend, lambda ep: ep) as (server, url, _engine):
        async with raw_ws(url) as ws:
            await ws.send(GOLDEN_CALL)
            assert await asyncio.wait_for(ws.recv(), 5) == GOLDEN_ANSWER
            await ws.send(b"".join(encode(CMD_REQUEST, "/echo", s, b"x") for s in (3, 4)))
            assert [parse_frame(await ws.recv()).seq for _ in range(2)] == [3, 4]
            await ws.send(b"\xff" * 16)  # a method length over 127
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1002
        await wait_until(lambda: len(server) == 0)


class _FakeAsgi:
    """Drives the endpoint as an ASGI server would, message by message."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[Dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> Dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: Any) -> None:
        await self.sent.put(message)


async def test_asgi_read_timeout_and_disconnect_reasons() -> None:
    server = Server(ws_router(), read_timeout=0.05)
    endpoint = WebSocketEndpoint(server)
    fake = _FakeAsgi()
    scope = {"type": "websocket", "path": "/rpc", "client": ("1.2.3.4", 5), "server": None}
    await fake.incoming.put({"type": "websocket.connect"})
    task = asyncio.ensure_future(endpoint(scope, fake.receive, fake.send))
    assert (await fake.sent.get())["type"] == "websocket.accept"
    await wait_until(lambda: len(server) == 1)
    peer = server.clients[0]
    assert peer.remote_address == ("1.2.3.4", 5)
    await fake.incoming.put({"type": "websocket.receive", "bytes": GOLDEN_CALL})
    assert (await fake.sent.get()) == {"type": "websocket.send", "bytes": GOLDEN_ANSWER}
    # silent for longer than read_timeout: closed by the server (going away)
    closing = await asyncio.wait_for(fake.sent.get(), 5)
    assert closing == {"type": "websocket.close", "code": 1001}
    await fake.incoming.put({"type": "websocket.disconnect", "code": 1001})
    await asyncio.wait_for(task, 5)
    assert len(server) == 0
    assert type(peer.close_reason).__name__ == "DeadlineExceeded"
    await server.close()


async def test_asgi_http_scope_gets_426_and_shutdown_refuses() -> None:
    server = Server(ws_router())
    endpoint = WebSocketEndpoint(server)
    fake = _FakeAsgi()
    await endpoint({"type": "http"}, fake.receive, fake.send)
    assert (await fake.sent.get())["status"] == 426
    assert (await fake.sent.get())["type"] == "http.response.body"
    await server.close()
    await fake.incoming.put({"type": "websocket.connect"})
    await endpoint({"type": "websocket"}, fake.receive, fake.send)
    assert (await fake.sent.get()) == {"type": "websocket.close", "code": 1001}

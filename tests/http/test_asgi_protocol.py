"""AsgiServer against the ASGI 3 spec with bare ASGI apps (http, websocket, lifespan)."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest
import websockets
from tests.http._server_support import BACKENDS, RawClient, read_response, serving

from nbio.http.asgi import AsgiServer, Lifespan


def asgi(app: Any, backend: str, **kw: Any) -> Any:
    return serving(None, backend, server=AsgiServer(app, **kw))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_scope_and_body_messages(backend: str) -> None:
    seen: List[Any] = []

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        msgs = []
        while True:
            msg = await receive()
            msgs.append(msg)
            if not msg.get("more_body"):
                break
        body = b"".join(m["body"] for m in msgs)
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"x-parts", b"%d" % len(msgs))]})
        await send({"type": "http.response.body", "body": body})
        assert await receive() == {"type": "http.disconnect"}

    async with asgi(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"POST /a%20b/c?q=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n")
        await client.writer.drain()
        client.send(b"2\r\nde\r\n0\r\n\r\n")
        head, body, _ = await client.response(b"POST")
        assert head.status_code == 201 and body == b"abcde"
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        head, body, _ = await client.response()
        await client.close()
    scope = seen[0]
    assert scope["type"] == "http" and scope["asgi"]["version"] == "3.0"
    assert scope["method"] == "POST" and scope["path"] == "/a b/c"
    assert scope["raw_path"] == b"/a%20b/c" and scope["query_string"] == b"q=1"
    assert scope["http_version"] == "1.1" and seen[1]["http_version"] == "1.0"
    assert (b"host", b"h") in list(scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and scope["server"][1] == addr[1]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_streaming_trailers_and_pathsend(backend: str, tmp_path: Any) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"0123456789" * 5000)

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        assert "http.response.trailers" in scope["extensions"]
        if scope["path"] == "/file":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend", "path": str(f)})
            return
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"trailer", b"x-checksum")]})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"42")]})

    async with asgi(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        _, body, trailers = await client.response()
        assert body == b"one two three" and trailers == [(b"x-checksum", b"42")]
        client.send(b"GET /file HTTP/1.1\r\nHost: h\r\n\r\n")
        _head, body, _ = await client.response()
        assert body == f.read_bytes()
        await client.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_disconnect_reaches_streaming_app(backend: str) -> None:
    got = asyncio.get_running_loop().create_future()

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # the (empty) request body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        got.set_result(await receive())

    async with asgi(app, backend) as (server, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET /events HTTP/1.1\r\nHost: h\r\n\r\n")
        await client.reader.readuntil(b"tick")
        client.writer.transport.abort()
        assert await got == {"type": "http.disconnect"}
        await client.close()
        await server.drain(5)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_app_errors(backend: str, caplog: Any) -> None:
    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/before":
            raise ValueError("before")
        if scope["path"] == "/nothing":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise ValueError("after")

    async with asgi(app, backend) as (_, addr):
        out = await read_response(addr, b"GET /before HTTP/1.1\r\nHost: h\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500")
        out = await read_response(addr, b"GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500")
        out = await read_response(addr, b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"half\r\n")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_pipelined_asgi_in_order(backend: str) -> None:
    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        n = int(scope["path"][1:])
        for _ in range(5 - n):
            await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % n})

    async with asgi(app, backend) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(5)))
        assert [(await client.response())[1] for _ in range(5)] == [b"%d" % i for i in range(5)]
        await client.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_websocket_scope(backend: str) -> None:
    log: List[Any] = []

    async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        log.append((scope["path"], scope["subprotocols"], scope["query_string"]))
        assert await receive() == {"type": "websocket.connect"}
        if scope["path"] == "/deny":
            await send({"type": "websocket.close"})
            return
        await send({"type": "websocket.accept", "subprotocol": "v2",
                    "headers": [(b"x-extra", b"1")]})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                log.append(msg["code"])
                return
            await send({"type": "websocket.send", "text": msg.get("text"),
                        "bytes": msg.get("bytes")})

    async with asgi(app, backend) as (server, addr):
        uri = f"ws://{addr[0]}:{addr[1]}"
        async with websockets.connect(uri + "/chat?room=1", subprotocols=["v1", "v2"]) as ws:
            assert ws.subprotocol == "v2"
            assert ws.response.headers["x-extra"] == "1"
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(uri + "/deny"):
                pass
        assert info.value.response.status_code == 403
        # a broken handshake never reaches the app
        out = await read_response(addr, b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                                        b"Connection: Upgrade\r\n\r\n")
        assert out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 426"))
        await server.drain(5)
    assert log[0] == ("/chat", ["v1", "v2"], b"room=1")
    assert 1000 in log and len(log) == 3


async def test_lifespan_modes() -> None:
    async def no_lifespan(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    life = Lifespan(no_lifespan, "auto")
    await life.startup()
    assert not life.supported
    await life.shutdown()
    with pytest.raises(RuntimeError):
        await Lifespan(no_lifespan, "on").startup()

    async def failing(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no db"})

    life = Lifespan(failing)
    with pytest.raises(RuntimeError, match="no db"):
        await life.startup()
    await life.shutdown()

    order: List[str] = []

    async def good(scope: Dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            order.append(msg["type"])
            scope["state"]["k"] = "v"
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return

    server = AsgiServer(good)
    await server.startup()
    assert server.state == {"k": "v"}
    await server.shutdown()
    assert order == ["lifespan.startup", "lifespan.shutdown"]

"""Starlette and FastAPI applications run unchanged on AsgiServer (httpx and websockets as
independent clients): routes, request bodies, streaming responses, background tasks,
startup/shutdown events, WebSocket routes, files."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Dict, List, Tuple

import httpx
import pytest
import websockets
from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from nbio.engine import BACKENDS, Engine
from nbio.http.asgi import AsgiServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


@contextlib.asynccontextmanager
async def running(app: Any, backend: str, **kw: Any) -> AsyncIterator[Tuple[AsgiServer, str]]:
    server = AsgiServer(app, **kw)
    await server.startup()
    async with Engine(backend=backend) as engine:
        listener = engine.listen(server, "127.0.0.1", 0)
        host, port = listener.address[:2]
        try:
            yield server, f"{host}:{port}"
        finally:
            listener.close()
            await server.drain(5)
            server.close()
    await server.shutdown()


def starlette_app(events: List[str], tmp_file: str) -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.path_params['name']} {request.query_params}")

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"len": len(body), "ct": request.headers.get("content-type"),
                             "method": request.method})

    async def stream_in(request: Request) -> PlainTextResponse:
        n = 0
        chunks = 0
        async for chunk in request.stream():
            n += len(chunk)
            chunks += 1
        return PlainTextResponse(f"{n}")

    async def stream_out(request: Request) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"line {i}\n".encode()
                await asyncio.sleep(0)
        return StreamingResponse(gen(), media_type="text/plain")

    async def background(request: Request) -> PlainTextResponse:
        async def later() -> None:
            await asyncio.sleep(0)
            events.append("background ran")
        return PlainTextResponse("bg", background=BackgroundTask(later))

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("kaboom")

    async def file(request: Request) -> FileResponse:
        return FileResponse(tmp_file)

    async def ws_echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol="chat" if "chat" in ws.scope["subprotocols"] else None)
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    events.append(f"ws disconnect {msg['code']}")
                    return
                if msg.get("text") is not None:
                    if msg["text"] == "close":
                        await ws.close(4001, "bye")
                        return
                    await ws.send_text("echo " + msg["text"])
                else:
                    await ws.send_bytes(msg["bytes"][::-1])
        except WebSocketDisconnect:
            pass

    async def ws_reject(ws: WebSocket) -> None:
        await ws.close()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Dict[str, Any]]:
        events.append("startup")
        yield {"greeting": "hi from lifespan"}
        events.append("shutdown")

    async def state(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.greeting)

    return Starlette(
        routes=[
            Route("/hello/{name}", hello),
            Route("/echo", echo, methods=["POST", "PUT"]),
            Route("/stream-in", stream_in, methods=["POST"]),
            Route("/stream-out", stream_out),
            Route("/background", background),
            Route("/boom", boom),
            Route("/file", file),
            Route("/state", state),
            WebSocketRoute("/ws", ws_echo),
            WebSocketRoute("/ws-reject", ws_reject),
        ],
        lifespan=lifespan,
    )


async def test_starlette_app(backend: str, tmp_path: Any) -> None:
    events: List[str] = []
    blob = tmp_path / "data.txt"
    blob.write_bytes(b"file contents " * 1000)
    app = starlette_app(events, str(blob))
    async with running(app, backend) as (_server, addr):
        assert events == ["startup"]
        async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
            r = await client.get("/hello/w%C3%B6rld?x=1&y=2")
            assert (r.status_code, r.text) == (200, "hello wörld x=1&y=2")
            r = await client.post("/echo", content=b"x" * 100_000,
                                  headers={"content-type": "application/x-thing"})
            assert r.json() == {"len": 100_000, "ct": "application/x-thing", "method": "POST"}

            async def body() -> AsyncIterator[bytes]:
                for _ in range(20):
                    yield b"z" * 10_000
            r = await client.post("/stream-in", content=body())
            assert r.text == "200000"
            async with client.stream("GET", "/stream-out") as resp:
                assert resp.headers["transfer-encoding"] == "chunked"
                lines = [line async for line in resp.aiter_lines()]
            assert lines == [f"line {i}" for i in range(5)]
            r = await client.get("/background")
            assert r.text == "bg"
            r = await client.get("/boom")
            assert r.status_code == 500
            r = await client.get("/file")
            assert r.content == blob.read_bytes()
            assert r.headers["content-type"].startswith("text/plain")
            r = await client.head("/file")
            assert r.content == b"" and int(r.headers["content-length"]) == 14000
            r = await client.get("/state")
            assert r.text == "hi from lifespan"
            r = await client.get("/missing")
            assert r.status_code == 404

        uri = f"ws://{addr}/ws"
        async with websockets.connect(uri, subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("hi")
            assert await ws.recv() == "echo hi"
            await ws.send(b"abc")
            assert await ws.recv() == b"cba"
            await ws.send("close")
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4001
        async with websockets.connect(uri) as ws:
            assert ws.subprotocol is None
            await ws.send("x")
            assert await ws.recv() == "echo x"
        with pytest.raises(websockets.InvalidStatus) as rej:
            async with websockets.connect(f"ws://{addr}/ws-reject"):
                pass
        assert rej.value.response.status_code == 403
        for _ in range(200):  # the server sees the client's close
            if "ws disconnect 1000" in events:
                break
            await asyncio.sleep(0.01)
        assert "ws disconnect 1000" in events
    assert "background ran" in events
    assert events[-1] == "shutdown"


class Item(BaseModel):
    name: str
    price: float


def fastapi_app(events: List[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str = "") -> Dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create(item: Item) -> Dict[str, Any]:
        return {"name": item.name, "double": item.price * 2}

    @app.get("/sync")
    def sync_route() -> Dict[str, str]:  # runs in a thread pool
        return {"sync": "ok"}

    @app.websocket("/ws")
    async def ws(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        data = await websocket.receive_json()
        await websocket.send_json({"got": data})
        await websocket.close()

    return app


async def test_fastapi_app(backend: str) -> None:
    events: List[str] = []
    async with running(fastapi_app(events), backend) as (_, addr):
        async with httpx.AsyncClient(base_url=f"http://{addr}") as client:
            r = await client.get("/items/42", params={"q": "x"})
            assert r.json() == {"item_id": 42, "q": "x"}
            r = await client.post("/items", json={"name": "a", "price": 1.5})
            assert r.json() == {"name": "a", "double": 3.0}
            r = await client.post("/items", json={"name": "a"})
            assert r.status_code == 422
            r = await client.get("/items/notanint")
            assert r.status_code == 422
            r = await client.get("/sync")
            assert r.json() == {"sync": "ok"}
            r = await client.get("/openapi.json")
            assert r.json()["paths"]["/items"]["post"]
        async with websockets.connect(f"ws://{addr}/ws") as ws:
            await ws.send('{"a": 1}')
            assert await ws.recv() == '{"got":{"a":1}}'
    assert events == ["startup", "shutdown"]

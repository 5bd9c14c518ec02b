"""ASGI apps over HTTP/2: Starlette and FastAPI run unchanged on AsgiServer (streaming
responses, request bodies, large bodies both ways), checked with the h2 client and curl."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import h2.errors
import pytest
from _h2_server_support import BACKENDS, H2Client, curl, h2_serving
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.requests import Request as SRequest
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from nbio.http.asgi import AsgiServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def s_home(request: SRequest) -> PlainTextResponse:
    return PlainTextResponse(f"{request.scope['http_version']} {request.url.path} "
                             f"{request.headers.get('host')}")


async def s_echo(request: SRequest) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)} {hashlib.sha256(body).hexdigest()}")


async def s_stream(request: SRequest) -> StreamingResponse:
    async def gen() -> Any:
        for i in range(200):
            yield b"%04d" % i * 250  # 1000 bytes a chunk: 200 KB, beyond the 64 KiB window
    return StreamingResponse(gen(), media_type="application/octet-stream")


starlette_app = Starlette(routes=[Route("/", s_home), Route("/echo", s_echo, methods=["POST"]),
                                  Route("/stream", s_stream)])

fastapi_app = FastAPI()


@fastapi_app.get("/items/{item}")
async def get_item(item: int, q: str = "") -> Any:
    return {"item": item, "q": q}


@fastapi_app.post("/upload")
async def upload(request: Request) -> Any:
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return {"size": n}


async def test_starlette_over_h2(backend: str) -> None:
    server = AsgiServer(starlette_app, lifespan="off")
    async with h2_serving(None, backend, server=server) as (_s, addr):
        c = await H2Client.connect(addr)
        headers, body = await c.response(c.request("/"))
        assert headers[b":status"] == b"200" and body == b"2 / localhost"
        big = bytes(range(256)) * 1200  # 300 KB request body: flow control on the way in
        sid = c.h2.get_next_available_stream_id()
        c.h2.send_headers(sid, [(":method", "POST"), (":path", "/echo"), (":scheme", "http"),
                                (":authority", "localhost")])
        c.flush()
        sent = 0
        while sent < len(big):
            window = min(c.h2.local_flow_control_window(sid), c.h2.max_outbound_frame_size)
            if window <= 0:
                await c.pump()
                continue
            piece = big[sent:sent + window]
            sent += len(piece)
            c.h2.send_data(sid, piece, end_stream=sent == len(big))
            c.flush()
        _, body = await c.response(sid)
        assert body == f"{len(big)} {hashlib.sha256(big).hexdigest()}".encode()
        _, body = await c.response(c.request("/stream"))
        assert body == b"".join(b"%04d" % i * 250 for i in range(200))
        await c.close()


async def test_fastapi_over_h2_with_curl(backend: str) -> None:
    server = AsgiServer(fastapi_app, lifespan="off")
    async with h2_serving(None, backend, server=server) as (_s, addr):
        base = f"http://{addr[0]}:{addr[1]}"
        out = await curl("--http2-prior-knowledge", "-w", " v=%{http_version}",
                         base + "/items/5?q=x")
        assert out == b'{"item":5,"q":"x"} v=2'
        out = await curl("--http2-prior-knowledge", "-d", "y" * 100000, base + "/upload")
        assert out == b'{"size":100000}'
        out = await curl("--http2", "-w", " v=%{http_version}", base + "/items/7")
        assert out == b'{"item":7,"q":""} v=2'  # via Upgrade: h2c


async def test_client_gone_mid_stream_is_disconnect(backend: str) -> None:
    seen: list = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        assert (await receive())["type"] == "http.request"
        seen.append(await receive())

    server = AsgiServer(app, lifespan="off")
    async with h2_serving(None, backend, server=server) as (_s, addr):
        c = await H2Client.connect(addr)
        sid = c.request("/")
        while not any(getattr(e, "stream_id", 0) == sid and hasattr(e, "data")
                      for e in c.events):
            await c.pump()
        c.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [{"type": "http.disconnect"}]
        await c.close()

"""Interop both ways with the ``websockets`` library, with and without compression, through
``nbio.ws.serve`` (the nbio HTTP server) on every engine backend x loop."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, List

import pytest
import websockets
from ws_helpers import Events, make_engine

from nbio.ws import WebSocket, connect, serve
from nbio.ws.deflate import DeflateConfig

MESSAGES: List[Any] = [
    "",
    "ascii",
    "ünïcödé ✓ 🎉",
    b"",
    bytes(range(256)),
    "compressible " * 2000,
    b"\x00" * 200_000,
]


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def fragments(parts: List[str]) -> AsyncIterator[str]:
    for part in parts:
        yield part


@pytest.mark.parametrize("compression", ["deflate", None])
@pytest.mark.parametrize("api", ["async", "callback"])
async def test_websockets_client_to_nbio_server(engine: str, api: str, compression: Any) -> None:
    eng = make_engine(engine)
    handler: Any = echo if api == "async" else Events()
    async with serve(handler, "127.0.0.1", 0, engine=eng, compression=compression) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        async with websockets.connect(url, compression="deflate", max_size=None) as client:
            negotiated = client.response.headers.get("Sec-WebSocket-Extensions")
            assert (negotiated is not None) == (compression is not None)
            for message in MESSAGES:
                await client.send(message)
                assert await client.recv() == message
            # a fragmented message with interleaved control frames
            await client.send(fragments(["frag", "men", "ted"]))
            await client.ping(b"in between")
            assert await client.recv() == "fragmented"
            # many in flight
            for i in range(200):
                await client.send(f"n{i}")
            assert [await client.recv() for _ in range(200)] == [f"n{i}" for i in range(200)]
        assert client.close_code == 1000
    await eng.close()


@pytest.mark.parametrize(
    "compression",
    ["deflate", None, DeflateConfig(client_no_context_takeover=True, client_max_window_bits=9)],
    ids=["deflate", "none", "no-takeover-bits9"],
)
async def test_nbio_client_to_websockets_server(backend: str, compression: Any) -> None:
    eng = make_engine(backend)
    seen: List[Any] = []

    async def ws_echo(conn: Any) -> None:
        seen.append(conn.request.headers.get("Sec-WebSocket-Extensions"))
        async for m in conn:
            await conn.send(m)

    async with websockets.serve(ws_echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}/", compression=compression, engine=eng, max_size=None
        ) as ws:
            for message in MESSAGES:
                await ws.send(message)
                assert await ws.recv() == message
            pong = await ws.ping(b"x")
            await asyncio.wait_for(pong, 5)
        assert ws.close_code == 1000
    assert (seen[0] is not None) == (compression is not None)
    await eng.close()


async def test_serve_close_sends_going_away(backend: str) -> None:
    eng = make_engine(backend)
    ev = Events()
    server = await serve(ev, "127.0.0.1", 0, engine=eng)
    client = await websockets.connect(f"ws://127.0.0.1:{server.port}/")
    await ev.wait_for(lambda: ev.opened)
    assert len(server.connections()) == 1
    server.close()
    await client.wait_closed()
    assert client.close_code == 1001
    await server.wait_closed()
    assert ev.closed and ev.closed[0][0] == 1001
    await eng.close()


async def test_serve_path_and_404(backend: str) -> None:
    eng = make_engine(backend)
    async with serve(echo, "127.0.0.1", 0, path="/ws", engine=eng) as server:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws") as client:
            await client.send("ok")
            assert await client.recv() == "ok"
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(f"ws://127.0.0.1:{server.port}/other")
        assert info.value.response.status_code == 404
    await eng.close()

"""nbio.ws.connect: handshake options, failures, timeouts, limits, keepalive, closing."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
import websockets
from ws_helpers import Events, listen, make_engine

from nbio.errors import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from nbio.ws import HandshakeError, WebSocketUpgrader, connect
from nbio.ws.deflate import DeflateConfig


async def test_connect_echo_with_our_server(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, subprotocols=["b", "a"]))
    async with connect(
        f"ws://{host}:{port}/path?q=1",
        subprotocols=["a", "b"],
        extra_headers=[("X-Token", "secret")],
        origin="https://app.example",
        engine=eng,
    ) as ws:
        assert ws.subprotocol == "b"
        assert ws.core.deflate is not None  # permessage-deflate offered and accepted
        await ws.send("x" * 1000)
        assert await ws.recv() == "x" * 1000
        await ws.send(b"\x00" * 10)
        assert await ws.recv() == b"\x00" * 10
    assert ws.close_code == 1000 and ws.closed
    request = ev.requests[0]
    assert request.target == b"/path?q=1"
    assert request.get_header(b"x-token") == b"secret"
    assert request.get_header(b"origin") == b"https://app.example"
    await ev.wait_for(lambda: ev.closed)
    await eng.close()


async def test_await_connect_and_async_for(engine: str) -> None:
    eng = make_engine(engine)

    class Three(Events):
        def on_open(self, ws: Any) -> None:
            for i in range(3):
                ws.send(f"{i}")
            ws.close(1000, "that's all")

    host, port = listen(eng, WebSocketUpgrader(Three()))
    ws = await connect(f"ws://{host}:{port}/", compression=None, engine=eng)
    got: List[Any] = [m async for m in ws]
    assert got == ["0", "1", "2"]
    assert ws.close_code == 1000 and ws.close_reason == "that's all"
    with pytest.raises(ConnectionClosedOK):
        await ws.recv()
    with pytest.raises(ConnectionClosedOK):
        await ws.send("late")
    await eng.close()


async def test_refused_upgrade_raises_handshake_error(backend: str) -> None:
    eng = make_engine(backend)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, origins=["https://only.example"]))
    with pytest.raises(HandshakeError) as info:
        await connect(f"ws://{host}:{port}/", engine=eng)
    assert info.value.status == 403
    await eng.close()


async def test_open_timeout(backend: str) -> None:
    eng = make_engine(backend)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # never answers
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(TimeoutError):
        await connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2, engine=eng)
    server.close()
    await server.wait_closed()
    await eng.close()


async def test_server_closing_during_handshake(backend: str) -> None:
    eng = make_engine(backend)

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ConnectionClosed):
        await connect(f"ws://127.0.0.1:{port}/", engine=eng)
    server.close()
    await server.wait_closed()
    await eng.close()


def test_url_validation() -> None:
    with pytest.raises(ValueError):
        connect("http://example.com/")
    connect("wss://example.com/")  # TLS is supported (tests/ws/test_wss.py); nothing dials yet
    with pytest.raises(ValueError):
        connect("ws://user:pw@example.com/")


async def test_client_max_size_and_abrupt_server_disconnect(engine: str) -> None:
    eng = make_engine(engine)

    class Big(Events):
        def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
            if data == "big":
                ws.send(b"b" * 2000)
            else:
                ws.abort()

    host, port = listen(eng, WebSocketUpgrader(Big()))
    async with connect(f"ws://{host}:{port}/", max_size=1000, engine=eng) as ws:
        await ws.send("big")
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.code == 1009
    async with connect(f"ws://{host}:{port}/", engine=eng) as ws:
        await ws.send("die")
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.code == 1006
    await eng.close()


async def test_client_keepalive_pings_the_server(engine: str) -> None:
    eng = make_engine(engine, timer_resolution=0.01)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, ping_interval=None))
    async with connect(
        f"ws://{host}:{port}/", ping_interval=0.03, ping_timeout=0.5, engine=eng
    ) as ws:
        await ev.wait_for(lambda: len(ev.pings) >= 2)
        assert ws.open
    await eng.close()


async def test_client_against_websockets_server_with_deflate_options(backend: str) -> None:
    eng = make_engine(backend)

    async def echo(conn: Any) -> None:
        async for m in conn:
            await conn.send(m)

    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = DeflateConfig(client_no_context_takeover=True, server_max_window_bits=10)
        async with connect(f"ws://127.0.0.1:{port}/", compression=config, engine=eng) as ws:
            pmd = ws.core.deflate
            assert pmd is not None and pmd.local_no_context_takeover
            assert pmd.remote_max_window_bits == 10
            for size in (10, 1000, 100_000):
                await ws.send("t" * size)
                assert await ws.recv() == "t" * size
    await eng.close()

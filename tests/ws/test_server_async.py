"""Async API server (websockets-style handler per connection), on every backend x loop."""

from __future__ import annotations

import asyncio
from typing import Any, List

import websockets
from ws_helpers import listen, make_engine, raw_connect, read_frame, upgrade_request
from wsutil import raw_frame

from nbio.errors import ConnectionClosedError, ConnectionClosedOK
from nbio.ws import WebSocket, WebSocketUpgrader, adopt, broadcast
from nbio.ws.handshake import accept
from nbio.ws.protocol import OP_CLOSE, OP_TEXT


async def echo(ws: WebSocket) -> None:
    async for message in ws:
        await ws.send(message)


async def test_async_echo_and_normal_close(engine: str) -> None:
    eng = make_engine(engine)
    up = WebSocketUpgrader(echo, subprotocols=["chat.v2", "chat.v1"])
    host, port = listen(eng, up)
    async with websockets.connect(
        f"ws://{host}:{port}/", subprotocols=["chat.v1", "chat.v2"]
    ) as client:
        assert client.subprotocol == "chat.v2"
        for i in range(20):
            await client.send(f"m{i}")
        assert [await client.recv() for _ in range(20)] == [f"m{i}" for i in range(20)]
    await asyncio.gather(*up.tasks)
    await eng.close()


async def test_handler_return_closes_1000_and_exception_closes_1011(engine: str) -> None:
    eng = make_engine(engine)

    async def once(ws: WebSocket) -> None:
        message = await ws.recv()
        if message == "fail":
            raise ValueError("handler bug")
        await ws.send(f"got {message}")

    up = WebSocketUpgrader(once)
    host, port = listen(eng, up)
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        await client.send("x")
        assert await client.recv() == "got x"
        await client.wait_closed()
        assert client.close_code == 1000
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        await client.send("fail")
        await client.wait_closed()
        assert client.close_code == 1011
    await asyncio.gather(*up.tasks)
    await eng.close()


async def test_recv_raises_typed_errors_after_close(engine: str) -> None:
    eng = make_engine(engine)
    seen: List[Any] = []
    done = asyncio.get_running_loop().create_future()

    async def handler(ws: WebSocket) -> None:
        try:
            await ws.recv()
        except (ConnectionClosedOK, ConnectionClosedError) as exc:
            seen.append(exc)
        seen.append((ws.close_code, ws.closed, ws.open))
        done.set_result(None)

    host, port = listen(eng, WebSocketUpgrader(handler))
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        await client.close(1001, "away")
    await done
    assert isinstance(seen[0], ConnectionClosedOK) and seen[0].code == 1001
    assert seen[1] == (1001, True, False)
    # abrupt disconnect -> ConnectionClosedError 1006
    seen.clear()
    done = asyncio.get_running_loop().create_future()
    _reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.transport.abort()
    await done
    assert isinstance(seen[0], ConnectionClosedError) and seen[0].code == 1006
    await eng.close()


async def test_ping_future_and_full_queue_pauses_reading(engine: str) -> None:
    eng = make_engine(engine)
    ready = asyncio.get_running_loop().create_future()
    proceed = asyncio.get_running_loop().create_future()
    received: List[Any] = []

    async def slow(ws: WebSocket) -> None:
        waiter = await ws.ping(b"hi")
        await waiter  # resolved by the client's automatic pong
        ready.set_result(ws)
        await proceed
        async for message in ws:
            received.append(message)
            if message == "49":
                break

    up = WebSocketUpgrader(slow, max_queue=4)
    host, port = listen(eng, up)
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        ws = await ready
        conn = ws.core.conn
        assert conn.reading
        for i in range(3):
            ws._on_message(f"{i}")  # as the core delivers them
        assert conn.reading
        ws._on_message("3")  # the queue is full: stop reading from the socket
        assert not conn.reading
        for i in range(4, 50):
            await client.send(f"{i}")
        proceed.set_result(None)  # the handler drains the queue: reading resumes
        await asyncio.gather(*up.tasks)
    assert received == [f"{i}" for i in range(50)]
    await eng.close()


async def test_send_waits_for_drain_under_backpressure(engine: str) -> None:
    eng = make_engine(engine, write_high_water=64 * 1024, write_low_water=16 * 1024)
    sent = asyncio.get_running_loop().create_future()

    async def flood(ws: WebSocket) -> None:
        for _ in range(64):
            await ws.send(b"x" * 65536)  # 4 MiB: far beyond the socket buffers
            assert ws.core.buffered <= 64 * 1024 + 65536 + 16
        sent.set_result(None)
        await ws.recv()

    host, port = listen(eng, WebSocketUpgrader(flood, compression=None, max_write_buffer=None))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    total = 0
    while total < 64:
        _opcode, payload, _, _ = await read_frame(reader)
        assert len(payload) == 65536
        total += 1
    await sent
    writer.close()
    await eng.close()


async def test_adopt_wraps_a_connection_whose_101_was_written(engine: str) -> None:
    eng = make_engine(engine)
    got = asyncio.get_running_loop().create_future()

    class Adopter:
        def upgrade(self, conn: Any, request: Any, leftover: bytes) -> bool:
            acc = accept(request.method, "1.1", request.headers)
            conn.write(acc.response)
            ws = adopt(conn, leftover=leftover, subprotocol=acc.subprotocol, max_size=100)
            asyncio.get_running_loop().create_task(self.run(ws))
            return True

        async def run(self, ws: WebSocket) -> None:
            got.set_result(await ws.recv())
            try:
                await ws.recv()
            except ConnectionClosedError as exc:
                assert exc.code == 1009  # max_size applies
            await ws.wait_closed()

    host, port = listen(eng, Adopter())
    reader, writer, _ = await raw_connect(host, port, upgrade_request() + raw_frame(OP_TEXT, b"a"))
    assert await got == "a"
    writer.write(raw_frame(OP_TEXT, b"b" * 101))
    opcode, payload, _, _ = await read_frame(reader)
    assert opcode == OP_CLOSE and payload[:2] == b"\x03\xf1"
    writer.close()
    await eng.close()


async def test_broadcast_to_async_connections(engine: str) -> None:
    eng = make_engine(engine)
    conns: List[WebSocket] = []
    opened = asyncio.Event()

    async def keep(ws: WebSocket) -> None:
        conns.append(ws)
        if len(conns) == 4:
            opened.set()
        await ws.wait_closed()

    up = WebSocketUpgrader(keep)
    host, port = listen(eng, up)
    clients = [await websockets.connect(f"ws://{host}:{port}/") for _ in range(4)]
    await opened.wait()
    assert broadcast(conns, "to all " * 50) == 4
    for c in clients:
        assert await c.recv() == "to all " * 50
        await c.close()
    await asyncio.gather(*up.tasks)
    await eng.close()

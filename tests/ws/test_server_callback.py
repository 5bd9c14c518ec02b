"""Callback API server: lifecycle, echo, control frames, closing, broadcast, keepalive, memory.

Every async test runs on each engine backend x event loop (the ``engine`` fixture).
"""

from __future__ import annotations

import asyncio
import struct
import sys
from typing import Any, List

import websockets
from ws_helpers import Events, listen, make_engine, raw_connect, read_frame, upgrade_request
from wsutil import close_payload, raw_frame

from nbio.errors import ConnectionClosed
from nbio.ws import WebSocketConn, WebSocketUpgrader, broadcast
from nbio.ws.protocol import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT


async def test_echo_text_and_binary_with_websockets_client(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, compression=None))
    async with websockets.connect(f"ws://{host}:{port}/chat?room=1") as client:
        await client.send("héllo")
        assert await client.recv() == "héllo"
        await client.send(b"\x00\x01" * 5000)
        assert await client.recv() == b"\x00\x01" * 5000
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed == [(1000, "")]
    assert ev.messages == [("héllo", True), (b"\x00\x01" * 5000, False)]
    assert ev.requests[0].path == b"/chat"
    assert ev.opened[0].request is None  # kept only while on_open runs
    await eng.close()


async def test_leftover_bytes_sent_with_the_handshake_are_processed(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev))
    frames = raw_frame(OP_TEXT, b"early") + raw_frame(OP_BINARY, b"bird")
    reader, writer, head = await raw_connect(host, port, upgrade_request() + frames)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert await read_frame(reader) == (OP_TEXT, b"early", True, False)
    assert await read_frame(reader) == (OP_BINARY, b"bird", True, False)
    writer.close()
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed[0][0] == 1006
    await eng.close()


async def test_ping_is_answered_and_reported(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.write(raw_frame(OP_PING, b"are you there"))
    assert await read_frame(reader) == (OP_PONG, b"are you there", True, False)
    writer.write(raw_frame(OP_PONG, b"unsolicited"))
    await ev.wait_for(lambda: ev.pongs)
    assert ev.pings == [b"are you there"] and ev.pongs == [b"unsolicited"]
    writer.close()
    await eng.close()


async def test_peer_close_is_echoed_then_tcp_closed(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.write(raw_frame(OP_CLOSE, close_payload(4001, b"bye")))
    assert await read_frame(reader) == (OP_CLOSE, struct.pack("!H", 4001), True, False)
    assert await reader.read() == b""  # the server closes the TCP connection
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed == [(4001, "bye")]
    writer.close()
    await eng.close()


async def test_server_initiated_close(engine: str) -> None:
    eng = make_engine(engine)
    got: List[Any] = []

    class Closer(Events):
        def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
            ws.close(4000, "done")
            ws.close(4000, "again")  # no-op once closing
            try:
                ws.send("late")
            except ConnectionClosed as exc:
                got.append(exc)

    ev = Closer()
    host, port = listen(eng, WebSocketUpgrader(ev))
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        await client.send("close please")
        try:
            await client.recv()
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 4000 and exc.rcvd.reason == "done"
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed[0][0] == 4000
    assert len(got) == 1
    await eng.close()


async def test_close_handshake_times_out_when_peer_never_answers(engine: str) -> None:
    eng = make_engine(engine, timer_resolution=0.01)

    class Closer(Events):
        def on_open(self, ws: Any) -> None:
            super().on_open(ws)
            ws.close(1001, "going away")

    ev = Closer()
    host, port = listen(eng, WebSocketUpgrader(ev, close_timeout=0.1))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    assert (await read_frame(reader))[0] == OP_CLOSE
    await ev.wait_for(lambda: ev.closed)  # we never answer
    assert ev.closed == [(1006, "closing handshake timed out")]
    writer.close()
    await eng.close()


async def test_abrupt_disconnect_reports_1006(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev))
    _reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.write(raw_frame(OP_TEXT, b"partial message")[:8])  # half a frame, then gone
    await writer.drain()
    writer.transport.abort()
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed[0][0] == 1006
    assert ev.opened[0].closed and ev.opened[0].session is None
    await eng.close()


async def test_callback_exception_closes_with_1011(engine: str) -> None:
    eng = make_engine(engine)

    class Broken(Events):
        def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
            raise RuntimeError("bug")

    ev = Broken()
    host, port = listen(eng, WebSocketUpgrader(ev))
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        await client.send("boom")
        try:
            await client.recv()
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1011
    await ev.wait_for(lambda: ev.closed)
    await eng.close()


async def test_send_from_outside_callbacks_and_session(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events(echo=False)
    host, port = listen(eng, WebSocketUpgrader(ev))
    async with websockets.connect(f"ws://{host}:{port}/") as client:
        await ev.wait_for(lambda: ev.opened)
        ws: WebSocketConn = ev.opened[0]
        ws.session = {"user": "ann"}
        ws.send("pushed")
        ws.ping(b"p1")
        assert await client.recv() == "pushed"
        await ev.wait_for(lambda: ev.pongs)
        assert ev.pongs == [b"p1"]
        assert ws.open and not ws.closed and ws.remote_address is not None
    await ev.wait_for(lambda: ev.closed)
    assert ws.closed and not ws.open and ws.session is None
    try:
        ws.send("too late")
    except ConnectionClosed as exc:
        assert exc.code == 1000
    else:
        raise AssertionError("send after close must raise")
    await eng.close()


async def test_broadcast_frames_once_for_plain_and_compressed(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events(echo=False)
    host, port = listen(eng, WebSocketUpgrader(ev))
    plain = [await websockets.connect(f"ws://{host}:{port}/", compression=None) for _ in range(3)]
    deflated = [await websockets.connect(f"ws://{host}:{port}/") for _ in range(3)]
    await ev.wait_for(lambda: len(ev.opened) == 6)
    message = "news " * 100
    assert broadcast(ev.opened, message) == 6
    for client in plain + deflated:
        assert await client.recv() == message
    await plain[0].close()
    await ev.wait_for(lambda: len(ev.closed) == 1)
    assert broadcast(ev.opened, b"binary") == 5
    for client in plain[1:] + deflated:
        assert await client.recv() == b"binary"
        await client.close()
    await eng.close()


async def test_keepalive_pings_silent_peers_and_drops_dead_ones(engine: str) -> None:
    eng = make_engine(engine, timer_resolution=0.01)
    ev = Events()
    up = WebSocketUpgrader(ev, ping_interval=0.05, ping_timeout=0.1)
    host, port = listen(eng, up)
    async with websockets.connect(f"ws://{host}:{port}/", ping_interval=None) as client:
        # websockets answers our pings automatically: the connection survives several rounds
        await ev.wait_for(lambda: len(ev.pongs) >= 3)
        assert client.state is websockets.protocol.State.OPEN
    # a peer that never answers is closed once the pong timeout passes
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    opcode, _, _, _ = await read_frame(reader)
    assert opcode == OP_PING
    await ev.wait_for(lambda: any(r == "keepalive ping timed out" for _, r in ev.closed))
    writer.close()
    await eng.close()


def test_idle_connection_object_is_small() -> None:
    from nbio.ws._conn import Dispatch

    ws = WebSocketConn(Dispatch(lambda *a: None), None)
    # the core (88 bytes) + conn, dispatch, session, subprotocol, flags + GC header
    assert sys.getsizeof(ws) <= 144


async def test_http_keep_alive_timeout_does_not_apply_after_the_upgrade(engine: str) -> None:
    from nbio.http.server import HttpServer

    eng = make_engine(engine, timer_resolution=0.01)
    ev = Events()
    up = WebSocketUpgrader(ev, ping_interval=None)
    server = HttpServer(None, upgrades={"*": up}, keep_alive_timeout=0.05)
    host, port = eng.listen(server, "127.0.0.1", 0).address[:2]
    async with websockets.connect(f"ws://{host}:{port}/", ping_interval=None) as client:
        await ev.wait_for(lambda: ev.opened)
        # the clock: a plain HTTP connection opened later is closed by the keep-alive timeout
        reader, writer = await asyncio.open_connection(host, port)
        assert await reader.read() == b""
        writer.close()
        # the silent WebSocket, older than that, is still open
        await client.send("still open")
        assert await client.recv() == "still open"
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed == [(1000, "")]
    await eng.close()

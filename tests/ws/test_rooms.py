"""WebSocket rooms (nbio.ws.Rooms) on the local backplane: both server APIs, real
``websockets`` clients, exactly-once delivery, leave/close semantics, one backplane
subscription per room.

Clients join the room named by their URL path (``/r/<room>``). "No duplicates" is checked
with a marker: after the publishes, the server writes a marker straight to the connection;
what a client reads up to the marker is exactly what it was sent, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Union

import pytest
import websockets
from ws_helpers import listen, make_engine

from nbio.backplane import LocalBackplane
from nbio.errors import ConnectionClosed
from nbio.ws import Rooms, WebSocket, WebSocketConn, WebSocketUpgrader, serve
from nbio.ws.rooms import decode_message, encode_message

MARK = "--marker--"


def room_of(request: Any) -> str:
    return bytes(request.path).decode().rsplit("/", 1)[-1]


class CallbackRoomServer:
    """Callback API: join on open, leave via ``rooms.on_close``; "leave"/"join X" commands."""

    def __init__(self, rooms: Rooms, auto_leave: bool = True) -> None:
        self.rooms = rooms
        self.auto_leave = auto_leave
        self.conns: List[WebSocketConn] = []
        self.closed = 0

    def on_open(self, ws: WebSocketConn) -> None:
        self.rooms.join(ws, room_of(ws.request))
        self.conns.append(ws)

    def on_message(self, ws: WebSocketConn, data: Any, is_text: bool) -> None:
        cmd, _, arg = data.partition(" ")
        if cmd == "leave":
            ws.send("left" if self.rooms.leave(ws, arg) else "not a member")
        elif cmd == "join":
            self.rooms.join(ws, arg)
            ws.send("joined")
        elif cmd == "pub":
            room, _, text = arg.partition(" ")
            self.rooms.publish(room, text)

    def on_close(self, ws: WebSocketConn, code: int, reason: str) -> None:
        self.closed += 1
        if self.auto_leave:
            self.rooms.on_close(ws, code, reason)


def async_room_handler(rooms: Rooms, conns: List[WebSocket]) -> Any:
    async def handler(ws: WebSocket) -> None:
        rooms.join(ws, room_of(ws.request))
        conns.append(ws)
        await ws.send("joined")
        async for msg in ws:
            cmd, _, arg = str(msg).partition(" ")
            if cmd == "leave":
                await ws.send("left" if rooms.leave(ws, arg) else "not a member")

    return handler


async def until_marker(client: Any) -> List[Union[str, bytes]]:
    got: List[Union[str, bytes]] = []
    while True:
        msg = await asyncio.wait_for(client.recv(), 5)
        if msg == MARK:
            return got
        got.append(msg)


def mark(conns: List[Any]) -> None:
    for c in conns:
        (c if isinstance(c, WebSocketConn) else c.core).send(MARK)


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- the envelope ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, wire",
    [
        ("héllo", b"th\xc3\xa9llo"),
        ("", b"t"),
        (b"\x00\xff", b"b\x00\xff"),
        (b"", b"b"),
        (bytearray(b"ab"), b"bab"),
        (memoryview(b"cd"), b"bcd"),
    ],
)
def test_envelope_round_trip(message: Any, wire: bytes) -> None:
    assert encode_message(message) == wire
    back = decode_message(wire)
    assert back == (message if isinstance(message, str) else bytes(message))
    assert type(back) is (str if isinstance(message, str) else bytes)


@pytest.mark.parametrize("wire", [b"", b"x123", b"t\xff\xfe"])
def test_malformed_envelope_is_a_value_error(wire: bytes) -> None:
    with pytest.raises(ValueError):
        decode_message(wire)


def test_publish_rejects_other_types() -> None:
    rooms = Rooms()
    with pytest.raises(TypeError):
        rooms.publish("r", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rooms.join(object(), "r")  # type: ignore[arg-type]


# -- callback API ------------------------------------------------------------------------------


async def test_callback_api_members_get_each_publish_once(engine: str) -> None:
    eng = make_engine(engine)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))
    lobby = [await websockets.connect(f"ws://{host}:{port}/r/lobby") for _ in range(3)]
    other = await websockets.connect(f"ws://{host}:{port}/r/other")
    assert rooms.members("lobby") == 3 and rooms.members("other") == 1
    rooms.publish("lobby", "hello")
    rooms.publish("lobby", b"\x00bin")
    rooms.publish("other", "just other")
    rooms.publish("nobody", "lost in space")
    mark(srv.conns)
    for c in lobby:
        assert await until_marker(c) == ["hello", b"\x00bin"]
    assert await until_marker(other) == ["just other"]
    s = rooms.stats()
    assert (s["rooms"], s["members"], s["connections"]) == (2, 4, 4)
    assert (s["published"], s["received"], s["sent"]) == (4, 3, 7)
    assert s["backplane"]["subscriptions"] == 2  # one per room, not per connection
    for c in [*lobby, other]:
        await c.close()
    await wait_until(lambda: srv.closed == 4)
    assert rooms.stats()["members"] == 0 and rooms.backplane.stats()["subscriptions"] == 0
    await eng.close()


async def test_a_client_publishes_to_its_room(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))
    a = await websockets.connect(f"ws://{host}:{port}/r/chat")
    b = await websockets.connect(f"ws://{host}:{port}/r/chat")
    await a.send("pub chat hi from a")
    assert await asyncio.wait_for(b.recv(), 5) == "hi from a"
    assert await asyncio.wait_for(a.recv(), 5) == "hi from a"  # the publisher is a member
    await a.close()
    await b.close()
    await eng.close()


async def test_leave_stops_delivery_and_the_last_leave_unsubscribes(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))
    a = await websockets.connect(f"ws://{host}:{port}/r/news")
    b = await websockets.connect(f"ws://{host}:{port}/r/news")
    await a.send("leave news")
    assert await asyncio.wait_for(a.recv(), 5) == "left"
    await a.send("leave news")
    assert await asyncio.wait_for(a.recv(), 5) == "not a member"
    assert rooms.members("news") == 1 and rooms.rooms(srv.conns[0]) == []
    rooms.publish("news", "only b")
    mark(srv.conns)
    assert await until_marker(a) == []
    assert await until_marker(b) == ["only b"]
    assert rooms.backplane.stats()["subscriptions"] == 1
    await b.send("leave news")
    assert await asyncio.wait_for(b.recv(), 5) == "left"
    assert rooms.rooms() == [] and rooms.backplane.stats()["subscriptions"] == 0
    # joining again subscribes again
    await b.send("join news")
    assert await asyncio.wait_for(b.recv(), 5) == "joined"
    rooms.publish("news", "again")
    assert await asyncio.wait_for(b.recv(), 5) == "again"
    assert rooms.backplane.stats()["subscriptions"] == 1
    await a.close()
    await b.close()
    await eng.close()


async def test_a_connection_in_several_rooms_gets_each_room_s_messages(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))
    a = await websockets.connect(f"ws://{host}:{port}/r/one")
    await a.send("join two")
    assert await asyncio.wait_for(a.recv(), 5) == "joined"
    await a.send("join two")  # idempotent
    assert await asyncio.wait_for(a.recv(), 5) == "joined"
    assert rooms.rooms(srv.conns[0]) == ["one", "two"] and rooms.members("two") == 1
    rooms.publish("one", "1")
    rooms.publish("two", "2")
    mark(srv.conns)
    assert await until_marker(a) == ["1", "2"]
    assert rooms.leave_all(srv.conns[0]) == 2
    assert rooms.leave_all(srv.conns[0]) == 0
    assert rooms.rooms() == [] and rooms.stats()["connections"] == 0
    await a.close()
    await eng.close()


async def test_closed_members_are_dropped_even_without_leave_all(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms, auto_leave=False)
    host, port = listen(eng, WebSocketUpgrader(srv))
    a = await websockets.connect(f"ws://{host}:{port}/r/x")
    b = await websockets.connect(f"ws://{host}:{port}/r/x")
    await a.close()
    await wait_until(lambda: srv.closed == 1)
    assert rooms.members("x") == 2  # nobody told the rooms yet
    rooms.publish("x", "m")
    assert await asyncio.wait_for(b.recv(), 5) == "m"
    s = rooms.stats()
    assert rooms.members("x") == 1 and s["dropped_closed"] == 1 and s["sent"] == 1
    with pytest.raises(ConnectionClosed):
        rooms.join(srv.conns[0], "x")  # a closed connection cannot join
    await b.close()
    await eng.close()


async def test_rooms_with_compression_frame_once_and_clients_decode(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))  # permessage-deflate by default
    plain = await websockets.connect(f"ws://{host}:{port}/r/z", compression=None)
    deflated = [await websockets.connect(f"ws://{host}:{port}/r/z") for _ in range(2)]
    big = "compress me " * 2000
    rooms.publish("z", big)
    for c in [plain, *deflated]:
        assert await asyncio.wait_for(c.recv(), 5) == big
    for c in [plain, *deflated]:
        await c.close()
    await eng.close()


# -- async API ---------------------------------------------------------------------------------


async def test_async_api_members_leave_by_themselves_on_close(engine: str) -> None:
    rooms = Rooms()
    conns: List[WebSocket] = []
    async with serve(async_room_handler(rooms, conns), engine=make_engine(engine)) as server:
        url = f"ws://127.0.0.1:{server.port}/r/"
        clients = [await websockets.connect(url + "hall") for _ in range(3)]
        for c in clients:
            assert await asyncio.wait_for(c.recv(), 5) == "joined"
        assert rooms.members("hall") == 3
        rooms.publish("hall", "to all")
        rooms.publish("hall", b"bytes too")
        mark(conns)
        for c in clients:
            assert await until_marker(c) == ["to all", b"bytes too"]
        await clients[0].send("leave hall")
        assert await asyncio.wait_for(clients[0].recv(), 5) == "left"
        await clients[1].close()
        await wait_until(lambda: rooms.members("hall") == 1)
        rooms.publish("hall", "last one")
        assert await asyncio.wait_for(clients[2].recv(), 5) == "last one"
        for c in clients:
            await c.close()
        await wait_until(lambda: rooms.stats()["connections"] == 0)
        assert rooms.rooms() == [] and rooms.backplane.stats()["subscriptions"] == 0
    await server.http_server.engine.close()


async def test_callback_and_async_members_share_a_room(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    cb = CallbackRoomServer(rooms)
    conns: List[WebSocket] = []
    host, port = listen(eng, WebSocketUpgrader(cb))
    async_host, async_port = listen(eng, WebSocketUpgrader(async_room_handler(rooms, conns)))
    c1 = await websockets.connect(f"ws://{host}:{port}/r/mixed")
    c2 = await websockets.connect(f"ws://{async_host}:{async_port}/r/mixed")
    assert await asyncio.wait_for(c2.recv(), 5) == "joined"
    assert rooms.members("mixed") == 2
    await c1.send("pub mixed from callback side")
    await wait_until(lambda: rooms.stats()["sent"] == 2)
    rooms.publish("mixed", b"from the app")
    mark(cb.conns + conns)
    for c in (c1, c2):
        assert await until_marker(c) == ["from callback side", b"from the app"]
    await c1.close()
    await c2.close()
    await wait_until(lambda: rooms.stats()["connections"] == 0)
    await eng.close()


# -- several servers on one backplane ----------------------------------------------------------


async def test_servers_sharing_a_backplane_reach_each_other_s_members(backend: str) -> None:
    eng = make_engine(backend)
    plane = LocalBackplane()
    rooms = [Rooms(plane), Rooms(plane)]
    servers = [CallbackRoomServer(r) for r in rooms]
    addrs = [listen(eng, WebSocketUpgrader(s)) for s in servers]
    clients: Dict[int, Any] = {}
    for i, (host, port) in enumerate(addrs):
        clients[i] = [await websockets.connect(f"ws://{host}:{port}/r/shared") for _ in range(2)]
    rooms[0].publish("shared", "from 0")
    rooms[1].publish("shared", "from 1")
    for s in servers:
        mark(s.conns)
    for c in clients[0] + clients[1]:
        assert await until_marker(c) == ["from 0", "from 1"]
    assert plane.stats()["subscriptions"] == 2  # one per room per server
    await rooms[0].close()  # borrowed backplane: left open
    assert plane.stats()["subscriptions"] == 1
    rooms[1].publish("shared", "only 1")
    mark(servers[0].conns + servers[1].conns)
    for c in clients[0]:
        assert await until_marker(c) == []
    for c in clients[1]:
        assert await until_marker(c) == ["only 1"]
    for c in clients[0] + clients[1]:
        await c.close()
    await eng.close()


async def test_a_malformed_backplane_message_is_counted_not_sent(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms()
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))
    c = await websockets.connect(f"ws://{host}:{port}/r/q")
    rooms.backplane.publish("ws:q", b"?garbage")
    rooms.backplane.publish("ws:q", b"t\xff")
    rooms.publish("q", "fine")
    assert await asyncio.wait_for(c.recv(), 5) == "fine"
    s = rooms.stats()
    assert s["bad_messages"] == 2 and s["sent"] == 1
    await c.close()
    await eng.close()


async def test_close_empties_rooms_and_closes_its_own_backplane(backend: str) -> None:
    eng = make_engine(backend)
    rooms = Rooms(prefix="app1:")
    srv = CallbackRoomServer(rooms)
    host, port = listen(eng, WebSocketUpgrader(srv))
    c = await websockets.connect(f"ws://{host}:{port}/r/q")
    assert rooms.backplane.stats()["topics"] == 1
    await rooms.ready("q")
    await rooms.ready("none")
    await rooms.close()
    assert rooms.stats()["rooms"] == 0 and rooms.backplane.stats()["subscriptions"] == 0
    rooms.publish("q", "nobody")  # the connection stays open, it just left the room
    srv.conns[0].send("still open")
    assert await asyncio.wait_for(c.recv(), 5) == "still open"
    await c.close()
    await eng.close()

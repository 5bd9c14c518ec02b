"""Echo correctness, addresses, unix sockets, stats: engine contract on every backend."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from typing import Any

from tests.engine._engine_support import Recorder, make_engine

from nbio.engine import Conn, Handler


async def test_echo_1000_concurrent_connections_random_sizes(engine: str) -> None:
    rnd = random.Random(1234)
    async with make_engine(engine, backlog=2048) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0)
        host, port = lst.address

        async def client(i: int) -> None:
            reader, writer = await asyncio.open_connection(host, port)
            sizes = [rnd.randint(1, 20000) for _ in range(3)]
            payload = bytes(rnd.getrandbits(8) for _ in range(64)) * (sum(sizes) // 64 + 1)
            payload = payload[: sum(sizes)]
            pos = 0
            for size in sizes:
                writer.write(payload[pos : pos + size])
                pos += size
            got = await reader.readexactly(len(payload))
            assert got == payload, f"client {i} got corrupted echo"
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(*(client(i) for i in range(1000)))
        await srv.wait_for(lambda: len(srv.closed) == 1000)
        stats = eng.stats()
        assert stats["accepted"] == 1000
        assert stats["open"] == 0
        assert stats["closed"] == 1000
        assert stats["bytes_in"] == stats["bytes_out"] == len(srv.data)


async def test_dial_and_echo_between_two_engine_connections(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0)
        cli = Recorder()
        conn = await eng.dial(cli, *lst.address, timeout=5)
        assert isinstance(conn, Conn)
        assert cli.opened == [conn]
        conn.write(b"ping")
        conn.writelines([b"-", memoryview(b"pong"), bytearray(b"!")])
        await cli.wait_for(lambda: bytes(cli.data) == b"ping-pong!")
        assert conn.remote_address == lst.address
        assert srv.opened[0].remote_address == conn.local_address
        assert eng.stats()["dialed"] == 1


async def test_unix_socket_listen_and_dial(engine: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nbio.sock")
        async with make_engine(engine) as eng:
            srv = Recorder(echo=True)
            lst = eng.listen(srv, path=path)
            assert lst.address == path
            # an independent peer: asyncio's own unix client
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"over unix")
            assert await reader.readexactly(9) == b"over unix"
            writer.close()
            await writer.wait_closed()
            cli = Recorder()
            conn = await eng.dial(cli, path=path, timeout=5)
            conn.write(b"dialed")
            await cli.wait_for(lambda: bytes(cli.data) == b"dialed")
            lst.close()
            assert not os.path.exists(path)


async def test_on_data_view_is_invalidated_if_kept(engine: str) -> None:
    kept: list = []

    class Keeper(Handler):
        def on_data(self, conn: Any, data: Any) -> None:
            kept.append(data)
            conn.write(b"ok")

    async with make_engine(engine) as eng:
        lst = eng.listen(Keeper(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        writer.write(b"abc")
        assert await reader.readexactly(2) == b"ok"
        view = kept[0]
        if isinstance(view, memoryview):
            # The native backend's view pointed into the shared read buffer: it is released
            # after the callback so it cannot silently show later data.
            try:
                bytes(view)
            except ValueError:
                pass
            else:
                raise AssertionError("a view kept past on_data must not stay readable")
        else:
            assert view == b"abc"
        writer.close()
        await writer.wait_closed()


async def test_pause_and_resume_reading(engine: str) -> None:
    class Pauser(Handler):
        def __init__(self) -> None:
            self.chunks: list = []
            self.conn: Any = None

        def on_data(self, conn: Any, data: Any) -> None:
            self.conn = conn
            self.chunks.append(bytes(data))
            conn.pause_reading()

    async with make_engine(engine) as eng:
        h = Pauser()
        lst = eng.listen(h, "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection(*lst.address)
        writer.write(b"first")
        await writer.drain()
        while not h.chunks:
            await asyncio.sleep(0.005)
        assert not h.conn.reading
        writer.write(b"second")
        await writer.drain()
        # Give the loop many turns: nothing may be delivered while paused.
        for _ in range(50):
            await asyncio.sleep(0)
        assert h.chunks == [b"first"]
        h.conn.resume_reading()
        while len(h.chunks) < 2:
            await asyncio.sleep(0.005)
        assert b"".join(h.chunks) == b"firstsecond"
        writer.close()
        await writer.wait_closed()


async def test_set_handler_hands_the_connection_over(engine: str) -> None:
    class Upper(Handler):
        def on_data(self, conn: Any, data: Any) -> None:
            conn.write(bytes(data).upper())

    upper = Upper()

    class Switch(Handler):
        def on_data(self, conn: Any, data: Any) -> None:
            if bytes(data) == b"UPGRADE":
                conn.set_handler(upper)
                conn.write(b"ok")
            else:
                conn.write(data)

    async with make_engine(engine) as eng:
        lst = eng.listen(Switch(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        writer.write(b"abc")
        assert await reader.readexactly(3) == b"abc"
        writer.write(b"UPGRADE")
        assert await reader.readexactly(2) == b"ok"
        writer.write(b"abc")
        assert await reader.readexactly(3) == b"ABC"
        writer.close()
        await writer.wait_closed()


async def test_listen_on_an_existing_socket(engine: str) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    async with make_engine(engine) as eng:
        lst = eng.listen(Recorder(echo=True), sock=sock)
        assert lst.address == sock.getsockname()
        reader, writer = await asyncio.open_connection(*lst.address)
        writer.write(b"inherited")
        assert await reader.readexactly(9) == b"inherited"
        writer.close()
        await writer.wait_closed()

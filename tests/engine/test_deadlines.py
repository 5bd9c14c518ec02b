"""Read, write and idle deadlines from the timing wheel."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tests.engine._engine_support import Recorder, make_engine

from nbio.engine import Handler
from nbio.errors import DeadlineExceeded


class DeadlineServer(Recorder):
    def __init__(self, kind: str, timeout: float, push_back: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.timeout = timeout
        self.push_back = push_back
        self.opened_at = 0.0
        self.closed_at = 0.0

    def on_open(self, conn: Any) -> None:
        self.opened_at = self.loop.time()
        if self.kind == "read":
            conn.set_read_deadline(self.timeout)
        elif self.kind == "idle":
            conn.set_idle_timeout(self.timeout)
        super().on_open(conn)

    def on_data(self, conn: Any, data: Any) -> None:
        if self.push_back and self.kind == "read":
            conn.set_read_deadline(self.timeout)
        super().on_data(conn, data)

    def on_close(self, conn: Any, exc: Any) -> None:
        self.closed_at = self.loop.time()
        super().on_close(conn, exc)


async def test_read_deadline_fires(engine: str) -> None:
    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = DeadlineServer("read", 0.2)
        lst = eng.listen(srv, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        await srv.wait_for(lambda: srv.closed)
        exc = srv.closed[0][1]
        assert isinstance(exc, DeadlineExceeded) and exc.kind == "read"
        assert 0.19 <= srv.closed_at - srv.opened_at < 1.0
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()


async def test_read_deadline_pushed_back_by_handler(engine: str) -> None:
    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = DeadlineServer("read", 0.25, push_back=True)
        lst = eng.listen(srv, "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection(*lst.address)
        for _ in range(8):  # 0.8 s of traffic, every 0.1 s < 0.25 s deadline
            writer.write(b".")
            await asyncio.sleep(0.1)
        assert not srv.closed
        await srv.wait_for(lambda: srv.closed)
        # last data at ~0.7 s, deadline 0.25 s later (one 0.02 s tick of rounding)
        assert srv.closed_at - srv.opened_at >= 0.7 + 0.25 - 0.02
        assert isinstance(srv.closed[0][1], DeadlineExceeded)
        writer.close()
        await writer.wait_closed()


async def test_read_deadline_cleared(engine: str) -> None:
    class Clearer(Handler):
        def __init__(self) -> None:
            self.conn: Any = None

        def on_open(self, conn: Any) -> None:
            self.conn = conn
            conn.set_read_deadline(0.1)
            conn.set_read_deadline(None)

        def on_data(self, conn: Any, data: Any) -> None:
            conn.write(data)

    async with make_engine(engine, timer_resolution=0.02) as eng:
        h = Clearer()
        lst = eng.listen(h, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        await asyncio.sleep(0.3)
        writer.write(b"alive")
        assert await reader.readexactly(5) == b"alive"
        assert not h.conn.closed
        writer.close()
        await writer.wait_closed()


async def test_idle_timeout_pushed_back_by_traffic_then_fires(engine: str) -> None:
    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = DeadlineServer("idle", 0.25)
        srv.echo = True
        lst = eng.listen(srv, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        for _ in range(6):
            writer.write(b"!")
            assert await reader.readexactly(1) == b"!"
            await asyncio.sleep(0.1)
        assert not srv.closed
        await srv.wait_for(lambda: srv.closed)
        exc = srv.closed[0][1]
        assert isinstance(exc, DeadlineExceeded) and exc.kind == "idle"
        # last traffic at ~0.5 s, idle deadline 0.25 s later (one 0.02 s tick of rounding)
        assert srv.closed_at - srv.opened_at >= 0.5 + 0.25 - 0.02
        writer.close()
        await writer.wait_closed()


async def test_write_deadline_closes_stalled_writer(engine: str) -> None:
    class Stalled(Recorder):
        def on_open(self, conn: Any) -> None:
            conn.write(b"w" * (16 * 1024 * 1024))  # the peer never reads
            conn.set_write_deadline(0.2)
            super().on_open(conn)

    async with make_engine(engine, timer_resolution=0.02, max_write_buffer=64 << 20) as eng:
        srv = Stalled()
        lst = eng.listen(srv, "127.0.0.1", 0)
        s = socket.create_connection(lst.address)
        await srv.wait_for(lambda: srv.closed)
        exc = srv.closed[0][1]
        assert isinstance(exc, DeadlineExceeded) and exc.kind == "write"
        s.close()


async def test_write_deadline_is_harmless_when_queue_drained(engine: str) -> None:
    class Quick(Recorder):
        def on_open(self, conn: Any) -> None:
            conn.write(b"hi")
            conn.set_write_deadline(0.05)
            super().on_open(conn)

    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = Quick()
        srv.echo = True
        lst = eng.listen(srv, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        assert await reader.readexactly(2) == b"hi"
        await asyncio.sleep(0.2)
        writer.write(b"echo")
        assert await reader.readexactly(4) == b"echo"
        assert not srv.closed
        writer.close()
        await writer.wait_closed()


async def test_many_deadlines_share_one_wheel(engine: str) -> None:
    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = DeadlineServer("read", 0.15)
        lst = eng.listen(srv, "127.0.0.1", 0)
        socks = [socket.create_connection(lst.address) for _ in range(200)]
        await srv.wait_for(lambda: len(srv.closed) == 200, timeout=10)
        assert all(isinstance(e, DeadlineExceeded) for _, e in srv.closed)
        for s in socks:
            s.close()

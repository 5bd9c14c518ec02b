"""Write queues: large writes through slow readers, overflow, memory limit, drain."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from typing import Any

import pytest
from tests.engine._engine_support import Recorder, make_engine

from nbio.engine import Handler
from nbio.errors import ConnectionClosed, WriteBufferOverflow

MiB = 1024 * 1024


async def test_64mib_through_a_slow_reader_with_drain(engine: str) -> None:
    total = 64 * MiB
    chunk = bytes(range(256)) * 1024  # 256 KiB
    peak = 0
    done = asyncio.get_running_loop().create_future()

    class Producer(Handler):
        def on_open(self, conn: Any) -> None:
            asyncio.get_running_loop().create_task(self.produce(conn))

        async def produce(self, conn: Any) -> None:
            nonlocal peak
            sent = 0
            while sent < total:
                conn.write(chunk)
                sent += len(chunk)
                peak = max(peak, conn.buffered)
                await conn.drain()
            conn.close()
            done.set_result(sent)

    async with make_engine(engine, write_high_water=1 * MiB, write_low_water=256 * 1024) as eng:
        lst = eng.listen(Producer(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address, limit=64 * 1024)
        digest = hashlib.sha256()
        received = 0
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            received += len(data)
            digest.update(data)
            if received % (8 * MiB) < 64 * 1024:
                await asyncio.sleep(0.02)  # a slow reader: the kernel buffers fill up
        assert await done == total
        assert received == total
        assert digest.hexdigest() == hashlib.sha256(chunk * (total // len(chunk))).hexdigest()
        # Backpressure kept the queue bounded by the high-water mark plus one write.
        assert peak <= 1 * MiB + len(chunk)
        writer.close()
        await writer.wait_closed()
        assert eng.stats()["buffered"] == 0


async def test_write_buffer_overflow_closes_only_the_abusive_connection(engine: str) -> None:
    class Flooder(Handler):
        def __init__(self) -> None:
            self.rec = Recorder(echo=True)

        def on_open(self, conn: Any) -> None:
            self.rec.on_open(conn)

        def on_data(self, conn: Any, data: Any) -> None:
            if bytes(data) == b"flood":
                # ignore drain(): keep writing to a peer that never reads
                for _ in range(64):
                    if conn.closed:
                        break
                    conn.write(b"x" * (128 * 1024))
            else:
                conn.write(data)

        def on_close(self, conn: Any, exc: Any) -> None:
            self.rec.on_close(conn, exc)

    async with make_engine(engine, max_write_buffer=1 * MiB) as eng:
        h = Flooder()
        lst = eng.listen(h, "127.0.0.1", 0)
        abuser = socket.create_connection(lst.address)
        abuser.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader, writer = await asyncio.open_connection(*lst.address)
        abuser.sendall(b"flood")
        await h.rec.wait_for(lambda: len(h.rec.closed) == 1)
        conn, exc = h.rec.closed[0]
        assert isinstance(exc, WriteBufferOverflow)
        assert exc.limit == 1 * MiB
        assert conn.closed
        with pytest.raises(ConnectionClosed):
            conn.write(b"more")
        # the well-behaved client is unaffected
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        writer.close()
        await writer.wait_closed()
        abuser.close()


async def test_memory_limit_pauses_reading_until_slow_consumers_drain(engine: str) -> None:
    limit = 2 * MiB
    seen_paused = False

    class Amplifier(Handler):
        """Answers every byte with 8: slow consumers make queues grow fast."""

        def on_data(self, conn: Any, data: Any) -> None:
            nonlocal seen_paused
            conn.write(bytes(data) * 8)
            if conn.engine.stats()["memory_paused"]:
                seen_paused = True

    async with make_engine(engine, memory_limit=limit, max_write_buffer=1024 * MiB) as eng:
        lst = eng.listen(Amplifier(), "127.0.0.1", 0)
        clients = []
        for _ in range(4):
            s = socket.create_connection(lst.address)
            s.setblocking(False)
            clients.append(s)
        blob = b"a" * (64 * 1024)
        peak = 0
        for _ in range(40):
            for s in clients:
                try:
                    s.send(blob)
                except BlockingIOError:
                    pass
            await asyncio.sleep(0.005)
            peak = max(peak, eng.stats()["buffered"])
        stats = eng.stats()
        assert seen_paused or stats["memory_paused"]
        # Bounded: over the limit by at most what one loop turn of reads produced (4 clients,
        # up to 256 KiB read per turn, x8). Unbounded, the ~24 MiB the clients push into the
        # kernel's buffers would become ~190 MiB of queued replies.
        assert peak <= limit + 4 * 256 * 1024 * 8
        # consumers start reading: the engine drains and resumes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while eng.stats()["memory_paused"] or eng.stats()["buffered"]:
            for s in clients:
                try:
                    while s.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass
            await asyncio.sleep(0.002)
            assert loop.time() < deadline, eng.stats()
        assert not eng.stats()["memory_paused"]
        for s in clients:
            s.close()


async def test_on_drain_called_when_queue_empties(engine: str) -> None:
    drained = asyncio.get_running_loop().create_future()

    class Big(Handler):
        def on_open(self, conn: Any) -> None:
            conn.write(b"z" * (8 * MiB))
            assert conn.buffered > 0

        def on_data(self, conn: Any, data: Any) -> None:
            pass

        def on_drain(self, conn: Any) -> None:
            if not drained.done():
                drained.set_result(conn.buffered)

    async with make_engine(engine, max_write_buffer=16 * MiB) as eng:
        lst = eng.listen(Big(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        assert len(await reader.readexactly(8 * MiB)) == 8 * MiB
        assert await asyncio.wait_for(drained, 5) == 0
        writer.close()
        await writer.wait_closed()


async def test_pause_in_on_open_holds_data_sent_with_the_connect(engine: str) -> None:
    """A connection paused in on_open gets no data until resumed, even when the client's bytes
    arrived with the connection (uvloop starts reading right after connection_made), and then
    gets all of it, once, in order."""

    class PausedAtOpen(Recorder):
        def on_open(self, conn: Any) -> None:
            conn.pause_reading()
            super().on_open(conn)

    async with make_engine(engine) as eng:
        rec = PausedAtOpen()
        lst = eng.listen(rec, "127.0.0.1", 0)
        client = socket.create_connection(lst.address)
        client.sendall(b"early-")
        await rec.wait_for(lambda: rec.opened)
        # a round trip through the engine's loop on another connection proves reads were due
        probe = Recorder(echo=True)
        lst2 = eng.listen(probe, "127.0.0.1", 0)
        other = socket.create_connection(lst2.address)
        other.sendall(b"ping")
        await probe.wait_for(lambda: bytes(probe.data) == b"ping")
        for _ in range(3):
            await asyncio.sleep(0)
        assert bytes(rec.data) == b""
        rec.opened[0].resume_reading()
        client.sendall(b"late")
        await rec.wait_for(lambda: bytes(rec.data) == b"early-late")
        client.close()
        other.close()


async def test_memory_pause_holds_connections_accepted_while_paused(engine: str) -> None:
    """While the memory limit is exceeded, a newly accepted connection's first bytes are not
    handed to the handler; they are once the queues drain."""

    class Hog(Recorder):
        def on_data(self, conn: Any, data: Any) -> None:
            if bytes(data) == b"hog":
                conn.write(b"x" * (32 * MiB))  # the client never reads: over the limit
                return
            super().on_data(conn, data)

    async with make_engine(engine, memory_limit=1 * MiB, max_write_buffer=64 * MiB) as eng:
        rec = Hog()
        lst = eng.listen(rec, "127.0.0.1", 0)
        hog = socket.create_connection(lst.address)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"hog")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not eng.stats()["memory_paused"]:
            await asyncio.sleep(0.001)
            assert loop.time() < deadline
        late = socket.create_connection(lst.address)
        late.sendall(b"hello")
        await rec.wait_for(lambda: len(rec.opened) == 2)
        for _ in range(5):
            await asyncio.sleep(0.001)
        assert bytes(rec.data) == b""
        hog.close()  # its queue is dropped: the engine resumes
        await rec.wait_for(lambda: bytes(rec.data) == b"hello")
        assert not eng.stats()["memory_paused"]
        late.close()

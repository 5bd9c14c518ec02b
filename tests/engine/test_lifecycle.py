"""Connection lifecycle: EOF, half-close, reset, refused, timeouts, errors, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import tempfile
from typing import Any

import pytest
from tests.engine._engine_support import Recorder, make_engine

from nbio.engine import Handler
from nbio.errors import ClosedByPeer, ConnectionClosed


async def test_peer_eof_reports_closed_by_peer(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder()
        lst = eng.listen(srv, "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection(*lst.address)
        await srv.wait_for(lambda: srv.opened)
        writer.close()
        await writer.wait_closed()
        await srv.wait_for(lambda: srv.closed)
        assert isinstance(srv.closed[0][1], ClosedByPeer)


async def test_half_close_default_flushes_then_closes(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        writer.write(b"x" * 300_000)
        writer.write_eof()
        got = await reader.read()  # until EOF
        assert got == b"x" * 300_000
        await srv.wait_for(lambda: srv.closed)
        assert isinstance(srv.closed[0][1], ClosedByPeer)
        writer.close()
        await writer.wait_closed()


async def test_half_close_on_eof_true_keeps_writing(engine: str) -> None:
    class Summer(Handler):
        def __init__(self) -> None:
            self.total = 0

        def on_data(self, conn: Any, data: Any) -> None:
            self.total += len(data)

        def on_eof(self, conn: Any) -> bool:
            # The request is complete: answer after EOF, then close.
            asyncio.get_running_loop().call_soon(self.answer, conn)
            return True

        def answer(self, conn: Any) -> None:
            conn.write(b"total=%d" % self.total)
            conn.close()

    async with make_engine(engine) as eng:
        lst = eng.listen(Summer(), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        writer.write(b"y" * 12345)
        writer.write_eof()
        assert await reader.read() == b"total=12345"
        writer.close()
        await writer.wait_closed()


async def test_peer_reset_reports_connection_reset(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder()
        lst = eng.listen(srv, "127.0.0.1", 0)
        s = socket.create_connection(lst.address)
        await srv.wait_for(lambda: srv.opened)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
        await srv.wait_for(lambda: srv.closed)
        assert isinstance(srv.closed[0][1], ConnectionResetError)


async def test_connect_refused(engine: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        async with make_engine(engine) as eng:
            with pytest.raises(ConnectionRefusedError):
                await eng.dial(Recorder(), "127.0.0.1", port, timeout=5)
            assert eng.stats()["open"] == 0


async def test_connect_timeout(engine: str) -> None:
    # A listener whose accept queue is full silently drops SYNs: connects hang.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(lsock.getsockname())
            fillers.append(f)
        async with make_engine(engine) as eng:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(TimeoutError):
                await eng.dial(Recorder(), *lsock.getsockname(), timeout=0.3)
            assert 0.25 <= loop.time() - start < 3
            assert eng.stats()["open"] == 0
    finally:
        for f in fillers:
            f.close()
        lsock.close()


async def test_write_after_close_raises(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder()
        lst = eng.listen(srv, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*lst.address)
        await srv.wait_for(lambda: srv.opened)
        conn = srv.opened[0]
        conn.close()
        with pytest.raises(ConnectionClosed, match="closed"):
            conn.write(b"late")
        with pytest.raises(ConnectionClosed):
            conn.writelines([b"a", b"b"])
        assert await reader.read() == b""
        await srv.wait_for(lambda: srv.closed)
        assert srv.closed[0][1] is None  # closed locally
        writer.close()
        await writer.wait_closed()


async def test_callback_exception_is_logged_and_isolated(engine: str, caplog: Any) -> None:
    class Fragile(Recorder):
        def on_data(self, conn: Any, data: Any) -> None:
            if bytes(data) == b"boom":
                raise ValueError("handler bug")
            conn.write(data)

    async with make_engine(engine) as eng:
        srv = Fragile()
        lst = eng.listen(srv, "127.0.0.1", 0)
        r1, w1 = await asyncio.open_connection(*lst.address)
        r2, w2 = await asyncio.open_connection(*lst.address)
        with caplog.at_level(logging.ERROR, logger="nbio.engine"):
            w1.write(b"boom")
            assert await r1.read() == b""  # that connection is closed
            await srv.wait_for(lambda: srv.closed)
        exc = srv.closed[0][1]
        assert isinstance(exc, ValueError) and str(exc) == "handler bug"
        assert "handler bug" in caplog.text and "on_data" in caplog.text
        w2.write(b"fine")
        assert await r2.readexactly(4) == b"fine"
        for w in (w1, w2):
            w.close()
            await w.wait_closed()


async def test_max_connections_rejects_excess(engine: str) -> None:
    async with make_engine(engine, max_connections=2) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0)
        streams = [await asyncio.open_connection(*lst.address) for _ in range(2)]
        await srv.wait_for(lambda: len(srv.opened) == 2)
        r3, w3 = await asyncio.open_connection(*lst.address)
        try:
            assert await r3.read() == b""  # closed at once
        except ConnectionResetError:
            pass
        assert eng.stats()["rejected"] == 1
        assert eng.stats()["open"] == 2
        for r, w in streams:
            w.write(b"ok")
            assert await r.readexactly(2) == b"ok"
            w.close()
            await w.wait_closed()
        w3.close()


async def test_sendfile_sends_file_range(engine: str) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)
    with tempfile.TemporaryFile() as f:
        f.write(content)
        f.flush()

        class FileServer(Handler):
            def on_open(self, conn: Any) -> None:
                conn.write(b"HEAD")
                conn.sendfile(f, 100, len(content) - 200)
                conn.write(b"TAIL")
                conn.close()

            def on_data(self, conn: Any, data: Any) -> None:
                pass

        async with make_engine(engine) as eng:
            lst = eng.listen(FileServer(), "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*lst.address)
            got = await reader.read()
            assert got == b"HEAD" + content[100:-100] + b"TAIL"
            writer.close()
            await writer.wait_closed()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _warm_up(engine: str) -> None:
    # The loop itself may open descriptors on first use (uvloop opens /dev/null once).
    async with make_engine(engine) as eng:
        lst = eng.listen(Recorder(), "127.0.0.1", 0)
        await eng.dial(Recorder(), *lst.address, timeout=5)


async def test_clean_shutdown_closes_everything_and_leaks_no_fds(engine: str) -> None:
    await _warm_up(engine)
    before = _fd_count()
    eng = make_engine(engine)
    srv = Recorder()
    lst = eng.listen(srv, "127.0.0.1", 0)
    cli = Recorder()
    conns = [await eng.dial(cli, *lst.address, timeout=5) for _ in range(20)]
    await srv.wait_for(lambda: len(srv.opened) == 20)
    for c in conns[:5]:
        c.write(b"x" * 100_000)
    await eng.close()
    assert eng.closed
    assert len(srv.closed) == 20 and len(cli.closed) == 20
    assert all(c.closed for c in conns)
    assert lst.closed
    assert eng.stats()["open"] == 0
    with pytest.raises(ConnectionClosed):
        eng.listen(srv, "127.0.0.1", 0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert _fd_count() == before


async def test_close_and_abort_with_a_reason(engine: str) -> None:
    class Strict(Recorder):
        def on_data(self, conn: Any, data: Any) -> None:
            if bytes(data).startswith(b"bad"):
                conn.write(b"protocol error\n")
                conn.close(ValueError("bad input"))
            else:
                conn.abort(KeyError("unknown"))

    async with make_engine(engine) as eng:
        srv = Strict()
        lst = eng.listen(srv, "127.0.0.1", 0)
        r1, w1 = await asyncio.open_connection(*lst.address)
        w1.write(b"bad")
        assert await r1.read() == b"protocol error\n"  # the reply was flushed first
        _r2, w2 = await asyncio.open_connection(*lst.address)
        w2.write(b"other")
        await srv.wait_for(lambda: len(srv.closed) == 2)
        reasons = sorted((type(exc).__name__, str(exc)) for _, exc in srv.closed)
        assert reasons == [("KeyError", "'unknown'"), ("ValueError", "bad input")]
        for w in (w1, w2):
            w.close()
            try:
                await w.wait_closed()
            except ConnectionResetError:
                pass

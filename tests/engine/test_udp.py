"""UDP: one virtual connection per peer address, idle timeout, dialed UDP."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tests.engine._engine_support import Recorder, make_engine

from nbio.errors import DeadlineExceeded


async def recv_datagram(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Receive one datagram on a non-blocking socket without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return sock.recv(65536)
        except BlockingIOError:
            assert loop.time() < deadline, "no datagram"
            await asyncio.sleep(0.001)


async def test_udp_echo_one_conn_per_peer(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        ep = eng.listen_udp(srv, "127.0.0.1", 0, idle_timeout=30)
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.setblocking(False)
        b.setblocking(False)
        try:
            for i in range(3):
                a.sendto(b"a%d" % i, ep.address)
                assert await recv_datagram(a) == b"a%d" % i
            b.sendto(b"from b", ep.address)
            assert await recv_datagram(b) == b"from b"
            assert len(srv.opened) == 2
            ports = {c.remote_address[1] for c in srv.opened}
            assert ports == {a.getsockname()[1], b.getsockname()[1]}
            assert len(ep) == 2
        finally:
            a.close()
            b.close()


async def test_udp_idle_peer_is_closed(engine: str) -> None:
    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = Recorder(echo=True)
        ep = eng.listen_udp(srv, "127.0.0.1", 0, idle_timeout=0.15)
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.sendto(b"hello", ep.address)
            await srv.wait_for(lambda: srv.closed)
            assert isinstance(srv.closed[0][1], DeadlineExceeded)
            assert len(ep) == 0
            a.sendto(b"again", ep.address)  # a new datagram opens a new connection
            await srv.wait_for(lambda: len(srv.opened) == 2)
        finally:
            a.close()


async def test_dial_udp_round_trip(engine: str) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        ep = eng.listen_udp(srv, "127.0.0.1", 0)
        cli = Recorder()
        conn: Any = await eng.dial_udp(cli, *ep.address)
        conn.write(b"datagram")
        await cli.wait_for(lambda: bytes(cli.data) == b"datagram")
        assert conn.remote_address == ep.address
        conn.close()
        assert cli.closed and cli.closed[0][1] is None
        await asyncio.sleep(0)

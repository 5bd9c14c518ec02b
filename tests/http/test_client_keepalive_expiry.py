"""HttpClient's HTTP/1.1 pool health: ``keepalive_expiry`` (an idle pooled connection is closed
by the engine's idle deadline and never reused), and a pooled connection the server closes
leaves the pool when the close arrives. Against a raw asyncio HTTP/1.1 server (not nbio's),
on both engine backends. Time is made short (expiry 0.2 s) and every wait is a bounded poll
of a condition."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Optional

import pytest
from tests._waiting import until

from nbio.engine import BACKENDS, Engine
from nbio.http.client import HttpClient

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

EXPIRY = 0.2


class Server:
    """HTTP/1.1 keep-alive server on asyncio streams: answers ``conn N`` (its connection's
    number), holds ``/slow`` until ``gate`` is set, and with ``close_after`` closes the
    connection after its first response (which does not say so) once ``close_now`` is set."""

    def __init__(self, close_after: bool = False) -> None:
        self.close_after = close_after
        self.opened = 0
        self.closed_at: List[Optional[float]] = []  # per connection: when its EOF arrived
        self.gate = asyncio.Event()
        self.close_now = asyncio.Event()
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: List[Any] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.opened
        self.opened += 1
        self.closed_at.append(None)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if head.split(b" ", 2)[1] == b"/slow":
                    await self.gate.wait()
                body = b"conn %d" % n
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                if self.close_after:
                    await self.close_now.wait()
                    break
        finally:
            self.closed_at[n] = time.monotonic()
            writer.close()

    def closed(self, n: int) -> bool:
        return len(self.closed_at) > n and self.closed_at[n] is not None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self.gate.set()
        self.close_now.set()
        self._server.close()
        await self._server.wait_closed()


def idle(client: HttpClient) -> int:
    return sum(len(links) for links in client._idle.values())


async def test_reused_within_expiry(backend: str) -> None:
    async with Server() as base, Engine(backend=backend) as engine, \
            HttpClient(engine=engine, keepalive_expiry=30.0) as client:
        bodies = [(await client.get(base + "/")).text() for _ in range(3)]
    assert bodies == ["conn 0"] * 3
    assert client.connections_opened == 1


async def test_not_reused_after_expiry(backend: str) -> None:
    server = Server()
    async with server as base, Engine(backend=backend) as engine, \
            HttpClient(engine=engine, keepalive_expiry=EXPIRY) as client:
        assert (await client.get(base + "/")).text() == "conn 0"
        pooled_at = time.monotonic()
        assert idle(client) == 1
        # the client closes it by itself: out of the pool, and the server sees the close
        await until(lambda: idle(client) == 0 and server.closed(0))
        closed_at = server.closed_at[0]
        # on the engine's timer wheel: at most one tick (50 ms) early
        assert closed_at is not None and closed_at - pooled_at >= EXPIRY - 0.06
        assert (await client.get(base + "/")).text() == "conn 1"
        assert client.connections_opened == 2


async def test_expiry_checked_when_taken_from_the_pool(backend: str) -> None:
    # a connection idle past the expiry but not yet closed by the engine's timer tick
    async with Server() as base, Engine(backend=backend) as engine, \
            HttpClient(engine=engine, keepalive_expiry=30.0) as client:
        await client.get(base + "/")
        (link,) = client._idle[("http", "127.0.0.1", int(base.rsplit(":", 1)[1]))]
        link.idle_since -= 31.0
        assert (await client.get(base + "/")).text() == "conn 1"
        assert client.connections_opened == 2 and link.conn.closed


async def test_expiry_none_keeps_the_connection(backend: str) -> None:
    server = Server()
    async with server as base, Engine(backend=backend) as engine, \
            HttpClient(engine=engine, keepalive_expiry=None) as keeper, \
            HttpClient(engine=engine, keepalive_expiry=EXPIRY) as clock:
        assert (await keeper.get(base + "/")).text() == "conn 0"
        assert (await clock.get(base + "/")).text() == "conn 1"
        # the other client's connection, pooled later, expires: more than EXPIRY has passed
        await until(lambda: server.closed(1))
        assert idle(keeper) == 1 and not server.closed(0)
        assert (await keeper.get(base + "/")).text() == "conn 0"
        assert keeper.connections_opened == 1


async def test_busy_connection_is_not_expired(backend: str) -> None:
    # a connection taken from the pool loses its idle deadline while in use
    server = Server()
    async with server as base, Engine(backend=backend) as engine, \
            HttpClient(engine=engine, keepalive_expiry=EXPIRY, read_timeout=10) as client, \
            HttpClient(engine=engine, keepalive_expiry=EXPIRY) as clock:
        await client.get(base + "/")
        slow = asyncio.ensure_future(client.get(base + "/slow"))  # on the pooled connection
        await until(lambda: idle(client) == 0)
        await clock.get(base + "/")  # conn 1, pooled after the slow request started
        await until(lambda: server.closed(1))
        server.gate.set()
        assert (await slow).text() == "conn 0"
        assert client.connections_opened == 1 and not server.closed(0)


async def test_connection_closed_by_server_leaves_pool(backend: str) -> None:
    server = Server(close_after=True)
    async with server as base, Engine(backend=backend) as engine, \
            HttpClient(engine=engine, keepalive_expiry=None) as client:
        assert (await client.get(base + "/")).text() == "conn 0"
        # the response did not say "close": pooled, then dropped when the close arrives
        assert idle(client) == 1
        server.close_now.set()
        await until(lambda: idle(client) == 0)
        assert (await client.get(base + "/")).text() == "conn 1"
        assert client.connections_opened == 2


@pytest.mark.parametrize("option", ["keepalive_expiry", "http2_ping_interval",
                                    "http2_ping_timeout"])
@pytest.mark.parametrize("value", [0, -1.0])
def test_non_positive_durations_are_refused(backend: str, option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        kw: Dict[str, Any] = {option: value}
        HttpClient(**kw)

"""Helpers of the WebSocket server/client tests: engines, servers, a recording callback
handler and raw handshakes (a module of its own: ``conftest`` names clash across test
directories)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Callable, List, Tuple

from nbio.engine import Engine
from nbio.http.server import HttpServer


def make_engine(kind: str, **settings: Any) -> Engine:
    return Engine(backend=kind.split("-")[0], **settings)


def listen(engine: Engine, upgrader: Any) -> Tuple[str, int]:
    """Serve ``upgrader`` for every path through the nbio HTTP server on a free port."""
    server = HttpServer(None, upgrades={"*": upgrader})
    host, port = engine.listen(server, "127.0.0.1", 0).address[:2]
    return host, port


class Events:
    """Callback-API handler recording what happens, with awaitable conditions."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.loop = asyncio.get_running_loop()
        self.opened: List[Any] = []
        self.messages: List[Tuple[Any, bool]] = []
        self.closed: List[Tuple[int, str]] = []
        self.pings: List[bytes] = []
        self.pongs: List[bytes] = []
        self.requests: List[Any] = []
        self._waiters: List[Tuple[Callable[[], bool], asyncio.Future]] = []

    def _check(self) -> None:
        for cond, fut in list(self._waiters):
            if not fut.done() and cond():
                fut.set_result(None)
                self._waiters.remove((cond, fut))

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        if cond():
            return
        fut = self.loop.create_future()
        self._waiters.append((cond, fut))
        await asyncio.wait_for(fut, timeout)

    def on_open(self, ws: Any) -> None:
        self.opened.append(ws)
        self.requests.append(ws.request)
        self._check()

    def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
        self.messages.append((data, is_text))
        if self.echo:
            ws.send(data)
        self._check()

    def on_close(self, ws: Any, code: int, reason: str) -> None:
        self.closed.append((code, reason))
        self._check()

    def on_ping(self, ws: Any, payload: bytes) -> None:
        self.pings.append(payload)
        self._check()

    def on_pong(self, ws: Any, payload: bytes) -> None:
        self.pongs.append(payload)
        self._check()


async def raw_connect(
    host: str, port: int, request: bytes
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a TCP connection, send ``request`` and read the response head."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


def upgrade_request(
    path: str = "/", key: str = "dGhlIHNhbXBsZSBub25jZQ==", extra: str = "", version: str = "13"
) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """Read one unmasked server frame: (opcode, payload, fin, rsv1)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    assert not b1 & 0x80, "server frames must not be masked"
    return b0 & 0x0F, await reader.readexactly(n), bool(b0 & 0x80), bool(b0 & 0x40)

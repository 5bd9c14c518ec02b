"""Helpers for the RPC layer tests: a server+engine per test, and a raw-socket arpc peer."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any, AsyncIterator, Optional, Tuple

from nbio.engine import BACKENDS, Engine
from nbio.rpc import Client, Router, Server
from nbio.rpc.message import HEADER_SIZE, parse_frame

__all__ = [
    "BACKENDS",
    "GOLDEN_ANSWER",
    "GOLDEN_CALL",
    "RawPeer",
    "echo_router",
    "open_raw",
    "serving",
    "wait_until",
]

_U32 = struct.Struct("<I")

#: A call of "/echo" with seq 2 and body b"hello", and its answer, byte for byte as arpc (Go)
#: puts them on the wire.
GOLDEN_CALL = bytes.fromhex("0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f")
GOLDEN_ANSWER = bytes.fromhex("0a000000 00 02 00 05 0200000000000000 2f6563686f 68656c6c6f")


def echo_router() -> Router:
    """ "/echo" returns the raw body, "/add" sums two numbers, "/aecho" echoes asynchronously."""
    r = Router()

    @r.handle("/echo")
    def echo(ctx: Any) -> Any:
        return ctx.bind(bytes)

    @r.handle("/add")
    def add(ctx: Any) -> Any:
        a, b = ctx.bind()
        return a + b

    @r.handle("/aecho")
    async def aecho(ctx: Any) -> Any:
        await asyncio.sleep(0)
        return ctx.bind()

    return r


@contextlib.asynccontextmanager
async def serving(
    backend: str,
    router: Optional[Router] = None,
    *,
    engine_kw: Optional[dict] = None,
    **server_kw: Any,
) -> AsyncIterator[Tuple[Server, Engine, Tuple[str, int]]]:
    """An engine of ``backend`` and a server listening on 127.0.0.1; both closed after."""
    engine = Engine(backend=backend, **(engine_kw or {}))
    server = Server(router, engine=engine, **server_kw)
    try:
        addr = await server.listen("127.0.0.1", 0)
        yield server, engine, addr
    finally:
        await server.close()
        await engine.close()


async def client_for(engine: Engine, addr: Tuple[str, int], **kw: Any) -> Client:
    return await Client(addr[0], addr[1], engine=engine, **kw).connect()


class RawPeer:
    """A plain asyncio-streams socket speaking arpc frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_raw(self, timeout: float = 5.0) -> bytes:
        """One whole frame, as bytes."""
        head = await asyncio.wait_for(self.reader.readexactly(HEADER_SIZE), timeout)
        (body_len,) = _U32.unpack_from(head)
        body = await asyncio.wait_for(self.reader.readexactly(body_len), timeout)
        return head + body

    async def read(self, timeout: float = 5.0) -> Any:
        return parse_frame(await self.read_raw(timeout))

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the other side closed (EOF or reset)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            while data:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except ConnectionResetError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def open_raw(addr: Any) -> RawPeer:
    if isinstance(addr, str):
        r, w = await asyncio.open_unix_connection(addr)
    else:
        r, w = await asyncio.open_connection(addr[0], addr[1])
    return RawPeer(r, w)


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    """Poll ``cond()`` once per loop iteration (no timed sleeps) until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0)

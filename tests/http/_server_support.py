"""Helpers shared by the HTTP server/ASGI/client tests: a server on an engine, raw clients."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, List, Optional, Tuple

import h11

from nbio.engine import BACKENDS, Engine
from nbio.http.server import HttpServer

__all__ = ["BACKENDS", "RawClient", "h11_exchange", "read_response", "serving"]


@contextlib.asynccontextmanager
async def serving(app: Any, backend: str, **kw: Any) -> AsyncIterator[Tuple[HttpServer, Any]]:
    """An HttpServer for ``app`` on a fresh engine; yields (server, (host, port))."""
    server = kw.pop("server", None) or HttpServer(app, **kw)
    async with Engine(backend=backend) as engine:
        listener = engine.listen(server, "127.0.0.1", 0)
        try:
            yield server, listener.address[:2]
        finally:
            server.close()


class RawClient:
    """A raw TCP client: send bytes, read responses with h11 (an independent parser)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, addr: Any) -> RawClient:
        r, w = await asyncio.open_connection(*addr)
        return cls(r, w)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_all(self) -> bytes:
        """Everything until the server closes."""
        return await asyncio.wait_for(self.reader.read(), 10)

    async def response(self, method: bytes = b"GET") -> Tuple[h11.Response, bytes, List[Any]]:
        """Parse the next response (status, body, trailers) with h11."""
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        if conn.our_state is h11.IDLE:
            # raw bytes were sent: tell h11 about a matching request so it frames the response
            conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
        head: Optional[h11.Response] = None
        body = b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 10)
                conn.receive_data(data)
                continue
            if isinstance(ev, h11.InformationalResponse):
                continue
            if isinstance(ev, h11.Response):
                head = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert head is not None
                return head, body, list(ev.headers)
            elif isinstance(ev, h11.ConnectionClosed):
                raise ConnectionError("closed before a response")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def read_response(addr: Any, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it."""
    client = await RawClient.connect(addr)
    try:
        client.send(raw)
        return await client.read_all()
    finally:
        await client.close()


async def h11_exchange(
    addr: Any, requests: List[Tuple[h11.Request, List[bytes]]]
) -> List[Tuple[h11.Response, bytes]]:
    """Send each request (with body chunks) with h11 on one keep-alive connection."""
    r, w = await asyncio.open_connection(*addr)
    conn = h11.Connection(h11.CLIENT)
    out = []
    try:
        for req, chunks in requests:
            data = conn.send(req)
            for c in chunks:
                data += conn.send(h11.Data(data=c))
            data += conn.send(h11.EndOfMessage())
            w.write(data)
            head = None
            body = b""
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await asyncio.wait_for(r.read(65536), 10))
                    continue
                if isinstance(ev, h11.Response):
                    head = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
            assert head is not None
            out.append((head, body))
            if conn.our_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    finally:
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
    return out

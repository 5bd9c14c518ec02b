"""Helpers for the HTTP/2 server tests: a server on an engine, a raw client driven by the
independent ``h2`` client state machine, curl/h2load runners and a trustme TLS setup."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import h2.config
import h2.connection
import h2.events
from tests._programs import require

from nbio.engine import BACKENDS, Engine
from nbio.http.server import HttpServer

__all__ = ["BACKENDS", "H2Client", "curl", "h2_serving", "run_tool"]


@contextlib.asynccontextmanager
async def h2_serving(app: Any, backend: str, *, server: Any = None, ssl_ctx: Any = None,
                     **kw: Any) -> AsyncIterator[Tuple[HttpServer, Any]]:
    """A server for ``app`` on a fresh engine; yields (server, (host, port))."""
    async with Engine(backend=backend) as engine:
        if server is None:
            server = HttpServer(app, **kw)
        if ssl_ctx is not None:
            ssl_ctx.set_alpn_protocols(["h2", "http/1.1"])
        listener = engine.listen(server, "127.0.0.1", 0, ssl=ssl_ctx)
        server.listener = listener
        try:
            yield server, listener.address[:2]
        finally:
            server.close()
            await server.wait_closed(2.0)


class H2Client:
    """A raw HTTP/2 client over a socket: the ``h2`` package frames, we read and write."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 **settings: Any) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        if settings:
            self.h2.update_settings(settings)
        self.events: List[Any] = []
        self.closed = False
        self.flush()

    @classmethod
    async def connect(cls, addr: Any, ssl_ctx: Optional[ssl.SSLContext] = None,
                      **settings: Any) -> H2Client:
        r, w = await asyncio.open_connection(
            *addr, ssl=ssl_ctx, server_hostname="localhost" if ssl_ctx else None)
        return cls(r, w, **settings)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, path: str = "/", method: str = "GET", body: bytes = b"",
                headers: Optional[List[Tuple[str, str]]] = None, end: bool = True) -> int:
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "localhost"), *list(headers or [])]
        self.h2.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.h2.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    async def pump(self, timeout: float = 10) -> List[Any]:
        """Read once; return the new events (empty list at EOF)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except ConnectionResetError:  # closed with our data unread: the kernel resets
            data = b""
        if not data:
            self.closed = True
            return []
        evs = self.h2.receive_data(data)
        self.flush()
        self.events += evs
        return evs

    async def response(self, sid: int, ack: bool = True,
                       timeout: float = 10) -> Tuple[Dict[bytes, bytes], bytes]:
        """Headers and body of stream ``sid`` (acknowledging its data as it arrives)."""
        headers: Dict[bytes, bytes] = {}
        body = b""
        while True:
            mine = [e for e in self.events if getattr(e, "stream_id", None) == sid]
            self.events = [e for e in self.events if getattr(e, "stream_id", None) != sid]
            done = False
            for ev in mine:
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    if ack:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
                elif isinstance(ev, h2.events.StreamReset):
                    raise ConnectionResetError(f"stream {sid} reset: {ev.error_code!r}")
            self.flush()
            if done:
                return headers, body
            if self.closed or not await self.pump(timeout):
                raise ConnectionError("connection closed before the response")

    async def until(self, kind: type, timeout: float = 10) -> Any:
        """Read until an event of type ``kind`` arrives; return it (None at EOF)."""
        while True:
            for ev in self.events:
                if isinstance(ev, kind):
                    self.events.remove(ev)
                    return ev
            if self.closed or not await self.pump(timeout):
                return None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


async def run_tool(*argv: str, timeout: float = 30) -> Tuple[int, bytes, bytes]:
    """Run an outside program (skipped when missing, failed in CI); its status and output."""
    proc = await asyncio.create_subprocess_exec(
        require(argv[0]), *argv[1:], stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def curl(*args: str) -> bytes:
    rc, out, err = await run_tool("curl", "-sS", "--max-time", "20", *args)
    assert rc == 0, err
    return out

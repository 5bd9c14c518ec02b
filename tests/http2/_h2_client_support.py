"""Peers for the HTTP/2 client tests: hypercorn (TLS with ALPN, or h2c) run in-process on the
test's event loop, and a small scripted server on the ``h2`` package for the behaviours
hypercorn will not show on demand (resets, GOAWAY with streams in flight, refused streams).

Not a test module (no ``test_`` prefix): imported by ``test_h2_client_*.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import tempfile
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Set, Tuple

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hyperframe.frame import GoAwayFrame

_CA: Optional[trustme.CA] = None


def ca() -> trustme.CA:
    global _CA
    if _CA is None:
        _CA = trustme.CA()
    return _CA


def client_context() -> ssl.SSLContext:
    """A client context trusting the test CA (ALPN left to the client)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca().configure_trust(ctx)
    return ctx


def server_context(alpn: List[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca().issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ctx.set_alpn_protocols(alpn)
    return ctx


def _listening_socket() -> Tuple[int, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    return sock.detach(), port


class Seen:
    """What the server saw: (client address, http version, method, path) per request."""

    def __init__(self) -> None:
        self.requests: List[Tuple[Any, str, str, str]] = []

    @property
    def connections(self) -> Set[Any]:
        return {r[0] for r in self.requests}


@contextlib.asynccontextmanager
async def hypercorn_server(app: Callable[..., Awaitable[None]], *, tls: bool = True,
                           alpn: Tuple[str, ...] = ("h2", "http/1.1"),
                           **settings: Any) -> AsyncIterator[str]:
    """Serve the ASGI ``app`` with hypercorn on 127.0.0.1; yields the base URL
    (``https://localhost:PORT`` with a certificate from the test CA, or ``http://...``)."""
    fd, port = _listening_socket()
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    for k, v in settings.items():
        setattr(config, k, v)
    stop = asyncio.Event()
    with tempfile.TemporaryDirectory() as tmp:
        if tls:
            cert = ca().issue_cert("localhost", "127.0.0.1")
            config.certfile = os.path.join(tmp, "cert.pem")
            config.keyfile = os.path.join(tmp, "key.pem")
            cert.cert_chain_pems[0].write_to_path(config.certfile)
            cert.private_key_pem.write_to_path(config.keyfile)
            config.alpn_protocols = list(alpn)
        task = asyncio.ensure_future(serve(app, config, shutdown_trigger=stop.wait,
                                           mode="asgi"))
        try:
            await asyncio.sleep(0)
            if task.done():
                task.result()
            yield f"{'https' if tls else 'http'}://localhost:{port}"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


# -- a scripted HTTP/2 server on the h2 package ----------------------------------------------------


class Req:
    """A request as the scripted server saw it."""

    def __init__(self, conn: H2Peer, stream_id: int, headers: List[Tuple[bytes, bytes]]) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.headers = dict(headers)
        self.body = bytearray()
        self.ended = asyncio.Event()

    @property
    def path(self) -> str:
        return self.headers[b":path"].decode()


class H2Peer:
    """One server-side connection of :class:`ScriptedServer`."""

    def __init__(self, server: ScriptedServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = h2.settings.Settings(client=False,
                                                      initial_values=server.settings)
        self.requests: Dict[int, Req] = {}
        self.window_changed = asyncio.Event()
        self.max_open = 0

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def run(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        while True:
            data = await self.reader.read(65536)
            if not data:
                break
            for ev in self.h2.receive_data(data):
                await self.on_event(ev)
            self.flush()
        self.writer.close()

    async def on_event(self, ev: Any) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            req = self.requests[ev.stream_id] = Req(self, ev.stream_id, ev.headers)
            self.max_open = max(self.max_open, self.h2.open_inbound_streams)
            self.server.seen.append(req)
            if self.server.on_headers is not None:
                await self.server.on_headers(req)
        elif isinstance(ev, h2.events.DataReceived):
            req = self.requests[ev.stream_id]
            req.body += ev.data
            if self.server.auto_ack:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            req = self.requests[ev.stream_id]
            req.ended.set()
            self.server._tasks.append(asyncio.ensure_future(self.server.on_request(req)))
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window_changed.set()
        elif isinstance(ev, h2.events.StreamReset):
            self.server.resets.append((ev.stream_id, ev.error_code))
            self.window_changed.set()

    async def respond(self, sid: int, status: int = 200, body: bytes = b"",
                      headers: Tuple[Tuple[bytes, bytes], ...] = (),
                      trailers: Optional[List[Tuple[bytes, bytes]]] = None,
                      progress: Optional[List[int]] = None,
                      blocked: Optional[asyncio.Event] = None) -> None:
        """Send a response, DATA within the flow-control windows; ``progress`` gets the body
        bytes sent so far appended after each frame; ``blocked`` is set whenever the
        flow-control window stops it."""
        self.h2.send_headers(sid, [(b":status", b"%d" % status), *headers],
                             end_stream=not body and trailers is None)
        self.flush()
        view = memoryview(body)
        sent = 0
        while view:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                if blocked is not None:
                    blocked.set()
                self.window_changed.clear()
                await self.window_changed.wait()
                continue
            chunk, view = view[:window], view[window:]
            self.h2.send_data(sid, bytes(chunk), end_stream=not view and trailers is None)
            sent += len(chunk)
            if progress is not None:
                progress.append(sent)
            self.flush()
            await self.writer.drain()
        if trailers is not None:
            self.h2.send_headers(sid, trailers, end_stream=True)
        self.flush()

    def reset(self, sid: int, code: int) -> None:
        self.h2.reset_stream(sid, code)
        self.flush()

    def goaway_raw(self, last_stream_id: int, code: int = 0) -> None:
        """A GOAWAY written past h2's state machine, which could then send nothing more."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = code
        self.writer.write(frame.serialize())


class ScriptedServer:
    """``on_request(req)`` runs (as a task) once a request has fully arrived; it answers
    with ``req.conn.respond(...)`` / ``reset`` / ``goaway_raw``. ``settings``: the server's
    SETTINGS; ``auto_ack``: reopen windows as request data arrives."""

    def __init__(self, on_request: Callable[[Req], Awaitable[None]], *,
                 settings: Optional[Dict[Any, int]] = None, auto_ack: bool = True,
                 on_headers: Optional[Callable[[Req], Awaitable[None]]] = None) -> None:
        self.on_request = on_request
        self.on_headers = on_headers
        self.settings: Dict[Any, int] = settings or {}
        self.auto_ack = auto_ack
        self.peers: List[H2Peer] = []
        self.seen: List[Req] = []
        self.resets: List[Tuple[int, int]] = []
        self.errors: List[BaseException] = []  # what broke a connection, server side
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: List[asyncio.Task[None]] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = H2Peer(self, reader, writer)
        self.peers.append(peer)
        try:
            await peer.run()
        except (ConnectionError, h2.exceptions.ProtocolError) as exc:
            self.errors.append(exc)
            writer.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self.peers:
            peer.writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

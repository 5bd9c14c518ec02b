"""RPC over QUIC: one bidirectional QUIC stream per RPC connection carries the arpc byte
stream (as a TCP connection would; arpc has the same transport over quic-go).

Server side, :class:`QuicRpcEndpoint` serves a :class:`~nbio.rpc.server.Server`'s router
on a UDP port: every bidirectional stream a client opens becomes a
:class:`~nbio.rpc.client.Peer` of the server (handlers, ``broadcast``/``for_each``, calls
back to the client, hooks, keepalive, graceful shutdown), several per QUIC connection if the
client opens several::

    endpoint = QuicRpcEndpoint(server, certfile="cert.pem", keyfile="key.pem")
    host, port = await endpoint.listen("127.0.0.1", 0)

Client side, :class:`QuicRpcClient` is a :class:`~nbio.rpc.client.Client` (same API:
calls both ways, keepalive, reconnect, streams) on its own QUIC connection::

    async with QuicRpcClient("127.0.0.1", port, cadata=ca_pem) as client:
        await client.call("/echo", "hello", as_type=str)

The client announces its stream with an arpc ping (the server learns of a QUIC stream when
the first bytes arrive). Closing an RPC connection ends the stream (FIN) and waits for the
other side's FIN (``close_timeout``, then the stream is reset); the client then closes its
QUIC connection. ALPN is ``"arpc"`` unless configured otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from typing import Any, Dict, Optional, Sequence

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration

from nbio.engine import get_engine
from nbio.errors import ConnectionClosed, DeadlineExceeded
from nbio.http3.quic import (
    QuicLink,
    QuicProtocol,
    QuicServerEndpoint,
    connect_quic,
    stream_buffered,
)
from nbio.rpc.client import Client
from nbio.rpc.message import PING_FRAME
from nbio.rpc.server import Server

__all__ = ["ALPN", "QuicRpcClient", "QuicRpcEndpoint", "QuicStreamConn", "connect_quic_rpc"]

logger = logging.getLogger("nbio.rpc")

#: the ALPN protocol name of RPC over QUIC
ALPN = "arpc"
_STREAM_ERROR = 0x1  # application error code when a stream is reset


class QuicStreamConn:
    """A Peer's connection over one bidirectional QUIC stream (the engine-connection subset
    the Peer uses)."""

    __slots__ = ("_close_timer", "_deadline", "_deadline_timer", "closed", "closing",
                 "local_close", "proto", "remote_fin", "session", "sid")

    close_timeout = 5.0

    def __init__(self, proto: _RpcQuic, sid: int) -> None:
        self.proto = proto
        self.sid = sid
        self.session: Any = None
        self.closing = False
        self.closed = False
        self.remote_fin = False
        self.local_close = False
        self._close_timer: Optional[asyncio.TimerHandle] = None
        self._deadline = 0.0
        self._deadline_timer: Optional[asyncio.TimerHandle] = None

    def __repr__(self) -> str:
        return f"<QuicStreamConn {self.sid} {self.remote_address!r}>"

    @property
    def link(self) -> QuicLink:
        return self.proto.link  # type: ignore[no-any-return]

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if self.closing:
            raise ConnectionClosed(None, "connection closed")
        link = self.link
        link.quic.send_stream_data(self.sid, bytes(data))
        link.transmit_soon()

    @property
    def buffered(self) -> int:
        return 0 if self.closed else stream_buffered(self.link.quic, self.sid)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionClosed(None, "connection closed")
        await self.link.drain(self.sid)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """End the stream (FIN after what is queued); closed once the peer ends it too."""
        if self.closing:
            return
        self.closing = True
        self.local_close = True
        link = self.link
        if not link.closed:
            link.quic.send_stream_data(self.sid, b"", end_stream=True)
            link.transmit_soon()
        if self.remote_fin or link.closed:
            self._finish(None)
        else:
            self._close_timer = link.loop.call_later(self.close_timeout, self.abort)

    def abort(self) -> None:
        """Reset the stream now."""
        if self.closed:
            return
        self.closing = True
        self.local_close = True
        link = self.link
        if not link.closed:
            try:
                link.quic.reset_stream(self.sid, _STREAM_ERROR)
                link.quic.stop_stream(self.sid, _STREAM_ERROR)
            except Exception:  # one side already finished
                pass
            link.transmit_soon()
        self._finish(None)

    def _remote_end(self) -> None:
        self.remote_fin = True
        if self.closing:
            self._finish(None)
        else:
            self.close()  # the peer is done: answer its FIN with ours

    def _finish(self, exc: Optional[BaseException]) -> None:
        if self.closed:
            return
        self.closed = True
        self.closing = True
        for timer in (self._close_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._deadline_timer = None
        self.proto.streams.pop(self.sid, None)
        peer = self.session
        if peer is not None:
            peer._on_close(self, exc)
        self.proto.stream_closed(self)

    # -- reading ------------------------------------------------------------------------------

    def set_read_deadline(self, timeout: Optional[float]) -> None:
        if not timeout:
            self._deadline = 0.0
            return
        loop = self.link.loop
        self._deadline = loop.time() + timeout
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(self._deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._deadline_timer = None
        if not self._deadline or self.closed:
            return
        loop = self.link.loop
        if loop.time() < self._deadline:
            self._deadline_timer = loop.call_at(self._deadline, self._check_deadline)
            return
        peer = self.session
        if peer is not None and peer.close_reason is None:
            peer.close_reason = DeadlineExceeded("read")
        self.abort()

    def pause_reading(self) -> None:
        pass  # QUIC flow control bounds what the peer may send

    def resume_reading(self) -> None:
        pass

    @property
    def remote_address(self) -> Any:
        return self.link.remote_address

    @property
    def local_address(self) -> Any:
        return self.link.local_address


class _RpcQuic(QuicProtocol):
    """The RPC state of one QUIC connection: its streams, each an RPC connection."""

    def __init__(self, on_stream: Any = None) -> None:
        self.link: Any = None
        self.streams: Dict[int, QuicStreamConn] = {}
        self.on_stream = on_stream  # server: a new client stream -> server._opened(conn)
        self.owned = False          # client: close the QUIC connection with the stream

    def connection_made(self, link: QuicLink) -> None:
        self.link = link

    def open_stream(self) -> QuicStreamConn:
        sid = self.link.quic.get_next_available_stream_id()
        conn = QuicStreamConn(self, sid)
        self.streams[sid] = conn
        return conn

    def quic_event(self, event: Any) -> None:
        t = type(event)
        if t is qe.StreamDataReceived:
            sid = event.stream_id
            conn = self.streams.get(sid)
            if conn is None:
                if self.on_stream is None or sid % 4 != 0:
                    return  # not a client-initiated bidirectional stream
                if not event.data and event.end_stream:
                    return
                conn = QuicStreamConn(self, sid)
                self.streams[sid] = conn
                self.on_stream(conn)
                if conn.closed:
                    return
            if event.data and not conn.remote_fin:
                peer = conn.session
                if peer is not None:
                    peer._on_data(event.data)
            if event.end_stream and not conn.closed:
                conn._remote_end()
        elif t is qe.StreamReset:
            conn = self.streams.get(event.stream_id)
            if conn is not None:
                conn._finish(ConnectionClosed(event.error_code, "the stream was reset"))

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        lost = exc or ConnectionClosed(None, "QUIC connection closed")
        for conn in list(self.streams.values()):
            conn._finish(lost)

    def stream_closed(self, conn: QuicStreamConn) -> None:
        if self.owned and not self.streams and self.link is not None:
            self.link.close()


def _server_config(certfile: Optional[str], keyfile: Optional[str],
                   alpn: Sequence[str]) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=list(alpn))
    if certfile is None:
        raise ValueError("QuicRpcEndpoint needs certfile/keyfile or a configuration")
    config.load_cert_chain(certfile, keyfile)
    return config


class QuicRpcEndpoint:
    """The QUIC entry of an RPC :class:`~nbio.rpc.server.Server` (see the module
    documentation). TLS: ``certfile``/``keyfile`` or an aioquic server ``configuration``."""

    def __init__(
        self,
        server: Server,
        *,
        certfile: Optional[str] = None,
        keyfile: Optional[str] = None,
        configuration: Optional[QuicConfiguration] = None,
        alpn: Sequence[str] = (ALPN,),
    ) -> None:
        self.server = server
        self.configuration = configuration or _server_config(certfile, keyfile, alpn)
        self.endpoint = QuicServerEndpoint(self.configuration, self._new_connection)
        self.listener: Any = None

    def _new_connection(self) -> _RpcQuic:
        return _RpcQuic(on_stream=self._on_stream)

    def _on_stream(self, conn: QuicStreamConn) -> None:
        server = self.server
        if server._loop is None:
            server._bind_loop()
        server._opened(conn)

    async def listen(self, host: str = "127.0.0.1", port: int = 0, *, engine: Any = None,
                     reuse_port: Optional[bool] = None) -> Any:
        """Serve UDP ``host:port`` (port 0 picks one); returns the bound address. The
        server's ``shutdown`` does not know this listener: call :meth:`close` too."""
        server = self.server
        server._bind_loop()
        engine = engine or server._engine or get_engine()
        self.listener = engine.listen_udp(
            self.endpoint, host, port, idle_timeout=self.configuration.idle_timeout + 5.0,
            reuse_port=reuse_port,
        )
        self.endpoint.local_address = self.listener.address
        return self.listener.address

    @property
    def address(self) -> Any:
        return self.listener.address if self.listener is not None else None

    def close(self) -> None:
        """Close every QUIC connection and the UDP socket."""
        self.endpoint.close_all()
        if self.listener is not None:
            self.listener.close()


class QuicRpcClient(Client):
    """An RPC :class:`~nbio.rpc.client.Client` over a QUIC stream to ``host:port``.

    Same API and options as :class:`~nbio.rpc.client.Client`, plus TLS: ``verify``,
    ``cafile``, ``cadata``, ``server_name``, or an aioquic client ``configuration``;
    ``alpn`` (default ``["arpc"]``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        verify: bool = True,
        cafile: Optional[str] = None,
        cadata: Optional[bytes] = None,
        server_name: Optional[str] = None,
        configuration: Optional[QuicConfiguration] = None,
        alpn: Sequence[str] = (ALPN,),
        **options: Any,
    ) -> None:
        super().__init__(host, port, **options)
        if configuration is None:
            configuration = QuicConfiguration(is_client=True, alpn_protocols=list(alpn))
            if not verify:
                configuration.verify_mode = _ssl.CERT_NONE
            if cafile or cadata:
                configuration.load_verify_locations(cafile=cafile, cadata=cadata)
        configuration.server_name = server_name or host
        self._quic_config = configuration

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        return f"<QuicRpcClient {state} {self._host}:{self._port}>"

    async def _dial(self) -> None:
        engine = self._engine or get_engine()
        self._engine = engine
        proto = _RpcQuic()
        proto.owned = True
        assert self._host is not None and self._port is not None
        await connect_quic(self._host, self._port, self._quic_config, proto, engine=engine,
                           timeout=self._connect_timeout)
        conn = proto.open_stream()
        self._opened(conn)
        conn.write(PING_FRAME)  # tell the server about the stream


async def connect_quic_rpc(host: str, port: int, **options: Any) -> QuicRpcClient:
    """Create a :class:`QuicRpcClient` and connect it."""
    client = QuicRpcClient(host, port, **options)
    await client.connect()
    return client

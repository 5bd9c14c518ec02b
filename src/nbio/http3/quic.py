"""QUIC on the nbio engine: aioquic's sans-IO :class:`~aioquic.quic.connection.QuicConnection`
driven by engine UDP sockets.

* :class:`QuicLink` drives one QUIC connection: datagrams in (``receive_datagram``),
  datagrams out (``datagrams_to_send``, written per datagram with the engine connection's
  ``write``), and one ``loop.call_at`` timer per connection for ``get_timer``/``handle_timer``.
  Its events go to a :class:`QuicProtocol` (the HTTP/3 server and client, RPC over QUIC).
* :class:`QuicServerEndpoint` is an engine UDP handler (``engine.listen_udp``): the engine
  gives one virtual connection per peer address, this routes every datagram to its QUIC
  connection by *destination connection ID* (a client may change address), creates
  connections for new Initial packets (at least 1200 bytes, RFC 9000 14.1) and answers
  unknown versions with Version Negotiation.
* :func:`connect_quic` dials a server over a connected engine UDP socket and returns the
  link once the handshake is done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from aioquic.buffer import Buffer
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from nbio.engine import Handler, get_engine
from nbio.errors import ConnectionClosed, DeadlineExceeded

__all__ = [
    "QuicLink",
    "QuicProtocol",
    "QuicServerEndpoint",
    "connect_quic",
    "stream_buffered",
]

logger = logging.getLogger("nbio.http3")

_MIN_INITIAL = 1200  # RFC 9000 14.1: a client's Initial datagram is padded to 1200 bytes

#: ``drain`` waits while a stream has more unacknowledged bytes than this
HIGH_WATER = 256 * 1024


def stream_buffered(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to ``stream_id`` and not yet acknowledged by the peer."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


class QuicProtocol:
    """What runs on a QUIC connection; every method is optional."""

    def connection_made(self, link: QuicLink) -> None:
        """The link exists (server: first Initial received; client: before the handshake)."""

    def quic_event(self, event: qe.QuicEvent) -> None:
        """An aioquic event (``HandshakeCompleted``, ``StreamDataReceived``...)."""

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        """The connection is terminated (``exc`` is None for a clean close)."""


class QuicLink:
    """One QUIC connection on the engine (see the module documentation).

    ``quic`` is the aioquic connection; call :meth:`transmit_soon` (or :meth:`transmit`)
    after acting on it (``send_stream_data``...). ``await drain(stream_id)`` waits while
    the stream has more than ``HIGH_WATER`` unacknowledged bytes."""

    def __init__(
        self,
        quic: QuicConnection,
        protocol: QuicProtocol,
        send: Callable[[bytes, Any], None],
        loop: asyncio.AbstractEventLoop,
        local_address: Any = None,
    ) -> None:
        self.quic = quic
        self.protocol = protocol
        self._send = send
        self.loop = loop
        self.local_address = local_address
        self.remote_address: Any = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at: Optional[float] = None
        self._soon: Optional[asyncio.Handle] = None
        self._drains: List[Tuple[int, asyncio.Future[None]]] = []
        self._connected: Optional[asyncio.Future[None]] = loop.create_future()
        self.closed = False
        self.close_reason: Optional[BaseException] = None
        #: called once with the link when it terminates (the server forgets it)
        self.on_terminated: Optional[Callable[[QuicLink], None]] = None
        #: called with each connection ID issued / retired (server routing)
        self.on_cid: Optional[Callable[[bytes, bool], None]] = None

    def __repr__(self) -> str:
        return f"<QuicLink {self.remote_address!r}{' closed' if self.closed else ''}>"

    # -- input --------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Feed one datagram from ``addr``; answers go out on the next loop turn (so a batch
        of datagrams read at once is answered together)."""
        if self.closed:
            return
        self.remote_address = addr
        self.quic.receive_datagram(data, addr, now=self.loop.time())
        self._process()
        self.transmit_soon()

    def _on_timer(self) -> None:
        self._timer = None
        at = self._timer_at
        self._timer_at = None
        if self.closed:
            return
        self.quic.handle_timer(now=max(at or 0.0, self.loop.time()))
        self._process()
        self.transmit()

    def _process(self) -> None:
        quic = self.quic
        protocol = self.protocol
        event: Any = quic.next_event()
        while event is not None:
            t = type(event)
            if t is qe.ConnectionIdIssued or t is qe.ConnectionIdRetired:
                if self.on_cid is not None:
                    self.on_cid(event.connection_id, t is qe.ConnectionIdIssued)
            elif t is qe.HandshakeCompleted:
                fut = self._connected
                if fut is not None and not fut.done():
                    fut.set_result(None)
            try:
                protocol.quic_event(event)
            except Exception:
                logger.exception("nbio.http3: error handling %r on %r", event, self)
                quic.close(error_code=0x1, reason_phrase="internal error")
            if t is qe.ConnectionTerminated:
                exc: Optional[BaseException] = None
                if event.reason_phrase == "Idle timeout":
                    exc = DeadlineExceeded("idle")
                elif event.error_code:
                    exc = ConnectionClosed(event.error_code, event.reason_phrase or "")
                self._terminated(exc)
                return
            event = quic.next_event()
        if self._drains:
            self._wake_drains()

    # -- output -------------------------------------------------------------------------------

    def transmit_soon(self) -> None:
        """Send what the QUIC connection has to send, on the next loop turn (coalesced)."""
        if self._soon is None and not self.closed:
            self._soon = self.loop.call_soon(self.transmit)

    def transmit(self) -> None:
        """Send pending datagrams now and re-arm the timer."""
        self._soon = None
        if self.closed:
            return
        send = self._send
        for data, addr in self.quic.datagrams_to_send(now=self.loop.time()):
            try:
                send(data, addr)
            except ConnectionClosed:
                pass  # the engine forgot that peer: a lost datagram, as UDP allows
        at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)
        self._timer_at = at
        if self._drains:
            self._wake_drains()

    # -- flow ---------------------------------------------------------------------------------

    async def drain(self, stream_id: int) -> None:
        """Wait while ``stream_id`` has more than ``HIGH_WATER`` unacknowledged bytes."""
        while stream_buffered(self.quic, stream_id) > HIGH_WATER:
            if self.closed:
                raise self._lost()
            fut = self.loop.create_future()
            self._drains.append((stream_id, fut))
            await fut

    def _wake_drains(self) -> None:
        keep = []
        for sid, fut in self._drains:
            if self.closed or stream_buffered(self.quic, sid) <= HIGH_WATER:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((sid, fut))
        self._drains = keep

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Wait for the handshake (raises ConnectionClosed if the connection ends first)."""
        fut = self._connected
        if fut is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            self.abort()
            raise DeadlineExceeded("connect") from None

    # -- closing ------------------------------------------------------------------------------

    def _lost(self) -> ConnectionClosed:
        exc = self.close_reason
        if isinstance(exc, ConnectionClosed):
            return exc
        return ConnectionClosed(None, f"QUIC connection closed ({exc!r})" if exc
                                else "QUIC connection closed")

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE is sent; the link terminates once the
        closing period ends or at once when the peer answers)."""
        if self.closed:
            return
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self._process()
        self.transmit()

    def abort(self, exc: Optional[BaseException] = None) -> None:
        """Forget the connection now, without telling the peer."""
        self._terminated(exc or ConnectionClosed(None, "QUIC connection aborted"))

    def _terminated(self, exc: Optional[BaseException]) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        fut = self._connected
        self._connected = None
        if fut is not None and not fut.done():
            fut.set_exception(self._lost())
            fut.exception()
        self._wake_drains()
        try:
            self.protocol.connection_lost(exc)
        except Exception:
            logger.exception("nbio.http3: connection_lost failed for %r", self)
        if self.on_terminated is not None:
            self.on_terminated(self)


# ---------------------------------------------------------------------------------------------
# Server: one engine UDP socket, QUIC connections routed by connection ID
# ---------------------------------------------------------------------------------------------


class QuicServerEndpoint(Handler):
    """Engine UDP handler serving QUIC: ``engine.listen_udp(endpoint, host, port)``.

    ``protocol_factory()`` makes the :class:`QuicProtocol` of each new connection;
    ``configuration`` is the server's :class:`QuicConfiguration` (certificate, ALPN)."""

    def __init__(
        self, configuration: QuicConfiguration, protocol_factory: Callable[[], QuicProtocol]
    ) -> None:
        if configuration.is_client:
            raise ValueError("QuicServerEndpoint needs a server configuration (is_client=False)")
        self.configuration = configuration
        self.protocol_factory = protocol_factory
        self.links: Dict[bytes, QuicLink] = {}   # connection ID -> link
        self._peers: Dict[Any, Any] = {}        # address -> engine UDP connection
        self.local_address: Any = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    # engine callbacks

    def on_open(self, conn: Any) -> None:
        addr = conn.remote_address
        conn.session = addr
        self._peers[addr] = conn

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        addr = conn.session
        if self._peers.get(addr) is conn:
            del self._peers[addr]

    def on_data(self, conn: Any, data: Any) -> None:
        data = bytes(data)
        addr = conn.session
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            return  # not QUIC: dropped
        config = self.configuration
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in config.supported_versions
        ):
            conn.write(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=config.supported_versions,
                )
            )
            return
        link = self.links.get(header.destination_cid)
        if link is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < _MIN_INITIAL:
                return
            link = self._new_link(header.destination_cid, conn)
        link.datagram_received(data, addr)

    # links

    def _new_link(self, original_dcid: bytes, conn: Any) -> QuicLink:
        loop = self.loop or asyncio.get_running_loop()
        self.loop = loop
        quic = QuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=original_dcid,
        )
        protocol = self.protocol_factory()
        link = QuicLink(quic, protocol, self._send, loop, self.local_address)
        link.remote_address = conn.session
        links: Dict[bytes, QuicLink] = self.links

        def on_cid(cid: bytes, issued: bool) -> None:
            if issued:
                links[cid] = link
            elif links.get(cid) is link:
                del links[cid]

        def on_terminated(lk: QuicLink) -> None:
            for cid in [c for c, v in links.items() if v is lk]:
                del links[cid]

        link.on_cid = on_cid
        link.on_terminated = on_terminated
        links[original_dcid] = link
        links[quic.host_cid] = link
        protocol.connection_made(link)
        return link

    def _send(self, data: bytes, addr: Any) -> None:
        conn = self._peers.get(addr)
        if conn is not None:
            conn.write(data)

    @property
    def connections(self) -> List[QuicLink]:
        """The QUIC connections being served."""
        return list({id(v): v for v in self.links.values()}.values())

    def close_all(self, error_code: int = 0, reason: str = "server closing") -> None:
        """Close every QUIC connection (CONNECTION_CLOSE sent)."""
        for link in self.connections:
            link.close(error_code, reason)
            link.abort(None)


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class _ClientUdp(Handler):
    """Engine handler of a dialed UDP socket carrying one QUIC connection."""

    def __init__(self) -> None:
        self.link: Optional[QuicLink] = None

    def on_data(self, conn: Any, data: Any) -> None:
        link = self.link
        if link is not None:
            link.datagram_received(bytes(data), link.remote_address)

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        link = self.link
        if link is not None and not link.closed:
            link.abort(exc or ConnectionClosed(None, "UDP socket closed"))


async def connect_quic(
    host: str,
    port: int,
    configuration: QuicConfiguration,
    protocol: QuicProtocol,
    *,
    engine: Any = None,
    timeout: Optional[float] = 10.0,
    wait_connected: bool = True,
) -> QuicLink:
    """Dial a QUIC server over a connected engine UDP socket; returns the link after the
    handshake (``wait_connected=False``: at once). The UDP socket is closed when the QUIC
    connection terminates. Raises DeadlineExceeded("connect") or ConnectionClosed."""
    if not configuration.is_client:
        raise ValueError("connect_quic needs a client configuration (is_client=True)")
    if configuration.server_name is None:
        configuration.server_name = host
    engine = engine or get_engine()
    loop = asyncio.get_running_loop()
    udp = _ClientUdp()
    conn = await engine.dial_udp(udp, host, port, idle_timeout=None)
    quic = QuicConnection(configuration=configuration)
    link = QuicLink(quic, protocol, lambda data, addr: conn.write(data), loop,
                    conn.local_address)
    link.remote_address = conn.remote_address
    udp.link = link

    def on_terminated(lk: QuicLink) -> None:
        udp.link = None
        if not conn.closed:
            conn.close()

    link.on_terminated = on_terminated
    protocol.connection_made(link)
    quic.connect(link.remote_address, now=loop.time())
    link.transmit()
    if wait_connected:
        try:
            await link.wait_connected(timeout)
        except BaseException:
            link.abort()
            raise
    return link

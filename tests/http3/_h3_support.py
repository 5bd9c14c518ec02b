"""HTTP/3 test helpers: trustme certificates, aioquic's own HTTP/3 client (modeled on
aioquic's examples/http3_client.py), and an in-process UDP relay that drops every Nth
datagram in each direction."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import trustme
from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset

from nbio.engine import BACKENDS

__all__ = [
    "BACKENDS",
    "Certs",
    "H3Reply",
    "LossyRelay",
    "aioquic_client",
    "make_certs",
]


@dataclass
class Certs:
    certfile: str
    keyfile: str
    ca_pem: bytes


def make_certs(tmp: Path) -> Certs:
    """A private CA and a certificate for ``localhost`` / ``127.0.0.1``."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return Certs(str(certfile), str(keyfile), ca.cert_pem.bytes())


@dataclass
class H3Reply:
    status: int = 0
    headers: List[Tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: List[Tuple[bytes, bytes]] = field(default_factory=list)
    reset: Optional[int] = None

    def header(self, name: bytes) -> Optional[bytes]:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class AioquicH3Client(QuicConnectionProtocol):
    """aioquic's HTTP/3 client side: one request per stream, answers collected whole."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self._replies: Dict[int, H3Reply] = {}
        self._waiters: Dict[int, asyncio.Future[H3Reply]] = {}

    async def request(
        self,
        method: bytes,
        path: bytes,
        *,
        headers: Any = (),
        body: Optional[bytes] = None,
        authority: bytes = b"localhost",
    ) -> H3Reply:
        sid = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path),
            *headers,
        ]
        self.http.send_headers(sid, fields, end_stream=body is None)
        if body is not None:
            self.http.send_data(sid, body, end_stream=True)
        fut = self._loop.create_future()
        self._waiters[sid] = fut
        self._replies[sid] = H3Reply()
        self.transmit()
        return await fut

    def quic_event_received(self, event: Any) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self._waiters:
            reply = self._replies.pop(event.stream_id)
            reply.reset = event.error_code
            self._waiters.pop(event.stream_id).set_result(reply)
            return
        for ev in self.http.handle_event(event):
            reply = self._replies.get(ev.stream_id)
            if reply is None:
                continue
            if isinstance(ev, HeadersReceived):
                if reply.status:
                    reply.trailers = list(ev.headers)
                else:
                    for k, v in ev.headers:
                        if k == b":status":
                            reply.status = int(v)
                        else:
                            reply.headers.append((k, v))
            elif isinstance(ev, DataReceived):
                reply.body += ev.data
            if getattr(ev, "stream_ended", False):
                del self._replies[ev.stream_id]
                self._waiters.pop(ev.stream_id).set_result(reply)


@contextlib.asynccontextmanager
async def aioquic_client(
    host: str, port: int, ca_pem: bytes
) -> AsyncIterator[AioquicH3Client]:
    config = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN))
    config.load_verify_locations(cadata=ca_pem)
    config.server_name = "localhost"
    async with connect(host, port, configuration=config, create_protocol=AioquicH3Client) as c:
        yield c  # type: ignore[misc]


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, client_addr: Any) -> None:
        self.relay = relay
        self.client_addr = client_addr
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        relay = self.relay
        relay.seen_down += 1
        if relay.every and relay.seen_down % relay.every == 0:
            relay.dropped_down += 1
            return
        relay.front.sendto(data, self.client_addr)


class LossyRelay(asyncio.DatagramProtocol):
    """UDP relay to ``upstream`` that drops every ``every``-th datagram in each direction
    (client to server, and server to client)."""

    def __init__(self, upstream: Tuple[str, int], every: int) -> None:
        self.upstream = upstream
        self.every = every
        self.front: Any = None
        self.peers: Dict[Any, _Upstream] = {}
        self.pending: Dict[Any, List[bytes]] = {}
        self.seen_up = self.seen_down = self.dropped_up = self.dropped_down = 0
        self.tasks: List[asyncio.Task[Any]] = []

    @classmethod
    async def start(cls, upstream: Tuple[str, int], every: int) -> LossyRelay:
        loop = asyncio.get_running_loop()
        relay = cls(upstream, every)
        await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
        return relay

    @property
    def address(self) -> Tuple[str, int]:
        return self.front.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    def connection_made(self, transport: Any) -> None:
        self.front = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen_up += 1
        if self.every and self.seen_up % self.every == 0:
            self.dropped_up += 1
            return
        peer = self.peers.get(addr)
        if peer is not None and peer.transport is not None:
            peer.transport.sendto(data)
            return
        if addr in self.pending:
            self.pending[addr].append(data)
            return
        self.pending[addr] = [data]
        self.tasks.append(asyncio.get_running_loop().create_task(self._open(addr)))

    async def _open(self, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, addr), remote_addr=self.upstream
        )
        self.peers[addr] = up
        for data in self.pending.pop(addr, []):
            up.transport.sendto(data)

    def close(self) -> None:
        for peer in self.peers.values():
            if peer.transport is not None:
                peer.transport.close()
        if self.front is not None:
            self.front.close()

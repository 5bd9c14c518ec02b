"""H3Client checked with an independent peer: a server built on aioquic's own asyncio
``serve`` and ``H3Connection`` (a tiny HTTP/3 app), then against H3Server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List

import pytest
from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from tests.http3._h3_support import BACKENDS, Certs, make_certs

from nbio.engine import Engine
from nbio.errors import ConnectionClosed, DeadlineExceeded
from nbio.http.client import ClientResponse
from nbio.http.server import Response, StreamingResponse
from nbio.http3 import H3Client, H3Server


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


class TinyH3App(QuicConnectionProtocol):
    """aioquic server side: echoes method, path, headers and body; ``/slow`` never answers;
    ``/trailers`` sends trailers; ``/big`` sends 300 kB."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.requests: Dict[int, Dict[str, Any]] = {}

    def quic_event_received(self, event: Any) -> None:
        for ev in self.http.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.requests[ev.stream_id] = {"headers": ev.headers, "body": b""}
            elif isinstance(ev, DataReceived):
                self.requests[ev.stream_id]["body"] += ev.data
            if getattr(ev, "stream_ended", False):
                self.answer(ev.stream_id, self.requests.pop(ev.stream_id))

    def answer(self, sid: int, req: Dict[str, Any]) -> None:
        h = dict(req["headers"])
        path = h[b":path"]
        if path == b"/slow":
            return
        if path == b"/big":
            body = b"b" * 300_000
        else:
            seen = b",".join(k for k, _ in req["headers"] if not k.startswith(b":"))
            body = b"%s %s %s [%s] %s" % (h[b":method"], path, h[b":authority"], seen,
                                          req["body"])
        self.http.send_headers(sid, [(b":status", b"200"), (b"x-server", b"aioquic"),
                                     (b"content-type", b"text/plain; charset=utf-8")])
        self.http.send_data(sid, body, end_stream=path != b"/trailers")
        if path == b"/trailers":
            self.http.send_headers(sid, [(b"x-trailer", b"yes")], end_stream=True)
        self.transmit()


@contextlib.asynccontextmanager
async def aioquic_server(certs: Certs) -> AsyncIterator[int]:
    config = QuicConfiguration(is_client=False, alpn_protocols=list(H3_ALPN))
    config.load_cert_chain(certs.certfile, certs.keyfile)
    server = await serve("127.0.0.1", 0, configuration=config, create_protocol=TinyH3App)
    try:
        yield server._transport.get_extra_info("sockname")[1]
    finally:
        server.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_requests_against_aioquic_server(certs: Certs, backend: str) -> None:
    async with aioquic_server(certs) as port, Engine(backend=backend) as engine:
        async with H3Client(cadata=certs.ca_pem, engine=engine,
                            headers={"user-agent": "nbio"}) as client:
            base = f"https://localhost:{port}"
            resp = await client.get(base + "/a?b=1")
            assert isinstance(resp, ClientResponse)
            assert (resp.status, resp.http_version) == (200, "3")
            assert resp.header("x-server") == "aioquic"
            assert resp.text() == f"GET /a?b=1 localhost:{port} [user-agent] "
            posted = await client.post(base + "/p", json={"k": 1})
            assert posted.text() == (f"POST /p localhost:{port} "
                                     '[user-agent,content-type,content-length] {"k":1}')
            trailers = await client.get(base + "/trailers")
            assert trailers.trailers == ((b"x-trailer", b"yes"),)
            big = await client.get(base + "/big")
            assert big.content == b"b" * 300_000
            many = await asyncio.gather(*[client.get(f"{base}/{i}") for i in range(20)])
            assert [r.text().split()[1] for r in many] == [f"/{i}" for i in range(20)]
            assert client.connections_opened == 1  # one QUIC connection, many streams


async def test_streamed_body_and_read_timeout(certs: Certs) -> None:
    async def chunks() -> Any:
        for i in range(3):
            yield b"c%d" % i

    async with aioquic_server(certs) as port, Engine() as engine:
        async with H3Client(cadata=certs.ca_pem, engine=engine) as client:
            base = f"https://localhost:{port}"
            resp = await client.put(base + "/s", body=chunks())
            assert resp.text().endswith(b"c0c1c2".decode())
            with pytest.raises(DeadlineExceeded) as info:
                await client.get(base + "/slow", read_timeout=0.2)
            assert info.value.kind == "read"
            with pytest.raises(DeadlineExceeded):
                await client.get(base + "/slow", timeout=0.2)
            assert (await client.get(base + "/after")).status == 200


async def test_certificate_is_verified(certs: Certs) -> None:
    async with aioquic_server(certs) as port, Engine() as engine:
        async with H3Client(engine=engine, connect_timeout=2) as client:  # system CAs only
            with pytest.raises((ConnectionClosed, DeadlineExceeded)):
                await client.get(f"https://localhost:{port}/")
        async with H3Client(engine=engine, verify=False) as client:
            assert (await client.get(f"https://localhost:{port}/")).status == 200


async def test_not_https_is_refused() -> None:
    async with H3Client() as client:
        with pytest.raises(ValueError):
            await client.get("http://localhost/")


# -- against our own server --------------------------------------------------------------------


async def test_streaming_response_and_early_close(certs: Certs) -> None:
    gate = asyncio.Event()
    cancelled: List[bool] = []

    async def app(req: Any) -> Any:
        if req.path == b"/forever":
            async def endless() -> Any:
                try:
                    yield b"first"
                    await gate.wait()
                    yield b"never"
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise
            return StreamingResponse(endless())
        body = await req.read()
        return Response(b"%s:%d" % (req.http_version, len(body)))

    async with Engine() as engine:
        server = await H3Server.start(app, certfile=certs.certfile, keyfile=certs.keyfile,
                                      engine=engine)
        base = f"https://127.0.0.1:{server.address[1]}"
        try:
            async with H3Client(cadata=certs.ca_pem, engine=engine) as client:
                resp = await client.get(base + "/forever", stream=True)
                it = resp.iter_bytes()
                assert await it.__anext__() == b"first"
                await it.aclose()  # abandons the stream: H3_REQUEST_CANCELLED
                for _ in range(200):
                    if cancelled:
                        break
                    await asyncio.sleep(0.01)
                assert cancelled == [True]
                ok = await client.post(base + "/", body=b"x" * 200_000)
                assert ok.text() == "3:200000"
        finally:
            server.close()
            await server.wait_closed()

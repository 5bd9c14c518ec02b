"""wss://: our server and client over TLS, against the websockets library both ways."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trustme
import websockets

from nbio.engine import BACKENDS, Engine
from nbio.ws import connect, serve


@pytest.fixture(scope="module")
def contexts() -> Any:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    server.set_alpn_protocols(["http/1.1"])
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("backend", BACKENDS)
async def test_wss_between_our_server_and_our_client(backend: str, contexts: Any) -> None:
    server_ctx, client_ctx = contexts

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    engine = Engine(backend=backend)
    async with serve(echo, "127.0.0.1", 0, engine=engine, ssl=server_ctx) as server:
        port = server.port
        async with connect(f"wss://localhost:{port}/", ssl=client_ctx, engine=engine) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"
            await ws.send(b"\x00" * 100_000)
            assert await ws.recv() == b"\x00" * 100_000
    await engine.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_websockets_client_against_our_wss_server(backend: str, contexts: Any) -> None:
    server_ctx, client_ctx = contexts

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    engine = Engine(backend=backend)
    async with serve(echo, "127.0.0.1", 0, engine=engine, ssl=server_ctx) as server:
        port = server.port
        async with websockets.connect(f"wss://localhost:{port}/", ssl=client_ctx) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
    await engine.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_our_client_against_websockets_wss_server(backend: str, contexts: Any) -> None:
    server_ctx, client_ctx = contexts

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with websockets.serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        engine = Engine(backend=backend)
        async with connect(f"wss://localhost:{port}/", ssl=client_ctx, engine=engine) as ws:
            await ws.send(b"bytes")
            assert await ws.recv() == b"bytes"
        await engine.close()


async def test_wss_verifies_certificates_by_default(contexts: Any) -> None:
    server_ctx, _ = contexts

    async def echo(ws: Any) -> None:
        pass

    engine = Engine()
    async with serve(echo, "127.0.0.1", 0, engine=engine, ssl=server_ctx) as server:
        port = server.port
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(f"wss://localhost:{port}/", engine=engine)
    await engine.close()

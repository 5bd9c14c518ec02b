"""RPC over TLS: our server and client, both engine backends."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
import trustme

from nbio.engine import BACKENDS, Engine
from nbio.rpc import Client, Router, Server


@pytest.fixture(scope="module")
def contexts() -> Any:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return server, client


@pytest.mark.parametrize("backend", BACKENDS)
async def test_call_and_notify_over_tls(backend: str, contexts: Any) -> None:
    server_ctx, client_ctx = contexts
    engine = Engine(backend=backend)
    router = Router()
    router.handle("/echo", lambda ctx: ctx.bind(str))
    server = Server(router, engine=engine)
    _host, port = await server.listen("127.0.0.1", 0, ssl=server_ctx)
    client = Client("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost", engine=engine)
    await client.connect()
    assert await client.call("/echo", "hello over tls", timeout=5, as_type=str) == "hello over tls"
    big = "x" * 200_000
    assert await client.call("/echo", big, timeout=5, as_type=str) == big
    await client.close()
    await server.shutdown()
    await engine.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_tls_client_refuses_an_untrusted_server(backend: str, contexts: Any) -> None:
    server_ctx, _ = contexts
    engine = Engine(backend=backend)
    server = Server(Router(), engine=engine)
    _, port = await server.listen("127.0.0.1", 0, ssl=server_ctx)
    client = Client("127.0.0.1", port, ssl=True, server_hostname="localhost", engine=engine)
    with pytest.raises(ssl.SSLCertVerificationError):
        await client.connect()
    await server.shutdown()
    await engine.close()

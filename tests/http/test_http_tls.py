"""https:// on the HTTP layer: our server against curl, our client against an independent
TLS server (aiohttp on asyncio's TLS transport), the ASGI scheme, on both engine backends."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, List

import pytest
import trustme
from aiohttp import web

from nbio.engine import BACKENDS, Engine, TLSConn
from nbio.http import HttpClient, HttpServer, Response
from nbio.http.asgi import AsgiServer

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@pytest.fixture(scope="module")
def ca_pem(ca: trustme.CA, tmp_path_factory: Any) -> str:
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def hello(request: Any) -> Response:
    conn = request.conn
    alpn = conn.selected_alpn_protocol() if isinstance(conn, TLSConn) else None
    return Response(b"hello %s alpn=%s" % (request.path, str(alpn).encode()))


async def curl(*args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "20", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out


# -- our server, curl as the client -----------------------------------------------------------


async def test_curl_against_https_server(backend: str, server_ctx: ssl.SSLContext,
                                         ca_pem: str) -> None:
    async with Engine(backend=backend) as engine:
        server = await HttpServer.start(hello, engine=engine, ssl=server_ctx, http2=False)
        port = server.address[1]
        # two requests on one connection (keep-alive through TLS); ALPN picks http/1.1
        # although this curl also offers h2
        out = await curl("--cacert", ca_pem, "-w", " v=%{http_version}\n",
                         f"https://localhost:{port}/a", f"https://localhost:{port}/b")
        assert out == b"hello /a alpn=http/1.1 v=1.1\nhello /b alpn=http/1.1 v=1.1\n"
        server.close()
        await server.wait_closed()


async def test_curl_rejects_untrusted_server(backend: str, server_ctx: ssl.SSLContext,
                                             ca_pem: str, tmp_path: Any) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with Engine(backend=backend) as engine:
        server = await HttpServer.start(hello, engine=engine, ssl=server_ctx, http2=False)
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "20", "--cacert", str(other),
            f"https://localhost:{server.address[1]}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        await proc.communicate()
        assert proc.returncode == 60  # peer certificate cannot be authenticated
        # only that connection failed: a client that trusts the CA gets through
        out = await curl("--cacert", ca_pem, f"https://localhost:{server.address[1]}/ok")
        assert out == b"hello /ok alpn=http/1.1"
        server.close()
        await server.wait_closed()


# -- our client, an independent https server ---------------------------------------------------


async def aiohttp_server(ctx: ssl.SSLContext, seen: List[Any]) -> web.AppRunner:
    async def handle(request: web.Request) -> web.Response:
        sslobj = request.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        seen.append((sslobj.selected_alpn_protocol(), sslobj.server_hostname,
                     request.transport))
        body = await request.read()
        return web.Response(body=b"%s %s %d" % (request.method.encode(),
                                                 request.path.encode(), len(body)))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return runner


def _port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]  # type: ignore[no-any-return]


async def test_client_against_aiohttp_https(backend: str, server_ctx: ssl.SSLContext,
                                            client_ctx: ssl.SSLContext) -> None:
    seen: List[Any] = []
    runner = await aiohttp_server(server_ctx, seen)
    try:
        async with Engine(backend=backend) as engine:
            async with HttpClient(engine=engine, ssl=client_ctx) as client:
                base = f"https://localhost:{_port(runner)}"
                r1 = await client.get(base + "/x?y=1")
                r2 = await client.post(base + "/up", body=b"z" * 100_000)
                assert (r1.status, r1.content) == (200, b"GET /x 0")
                assert (r2.status, r2.content) == (200, b"POST /up 100000")
                assert client.connections_opened == 1  # kept alive through TLS
        assert [s[0] for s in seen] == ["http/1.1", "http/1.1"]
        assert seen[0][2] is seen[1][2]
    finally:
        await runner.cleanup()


async def test_client_verifies_by_default(backend: str, server_ctx: ssl.SSLContext) -> None:
    runner = await aiohttp_server(server_ctx, [])
    try:
        async with Engine(backend=backend) as engine:
            async with HttpClient(engine=engine) as client:  # the system CAs: not ours
                with pytest.raises(ssl.SSLCertVerificationError):
                    await client.get(f"https://localhost:{_port(runner)}/")
    finally:
        await runner.cleanup()


async def test_client_checks_the_host_name(backend: str, ca: trustme.CA,
                                           client_ctx: ssl.SSLContext) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("example.test").configure_cert(ctx)
    runner = await aiohttp_server(ctx, [])
    try:
        async with Engine(backend=backend) as engine:
            async with HttpClient(engine=engine, ssl=client_ctx) as client:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await client.get(f"https://localhost:{_port(runner)}/")
    finally:
        await runner.cleanup()


async def test_client_pools_per_scheme(backend: str, server_ctx: ssl.SSLContext,
                                       client_ctx: ssl.SSLContext) -> None:
    async with Engine(backend=backend) as engine:
        tls = await HttpServer.start(hello, engine=engine, ssl=server_ctx, http2=False)
        plain = await HttpServer.start(hello, engine=engine)
        async with HttpClient(engine=engine, ssl=client_ctx) as client:
            a = await client.get(f"https://127.0.0.1:{tls.address[1]}/s")
            b = await client.get(f"http://127.0.0.1:{plain.address[1]}/p")
            c = await client.get(f"https://127.0.0.1:{tls.address[1]}/s2")
            assert a.content == b"hello /s alpn=http/1.1"
            assert b.content == b"hello /p alpn=None"
            assert c.content == b"hello /s2 alpn=http/1.1"
            assert client.connections_opened == 2
            with pytest.raises(ValueError, match="scheme"):
                await client.get(f"ftp://127.0.0.1:{tls.address[1]}/")
        for s in (tls, plain):
            s.close()
            await s.wait_closed()


# -- ASGI ----------------------------------------------------------------------------------------


async def test_asgi_scheme(backend: str, server_ctx: ssl.SSLContext,
                           client_ctx: ssl.SSLContext) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["scheme"].encode()})

    async with Engine(backend=backend) as engine:
        tls = await AsgiServer.start(app, engine=engine, ssl=server_ctx, lifespan="off", http2=False)
        plain = await AsgiServer.start(app, engine=engine, lifespan="off")
        async with HttpClient(engine=engine, ssl=client_ctx) as client:
            assert (await client.get(f"https://localhost:{tls.address[1]}/")).content == b"https"
            assert (await client.get(f"http://localhost:{plain.address[1]}/")).content == b"http"
        for s in (tls, plain):
            s.close()
            await s.wait_closed()

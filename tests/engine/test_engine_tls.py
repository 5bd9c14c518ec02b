"""TLS over the engine (MemoryBIO above either backend), against independent peers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import ssl
import tempfile
from typing import Any

import pytest
import trustme
from tests.engine._engine_support import Recorder, make_engine

from nbio.engine import Handler, TLSConn
from nbio.errors import ClosedByPeer, DeadlineExceeded

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


async def test_tls_echo_between_engine_server_and_client(
    engine: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    client_ctx.set_alpn_protocols(["http/1.1"])
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0, ssl=server_ctx)
        cli = Recorder()
        conn = await eng.dial(cli, "127.0.0.1", lst.address[1], ssl=client_ctx,
                              server_hostname="localhost", timeout=5)
        assert isinstance(conn, TLSConn)
        assert cli.opened == [conn]
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.selected_alpn_protocol() == "http/1.1"
        assert conn.getpeercert()["subjectAltName"]
        conn.write(b"secret ")
        conn.writelines([b"over ", memoryview(b"tls")])
        await cli.wait_for(lambda: bytes(cli.data) == b"secret over tls")
        await srv.wait_for(lambda: srv.opened)
        server_side = srv.opened[0]
        assert isinstance(server_side, TLSConn)
        assert server_side.selected_alpn_protocol() == "http/1.1"
        assert server_side.server_hostname == "localhost"  # SNI seen by the server
        conn.close()  # close_notify
        await srv.wait_for(lambda: srv.closed)
        assert isinstance(srv.closed[0][1], ClosedByPeer)
        await cli.wait_for(lambda: cli.closed)


async def test_stdlib_tls_client_against_our_server(
    engine: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0, ssl=server_ctx)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", lst.address[1], ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"hello from asyncio's TLS")
        assert await reader.readexactly(24) == b"hello from asyncio's TLS"
        # our close sends close_notify: the stdlib client sees a clean EOF
        srv.opened[0].close()
        assert await reader.read() == b""
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


async def test_our_client_against_stdlib_tls_server(
    engine: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(5)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        async with make_engine(engine) as eng:
            cli = Recorder()
            conn = await eng.dial(cli, "127.0.0.1", port, ssl=client_ctx,
                                  server_hostname="localhost", timeout=5)
            conn.write(b"hello")
            await cli.wait_for(lambda: bytes(cli.data) == b"HELLO")
            await cli.wait_for(lambda: cli.closed)
    finally:
        server.close()
        await server.wait_closed()


async def test_openssl_s_client_against_our_server(
    engine: str, server_ctx: ssl.SSLContext, ca: trustme.CA
) -> None:
    async with make_engine(engine) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0, ssl=server_ctx)
        with tempfile.NamedTemporaryFile(suffix=".pem") as cafile:
            ca.cert_pem.write_to_path(cafile.name)
            proc = await asyncio.create_subprocess_exec(
                "openssl", "s_client", "-connect", f"127.0.0.1:{lst.address[1]}",
                "-servername", "localhost", "-CAfile", cafile.name, "-verify_return_error",
                "-quiet", "-alpn", "http/1.1",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"ping through openssl\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line == b"ping through openssl\n"
            assert srv.opened[0].selected_alpn_protocol() == "http/1.1"
            # -quiet implies -ign_eof: s_client leaves when the server sends close_notify
            srv.opened[0].close()
            assert await asyncio.wait_for(proc.stdout.read(), 10) == b""
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 10)


async def test_large_transfer_with_backpressure(
    engine: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    total = 32 * MiB
    chunk = os.urandom(256 * 1024)
    done = asyncio.get_running_loop().create_future()

    class Producer(Handler):
        def on_open(self, conn: Any) -> None:
            asyncio.get_running_loop().create_task(self.produce(conn))

        async def produce(self, conn: Any) -> None:
            peak = 0
            for _ in range(total // len(chunk)):
                conn.write(chunk)
                peak = max(peak, conn.buffered)
                await conn.drain()
            conn.close()
            done.set_result(peak)

        def on_data(self, conn: Any, data: Any) -> None:
            pass

    async with make_engine(engine, write_high_water=1 * MiB) as eng:
        lst = eng.listen(Producer(), "127.0.0.1", 0, ssl=server_ctx)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", lst.address[1], ssl=client_ctx, server_hostname="localhost"
        )
        digest = hashlib.sha256()
        received = 0
        while received < total:
            data = await reader.read(256 * 1024)
            assert data, "early EOF"
            received += len(data)
            digest.update(data)
        assert digest.digest() == hashlib.sha256(chunk * (total // len(chunk))).digest()
        peak = await done
        assert peak <= 1 * MiB + len(chunk) + 64 * 1024  # TLS record overhead
        writer.close()
        try:
            await writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


async def test_stalled_handshake_times_out_alone(
    engine: str, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="nbio.engine.tls")
    async with make_engine(engine, timer_resolution=0.02) as eng:
        srv = Recorder(echo=True)
        lst = eng.listen(srv, "127.0.0.1", 0, ssl=server_ctx, ssl_handshake_timeout=0.2)
        staller = socket.create_connection(lst.address)  # sends nothing
        garbage = socket.create_connection(lst.address)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port
        good = await eng.dial(Recorder(), "127.0.0.1", lst.address[1], ssl=client_ctx,
                              server_hostname="localhost", timeout=5)
        loop = asyncio.get_running_loop()
        for s in (staller, garbage):
            s.setblocking(False)
            deadline = loop.time() + 5
            while True:  # the server closes both: EOF (or a reset after the alert)
                try:
                    if s.recv(4096) == b"":
                        break
                except BlockingIOError:
                    assert loop.time() < deadline, "server did not close a bad TLS client"
                    await asyncio.sleep(0.01)
                except ConnectionResetError:
                    break
            s.close()
        assert srv.closed == []  # the user's handler never saw the bad connections
        good.write(b"still fine")
        await srv.wait_for(lambda: bytes(srv.data) == b"still fine")
        assert "TLS handshake from" in caplog.text and "HTTP_REQUEST" in caplog.text.upper()


async def test_handshake_timeout_on_dial(engine: str, client_ctx: ssl.SSLContext) -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)  # accepts (kernel) but never speaks TLS
    try:
        async with make_engine(engine, timer_resolution=0.02) as eng:
            with pytest.raises(DeadlineExceeded, match="tls handshake"):
                await eng.dial(Recorder(), *lsock.getsockname(), ssl=client_ctx,
                               server_hostname="localhost", ssl_handshake_timeout=0.2, timeout=5)
    finally:
        lsock.close()


async def test_certificate_verification_is_on_by_default(
    engine: str, server_ctx: ssl.SSLContext
) -> None:
    async with make_engine(engine) as eng:
        lst = eng.listen(Recorder(), "127.0.0.1", 0, ssl=server_ctx)
        with pytest.raises(ssl.SSLCertVerificationError):
            # ssl=True: the system trust store, which does not know our test CA
            await eng.dial(Recorder(), "127.0.0.1", lst.address[1], ssl=True,
                           server_hostname="localhost", timeout=5)


async def test_tls12_session_resumption(engine: str, ca: trustme.CA) -> None:
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(sctx)
    cctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(cctx)
    cctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with make_engine(engine) as eng:
        lst = eng.listen(Recorder(), "127.0.0.1", 0, ssl=sctx)
        first = await eng.dial(Recorder(), "127.0.0.1", lst.address[1], ssl=cctx,
                               server_hostname="localhost", timeout=5)
        assert not first.session_reused
        session = first.tls_session
        assert session is not None
        first.close()
        second = await eng.dial(Recorder(), "127.0.0.1", lst.address[1], ssl=cctx,
                                server_hostname="localhost", ssl_session=session, timeout=5)
        assert second.session_reused

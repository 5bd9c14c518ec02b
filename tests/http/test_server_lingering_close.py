"""Lingering close of HTTP/1.1 connections (RFC 9112 section 9.6; nbio.http._linger): a client
still sending when the server answers and closes gets the whole response and then EOF, not
an RST; the lingering is bounded by ``linger_timeout`` and ``linger_max_bytes``. Both engine
backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any, Tuple

import pytest
from tests._programs import require
from tests._waiting import until
from tests.http._server_support import BACKENDS, RawClient, serving

from nbio.http import HttpRequest, Response

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

BIG = 50_000_000  # announced, never sent whole


def ok(req: HttpRequest) -> Response:
    return Response(b"ok:" + req.body)


def early(req: HttpRequest) -> Response:
    """Answers at once, without reading the (streamed) request body."""
    return Response(b"early")


def split_response(raw: bytes) -> Tuple[int, bytes, bytes]:
    """(status, head, body) of one Content-Length response; the body must be complete."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status = int(head.split(b" ", 2)[1])
    length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
              if line.lower().startswith(b"content-length:")]
    assert length and len(body) == length[0], raw
    return status, head, body


async def upload_until_eof(addr: Any, head: bytes) -> bytes:
    """Send ``head``, then body bytes in a loop while reading; return everything read up to
    EOF. A connection reset while reading fails the test (ConnectionResetError)."""
    reader, writer = await asyncio.open_connection(*addr)
    done = asyncio.Event()

    async def pump() -> None:
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            while not done.is_set():
                writer.write(chunk)
                await writer.drain()

    writer.write(head)
    sender = asyncio.create_task(pump())
    received = bytearray()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            if not data:
                break
            received += data
    finally:
        done.set()
        await sender
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return bytes(received)


# -- RFC 9112 9.6: the response survives a client that is still sending ------------------------


async def test_413_reaches_a_client_still_sending_its_body(backend: str) -> None:
    # the byte bound is out of the way here: the client stops sending when it sees EOF
    async with serving(ok, backend, max_body_size=1000, linger_max_bytes=10 * BIG) as (
            server, addr):
        out = await upload_until_eof(
            addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BIG)
        status, head, _ = split_response(out)
        assert status == 413 and b"Connection: close" in head
        await until(lambda: not server.sessions)


async def test_early_close_response_reaches_a_client_still_sending(backend: str) -> None:
    """The app answers before the body is read and the request asked for the close."""
    async with serving(early, backend, stream_request_body=True, max_body_size=None,
                       linger_max_bytes=10 * BIG) as (server, addr):
        out = await upload_until_eof(
            addr, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % BIG)
        status, _, body = split_response(out)
        assert (status, body) == (200, b"early")
        await until(lambda: not server.sessions)


async def test_curl_upload_gets_a_clean_413(backend: str, tmp_path: Any) -> None:
    """curl (no Expect: 100-continue) uploading 8 MiB against a 1000-byte limit. An interop
    check: curl reads the 413 as it arrives, so it got it without the lingering close too."""
    curl = require("curl")
    path = tmp_path / "body.bin"
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 16) * 128)  # 8 MiB
    async with serving(ok, backend, max_body_size=1000, linger_max_bytes=10 * BIG) as (
            _, addr):
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "-H", "Expect:", "--data-binary", f"@{path}",
            "-o", "/dev/null", "-w", "%{http_code}", f"http://{addr[0]}:{addr[1]}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out, err) == (0, b"413", b"")


# -- the bounds ----------------------------------------------------------------------------------


async def lingering_413(server: Any, addr: Any) -> Tuple[RawClient, Any]:
    """A connection answered 413 and lingering (response and EOF read); returns the client
    and the server's connection."""
    client = await RawClient.connect(addr)
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    status, _, _ = split_response(await client.read_all())
    assert status == 413
    await until(lambda: len(server.lingering.received) == 1)
    conn = next(iter(server.lingering.received))
    await until(lambda: server.lingering.received.get(conn) == 0)  # half-closed
    return client, conn


async def lingering_ended(server: Any, conn: Any) -> None:
    """Wait until the server has closed ``conn`` and forgotten its session."""
    await until(lambda: not server.sessions)
    assert conn.closed and not server.lingering.received


async def test_lingering_ends_after_max_bytes(backend: str) -> None:
    async with serving(ok, backend, max_body_size=1000, linger_timeout=30,
                       linger_max_bytes=1000) as (server, addr):
        client, conn = await lingering_413(server, addr)
        try:
            client.send(b"y" * 600)
            await until(lambda: server.lingering.received.get(conn) == 600)
            assert server.sessions and not conn.closed  # under the bound: still reading
            client.send(b"y" * 600)
            await lingering_ended(server, conn)
        finally:
            await client.close()


async def test_lingering_ends_after_timeout(backend: str) -> None:
    async with serving(ok, backend, max_body_size=1000, linger_timeout=0.2) as (server, addr):
        client, conn = await lingering_413(server, addr)
        try:
            # the client neither sends nor closes: the timeout closes the connection
            await lingering_ended(server, conn)
        finally:
            await client.close()


async def test_lingering_ends_when_the_client_closes(backend: str) -> None:
    async with serving(ok, backend, max_body_size=1000, linger_timeout=30) as (server, addr):
        client, conn = await lingering_413(server, addr)
        await client.close()
        await lingering_ended(server, conn)


async def test_fully_read_close_request_is_closed_without_lingering(backend: str) -> None:
    """Connection: close on a request read whole: nothing more can come; a plain close."""
    async with serving(ok, backend, linger_timeout=30) as (server, addr):
        client = await RawClient.connect(addr)
        try:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, body = split_response(await client.read_all())
            assert (status, body) == (200, b"ok:")
            # the client keeps its socket open: the server is gone anyway
            await until(lambda: not server.sessions)
            assert not server.lingering.received
        finally:
            await client.close()


async def test_lingering_socket_is_half_closed(backend: str) -> None:
    """The server shuts its write side only: the client reads EOF and may still write."""
    async with serving(ok, backend, max_body_size=1000, linger_timeout=30) as (server, addr):
        client, conn = await lingering_413(server, addr)
        try:
            sock = client.writer.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            client.send(b"z" * 100)
            await until(lambda: server.lingering.received.get(conn) == 100)
        finally:
            await client.close()
        await until(lambda: not server.sessions)

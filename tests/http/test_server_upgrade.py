"""Routing of Upgrade requests to upgrade handlers (the contract with nbio.ws)."""

from __future__ import annotations

from typing import Any, List

import pytest
from tests.http._server_support import BACKENDS, RawClient, serving

from nbio.engine import Handler
from nbio.http import HttpRequest, HttpServer, Response

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")


class Echo(Handler):
    def on_data(self, conn: Any, data: Any) -> None:
        conn.write(b"echo:" + bytes(data))


class Upgrader:
    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.seen: List[Any] = []

    def upgrade(self, conn: Any, request: HttpRequest, leftover: bytes) -> bool:
        self.seen.append((request.path, request.get_header("upgrade"), leftover))
        if not self.accept:
            return False
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                   b"Connection: Upgrade\r\n\r\n")
        conn.session = "mine"
        conn.set_handler(Echo())
        if leftover:
            conn.write(b"early:" + leftover)
        return True


def app(req: HttpRequest) -> Response:
    if req.upgrade is not None:
        return Response(b"no upgrade here", status=426, headers=[("upgrade", "echo")])
    return Response(b"plain " + req.path)


async def test_upgrade_taken_over_with_leftover(backend: str) -> None:
    up = Upgrader(True)
    async with serving(app, backend, upgrades={"/ws": up}) as (server, addr):
        client = await RawClient.connect(addr)
        client.send(UPGRADE + b"first-bytes")
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert await client.reader.readexactly(17) == b"early:first-bytes"
        client.send(b"more")
        assert await client.reader.readexactly(9) == b"echo:more"
        assert not server.sessions  # the HTTP server forgot the connection
        await client.close()
    assert up.seen == [(b"/ws", b"echo", b"first-bytes")]


async def test_upgrade_declined_is_answered_then_http_goes_on(backend: str) -> None:
    up = Upgrader(False)
    async with serving(app, backend, upgrades={"/ws": up}) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(UPGRADE + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, _ = await client.response()
        assert head.status_code == 426 and body == b"no upgrade here"
        head, body, _ = await client.response()
        assert body == b"plain /next"
        await client.close()
    assert len(up.seen) == 1


async def test_upgrade_to_unrouted_path_goes_to_app(backend: str) -> None:
    up = Upgrader(True)
    async with serving(app, backend, upgrades={"/ws": up}) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(UPGRADE.replace(b"/ws", b"/other"))
        head, _, _ = await client.response()
        assert head.status_code == 426
        client.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.response())[1] == b"plain /after"
        await client.close()
    assert up.seen == []


async def test_wildcard_route(backend: str) -> None:
    up = Upgrader(True)
    server = HttpServer(app, upgrades={"*": up})
    async with serving(app, backend, server=server) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(UPGRADE.replace(b"/ws", b"/anything?x=1"))
        assert (await client.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await client.close()
    assert up.seen[0][0] == b"/anything"


async def test_upgrade_with_body_declined_closes(backend: str) -> None:
    async with serving(app, backend, upgrades={"/ws": Upgrader(False)}) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(UPGRADE.replace(b"\r\n\r\n", b"\r\nContent-Length: 3\r\n\r\nabc"))
        out = await client.read_all()
        await client.close()
    assert out.startswith(b"HTTP/1.1 426") and b"Connection: close" in out

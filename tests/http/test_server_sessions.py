"""The compiled per-connection shortcut and the general path answer alike; a Python
session subclass that overrides ``fast_path`` is honoured."""

from __future__ import annotations

from typing import Any, List

import pytest
from _server_support import BACKENDS, RawClient, serving

from nbio.http import HttpServer, Response
from nbio.http.server import _Session

PIPELINED = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))


class GeneralOnly(_Session):
    """Every request the general way (as a handler returning a non-Response would)."""

    __slots__ = ()
    calls: List[bytes] = []

    def fast_path(self, head: Any, eom: Any) -> bool:
        GeneralOnly.calls.append(head.path)
        return False


class GeneralServer(HttpServer):
    session_class = GeneralOnly


def echo_path(request: Any) -> Response:
    return Response(b"path " + request.path, headers=[(b"x-n", b"1")])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("server_class", [HttpServer, GeneralServer])
async def test_shortcut_and_general_path_answer_alike(backend: str, server_class: Any) -> None:
    GeneralOnly.calls = []
    async with serving(None, backend, server=server_class(echo_path)) as (_, addr):
        client = await RawClient.connect(addr)
        client.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body, _ = await client.response()
        assert (head.status_code, body) == (200, b"path /one")
        assert (b"x-n", b"1") in head.headers
        client.send(PIPELINED)
        for i in range(5):
            head, body, _ = await client.response()
            assert body == b"path /p%d" % i
        await client.close()
    if server_class is GeneralServer:
        assert GeneralOnly.calls[0] == b"/one"   # the override was called, and declined
    else:
        assert GeneralOnly.calls == []

"""The "Hello, World!" HTTP/1.1 servers shared by ``http_hello.py`` and ``servers_tls.py``.

Every server answers each request with ``200 OK``, ``Content-Type: text/plain`` and
:data:`BODY`; ``servers_tls.py`` runs the same servers with TLS.

* :func:`nbio_hello_server` -- ``nbio-native`` (:class:`nbio.http.HttpServer`, sync handler)
  or ``nbio-asgi`` (:class:`nbio.http.asgi.AsgiServer` with :func:`hello_asgi`), for an
  engine to listen with;
* :class:`HelloProtocol` -- ``raw-httptools``: a raw asyncio Protocol with an httptools
  parser writing a prebuilt-style response, the floor for a Python HTTP/1.1 server on uvloop;
* :func:`run_uvicorn` -- uvicorn (httptools, uvloop) serving :func:`hello_asgi`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

BODY = b"Hello, World!"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def hello_asgi(scope: Any, receive: Any, send: Any) -> None:
    """The bare ASGI hello app (``nbio-asgi``, ``uvicorn``)."""
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def nbio_hello_server(asgi: bool) -> Any:
    """The nbio hello server: ``AsgiServer(hello_asgi)`` or ``HttpServer`` with a sync
    handler; listen with ``Engine(backend="native").listen(server, ...)``."""
    from nbio.http import HttpServer, Response
    from nbio.http.asgi import AsgiServer

    if asgi:
        return AsgiServer(hello_asgi, lifespan="off")
    headers = [(b"content-type", b"text/plain")]

    def hello(request: Any) -> Any:
        return Response(BODY, headers=headers)

    return HttpServer(hello)


class HelloProtocol(asyncio.Protocol):
    """``raw-httptools``: an httptools parser; per request a response built from the status
    line, Content-Type, Content-Length and keep-alive handling; 400 and close on bad input."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.error = httptools.HttpParserError
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.error:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        head = [
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ",
            str(len(BODY)).encode(),
            b"\r\n" if keep else b"\r\nConnection: close\r\n",
            b"\r\n",
            BODY,
        ]
        self.transport.write(b"".join(head))
        if not keep:
            self.transport.close()


def run_uvicorn(**config: Any) -> None:
    """Serve :func:`hello_asgi` with uvicorn (httptools, uvloop) on a free 127.0.0.1 port,
    printing ``READY <port>``; ``config`` adds ``uvicorn.Config`` options (TLS files,
    backlog). Returns when uvicorn stops."""
    import socket

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            hello_asgi,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
            **config,
        )
    )
    C.ready(sock.getsockname()[1])
    server.run(sockets=[sock])

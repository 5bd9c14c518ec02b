"""TLS servers for ``bench/tls.py``, one per process, all on uvloop.

    python bench/servers_tls.py --server PHASE:NAME --certdir DIR [--port 0]

``DIR`` holds ``server.pem`` (certificate chain) and ``server.key`` (see ``tls.py``, which
makes them with trustme). Every server uses ``ssl.create_default_context(CLIENT_AUTH)`` with
that chain: TLS 1.3, default ciphers, ALPN ``http/1.1`` (uvicorn builds its own context from
the same files).

* ``wss:NAME`` -- the WebSocket echo servers of ``servers_ws.py`` (``nbio-callback``,
  ``nbio-async``, ``picows``, ``websockets``), unchanged but for ``ssl=`` handed to their
  library's serve function, so they do exactly the work they do in ``ws_echo.py``;
* ``https:NAME`` -- ``http_hello.py``'s "Hello, World!" servers (from ``servers_http.py``)
  over https: ``nbio-native`` (``HttpServer``, sync handler), ``nbio-asgi`` (``AsgiServer``),
  ``uvicorn`` (httptools, uvloop, ``--ssl-certfile`` / ``--ssl-keyfile``) and
  ``raw-httptools-tls`` (the ``raw-httptools`` Protocol on ``loop.create_server(ssl=...)``);
* ``tcp:NAME`` -- engine-level echo over TLS: ``nbio-tls`` (``Engine.listen(handler,
  ssl=ctx)``) and ``uvloop-tls`` (``servers_tcp.py``'s ``EchoProtocol`` on
  ``loop.create_server(ssl=ctx)``, i.e. asyncio's own TLS transport as uvloop implements it).
  Their plain twins are ``servers_tcp.py``'s ``nbio-native`` and ``uvloop-protocol``.

Prints ``READY <port>`` once listening, then serves until SIGTERM or until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import resource
import ssl
import sys
from typing import Any, Callable, Coroutine, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import servers_http as H

WSS_SERVERS = ("nbio-callback", "nbio-async", "picows", "websockets")
HTTPS_SERVERS = ("nbio-native", "nbio-asgi", "uvicorn", "raw-httptools-tls")
TCP_TLS_SERVERS = ("nbio-tls", "uvloop-tls")
SERVERS = (
    [f"wss:{n}" for n in WSS_SERVERS]
    + [f"https:{n}" for n in HTTPS_SERVERS]
    + [f"tcp:{n}" for n in TCP_TLS_SERVERS]
)
BACKLOG = 4096
CERT, KEY, CA = "server.pem", "server.key", "ca.pem"


def server_context(certdir: str) -> ssl.SSLContext:
    """The server context every server here uses."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.path.join(certdir, CERT), os.path.join(certdir, KEY))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_context(certdir: str) -> ssl.SSLContext:
    """What every bench client uses: verify the server against the bench CA."""
    return ssl.create_default_context(cafile=os.path.join(certdir, CA))


def tls_probe(port: int, certdir: str, timeout: float = 10.0) -> str:
    """Complete one verified TLS handshake with ``127.0.0.1:port`` (retrying while the port
    refuses connections, as uvicorn's does until it runs); return "VERSION CIPHER"."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with raw, client_context(certdir).wrap_socket(raw, server_hostname="127.0.0.1") as s:
        cipher = s.cipher()
        return f"{s.version()} {cipher[0] if cipher else '?'}"


# -- wss: servers_ws.py's servers with ssl= -------------------------------------------------


def _hand_ssl(module: Any, attr: str, ctx: ssl.SSLContext) -> None:
    setattr(module, attr, functools.partial(getattr(module, attr), ssl=ctx))


async def serve_wss(name: str, ctx: ssl.SSLContext) -> None:
    import servers_ws

    # servers_ws's starters import their library's serve function when called: give it ssl=.
    if name.startswith("nbio"):
        import nbio.ws

        _hand_ssl(nbio.ws, "serve", ctx)
    elif name == "picows":
        import picows

        _hand_ssl(picows, "ws_create_server", ctx)  # **kwargs go to loop.create_server
    else:
        import logging

        import websockets

        _hand_ssl(websockets, "serve", ctx)
        # ws_echo's picows client ends with send_close() (close code NO_INFO), which websockets
        # rejects and logs as a failed handler, once per connection: noise at teardown.
        logging.getLogger("websockets.server").setLevel(logging.CRITICAL)
    server = await servers_ws.STARTERS[name](C.free_port())  # picows reports it
    C.ready(servers_ws.bound_port(server, name))
    await C.until_stopped()


# -- https -----------------------------------------------------------------------------------


async def serve_nbio_https(asgi: bool, ctx: ssl.SSLContext) -> None:
    await _serve_nbio(H.nbio_hello_server(asgi), ctx)


async def serve_raw_httptools_tls(ctx: ssl.SSLContext) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(H.HelloProtocol, "127.0.0.1", 0, ssl=ctx, backlog=BACKLOG)
    C.ready(server.sockets[0].getsockname()[1])
    await C.until_stopped()


def serve_uvicorn_https(certdir: str) -> None:
    H.run_uvicorn(
        ssl_certfile=os.path.join(certdir, CERT),
        ssl_keyfile=os.path.join(certdir, KEY),
        backlog=BACKLOG,
    )


# -- tcp: engine-level echo over TLS ------------------------------------------------------


async def serve_nbio_tls(ctx: ssl.SSLContext) -> None:
    class Echo:
        def on_data(self, conn: Any, data: Any) -> None:
            conn.write(data)

    await _serve_nbio(Echo(), ctx)


async def serve_uvloop_tls(ctx: ssl.SSLContext) -> None:
    from servers_tcp import EchoProtocol

    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, ssl=ctx, backlog=BACKLOG)
    C.ready(server.sockets[0].getsockname()[1])
    await C.until_stopped()


# -- process ---------------------------------------------------------------------------------


async def _serve_nbio(handler: Any, ctx: ssl.SSLContext) -> None:
    """Listen with ``handler`` over TLS on a native engine until stopped."""
    from nbio.engine import Engine

    engine = Engine(backend="native")
    listener = engine.listen(handler, "127.0.0.1", 0, ssl=ctx, backlog=BACKLOG)
    C.ready(listener.address[1])
    await C.until_stopped()


def serve(server: str, certdir: str) -> None:
    """Run ``PHASE:NAME`` until stopped."""
    import uvloop

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    phase, _, name = server.partition(":")
    if server == "https:uvicorn":
        serve_uvicorn_https(certdir)
        return
    ctx = server_context(certdir)
    mains: Dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "https:nbio-native": lambda: serve_nbio_https(False, ctx),
        "https:nbio-asgi": lambda: serve_nbio_https(True, ctx),
        "https:raw-httptools-tls": lambda: serve_raw_httptools_tls(ctx),
        "tcp:nbio-tls": lambda: serve_nbio_tls(ctx),
        "tcp:uvloop-tls": lambda: serve_uvloop_tls(ctx),
    }
    if phase == "wss":
        uvloop.run(serve_wss(name, ctx))
    else:
        uvloop.run(mains[server]())


def start_tls_server(server: str, certdir: str, cpu: Any, timeout: float = 30.0) -> Any:
    """Start ``servers_tls.py --server PHASE:NAME`` pinned to ``cpu``; return (child, port,
    "VERSION CIPHER" of a first verified handshake)."""
    argv = [sys.executable, os.path.abspath(__file__), "--server", server, "--certdir", certdir]
    # A TLS handshake, not C.wait_port: a bare connect+close makes some servers log errors.
    return C.start_server(
        argv, cpu, server, timeout, lambda port: tls_probe(port, certdir, timeout)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=SERVERS, required=True)
    parser.add_argument("--certdir", required=True)
    args = parser.parse_args()
    serve(args.server, args.certdir)

"""TCP echo servers used by the engine benches (tcp_echo.py, idle_conns.py).

    python bench/servers_tcp.py --server NAME --port P [--host 127.0.0.1]

NAME is one of:

* ``nbio-native``      nbio ``Engine(backend="native")`` on uvloop
* ``nbio-portable``    nbio ``Engine(backend="asyncio")`` on uvloop
* ``uvloop-protocol``  a plain ``asyncio.Protocol`` (data_received -> transport.write) on uvloop
* ``asyncio-protocol`` the same Protocol on the default asyncio event loop

Prints ``READY <port>`` once listening (``--port 0`` picks a free port). Stops on SIGTERM/SIGINT
or when stdin reaches EOF (the bench died).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import _common as C

SERVERS = ("nbio-native", "nbio-portable", "uvloop-protocol", "asyncio-protocol")
BACKLOG = 4096


class EchoProtocol(asyncio.Protocol):
    """The peer: the smallest correct asyncio echo server."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve_protocol(host: str, port: int) -> tuple[int, Callable[[], Awaitable[None]]]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=BACKLOG)
    bound = server.sockets[0].getsockname()[1]

    async def close() -> None:
        server.close()

    return bound, close


def _import_engine() -> Any:
    try:
        import nbio.engine as engine
    except ImportError:
        src = str(Path(__file__).resolve().parents[1] / "src")
        if src in sys.path:
            raise
        sys.path.insert(0, src)
        import nbio.engine as engine
    return engine


async def serve_nbio(
    backend: str, host: str, port: int
) -> tuple[int, Callable[[], Awaitable[None]]]:
    mod = _import_engine()

    class Echo(mod.Handler):  # type: ignore[misc, name-defined]
        def on_open(self, conn: Any) -> None:
            pass

        def on_data(self, conn: Any, data: memoryview) -> None:
            conn.write(data)

        def on_close(self, conn: Any, exc: BaseException | None) -> None:
            pass

    engine = mod.Engine(backend=backend)
    listener = engine.listen(Echo(), host, port, backlog=BACKLOG)
    return int(listener.address[1]), engine.close


async def main(name: str, host: str, port: int) -> None:
    if name == "nbio-native":
        bound, close = await serve_nbio("native", host, port)
    elif name == "nbio-portable":
        bound, close = await serve_nbio("asyncio", host, port)
    else:
        bound, close = await serve_protocol(host, port)
    C.ready(bound)
    await C.until_stopped()
    await close()


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, choices=SERVERS)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    if args.server == "asyncio-protocol":
        asyncio.run(main(args.server, args.host, args.port))
    else:
        import uvloop  # >= 0.19 (the [bench] extra)

        uvloop.run(main(args.server, args.host, args.port))


if __name__ == "__main__":
    cli()

"""WebSocket echo servers for the ws benches, one per process, all on uvloop.

    python bench/servers_ws.py --server NAME [--port 0]

Prints ``READY <port>`` once listening, then serves until killed. Every server echoes each
message back as received (text or binary), without compression and without keepalive
pings, so that they do the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

WS_SERVERS = ("nbio-callback", "nbio-async", "picows", "websockets", "aiohttp")
MAX_SIZE = 16 << 20

# Every starter is ``await starter(port, *, reuse_port=False, backlog=None, max_size=MAX_SIZE)``:
# ``reuse_port`` and ``backlog`` (None: the library's default; aiohttp's is 4096 here) are
# listen options, which
# scale.py sets for its SO_REUSEPORT workers; ``max_size`` caps a message.


def _listen_options(reuse_port: bool, backlog: Optional[int]) -> Dict[str, Any]:
    """``loop.create_server`` keywords for the given listen options (none for defaults)."""
    options: Dict[str, Any] = {}
    if reuse_port:
        options["reuse_port"] = True
    if backlog is not None:
        options["backlog"] = backlog
    return options


async def _nbio_serve(
    handler: Any, port: int, reuse_port: bool, backlog: Optional[int], max_size: int
) -> Any:
    """``nbio.ws.serve`` with the options every nbio server here uses; with listen options,
    on an engine of its own (native backend) that listens with them, else the default one."""
    from nbio.ws import serve

    options: Dict[str, Any] = {}
    if reuse_port or backlog is not None:
        from nbio.engine import Engine

        engine_options: Dict[str, Any] = {"backend": "native", "reuse_port": reuse_port}
        if backlog is not None:
            engine_options["backlog"] = backlog
        options = {"engine": Engine(**engine_options), "reuse_port": reuse_port}
    return await serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_size=max_size,
        **options,
    )


async def _echo(ws: Any) -> None:
    """Async-iterator echo handler (``nbio-async``, ``websockets``)."""
    async for message in ws:
        await ws.send(message)


async def nbio_callback(
    port: int, *, reuse_port: bool = False, backlog: Optional[int] = None, max_size: int = MAX_SIZE
) -> Any:
    class Echo:
        def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
            ws.send(data)

    return await _nbio_serve(Echo(), port, reuse_port, backlog, max_size)


async def nbio_async(
    port: int, *, reuse_port: bool = False, backlog: Optional[int] = None, max_size: int = MAX_SIZE
) -> Any:
    return await _nbio_serve(_echo, port, reuse_port, backlog, max_size)


async def picows_server(
    port: int, *, reuse_port: bool = False, backlog: Optional[int] = None, max_size: int = MAX_SIZE
) -> Any:
    from picows import WSListener, WSMsgType, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())

    return await ws_create_server(
        lambda _request: Echo(),
        "127.0.0.1",
        port,
        max_frame_size=max_size,
        **_listen_options(reuse_port, backlog),  # **kwargs go to loop.create_server
    )


async def websockets_server(
    port: int, *, reuse_port: bool = False, backlog: Optional[int] = None, max_size: int = MAX_SIZE
) -> Any:
    import websockets

    async def echo(ws: Any) -> None:
        try:
            await _echo(ws)
        except websockets.ConnectionClosed:
            pass  # a client that goes away without a closing handshake is no handler error

    return await websockets.serve(
        echo,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_size=max_size,
        **_listen_options(reuse_port, backlog),
    )


async def aiohttp_server(
    port: int, *, reuse_port: bool = False, backlog: Optional[int] = 4096, max_size: int = MAX_SIZE
) -> Any:
    from aiohttp import WSMsgType, web

    async def handler(request: Any) -> Any:
        ws = web.WebSocketResponse(compress=False, max_msg_size=max_size, autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, **_listen_options(reuse_port, backlog))
    await site.start()
    return runner


STARTERS: Dict[str, Callable[..., Awaitable[Any]]] = {
    "nbio-callback": nbio_callback,
    "nbio-async": nbio_async,
    "picows": picows_server,
    "websockets": websockets_server,
    "aiohttp": aiohttp_server,
}


def bound_port(server: Any, name: str) -> int:
    if name.startswith("nbio"):
        return int(server.port)
    if name == "aiohttp":
        return int(server.addresses[0][1])
    return int(server.sockets[0].getsockname()[1])


async def main(name: str, port: int) -> None:
    # aiohttp and picows need a concrete port to report
    server = await STARTERS[name](port or C.free_port())
    C.ready(bound_port(server, name))
    await C.until_stopped()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=WS_SERVERS, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(main(args.server, args.port))


def start_ws_server(name: str, cpu: Any, timeout: float = 20.0) -> Tuple[C.Child, int]:
    """Start ``servers_ws.py --server NAME`` pinned to ``cpu``; return (child, port)."""
    argv = [sys.executable, os.path.abspath(__file__), "--server", name, "--port", "0"]
    child, port, _ = C.start_server(argv, cpu, name, timeout)
    return child, port

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
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

WS_SERVERS = ("nbio-callback", "nbio-async", "picows", "websockets", "aiohttp")
MAX_SIZE = 16 << 20


async def nbio_callback(port: int) -> Any:
    from nbio.ws import serve

    class Echo:
        def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
            ws.send(data)

    return await serve(
        Echo(), "127.0.0.1", port, compression=None, ping_interval=None, max_size=MAX_SIZE
    )


async def nbio_async(port: int) -> Any:
    from nbio.ws import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    return await serve(
        echo, "127.0.0.1", port, compression=None, ping_interval=None, max_size=MAX_SIZE
    )


async def picows_server(port: int) -> Any:
    from picows import WSListener, WSMsgType, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview())

    return await ws_create_server(
        lambda _request: Echo(), "127.0.0.1", port, max_frame_size=MAX_SIZE
    )


async def websockets_server(port: int) -> Any:
    import websockets

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    return await websockets.serve(
        echo, "127.0.0.1", port, compression=None, ping_interval=None, max_size=MAX_SIZE
    )


async def aiohttp_server(port: int) -> Any:
    from aiohttp import WSMsgType, web

    async def handler(request: Any) -> Any:
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_SIZE, autoping=True)
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
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    return runner


STARTERS = {
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
    if port == 0:
        import socket

        with socket.socket() as s:  # aiohttp and picows need a concrete port to report
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    server = await STARTERS[name](port)
    print(f"READY {bound_port(server, name)}", flush=True)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=WS_SERVERS, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(main(args.server, args.port))


def start_ws_server(name: str, cpu: Any, timeout: float = 20.0) -> Any:
    """Start ``servers_ws.py --server NAME`` pinned to ``cpu``; return (child, port)."""
    child = C.Child(
        [sys.executable, os.path.abspath(__file__), "--server", name, "--port", "0"],
        cpu=cpu,
        env=C.python_env(),
        name=name,
    )
    try:
        port = int(child.expect("READY", timeout).split()[0])
        C.wait_port("127.0.0.1", port, timeout)
    except BaseException:
        child.stop()
        raise
    return child, port

"""The Python server the JS client tests talk to (started by js/test/helpers.mjs).

Serves arpc over WebSocket at /rpc and HTTP-RPC at /http on 127.0.0.1 (port 0), prints
``{"port": N}`` on stdout, and stops when stdin closes (the test process ended) or on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from nbio.errors import RpcError
from nbio.http.server import HttpServer, Response
from nbio.rpc import Router, Server
from nbio.rpc.transport_http import HttpRpcEndpoint
from nbio.rpc.transport_ws import WebSocketEndpoint


def make_router(server_ref: list) -> Router:
    r = Router()
    r.handle("/echo", lambda ctx: ctx.bind(bytes))
    r.handle("/json", lambda ctx: ctx.bind())

    @r.handle("/add")
    def add(ctx: Any) -> Any:
        a, b = ctx.bind()
        return a + b

    @r.handle("/aadd")
    async def aadd(ctx: Any) -> Any:
        await asyncio.sleep(0)
        a, b = ctx.bind()
        return a + b

    @r.handle("/fail")
    def fail(ctx: Any) -> None:
        raise RpcError("it failed: " + ctx.bind(str))

    @r.handle("/never")
    async def never(ctx: Any) -> None:
        await asyncio.Event().wait()

    @r.handle("/callback")
    async def callback(ctx: Any) -> Any:
        method, value = ctx.bind()
        try:
            raw = await ctx.client.call(method, value, timeout=5, as_type=bytes)
        except RpcError as exc:
            return {"error": str(exc)}
        try:
            return {"ok": json.loads(raw)}
        except ValueError:
            return {"ok": raw.decode()}  # a string answer travels raw

    @r.handle("/notify_me")
    def notify_me(ctx: Any) -> str:
        method, value = ctx.bind()
        ctx.client.notify(method, value)
        return "sent"

    @r.handle("/broadcast")
    def broadcast(ctx: Any) -> int:
        method, value = ctx.bind()
        return server_ref[0].broadcast(method, value)

    @r.handle("/count")
    def count(ctx: Any) -> int:
        return len(server_ref[0])

    @r.handle("/drop")
    def drop(ctx: Any) -> None:
        asyncio.get_running_loop().call_soon(ctx.client.conn.abort)

    @r.handle("/garbage")
    def garbage(ctx: Any) -> None:
        ctx.client.conn.write(b"\x00" * 4 + b"\x00\x3f" + b"\x00" * 10)  # unknown command

    async def upper(stream: Any) -> None:
        stream.as_type = str
        async for value in stream:
            await stream.send(value.upper())

    r.handle_stream("/upper", upper)

    @r.handle("/open_stream")
    async def open_stream(ctx: Any) -> Any:
        n = ctx.bind()
        st = ctx.client.stream("/double")
        for i in range(1, n + 1):
            await st.send(i)
        await st.close_send()
        return [v async for v in st]

    notes: list = []
    r.handle("/notes", lambda ctx: notes.append(ctx.bind()))
    r.handle("/notes_seen", lambda ctx: list(notes))
    return r


async def main() -> None:
    ref: list = []
    router = make_router(ref)
    server = Server(router)
    ref.append(server)
    ws = WebSocketEndpoint(server)
    http_rpc = HttpRpcEndpoint(server)

    def app(request: Any) -> Any:
        if request.path == b"/http":
            return http_rpc(request)
        return Response("not found", 404)

    http = await HttpServer.start(app, "127.0.0.1", 0, upgrades={"/rpc": ws})
    print(json.dumps({"port": http.address[1]}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(
        sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1) else None
    )
    await stop.wait()
    loop.remove_reader(sys.stdin.fileno())
    await server.shutdown(timeout=1)
    http.close()
    await http.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())

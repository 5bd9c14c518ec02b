"""A worker process for the multi-process WebSocket rooms tests: WebSocket rooms
(:class:`nbio.ws.Rooms`) on a Redis backplane, callback API on ``/cb`` and async API on
``/async``. Prints its port, serves until stdin closes.

Text commands a client sends (answers start with ``!``; everything else a client receives
is a room message)::

    join ROOM        join, wait until the room's subscription is live -> "!joined ROOM"
    leave ROOM       -> "!left ROOM"
    ready ROOM       wait until the room's subscription is live (again) -> "!ready ROOM"
    pub ROOM TEXT    publish TEXT to ROOM (no answer)
    stats            -> "!stats {json}": Rooms.stats() plus the errors and loss windows
                     the backplane reported through on_error / on_reconnect

Usage: python _ws_worker.py REDIS_URL   (the tests start it through WsWorker)
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set

# -- the worker process -----------------------------------------------------------------------


async def main(url: str) -> None:
    from nbio.backplane import LossWindow
    from nbio.backplane_redis import RedisBackplane
    from nbio.http.server import HttpServer
    from nbio.ws import Rooms, WebSocket, WebSocketConn, WebSocketUpgrader

    errors: List[str] = []
    windows: List[Dict[str, Any]] = []

    def on_reconnect(window: LossWindow) -> None:
        windows.append(window.as_dict())

    plane = RedisBackplane(
        url,
        on_error=lambda exc: errors.append(f"{type(exc).__name__}: {exc}"),
        on_reconnect=on_reconnect,
        reconnect_interval=0.02,
        max_reconnect_interval=0.1,
    )
    await plane.start(timeout=10)
    rooms = Rooms(plane)
    loop = asyncio.get_running_loop()
    tasks: Set[asyncio.Task[None]] = set()

    async def command(ws: Any, text: str, reply: Callable[[str], Awaitable[None]]) -> None:
        cmd, _, arg = text.partition(" ")
        if cmd == "join":
            rooms.join(ws, arg)
            await rooms.ready(arg)
            await reply(f"!joined {arg}")
        elif cmd == "leave":
            rooms.leave(ws, arg)
            await reply(f"!left {arg}")
        elif cmd == "ready":
            await rooms.ready(arg)
            await reply(f"!ready {arg}")
        elif cmd == "pub":
            room, _, message = arg.partition(" ")
            rooms.publish(room, message)
        elif cmd == "stats":
            stats = {**rooms.stats(), "errors_reported": errors, "loss_windows": windows}
            await reply("!stats " + json.dumps(stats))

    class Callbacks:
        def on_message(self, ws: WebSocketConn, data: Any, is_text: bool) -> None:
            async def reply(text: str) -> None:
                ws.send(text)

            task = loop.create_task(command(ws, data, reply))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def on_close(self, ws: WebSocketConn, code: int, reason: str) -> None:
            rooms.leave_all(ws)

    async def handler(ws: WebSocket) -> None:
        async for message in ws:
            await command(ws, str(message), ws.send)

    server = await HttpServer.start(
        None,
        "127.0.0.1",
        0,
        upgrades={"/cb": WebSocketUpgrader(Callbacks()), "/async": WebSocketUpgrader(handler)},
    )
    print(server.address[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes our stdin
    server.close()
    await server.wait_closed()
    await rooms.close()
    await plane.close()


def run(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(main(args[0]))


if __name__ == "__main__":
    run()

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

Usage: python _ws_worker.py REDIS_URL   (or import WsWorker to start one)
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set

WORKER = Path(__file__).resolve()


class WsWorker:
    """The test side: start ``_ws_worker.py`` as a process, read its port, stop it."""

    def __init__(self, url: str) -> None:
        env = dict(os.environ)
        src = str(WORKER.parents[2] / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.port = 0

    def wait_port(self, deadline: float) -> None:
        assert self.proc.stdout is not None
        while not select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[
            0
        ]:
            if time.monotonic() > deadline:
                raise AssertionError("worker did not report its port in time")
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.wait()}"
        self.port = int(line)

    def url(self, api: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{api}"

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


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

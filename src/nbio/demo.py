"""``nbio demo``: a chat room in the browser, served by one nbio process.

One port serves everything: the HTML page and its JavaScript over HTTP (the nbio HTTP
server), and arpc over WebSocket at ``/rpc`` (:class:`~nbio.rpc.transport_ws.WebSocketEndpoint`
on the WebSocket callback API). The page uses the browser client ``arpc.js``:

* ``call("/chat/join", name)`` -> ``{"name", "people", "history"}`` (the name is made
  unique; the last messages come with it);
* ``call("/chat/send", text)`` -> the server broadcasts ``/chat/message``
  ``{"name", "text", "ts"}`` to every participant (encoded once for all of them);
* joins and leaves are broadcast as ``/chat/presence`` ``{"people", "joined"|"left"}``.

Run it with ``nbio demo`` or ``python -m nbio.demo [--host H] [--port P]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

from nbio.errors import RpcError
from nbio.http.server import FileResponse, HttpRequest, HttpServer, Response
from nbio.rpc import Router, Server
from nbio.rpc.transport_ws import WebSocketEndpoint

__all__ = ["STATIC", "ChatDemo", "run_demo"]

#: The page, its script and the browser client (package data).
STATIC = Path(__file__).with_name("demo_static")
_FILES = {
    b"/": ("index.html", "text/html; charset=utf-8"),
    b"/index.html": ("index.html", "text/html; charset=utf-8"),
    b"/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    b"/arpc.js": ("arpc.js", "text/javascript; charset=utf-8"),
}
_NO_CACHE = [(b"cache-control", b"no-cache")]

MAX_NAME = 32
MAX_TEXT = 2000
HISTORY = 50


class ChatDemo:
    """The chat application: an RPC server (handlers, participants, history) and the HTTP
    server that carries the page and the WebSocket endpoint."""

    def __init__(self, history: int = HISTORY) -> None:
        self.router = Router()
        self.rpc = Server(self.router, keepalive=20.0)
        self.endpoint = WebSocketEndpoint(self.rpc)
        self.history: Deque[Dict[str, Any]] = deque(maxlen=history)
        self.http: Optional[HttpServer] = None
        #: Totals for the final report.
        self.connections = 0
        self.messages = 0
        self.router.handle("/chat/join", self._join)
        self.router.handle("/chat/send", self._send)
        self.router.on_connect(self._connected)
        self.router.on_disconnect(self._left)

    # -- HTTP -----------------------------------------------------------------------------------

    def app(self, request: HttpRequest) -> Any:
        """Serves the page and its scripts."""
        found = _FILES.get(request.path)
        if found is None:
            return Response(b"not found\n", 404, content_type=b"text/plain")
        if request.method not in (b"GET", b"HEAD"):
            return Response(b"method not allowed\n", 405, [(b"allow", b"GET, HEAD")])
        name, content_type = found
        return FileResponse(STATIC / name, headers=_NO_CACHE, content_type=content_type)

    # -- RPC handlers ---------------------------------------------------------------------------

    def _people(self) -> List[str]:
        return sorted(n for n in (p.get("name") for p in self.rpc.clients) if n)

    def _connected(self, peer: Any) -> None:
        self.connections += 1

    def _join(self, ctx: Any) -> Dict[str, Any]:
        name = " ".join(str(ctx.bind(str)).split())[:MAX_NAME] or "guest"
        peer = ctx.client
        taken = set(self._people())
        if peer.get("name") in taken:
            taken.discard(peer.get("name"))
        unique, n = name, 2
        while unique in taken:
            unique = f"{name}-{n}"
            n += 1
        peer.set("name", unique)
        people = self._people()
        self.rpc.broadcast("/chat/presence", {"people": people, "joined": unique})
        return {"name": unique, "people": people, "history": list(self.history)}

    def _send(self, ctx: Any) -> int:
        name = ctx.client.get("name")
        if not name:
            raise RpcError("join first")
        text = ctx.bind(str).strip()
        if not text:
            raise RpcError("empty message")
        if len(text) > MAX_TEXT:
            raise RpcError(f"message longer than {MAX_TEXT} characters")
        message = {"name": name, "text": text, "ts": int(time.time() * 1000)}
        self.history.append(message)
        self.messages += 1
        return self.rpc.broadcast("/chat/message", message)

    def _left(self, peer: Any) -> None:
        name = peer.get("name")
        if name:
            self.rpc.broadcast("/chat/presence", {"people": self._people(), "left": name})

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Any:
        """Listen on ``host:port``; returns the bound address."""
        self.http = await HttpServer.start(
            self.app, host, port, upgrades={"/rpc": self.endpoint}, reuse_port=False
        )
        return self.http.address

    async def close(self) -> None:
        """Close every chat connection (WebSocket close handshake), then the HTTP server."""
        await self.rpc.shutdown(timeout=2.0)
        if self.http is not None:
            self.http.close()
            await self.http.wait_closed(timeout=2.0)


async def run_demo(host: str, port: int, seconds: Optional[float] = None) -> None:
    """Serve the chat demo until SIGINT/SIGTERM (or for ``seconds``)."""
    chat = ChatDemo()
    bound_host, bound_port = (await chat.start(host, port))[:2]
    url = f"http://{bound_host}:{bound_port}/"
    engine = chat.http.engine if chat.http is not None else None
    backend = getattr(engine, "backend", "?")
    print(
        f"nbio demo: chat listening on {bound_host}:{bound_port} (engine backend: {backend})",
        flush=True,
    )
    print(f"  open {url} in two browser windows and chat (WebSocket RPC at /rpc)", flush=True)
    print("  stop: Ctrl-C", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    try:
        if seconds is not None:
            await asyncio.wait_for(stop.wait(), seconds)
        else:
            await stop.wait()
    except asyncio.TimeoutError:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
    await chat.close()
    print(
        f"nbio demo: stopped after {chat.connections} connection(s), {chat.messages} message(s)",
        flush=True,
    )


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m nbio.demo``: the same as ``nbio demo``."""
    parser = argparse.ArgumentParser(prog="python -m nbio.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    asyncio.run(run_demo(args.host, args.port, args.seconds))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

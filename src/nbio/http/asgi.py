"""ASGI 3 adapter: run ASGI applications (Starlette, FastAPI, ...) on the nbio HTTP server.

:class:`AsgiServer` is an :class:`~nbio.http.server.HttpServer` whose requests go to an
ASGI 3 application ``app(scope, receive, send)``:

* ``http`` scope (spec 2.3): the request body is streamed to ``receive()`` as it arrives
  (``http.request`` messages, ``more_body``); ``http.disconnect`` comes once the response is
  complete or the client is gone. A response sent in one ``http.response.body`` message goes
  out in one write with Content-Length; a streamed one is chunked (or uses the app's
  Content-Length). ``http.response.trailers`` and the ``http.response.pathsend`` extension
  (files, sent with ``sendfile``) are supported. An app that fails before starting its
  response gets a 500; after, the connection is cut.
* ``websocket`` scope (spec 2.4): an Upgrade: websocket request is validated
  (RFC 6455), then the app gets ``websocket.connect``; ``websocket.accept`` writes the 101
  (with the app's subprotocol and headers, permessage-deflate if the client offers it) and
  the connection becomes a :class:`nbio.ws.connection.WebSocket`; ``websocket.close``
  before accepting answers 403.
* ``lifespan`` scope: :meth:`AsgiServer.startup` / :meth:`AsgiServer.shutdown` (``nbio
  serve`` calls them); an app that does not support lifespan is run without it, and the
  lifespan ``state`` is copied into every request scope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional, Set

from nbio.engine import Handler, TLSConn
from nbio.errors import ConnectionClosed
from nbio.http._asgi import AsgiSessionCore, addr, scope_path
from nbio.http.server import HttpRequest, HttpServer, _Session

__all__ = ["AsgiServer", "Lifespan"]

logger = logging.getLogger("nbio.http.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ASGI_WS = {"version": "3.0", "spec_version": "2.4"}
_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}


# ---------------------------------------------------------------------------------------------
# http
# ---------------------------------------------------------------------------------------------


class _AsgiSession(AsgiSessionCore, _Session):  # type: ignore[misc]
    """Connection state for ASGI: every request runs the app in a task (the request path
    is compiled: :class:`nbio.http._asgi.AsgiSessionCore`)."""

    __slots__ = ()


# ---------------------------------------------------------------------------------------------
# websocket
# ---------------------------------------------------------------------------------------------


class _Holding(Handler):
    """Holds an upgraded connection until the app accepts: keeps what arrives, notices a
    disconnect."""

    def on_data(self, conn: Any, data: Any) -> None:
        ws: _WsCycle = conn.session
        ws.early += bytes(data)
        if len(ws.early) > 1 << 20:
            conn.pause_reading()

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        ws: _WsCycle = conn.session
        ws.gone = True
        ws.wake()


_HOLDING = _Holding()


class _WsCycle:
    """The ``receive``/``send`` callables of a websocket scope."""

    def __init__(self, server: AsgiServer, conn: Any, request: HttpRequest, leftover: bytes):
        self.server = server
        self.conn = conn
        self.request = request
        self.early = leftover
        self.gone = False
        self.state = "connecting"   # connecting -> (accepted | closed)
        self.sent_connect = False
        self.ws: Any = None
        self._waiter: Optional[asyncio.Future[None]] = None

    def wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def receive(self) -> Message:
        if not self.sent_connect:
            self.sent_connect = True
            return {"type": "websocket.connect"}
        if self.state == "connecting":
            while not self.gone and self.state == "connecting":
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            if self.state == "connecting":
                return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        if self.ws is None:
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        try:
            data = await self.ws.recv()
        except ConnectionClosed as exc:
            return {"type": "websocket.disconnect", "code": exc.code or 1005,
                    "reason": getattr(exc, "reason", "") or ""}
        if isinstance(data, str):
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.state == "connecting":
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self.state = "closed"
                if not self.gone:
                    body = b"WebSocket connection rejected"
                    self.conn.write(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                    % (len(body), body))
                    self.conn.close()
                self.wake()
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} before websocket.accept")
            return
        if self.state == "closed" or self.ws is None:
            if kind in ("websocket.send", "websocket.close"):
                raise ConnectionClosed(None, "the WebSocket is closed")
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if kind == "websocket.send":
            text = message.get("text")
            await self.ws.send(text if text is not None else message.get("bytes") or b"")
        elif kind == "websocket.close":
            self.state = "closed"
            await self.ws.close(message.get("code") or 1000, message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in a websocket scope")

    def _accept(self, message: Message) -> None:
        from nbio.ws import handshake
        from nbio.ws.server import SERVER_DEFLATE, adopt

        if self.gone:
            self.state = "closed"
            raise ConnectionClosed(1006, "the client left before the WebSocket was accepted")
        chosen = message.get("subprotocol")
        req = self.request
        accepted = handshake.accept(
            req.method, req.http_version.decode("latin-1"), req.headers,
            subprotocols=(lambda offered: chosen),
            deflate=SERVER_DEFLATE if self.server.ws_deflate else None,
            extra_headers=[(k, v) for k, v in message.get("headers") or ()],
        )
        conn = self.conn
        conn.write(accepted.response)
        leftover, self.early = self.early, b""
        conn.resume_reading()
        self.ws = adopt(conn, leftover=leftover, subprotocol=accepted.subprotocol,
                        deflate=accepted.deflate, max_size=self.server.ws_max_size,
                        request=req)
        self.state = "accepted"
        self.wake()


class _WsUpgrader:
    """The upgrade handler of an AsgiServer: every ``Upgrade: websocket`` request."""

    def __init__(self, server: AsgiServer) -> None:
        self.server = server

    def upgrade(self, conn: Any, request: HttpRequest, leftover: bytes) -> bool:
        if request.upgrade != b"websocket":
            return False
        from nbio.ws import handshake

        try:  # validate before bothering the app
            handshake.accept(request.method, request.http_version.decode("latin-1"),
                             request.headers)
        except handshake.HandshakeError as exc:
            conn.write(exc.response())
            conn.close()
            conn.set_handler(_HOLDING)
            conn.session = _WsCycle(self.server, conn, request, b"")
            return True
        server = self.server
        cycle = _WsCycle(server, conn, request, leftover)
        conn.session = cycle
        conn.set_handler(_HOLDING)
        conn.set_idle_timeout(None)
        head = request.head
        offered = request.get_header(b"sec-websocket-protocol")
        subprotocols = ([p.strip() for p in offered.decode("latin-1").split(",") if p.strip()]
                        if offered else [])
        scope: Dict[str, Any] = {
            "type": "websocket",
            "asgi": _ASGI_WS,
            "http_version": _VERSIONS.get(head.http_version, "1.1"),
            "scheme": "wss" if isinstance(conn, TLSConn) else "ws",
            "path": scope_path(head.path),
            "raw_path": head.path,
            "query_string": head.query,
            "root_path": server.root_path,
            "headers": head.headers,
            "client": addr(conn.remote_address),
            "server": addr(conn.local_address),
            "subprotocols": subprotocols,
            "extensions": {},
        }
        if server.state is not None:
            scope["state"] = server.state.copy()
        task = asyncio.get_running_loop().create_task(self._run(scope, cycle))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)
        return True

    async def _run(self, scope: Scope, cycle: _WsCycle) -> None:
        try:
            await self.server.app_asgi(scope, cycle.receive, cycle.send)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("nbio.http: ASGI websocket app failed")
            if cycle.state == "accepted" and cycle.ws is not None:
                await cycle.ws.close(1011, "internal error")
                return
        if cycle.state == "connecting":
            # the app returned without accepting: 403 (ASGI spec)
            cycle.state = "closed"
            if not cycle.gone:
                try:
                    await cycle.send({"type": "websocket.close"})
                except Exception:
                    pass
                cycle.conn.close()
        elif cycle.state == "accepted" and cycle.ws is not None:
            await cycle.ws.close(1000)


# ---------------------------------------------------------------------------------------------
# lifespan
# ---------------------------------------------------------------------------------------------


class Lifespan:
    """Runs an app's ``lifespan`` scope: :meth:`startup` then, later, :meth:`shutdown`.
    ``mode``: ``"auto"`` (an app that fails before answering has no lifespan), ``"on"``
    (a failure is an error), ``"off"``."""

    def __init__(self, app: ASGIApp, mode: str = "auto") -> None:
        self.app = app
        self.mode = mode
        self.state: Dict[str, Any] = {}
        self.supported = mode != "off"
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: Optional[asyncio.Task[None]] = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            await self._from_app.put({"type": "_failed", "exc": exc})
        else:
            await self._from_app.put({"type": "_returned"})

    async def _step(self, kind: str) -> None:
        await self._to_app.put({"type": f"lifespan.{kind}"})
        msg = await self._from_app.get()
        if msg["type"] == f"lifespan.{kind}.complete":
            return
        if msg["type"] == f"lifespan.{kind}.failed":
            raise RuntimeError(f"ASGI lifespan {kind} failed: {msg.get('message', '')}")
        if msg["type"] == "_failed" and kind == "startup" and self.mode == "auto":
            logger.info("nbio.http: the ASGI app does not support lifespan (%s)", msg["exc"])
            self.supported = False
            return
        if msg["type"] == "_returned" and kind == "startup" and self.mode == "auto":
            self.supported = False
            return
        raise RuntimeError(f"ASGI lifespan {kind}: unexpected {msg!r}")

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer (raises on failure)."""
        if not self.supported:
            return
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._step("startup")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` and wait for the answer."""
        task = self._task
        if task is None:
            return
        self._task = None
        try:
            if self.supported and not task.done():
                await self._step("shutdown")
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class AsgiServer(HttpServer):
    """Serve an ASGI 3 application (see the module documentation).

    ``lifespan``: ``"auto"``, ``"on"`` or ``"off"``; ``root_path`` goes into every scope;
    ``ws_max_size`` limits WebSocket messages; ``ws_deflate`` enables permessage-deflate.
    Other options are :class:`~nbio.http.server.HttpServer`'s (``max_body_size`` defaults
    to None here: the app reads the body as a stream)."""

    session_class = _AsgiSession
    cancel_on_disconnect = False

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: str = "auto",
        root_path: str = "",
        ws_max_size: Optional[int] = 16 * 1024 * 1024,
        ws_deflate: bool = True,
        max_body_size: Optional[int] = None,
        **options: Any,
    ) -> None:
        options.setdefault("upgrades", {})
        upgrader = _WsUpgrader(self)
        upgrades = dict(options.pop("upgrades"))
        upgrades.setdefault("*", upgrader)
        super().__init__(_unused_app, upgrades=upgrades, stream_request_body=True,
                         max_body_size=max_body_size, **options)
        self.app_asgi = app
        self.root_path = root_path
        self.ws_max_size = ws_max_size
        self.ws_deflate = ws_deflate
        self.lifespan = Lifespan(app, lifespan)
        self.state: Optional[Dict[str, Any]] = None
        self.tasks: Set[asyncio.Task[None]] = set()

    async def startup(self) -> None:
        """Run the app's lifespan startup (before serving)."""
        await self.lifespan.startup()
        if self.lifespan.supported:
            self.state = self.lifespan.state

    async def shutdown(self) -> None:
        """Run the app's lifespan shutdown (after draining)."""
        await self.lifespan.shutdown()

    async def drain(self, timeout: Optional[float] = None) -> bool:
        """As :meth:`HttpServer.drain`, then wait for app tasks still running (background
        tasks after a response) for what is left of ``timeout``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        ok = await super().drain(timeout)
        tasks = [t for t in self.tasks if not t.done()]
        if tasks:
            left = None if timeout is None else max(0.0, timeout - (loop.time() - start))
            _done, pending = await asyncio.wait(tasks, timeout=left)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                ok = False
        return ok

    async def __aenter__(self) -> AsgiServer:
        await self.startup()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()
        await self.shutdown()


def _unused_app(request: HttpRequest) -> Any:  # pragma: no cover - AsgiServer dispatches itself
    raise RuntimeError("AsgiServer dispatches requests to the ASGI app")


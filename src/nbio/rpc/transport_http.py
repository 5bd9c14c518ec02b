"""HTTP-RPC: one arpc frame per HTTP POST; the request body is the frame, the response
body is the answer frame (arpc's ``callHttp``/``notifyHttp``).

Server side, :class:`HttpRpcEndpoint` runs a :class:`~nbio.rpc.server.Server`'s router
for frames posted over HTTP:

* as a native handler of the nbio HTTP server: ``HttpServer(endpoint)``, or called from
  your own app (``return endpoint(request)`` for the RPC path);
* as an ASGI application: ``endpoint.asgi`` (e.g. ``Route("/rpc", endpoint.asgi)``).

Answers: ``200`` with the response frame (an error response is a frame with the error flag,
still 200); ``200`` with an empty body for a notify; ``200`` with a pong frame for a ping;
``204`` when the handler finished without answering; ``400`` when the body is not exactly
one well-formed request/notify/ping frame; ``405`` for other methods than POST; ``503``
when the server shuts down before answering. HTTP has no way back to the caller, so the
handler's peer (``ctx.client``) cannot be called or notified (:class:`NotConnected`).

Client side, :class:`HttpRpcClient` posts frames to a URL (``await call(...)``,
``await notify(...)``) over pooled keep-alive connections on the nbio engine.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import (
    Any,
    Awaitable,
    Callable,
    Iterable,
    List,
    MutableMapping,
    Optional,
    Tuple,
    Union,
)
from urllib.parse import urlsplit

from nbio.engine import Engine
from nbio.errors import (
    ConnectionClosed,
    ConnectionLost,
    DeadlineExceeded,
    NotConnected,
    ProtocolError,
    RpcError,
    RpcTimeout,
)
from nbio.http.client import HttpClient
from nbio.http.server import HttpRequest
from nbio.http.server import Response as HttpResponse
from nbio.rpc.client import FIRST_SEQ, Peer
from nbio.rpc.codec import Codec, payload_to_value, value_to_payload
from nbio.rpc.coder import coder_mask, decode_frame, encode_frame
from nbio.rpc.message import (
    CMD_NOTIFY,
    CMD_PING,
    CMD_PONG,
    CMD_REQUEST,
    CMD_RESPONSE,
    DEFAULT_MAX_BODY_LEN,
    FLAG_ERROR,
    HEADER_SIZE,
    PING_FRAME,
    encode,
    parse_frame,
)
from nbio.rpc.server import Server

__all__ = ["HttpRpcClient", "HttpRpcEndpoint"]

logger = logging.getLogger("nbio.rpc")

_U32 = struct.Struct("<I")
_CONTENT_TYPE = b"application/octet-stream"
_ACCEPTED = (CMD_REQUEST, CMD_NOTIFY, CMD_PING)
_POST_HEADERS = [(b"content-type", _CONTENT_TYPE)]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: (HTTP status, body)
Outcome = Tuple[int, bytes]


class _Capture:
    """The connection of a one-request peer: keeps the answer frame."""

    __slots__ = ("answer", "closing", "session", "waiter")

    remote_address = None
    local_address = None
    buffered = 0

    def __init__(self) -> None:
        self.session: Any = None
        self.answer: Optional[bytes] = None
        self.waiter: Optional[asyncio.Future[Outcome]] = None
        self.closing = False

    def write(self, data: Any) -> None:
        # an HTTP peer writes nothing but its answer (response or pong; maybe coded)
        if self.answer is None:
            self.answer = bytes(data)
            self._resolve((200, self.answer))

    def _resolve(self, outcome: Outcome) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def close(self) -> None:
        self.closing = True

    abort = close

    def set_read_deadline(self, timeout: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    async def drain(self) -> None:
        pass


class _HttpPeer(Peer):
    """The peer of one HTTP-RPC request: it answers, it cannot be called back."""

    __slots__ = ()

    def _not_connected(self) -> BaseException:
        return NotConnected("an HTTP-RPC caller cannot be called back")

    async def call(self, method: str, value: Any = None, **kw: Any) -> Any:
        raise self._not_connected()

    def call_async(self, method: str, value: Any, callback: Any, **kw: Any) -> None:
        raise self._not_connected()

    def notify(self, method: str, value: Any = None) -> None:
        raise self._not_connected()

    def stream(self, method: str) -> Any:
        raise self._not_connected()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task: asyncio.Task = self._owner.server._spawn(coro)
        task.add_done_callback(self._handler_done)
        return task

    def _handler_done(self, task: asyncio.Task) -> None:
        conn = self.conn
        if conn.answer is None:
            conn._resolve((503, b"") if task.cancelled() else (204, b""))


class HttpRpcEndpoint:
    """Serve a :class:`~nbio.rpc.server.Server`'s router over HTTP POST (see the module
    documentation). ``endpoint(request)`` is a native nbio HTTP handler, ``endpoint.asgi``
    an ASGI application. ``max_body_len`` is the server's."""

    def __init__(self, server: Server) -> None:
        self.server = server
        #: The ASGI application (``http`` scope; an object, so that routers such as
        #: Starlette's ``Route`` take it as an ASGI app rather than a request handler).
        self.asgi = _AsgiApp(self._asgi)

    # the Peer owner interface
    def _peer_closed(self, peer: Peer, conn: Any, exc: Optional[BaseException]) -> None:
        pass

    def process(self, body: bytes) -> Union[Outcome, Awaitable[Outcome]]:
        """Run one posted frame; the (status, body) to answer, or an awaitable of it when
        a coroutine handler answers."""
        server = self.server
        n = len(body)
        if n < HEADER_SIZE or _U32.unpack_from(body)[0] + HEADER_SIZE != n:
            return 400, b"the body must be exactly one arpc frame"
        if server._loop is None:
            server._bind_loop()
        frame = body
        try:
            if server.coders and body[4] & coder_mask(server.coders):
                frame = decode_frame(body, server.coders)
            msg = parse_frame(frame, server.max_body_len)
        except ProtocolError as exc:
            return 400, str(exc).encode("utf-8", "replace")
        cmd = msg.cmd
        if cmd not in _ACCEPTED:
            return 400, b"only request, notify and ping frames can be posted"
        conn = _Capture()
        peer = _HttpPeer(
            self,
            server.router,
            server.codec,
            server.coders,
            server.max_body_len,
            None,
            server._loop,
        )
        peer._attach(conn)
        peer._draining = server._shutting_down
        peer._on_message(msg)
        if conn.answer is not None:
            return 200, conn.answer
        if cmd != CMD_REQUEST:
            return 200, b""
        waiter: asyncio.Future[Outcome] = server._loop.create_future()  # type: ignore[union-attr]
        conn.waiter = waiter
        return waiter

    # -- nbio HTTP server -----------------------------------------------------------------------

    def __call__(self, request: HttpRequest) -> Any:
        """Native handler for the nbio HTTP server."""
        if request.method != b"POST":
            return HttpResponse(
                b"POST one arpc frame\n", 405, [(b"allow", b"POST")], content_type=b"text/plain"
            )
        outcome = self.process(request.body)
        if isinstance(outcome, tuple):
            return _response(outcome)
        return self._later(outcome)

    async def _later(self, outcome: Awaitable[Outcome]) -> HttpResponse:
        return _response(await outcome)

    # -- ASGI -----------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1003})
                return
            raise RuntimeError(f"unsupported ASGI scope type {scope['type']!r}")
        if scope["method"] != "POST":
            await _asgi_send(
                send, 405, b"POST one arpc frame\n", b"text/plain", [(b"allow", b"POST")]
            )
            return
        limit = self.server.max_body_len + HEADER_SIZE
        chunks: List[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _asgi_send(send, 413, b"frame too large\n", b"text/plain")
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        outcome = self.process(b"".join(chunks))
        if not isinstance(outcome, tuple):
            outcome = await outcome
        status, body = outcome
        await _asgi_send(send, status, body, _CONTENT_TYPE if status == 200 else b"text/plain")


class _AsgiApp:
    """An ASGI application object wrapping a coroutine function."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._fn = fn

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        return self._fn(scope, receive, send)


def _response(outcome: Outcome) -> HttpResponse:
    status, body = outcome
    return HttpResponse(
        body, status, content_type=_CONTENT_TYPE if status == 200 else b"text/plain"
    )


async def _asgi_send(
    send: Send, status: int, body: bytes, content_type: bytes, headers: Iterable[Any] = ()
) -> None:
    fields = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    fields.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


# -- the client ---------------------------------------------------------------------------------


class HttpRpcClient:
    """Call an :class:`HttpRpcEndpoint` (or arpc's HTTP handler) at ``url``
    (``http://host[:port]/path``): each call or notify is one POST of one frame.

    Options: ``codec`` (JSON by default), ``coders`` (e.g. ``[GzipCoder()]``),
    ``timeout`` (default per call, None waits), ``connect_timeout``,
    ``max_connections`` (kept-alive connections used at once), ``max_body_len``,
    ``engine``. Requests go through :class:`nbio.http.client.HttpClient`. Errors: :class:`~nbio.errors.RpcError` (remote error or a non-200 status),
    :class:`~nbio.errors.RpcTimeout`, :class:`~nbio.errors.ConnectionLost`.
    """

    def __init__(
        self,
        url: str,
        *,
        codec: Optional[Codec] = None,
        coders: Iterable[Any] = (),
        timeout: Optional[float] = None,
        connect_timeout: Optional[float] = 10.0,
        max_connections: int = 16,
        max_body_len: int = DEFAULT_MAX_BODY_LEN,
        engine: Optional[Engine] = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not an http:// URL: {url!r}")
        self.url = url
        self.codec = codec
        self.coders = tuple(coders)
        self.timeout = timeout
        self.max_body_len = max_body_len
        self._http = HttpClient(
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=None,
            follow_redirects=False,
            max_body_size=max_body_len + HEADER_SIZE,
            engine=engine,
        )
        self._seq = FIRST_SEQ
        self._closed = False

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1 if seq < 0xFFFFFFFFFFFFFFFF else 1
        return seq

    async def _post(self, frame: bytes) -> Outcome:
        if self._closed:
            raise NotConnected("client is closed")
        if self.coders:
            frame = encode_frame(frame, self.coders)
        try:
            resp = await self._http.post(self.url, body=frame, headers=_POST_HEADERS)
        except DeadlineExceeded as exc:
            raise ConnectionLost(f"cannot reach {self.url}: {exc}") from exc
        except (OSError, ConnectionClosed) as exc:
            raise ConnectionLost(f"HTTP-RPC request to {self.url} failed: {exc}") from exc
        return resp.status, resp.content

    async def _exchange(self, frame: bytes, method: str, timeout: Optional[float]) -> Outcome:
        if timeout is None:
            timeout = self.timeout
        if timeout is None:
            return await self._post(frame)
        try:
            return await asyncio.wait_for(self._post(frame), timeout)
        except asyncio.TimeoutError:
            raise RpcTimeout(f"call {method!r} timed out after {timeout:g} s") from None

    async def call(
        self,
        method: str,
        value: Any = None,
        *,
        timeout: Optional[float] = None,
        as_type: Any = None,
    ) -> Any:
        """Call ``method`` with ``value``; the decoded answer (``as_type=str``/``bytes``:
        raw), or RpcError / RpcTimeout / ConnectionLost."""
        seq = self._next_seq()
        frame = encode(CMD_REQUEST, method, seq, value_to_payload(value, self.codec))
        status, body = await self._exchange(frame, method, timeout)
        if status == 204:
            raise RpcError(f"{method}: the server sent no answer")
        if status != 200:
            text = body.decode("utf-8", "replace").strip()
            raise RpcError(f"HTTP {status}" + (f": {text}" if text else ""))
        if self.coders:
            body = decode_frame(body, self.coders)
        msg = parse_frame(body, self.max_body_len)
        if msg.cmd != CMD_RESPONSE or msg.seq != seq:
            raise ProtocolError(f"unexpected answer (command {msg.cmd}, seq {msg.seq})")
        if msg.flags & FLAG_ERROR:
            raise RpcError(msg.error)
        return payload_to_value(msg.payload, self.codec, as_type)

    async def notify(
        self, method: str, value: Any = None, *, timeout: Optional[float] = None
    ) -> None:
        """Post a notify (no answer; returns once the server took it)."""
        frame = encode(CMD_NOTIFY, method, self._next_seq(), value_to_payload(value, self.codec))
        status, body = await self._exchange(frame, method, timeout)
        if status != 200:
            raise RpcError(f"HTTP {status}: {body.decode('utf-8', 'replace').strip()}")

    async def ping(self, *, timeout: Optional[float] = None) -> None:
        """Post a ping; returns when the pong arrives."""
        status, body = await self._exchange(PING_FRAME, "ping", timeout)
        if status != 200 or parse_frame(body).cmd != CMD_PONG:
            raise ProtocolError(f"no pong (HTTP {status})")

    async def close(self) -> None:
        """Close the kept-alive connections."""
        self._closed = True
        await self._http.close()

    async def __aenter__(self) -> HttpRpcClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

"""RPC peers: :class:`Peer` (one end of a connection, either side) and :class:`Client`.

Both ends of an arpc connection are alike: each can ``call`` and ``notify`` the other and
has a :class:`~nbio.rpc.router.Router` for what the other side calls. A server gets one
:class:`Peer` per connection; a :class:`Client` is a Peer that dials, keeps alive and
reconnects.

Hot path: the engine hands the received bytes straight to the Cython
:class:`~nbio.rpc.message.FrameReader`, whose callback dispatches each message. Answers
produced while a read is processed (plain-function handlers answer inline) are collected
and written with one ``write`` at the end of the read. A call waits on one future stored
in a dict ``seq -> future``; the response resolves it, a timeout timer or the loss of the
connection fails it (:class:`~nbio.errors.RpcTimeout`,
:class:`~nbio.errors.ConnectionLost`), an error response raises
:class:`~nbio.errors.RpcError` with the remote text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Set

from nbio.engine import Engine, Handler, get_engine
from nbio.errors import (
    ConnectionClosed,
    ConnectionLost,
    NotConnected,
    ProtocolError,
    RpcError,
    RpcTimeout,
)
from nbio.rpc.codec import DEFAULT_CODEC, Codec, payload_to_value, value_to_payload
from nbio.rpc.coder import encode_frame
from nbio.rpc.message import (
    CMD_MASK,
    CMD_NOTIFY,
    CMD_PING,
    CMD_REQUEST,
    CMD_RESPONSE,
    CMD_STREAM,
    DEFAULT_MAX_BODY_LEN,
    FLAG_ASYNC,
    FLAG_ERROR,
    PING_FRAME,
    PONG_FRAME,
    STREAM_LOCAL,
    FrameReader,
    encode,
)
from nbio.rpc.router import ERR_SHUTTING_DOWN, Router

__all__ = ["FIRST_SEQ", "Client", "Peer", "connect"]

logger = logging.getLogger("nbio.rpc")

#: The seq of a new peer's first call/notify/stream. The nbio issue fixes it at 2 (its
#: golden vector ``Call("/echo", "hello")`` carries seq 2); arpc's source starts at 1.
FIRST_SEQ = 2

#: Above this many queued bytes, ``call`` waits for the write queue to drain first.
_HIGH_WATER = 65536

_CMD_REQUEST = CMD_REQUEST
_CMD_RESPONSE = CMD_RESPONSE
_CMD_NOTIFY = CMD_NOTIFY
_CMD_PING = CMD_PING
_CMD_STREAM = CMD_STREAM


def _undecodable(method: str, codec: Any, exc: Exception) -> ProtocolError:
    return ProtocolError(
        f"cannot decode the answer to {method!r} with {type(codec).__name__} ({exc}); "
        "a str/bytes answer travels raw: pass as_type=str or as_type=bytes"
    )


class _AsyncCall:
    """A pending callback-style call."""

    __slots__ = ("as_type", "callback", "method", "timer")

    def __init__(
        self, callback: Callable[[Any, Optional[BaseException]], Any], as_type: Any, method: str
    ) -> None:
        self.callback = callback
        self.as_type = as_type
        self.method = method
        self.timer: Optional[asyncio.TimerHandle] = None

    def finish(self, peer: Peer, msg: Any, exc: Optional[BaseException]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        value = None
        if exc is None:
            if msg.flags & FLAG_ERROR:
                exc = RpcError(msg.error)
            else:
                try:
                    value = payload_to_value(msg.payload, peer.codec, self.as_type)
                except Exception as e:
                    exc = _undecodable(self.method, peer.codec, e)
        try:
            self.callback(value, exc)
        except Exception:
            logger.exception("nbio.rpc: callback of call %r raised", self.method)


class _PeerHandler(Handler):
    """Engine handler shared by the connections of one server or client."""

    __slots__ = ()

    def on_data(self, conn: Any, data: Any) -> None:
        conn.session._on_data(data)

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        peer = conn.session
        if peer is not None:
            peer._on_close(conn, exc)


class Peer:
    """One end of an RPC connection (the server's object per connection, or a client).

    * ``await call(method, value, timeout=, as_type=)`` - a Call; returns the decoded
      answer (``as_type=str``/``bytes`` for a raw answer) or raises RpcError / RpcTimeout /
      ConnectionLost;
    * ``call_async(method, value, callback, timeout=, as_type=)`` - callback style:
      ``callback(value, exc)`` runs once with the answer or the error;
    * ``notify(method, value)`` - one-way; ``stream(method)`` - a new stream;
    * ``get``/``set``/``values`` - user data attached to the connection; ``close()``.
    """

    __slots__ = (
        "__weakref__",
        "_batch",
        "_coders",
        "_draining",
        "_inflight",
        "_loop",
        "_lstreams",
        "_owner",
        "_pending",
        "_read_timeout",
        "_reader",
        "_rstreams",
        "_seq",
        "_values",
        "_wait_idle",
        "close_reason",
        "codec",
        "conn",
        "router",
    )

    def __init__(
        self,
        owner: Any,
        router: Router,
        codec: Optional[Codec] = None,
        coders: Sequence[Any] = (),
        max_body_len: int = DEFAULT_MAX_BODY_LEN,
        read_timeout: Optional[float] = None,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        self._owner = owner
        self.router = router
        self.codec: Codec = codec or DEFAULT_CODEC
        self._coders = tuple(coders)
        self._reader = FrameReader(self._on_message, max_body_len, self._coders)
        self._read_timeout = read_timeout
        self._loop = loop or asyncio.get_running_loop()
        self.conn: Any = None
        self._pending: Dict[int, Any] = {}
        self._seq = FIRST_SEQ
        self._batch: Optional[list] = None
        self._inflight = 0
        self._draining = False
        self._wait_idle: Optional[asyncio.Future] = None
        self._lstreams: Optional[Dict[int, Any]] = None
        self._rstreams: Optional[Dict[int, Any]] = None
        self._values: Optional[Dict[Any, Any]] = None
        #: Why the last connection closed (None: closed here / still open).
        self.close_reason: Optional[BaseException] = None

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        return f"<{type(self).__name__} {state} remote={self.remote_address!r}>"

    # -- state ----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        conn = self.conn
        return conn is not None and not conn.closing

    @property
    def remote_address(self) -> Any:
        conn = self.conn
        return None if conn is None else conn.remote_address

    @property
    def local_address(self) -> Any:
        conn = self.conn
        return None if conn is None else conn.local_address

    @property
    def pending_calls(self) -> int:
        """Calls sent and not answered yet."""
        return len(self._pending)

    @property
    def values(self) -> Dict[Any, Any]:
        """User data attached to this connection (arpc ``Client.Set/Get``)."""
        if self._values is None:
            self._values = {}
        return self._values

    def get(self, key: Any, default: Any = None) -> Any:
        return default if self._values is None else self._values.get(key, default)

    def set(self, key: Any, value: Any) -> None:
        self.values[key] = value

    # -- sending --------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = seq + 1 if seq < 0xFFFFFFFFFFFFFFFF else 1
        return seq

    def _not_connected(self) -> BaseException:
        return ConnectionLost("connection closed")

    def _send(self, frame: bytes) -> None:
        """Send one frame (coders applied); raises ConnectionLost/NotConnected."""
        if self._coders:
            frame = encode_frame(frame, self._coders)
        self._send_raw(frame)

    def _send_raw(self, frame: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(frame)
            return
        conn = self.conn
        if conn is None:
            raise self._not_connected()
        try:
            conn.write(frame)
        except ConnectionClosed:
            raise self._not_connected() from None

    def _answer(self, frame: bytes) -> bool:
        """Send the answer to a request; False if the connection is gone."""
        self._inflight -= 1
        if self._wait_idle is not None and self._inflight <= 0 and not self._wait_idle.done():
            self._wait_idle.set_result(None)
        try:
            self._send(frame)
        except ConnectionLost:
            return False
        return True

    def _flush(self) -> None:
        batch = self._batch
        if batch:
            self._batch = []
            conn = self.conn
            if conn is not None and not conn.closing:
                conn.write(batch[0] if len(batch) == 1 else b"".join(batch))

    async def call(
        self,
        method: str,
        value: Any = None,
        *,
        timeout: Optional[float] = None,
        as_type: Any = None,
    ) -> Any:
        """Call ``method`` with ``value`` and return the decoded answer."""
        conn = self.conn
        if conn is not None and conn.buffered > _HIGH_WATER:
            # backpressure: wait until the kernel took most of what is queued
            try:
                await conn.drain()
            except ConnectionClosed:
                raise self._not_connected() from None
        seq = self._next_seq()
        frame = encode(_CMD_REQUEST, method, seq, value_to_payload(value, self.codec))
        fut = self._loop.create_future()
        self._pending[seq] = fut
        try:
            self._send(frame)
        except BaseException:
            del self._pending[seq]
            raise
        if timeout is None:
            timeout = self._default_timeout()
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, self._expire, seq, method, timeout)
        try:
            msg = await fut
        finally:
            if timer is not None:
                timer.cancel()
            if fut.cancelled():  # the caller was cancelled
                self._pending.pop(seq, None)
        if msg.flags & FLAG_ERROR:
            raise RpcError(msg.error)
        try:
            return payload_to_value(msg.payload, self.codec, as_type)
        except Exception as exc:
            raise _undecodable(method, self.codec, exc) from exc

    def call_async(
        self,
        method: str,
        value: Any,
        callback: Callable[[Any, Optional[BaseException]], Any],
        *,
        timeout: Optional[float] = None,
        as_type: Any = None,
    ) -> None:
        """Callback-style call (arpc ``CallAsync``, async flag set): ``callback(value, exc)``
        runs once, with the decoded answer or the error (RpcError, RpcTimeout,
        ConnectionLost). Raises at once if the request cannot be sent."""
        seq = self._next_seq()
        frame = encode(_CMD_REQUEST, method, seq, value_to_payload(value, self.codec), FLAG_ASYNC)
        entry = _AsyncCall(callback, as_type, method)
        self._pending[seq] = entry
        try:
            self._send(frame)
        except BaseException:
            del self._pending[seq]
            raise
        if timeout is None:
            timeout = self._default_timeout()
        if timeout is not None:
            entry.timer = self._loop.call_later(timeout, self._expire, seq, method, timeout)

    def notify(self, method: str, value: Any = None) -> None:
        """Send a Notify (no answer). Raises ConnectionLost/NotConnected if not connected."""
        frame = encode(
            _CMD_NOTIFY, method, self._next_seq(), value_to_payload(value, self.codec), FLAG_ASYNC
        )
        self._send(frame)

    def ping(self) -> None:
        """Send a ping (answered by a pong)."""
        self._send_raw(PING_FRAME)

    def stream(self, method: str) -> Any:
        """A new stream to the peer's stream handler for ``method`` (nothing is sent
        before the first ``send``)."""
        from nbio.rpc.stream import Stream

        st = Stream(self, method, self._next_seq(), True)
        if self._lstreams is None:
            self._lstreams = {}
        self._lstreams[st.id] = st
        return st

    def _default_timeout(self) -> Optional[float]:
        return None

    def _expire(self, seq: int, method: str, timeout: float) -> None:
        entry = self._pending.pop(seq, None)
        if entry is None:
            return
        exc = RpcTimeout(f"call {method!r} timed out after {timeout:g} s")
        if isinstance(entry, _AsyncCall):
            entry.timer = None
            entry.finish(self, None, exc)
        elif not entry.done():
            entry.set_exception(exc)

    # -- receiving ------------------------------------------------------------------------------

    def _attach(self, conn: Any) -> None:
        self.conn = conn
        conn.session = self
        self.close_reason = None
        if self._read_timeout:
            conn.set_read_deadline(self._read_timeout)

    def _on_data(self, data: Any) -> None:
        if self._read_timeout:
            self.conn.set_read_deadline(self._read_timeout)
        batch = self._batch = []
        try:
            self._reader.feed(data)
        except ProtocolError as exc:
            # malformed input (bad length, unknown command, over-limit body, bad gzip):
            # send what was answered, then drop only this connection
            self._batch = None
            self._write_batch(batch)
            logger.info("nbio.rpc: closing %r: %s", self, exc)
            self.close_reason = exc
            self.conn.close()
            return
        except BaseException:
            self._batch = None
            self._write_batch(batch)
            raise
        self._batch = None
        if batch:
            conn = self.conn
            if not conn.closing:
                conn.write(batch[0] if len(batch) == 1 else b"".join(batch))

    def _write_batch(self, batch: list) -> None:
        conn = self.conn
        if batch and conn is not None and not conn.closing:
            conn.write(b"".join(batch))

    def _on_message(self, msg: Any) -> None:
        cmd = msg.cmd_byte & CMD_MASK
        if cmd == _CMD_RESPONSE:
            entry = self._pending.pop(msg.seq, None)
            if entry is None:
                return  # late (timed out) or unknown
            if type(entry) is _AsyncCall:
                entry.finish(self, msg, None)
            elif not entry.done():
                entry.set_result(msg)
        elif cmd == _CMD_REQUEST:
            self._inflight += 1
            if self._draining:
                from nbio.rpc.context import Context

                Context(self, msg).error(ERR_SHUTTING_DOWN)
                return
            self.router.dispatch(self, msg)
        elif cmd == _CMD_NOTIFY:
            if not self._draining:
                self.router.dispatch(self, msg)
        elif cmd == _CMD_PING:
            self._send_raw(PONG_FRAME)
        elif cmd == _CMD_STREAM:
            self._on_stream(msg)
        # pong: nothing to do, the read itself pushed the read deadline back

    def _on_stream(self, msg: Any) -> None:
        from nbio.rpc.stream import Stream

        sid = msg.seq
        st: Any
        if msg.cmd_byte & STREAM_LOCAL:  # from the side that created it: ours is remote
            streams = self._rstreams
            st = None if streams is None else streams.get(sid)
            if st is None:
                handler = self.router.stream_handler(msg.method)
                if handler is None:
                    logger.debug("nbio.rpc: no stream handler for %r", msg.method)
                    return
                st = Stream(self, msg.method, sid, False)
                if streams is None:
                    streams = self._rstreams = {}
                streams[sid] = st
                st._on_frame(msg)
                try:
                    result = handler(st)
                except Exception:
                    logger.exception("nbio.rpc: stream handler for %r raised", msg.method)
                    st._abandon()
                    return
                if asyncio.iscoroutine(result):
                    self._spawn(st._run_handler(result))
                return
        else:
            streams = self._lstreams
            st = None if streams is None else streams.get(sid)
            if st is None:
                return
        st._on_frame(msg)

    def _forget_stream(self, st: Any) -> None:
        streams = self._lstreams if st.local else self._rstreams
        sid = st.id
        if streams is not None and streams.get(sid) is st:
            del streams[sid]

    def _on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        if conn is not self.conn:
            return
        if self.close_reason is None:
            self.close_reason = exc
        self._batch = None
        reason = self.close_reason
        lost = ConnectionLost("connection lost" + (f": {reason}" if reason is not None else ""))
        self._fail_pending(lost)
        for streams in (self._lstreams, self._rstreams):
            if streams:
                for st in list(streams.values()):
                    st._connection_lost(lost)
                streams.clear()
        if self._wait_idle is not None and not self._wait_idle.done():
            self._wait_idle.set_result(None)
        self._owner._peer_closed(self, conn, exc)

    def _fail_pending(self, exc: BaseException) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        for entry in pending.values():
            if type(entry) is _AsyncCall:
                entry.finish(self, None, exc)
            elif not entry.done():
                entry.set_exception(exc)

    def _spawn(self, coro: Any) -> asyncio.Task:
        return self._owner._spawn(coro)

    def close(self) -> None:
        """Close the connection after flushing what is queued (answers included)."""
        self._flush()
        conn = self.conn
        if conn is not None:
            conn.close()


class _ClientHandler(_PeerHandler):
    __slots__ = ("client",)

    def __init__(self, client: Client) -> None:
        self.client = client

    def on_open(self, conn: Any) -> None:
        self.client._opened(conn)


class Client(Peer):
    """An RPC client over TCP (``host``, ``port``) or a Unix socket (``path``).

    Options: ``router`` (handlers for calls from the server), ``codec`` (JSON by default;
    e.g. :class:`~nbio.rpc.codec.MsgpackCodec`), ``coders`` (e.g. ``[GzipCoder()]``),
    ``ssl`` (``True`` or a client :class:`ssl.SSLContext`) makes it a TLS connection, with
    ``server_hostname`` (default: ``host``) as the name sent and verified.
    ``timeout`` (default per-call timeout; None waits forever), ``connect_timeout``,
    ``keepalive`` (send a ping every so many seconds), ``read_timeout`` (close when nothing
    arrives for so long), ``reconnect`` (dial again after a lost connection, every
    ``reconnect_interval`` s, at most ``reconnect_max_attempts`` times in a row (None: no
    limit); ``on_reconnect(client)`` after each success; calls meanwhile raise
    :class:`~nbio.errors.NotConnected`), ``engine`` (default: the loop's shared engine).
    """

    __slots__ = (
        "_closed_fut",
        "_closing",
        "_connect_timeout",
        "_engine",
        "_handler",
        "_host",
        "_keepalive",
        "_keepalive_timer",
        "_max_body_len",
        "_path",
        "_port",
        "_reconnect_task",
        "_server_hostname",
        "_ssl",
        "_tasks",
        "_timeout",
        "on_reconnect",
        "reconnect",
        "reconnect_interval",
        "reconnect_max_attempts",
        "reconnects",
    )

    def __init__(
        self,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        path: Optional[str] = None,
        router: Optional[Router] = None,
        codec: Optional[Codec] = None,
        coders: Iterable[Any] = (),
        timeout: Optional[float] = None,
        connect_timeout: Optional[float] = 10.0,
        keepalive: Optional[float] = None,
        read_timeout: Optional[float] = None,
        reconnect: bool = False,
        reconnect_interval: float = 1.0,
        reconnect_max_attempts: Optional[int] = None,
        on_reconnect: Optional[Callable[[Client], Any]] = None,
        max_body_len: int = DEFAULT_MAX_BODY_LEN,
        engine: Optional[Engine] = None,
        ssl: Any = None,
        server_hostname: Optional[str] = None,
    ) -> None:
        if path is None and (host is None or port is None):
            raise ValueError("Client needs host and port, or path")
        self._ssl = ssl
        self._server_hostname = server_hostname
        super().__init__(self, router or Router(), codec, tuple(coders), max_body_len, read_timeout)
        self._host = host
        self._port = port
        self._path = path
        self._engine = engine
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._keepalive_timer: Optional[asyncio.TimerHandle] = None
        self._max_body_len = max_body_len
        self.reconnect = reconnect
        self.reconnect_interval = reconnect_interval
        self.reconnect_max_attempts = reconnect_max_attempts
        self.on_reconnect = on_reconnect
        #: Successful reconnections so far.
        self.reconnects = 0
        self._reconnect_task: Optional[asyncio.Task] = None
        self._tasks: Set[asyncio.Task] = set()
        self._closing = False
        self._closed_fut: Optional[asyncio.Future] = None
        self._handler = _ClientHandler(self)

    @property
    def reconnecting(self) -> bool:
        t = self._reconnect_task
        return t is not None and not t.done()

    @property
    def closed(self) -> bool:
        return self._closing

    def _default_timeout(self) -> Optional[float]:
        return self._timeout

    def _not_connected(self) -> BaseException:
        if self._closing:
            return NotConnected("client is closed")
        if self.reconnecting:
            return NotConnected("client is reconnecting")
        return NotConnected("client is not connected")

    async def connect(self) -> Client:
        """Dial the server (raises OSError / TimeoutError); returns the client."""
        if self.connected:
            return self
        self._closing = False
        await self._dial()
        return self

    async def _dial(self) -> None:
        engine = self._engine or get_engine()
        self._engine = engine
        tls: Dict[str, Any] = {}
        if self._ssl:
            tls = {"ssl": self._ssl, "server_hostname": self._server_hostname}
        if self._path is not None:
            await engine.dial(self._handler, path=self._path, timeout=self._connect_timeout, **tls)
        else:
            await engine.dial(
                self._handler, self._host, self._port, timeout=self._connect_timeout, **tls
            )

    def _opened(self, conn: Any) -> None:
        self._reader.reset()
        self._attach(conn)
        self._closed_fut = self._loop.create_future()
        if self._keepalive:
            self._schedule_keepalive()
        self.router.run_hooks(self.router.connect_hooks, self)

    def _schedule_keepalive(self) -> None:
        assert self._keepalive is not None
        self._keepalive_timer = self._loop.call_later(self._keepalive, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        self._keepalive_timer = None
        if self.connected:
            try:
                self.ping()
            except ConnectionLost:
                return
            self._schedule_keepalive()

    def _peer_closed(self, peer: Peer, conn: Any, exc: Optional[BaseException]) -> None:
        self.conn = None
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result(None)
        self.router.run_hooks(self.router.disconnect_hooks, self)
        engine = self._engine
        if self.reconnect and not self._closing and engine is not None and not engine.closed:
            self._reconnect_task = self._loop.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        attempts = 0
        limit = self.reconnect_max_attempts
        while not self._closing and (limit is None or attempts < limit):
            attempts += 1
            await asyncio.sleep(self.reconnect_interval)
            if self._closing:
                return
            try:
                await self._dial()
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                logger.info("nbio.rpc: reconnect attempt %d failed: %s", attempts, exc)
                if self._engine is not None and self._engine.closed:
                    return
                continue
            self.reconnects += 1
            if self.on_reconnect is not None:
                self.router.run_hooks([self.on_reconnect], self)
            return
        logger.warning("nbio.rpc: giving up reconnecting after %d attempts", attempts)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self, timeout: float = 5.0) -> None:  # type: ignore[override]
        """Stop reconnecting, close the connection (pending calls get ConnectionLost) and
        cancel the tasks of handlers still running."""
        self._closing = True
        task = self._reconnect_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        conn = self.conn
        if conn is not None:
            Peer.close(self)
            fut = self._closed_fut
            if fut is not None and not fut.done():
                try:
                    await asyncio.wait_for(asyncio.shield(fut), timeout)
                except asyncio.TimeoutError:
                    conn.abort()
        self._fail_pending(NotConnected("client is closed"))
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def connect(host: Optional[str] = None, port: Optional[int] = None, **options: Any) -> Client:
    """Create a :class:`Client` and connect it: ``await connect("127.0.0.1", 8888)`` or
    ``await connect(path="/tmp/rpc.sock")``."""
    return await Client(host, port, **options).connect()

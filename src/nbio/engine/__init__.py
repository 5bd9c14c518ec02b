"""nbio.engine: connections, listeners, dialing, deadlines and write queues.

:class:`Engine` runs on the current asyncio event loop (the default loop or uvloop) with one
of two backends behind the same contract:

* ``native`` - Cython over Linux epoll: one epoll fd registered with ``loop.add_reader``,
  batch accept, one engine-wide read buffer, direct writes with a queue only for what the
  kernel refused; about a hundred bytes per idle connection.
* ``asyncio`` - the portable backend on asyncio Protocol/Transport (macOS, Windows).

The backend is chosen by ``Engine(backend=...)``, else by the ``NBIO_ENGINE`` environment
variable (``native`` or ``asyncio``), else native where available.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl as _ssl
from typing import Any, Dict, List, Optional, Protocol, Union, runtime_checkable

from ..errors import ConnectionClosed
from . import _sockets
from ._conn import ConnBase, Handler
from ._portable import PortableEngine
from .tls import TLSConn, TLSLayer, default_client_context

try:
    from ._native import NativeEngine
except ImportError:  # pragma: no cover - non-Linux
    NativeEngine = None  # type: ignore[assignment,misc]

__all__ = [
    "BACKENDS",
    "Conn",
    "ConnBase",
    "Engine",
    "Handler",
    "Listener",
    "TLSConn",
    "default_backend",
    "get_engine",
]

BACKENDS = ("native", "asyncio") if NativeEngine is not None else ("asyncio",)


@runtime_checkable
class Conn(Protocol):
    """What every nbio connection offers, whichever backend it runs on."""

    session: Any

    def write(self, data: Any) -> None:
        """Send bytes; what the kernel refuses is queued. Raises ConnectionClosed once closed."""

    def writelines(self, chunks: Any) -> None:
        """Send several buffers in one gathered write."""

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Send a range of an open file (zero-copy on the native backend)."""

    def close(self, reason: Optional[BaseException] = None) -> None:
        """Close after flushing what is queued; ``on_close`` gets ``reason``."""

    def abort(self, reason: Optional[BaseException] = None) -> None:
        """Close now, dropping what is queued; ``on_close`` gets ``reason``."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_read_deadline(self, timeout: Optional[float]) -> None: ...

    def set_write_deadline(self, timeout: Optional[float]) -> None: ...

    def set_idle_timeout(self, timeout: Optional[float]) -> None: ...

    def drain(self) -> Any:
        """Awaitable that waits while the write queue is above the high-water mark."""

    def fileno(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def buffered(self) -> int: ...

    @property
    def local_address(self) -> Any: ...

    @property
    def remote_address(self) -> Any: ...


@runtime_checkable
class Listener(Protocol):
    """A listening socket (TCP, Unix or UDP) served by an engine."""

    @property
    def address(self) -> Any: ...

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


def default_backend() -> str:
    """The backend an :class:`Engine` uses when none is named."""
    name = os.environ.get("NBIO_ENGINE", "").strip().lower()
    if name in ("asyncio", "portable"):
        return "asyncio"
    if name == "native":
        if NativeEngine is None:
            raise RuntimeError("NBIO_ENGINE=native but the epoll engine is not available here")
        return "native"
    if name:
        raise ValueError(f"NBIO_ENGINE={name!r}: expected 'native' or 'asyncio'")
    return "native" if NativeEngine is not None else "asyncio"


class Engine:
    """An event engine bound to an asyncio event loop.

    Settings: ``read_buffer_size`` (the engine-wide read buffer), ``max_write_buffer`` (per
    connection; a peer that lets more pile up is closed with WriteBufferOverflow),
    ``max_reads_per_turn`` (fairness: reads per connection per loop turn), ``backlog``,
    ``reuse_port`` (default for listeners), ``memory_limit`` (total queued bytes; above it
    the engine stops reading until half has drained), ``max_connections`` (excess accepted
    sockets are closed at once and counted in ``stats()['rejected']``),
    ``timer_resolution`` (seconds per deadline tick), ``write_high_water`` /
    ``write_low_water`` (for ``await conn.drain()``), ``close_timeout`` (how long a graceful
    close may wait for a slow reader).
    """

    def __init__(
        self,
        *,
        backend: Optional[str] = None,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        read_buffer_size: int = 65536,
        max_write_buffer: int = 4 * 1024 * 1024,
        max_reads_per_turn: int = 4,
        backlog: int = 1024,
        reuse_port: bool = False,
        memory_limit: Optional[int] = None,
        max_connections: Optional[int] = None,
        timer_resolution: float = 0.05,
        write_high_water: int = 65536,
        write_low_water: int = 16384,
        close_timeout: float = 10.0,
        tcp_nodelay: bool = True,
    ) -> None:
        if loop is None:
            loop = asyncio.get_running_loop()
        name = backend or default_backend()
        if name == "portable":
            name = "asyncio"
        if name not in BACKENDS:
            raise ValueError(f"unknown or unavailable engine backend {name!r}; have {BACKENDS}")
        self.loop = loop
        self.backend = name
        self.reuse_port = reuse_port
        self.backlog = backlog
        settings: Dict[str, Any] = dict(
            read_buffer_size=read_buffer_size,
            max_reads_per_turn=max_reads_per_turn,
            max_write_buffer=max_write_buffer,
            write_high_water=write_high_water,
            write_low_water=write_low_water,
            backlog=backlog,
            max_connections=max_connections,
            memory_limit=memory_limit,
            timer_resolution=timer_resolution,
            close_timeout=close_timeout,
            tcp_nodelay=tcp_nodelay,
        )
        self._impl: Any = (NativeEngine if name == "native" else PortableEngine)(loop, **settings)
        self._closed = False

    def __repr__(self) -> str:
        return f"<nbio.Engine backend={self.backend} open={self._impl.stats()['open']}>"

    # -- serving ----------------------------------------------------------------------------

    def listen(
        self,
        handler: Any,
        host: Optional[str] = "127.0.0.1",
        port: int = 0,
        *,
        path: Optional[str] = None,
        reuse_port: Optional[bool] = None,
        backlog: Optional[int] = None,
        ssl: Optional[_ssl.SSLContext] = None,
        ssl_handshake_timeout: float = 10.0,
        sock: Optional[socket.socket] = None,
    ) -> Listener:
        """Listen on TCP ``host:port`` (port 0 picks a free one) or on the Unix socket
        ``path``, serving every accepted connection with ``handler``. ``sock`` serves an
        already bound and listening socket instead (e.g. one inherited from a parent
        process); the engine takes it over.

        With ``ssl`` (a server :class:`ssl.SSLContext`) connections are TLS: the handler
        sees :class:`~nbio.engine.tls.TLSConn` objects once the handshake is done; a
        handshake that fails or takes longer than ``ssl_handshake_timeout`` closes only
        that connection."""
        self._check_open()
        if ssl is not None:
            handler = TLSLayer(
                handler, ssl, server_side=True, handshake_timeout=ssl_handshake_timeout
            )
        if sock is None:
            sock = _sockets.listen_socket(
                host, port, path, backlog or self.backlog,
                self.reuse_port if reuse_port is None else reuse_port,
            )
            is_unix = path is not None
        else:
            sock.setblocking(False)
            is_unix = sock.family == socket.AF_UNIX
        try:
            return self._impl.add_listener(sock, handler, is_unix)
        except BaseException:
            sock.close()
            raise

    async def dial(
        self,
        handler: Any,
        host: Optional[str] = None,
        port: Optional[int] = None,
        *,
        path: Optional[str] = None,
        timeout: Optional[float] = None,
        ssl: Union[bool, _ssl.SSLContext, None] = None,
        server_hostname: Optional[str] = None,
        ssl_handshake_timeout: float = 10.0,
        ssl_session: Optional[_ssl.SSLSession] = None,
        local_addr: Optional[tuple] = None,
    ) -> Any:
        """Connect to ``host:port`` (or the Unix socket ``path``) without blocking; returns
        the connection once established (``on_open`` has run). Raises OSError (e.g.
        ConnectionRefusedError) or TimeoutError.

        With ``ssl`` (``True`` for a verifying default context, or a client
        :class:`ssl.SSLContext`) the connection is TLS and is returned after the handshake;
        ``server_hostname`` (default: ``host``) is sent as SNI and verified;
        ``ssl_session`` resumes an earlier session (``conn.tls_session``).

        ``local_addr`` (``(host, port)``, TCP only) binds the socket before connecting,
        e.g. to spread many connections over several source addresses; with port 0 the
        source port is picked per destination (Linux ``IP_BIND_ADDRESS_NO_PORT``)."""
        self._check_open()
        if ssl:
            context = default_client_context() if ssl is True else ssl
            waiter = self.loop.create_future()
            layer = TLSLayer(
                handler,
                context,
                server_side=False,
                server_hostname=server_hostname or (host if path is None else None),
                handshake_timeout=ssl_handshake_timeout,
                session=ssl_session,
                waiter=waiter,
            )
            raw = await self.dial(
                layer, host, port, path=path, timeout=timeout, local_addr=local_addr
            )
            try:
                return await waiter
            except BaseException:
                raw.abort()
                raise
        family: int
        addr: Any
        if path is not None:
            if local_addr is not None:
                raise ValueError("local_addr applies to TCP dials, not to a Unix socket path")
            family, addr = socket.AF_UNIX, path
        else:
            if host is None or port is None:
                raise ValueError("dial needs host and port, or path")
            family, addr = await _sockets.resolve(self.loop, host, port)
        if self.backend == "native":
            sock, _ = _sockets.start_connect(family, addr, local_addr)
            fut = self._impl.start_dial(sock, handler, path is not None)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout)
            except asyncio.TimeoutError:
                self._impl.cancel_dial(fut)
                raise TimeoutError(f"connect to {addr!r} timed out after {timeout} s") from None
            except asyncio.CancelledError:
                self._impl.cancel_dial(fut)
                raise
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            if local_addr is not None:
                _sockets.bind_local(sock, local_addr)
            return await asyncio.wait_for(
                self._impl.dial(sock, addr, handler, path is not None), timeout
            )
        except asyncio.TimeoutError:
            sock.close()
            raise TimeoutError(f"connect to {addr!r} timed out after {timeout} s") from None
        except BaseException:
            sock.close()
            raise

    def listen_udp(
        self,
        handler: Any,
        host: Optional[str] = "127.0.0.1",
        port: int = 0,
        *,
        idle_timeout: float = 60.0,
        reuse_port: Optional[bool] = None,
    ) -> Any:
        """Serve UDP on ``host:port``: each peer address becomes a connection with
        ``on_open``/``on_data`` (one datagram per call)/``on_close``; a peer silent for
        ``idle_timeout`` seconds is closed with DeadlineExceeded("idle")."""
        self._check_open()
        sock = _sockets.udp_socket(host, port, self.reuse_port if reuse_port is None else reuse_port)
        try:
            return self._impl.add_udp(sock, handler, idle_timeout or 0.0, False)
        except BaseException:
            sock.close()
            raise

    async def dial_udp(
        self, handler: Any, host: str, port: int, *, idle_timeout: Optional[float] = None
    ) -> Any:
        """A connected UDP socket to ``host:port`` as one connection."""
        self._check_open()
        _, addr = await _sockets.resolve(self.loop, host, port)
        sock = _sockets.udp_socket(None, 0, False, remote=addr)
        try:
            conn = self._impl.add_udp(sock, handler, idle_timeout or 0.0, True)
        except BaseException:
            sock.close()
            raise
        if self.backend == "asyncio":
            await asyncio.sleep(0)  # let the datagram endpoint attach its transport
            while conn._endpoint.transport is None and not conn._endpoint.task.done():
                await asyncio.sleep(0)
        return conn

    # -- introspection ------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Counters: ``open`` connections, ``accepted``/``dialed``/``closed``/``rejected``
        totals, ``bytes_in``/``bytes_out``, ``buffered`` (bytes queued now), and more."""
        return dict(self._impl.stats())

    def connections(self) -> List[Any]:
        """The open stream connections (a snapshot list)."""
        return list(self._impl.connections())

    @property
    def closed(self) -> bool:
        return self._closed

    # -- shutdown -----------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection gracefully (flushing queued data for up to
        ``timeout`` seconds, then aborting), and release the engine's resources."""
        if self._closed:
            return
        self._closed = True
        impl = self._impl
        impl.close_listeners()
        conns = impl.connections()
        for conn in conns:
            conn.close()
        deadline = self.loop.time() + timeout
        while any(not c.closed for c in conns) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in conns:
            if not conn.closed:
                conn.abort()
        if self.backend == "asyncio":
            await impl.wait_tasks()
            # connection_lost callbacks are scheduled with call_soon after abort/close
            for _ in range(3):
                await asyncio.sleep(0)
        impl.release()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(None, "engine is closed")


_engines: Dict[asyncio.AbstractEventLoop, Engine] = {}


def get_engine(backend: Optional[str] = None) -> Engine:
    """The shared engine of the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    engine = _engines.get(loop)
    if engine is None or engine.closed or loop.is_closed():
        for stale in [lp for lp in _engines if lp.is_closed()]:
            del _engines[stale]
        engine = Engine(backend=backend, loop=loop)
        _engines[loop] = engine
    return engine


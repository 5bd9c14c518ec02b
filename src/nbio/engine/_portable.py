"""The portable nbio engine: the same Engine/Conn contract on asyncio Protocol/Transport.

Used where epoll is not available (macOS, Windows) or when ``NBIO_ENGINE=asyncio``. Each
connection is its own asyncio Protocol, so it costs what an asyncio transport costs; the
contract (callbacks, deadlines, limits, stats) is the native engine's.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, List, Optional, Set, Union

from ..errors import ClosedByPeer, ConnectionClosed, DeadlineExceeded, WriteBufferOverflow
from ._conn import FLAG_CLOSED as F_CLOSED
from ._conn import FLAG_CLOSING as F_CLOSING
from ._conn import FLAG_DIALED as F_DIALED
from ._conn import FLAG_EOF as F_EOF
from ._conn import FLAG_MEM_PAUSED as F_MEM_PAUSED
from ._conn import FLAG_PAUSED as F_PAUSED
from ._conn import ConnBase, Hub
from ._files import CHUNK, FileQueue, file_range
from ._timers import TimerWheel


class PortableConn(ConnBase, asyncio.Protocol):
    """A stream connection on the portable backend (also the asyncio Protocol)."""

    __slots__ = ("_close_reason", "_files", "_held", "_pending_reason", "_transport")

    def __init__(self, hub: Hub, flags: int = 0) -> None:
        ConnBase.__init__(self, hub)
        self._transport: Optional[asyncio.Transport] = None
        # Data that arrived while reading was paused (uvloop starts reading after
        # connection_made even when it paused the transport), delivered on resume.
        self._held: Optional[bytes] = None
        self._close_reason: Optional[BaseException] = None
        self._files: Optional[FileQueue] = None
        self._flags = flags

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("closing" if self.closing else "open")
        return f"<nbio.Conn(asyncio) fd={self._fd} {state} buffered={self._wbuf}>"

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        eng: PortableEngine = self._hub.engine
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        dialed = self._flags & F_DIALED
        if not dialed and eng.max_connections and eng.open_count >= eng.max_connections:
            eng.rejected += 1
            self._flags |= F_CLOSED
            transport.abort()
            return
        # high water 0: pause_writing when anything is queued, resume_writing once empty.
        transport.set_write_buffer_limits(high=0, low=0)
        eng.open_count += 1
        if dialed:
            eng.dialed += 1
        else:
            eng.accepted += 1
        eng.conns.add(self)
        if eng.mem_paused:
            self._mem_pause()
        on_open = self._hub.on_open
        if on_open is not None:
            try:
                on_open(self)
            except Exception as exc:
                self._fail("on_open", exc)

    def data_received(self, data: bytes) -> None:
        hub = self._hub
        hub.engine.bytes_in += len(data)
        self._touch()
        if self._held is not None or self._flags & (F_PAUSED | F_MEM_PAUSED):
            self._hold(data)
            return
        try:
            hub.on_data(self, data)
        except Exception as exc:
            self._fail("on_data", exc)

    def eof_received(self) -> bool:
        if self._held is not None:
            self._release_held()  # what came before the EOF goes first
        keep = False
        on_eof = self._hub.on_eof
        if on_eof is not None:
            try:
                keep = bool(on_eof(self))
            except Exception as exc:
                self._fail("on_eof", exc)
                return False
        if keep:
            self._flags |= F_EOF
            return True
        if self._close_reason is None:
            self._close_reason = ClosedByPeer()
        self._flags |= F_CLOSING
        return False  # the transport flushes what is queued, then closes

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        self._sync_buffered()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._transport is None or self._flags & F_CLOSED:
            return
        eng: PortableEngine = self._hub.engine
        self._flags |= F_CLOSED
        eng.open_count -= 1
        eng.closed_total += 1
        eng.conns.discard(self)
        eng.buffered_changed(-self._wbuf)
        self._wbuf = 0
        self._fd = -1
        self._files = None
        reason = self._close_reason if self._close_reason is not None else exc
        if eng.drain_waiters:
            eng.wake_drain(self, reason or ConnectionClosed(None, "connection closed"))
        self._hub.notify_close(self, reason)

    # -- public API (see nbio.engine.Conn) ----------------------------------------------------

    @property
    def local_address(self) -> Any:
        return self._transport.get_extra_info("sockname") if self._transport else None

    @property
    def remote_address(self) -> Any:
        return self._transport.get_extra_info("peername") if self._transport else None

    def write(self, data: Any) -> None:
        transport = self._transport
        if self._flags & (F_CLOSED | F_CLOSING) or transport is None:
            raise ConnectionClosed(None, "write on a closed connection")
        if self._files is not None:
            self._files.add_bytes(data)
            self._sync_buffered()
            return
        transport.write(data)
        self._hub.engine.bytes_out += len(data) if type(data) is bytes else memoryview(data).nbytes
        self._touch()
        if self._wbuf or transport.get_write_buffer_size():
            self._sync_buffered()

    def writelines(self, chunks: Any) -> None:
        if self._flags & (F_CLOSED | F_CLOSING) or self._transport is None:
            raise ConnectionClosed(None, "write on a closed connection")
        if self._files is not None:
            for c in chunks:
                self.write(c)
            return
        chunks = list(chunks)
        self._transport.writelines(chunks)
        self._hub.engine.bytes_out += sum(memoryview(c).nbytes for c in chunks)
        self._touch()
        self._sync_buffered()

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        if self._flags & (F_CLOSED | F_CLOSING) or self._transport is None:
            raise ConnectionClosed(None, "write on a closed connection")
        fd, count = file_range(file, offset, count)
        if count <= 0:
            return
        if self._files is None:
            self._files = FileQueue()
        self._files.add_file(file, fd, offset, count)
        self._pump_files()

    def _pump_files(self) -> None:
        """Feed queued file ranges (and writes queued behind them) a chunk at a time."""
        transport = self._transport
        files = self._files
        if transport is None or files is None:
            return
        try:
            done = files.pump(transport.write, lambda: transport.get_write_buffer_size() < CHUNK)
        except OSError as exc:
            self._abort_with(exc)
            return
        if done:
            self._files = None
        self._sync_buffered()

    def close(self, reason: Optional[BaseException] = None) -> None:
        if self._flags & (F_CLOSED | F_CLOSING) or self._transport is None:
            return
        if reason is not None and self._close_reason is None:
            self._close_reason = reason
        self._flags |= F_CLOSING
        if self._files is not None:
            return  # closed once the files are pumped out (see _sync_buffered)
        if self._wbuf:
            eng: PortableEngine = self._hub.engine
            self.set_write_deadline(eng.close_timeout)
        self._transport.close()

    def abort(self, reason: Optional[BaseException] = None) -> None:
        if self._transport is not None and not self._flags & F_CLOSED:
            if reason is not None and self._close_reason is None:
                self._close_reason = reason
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._flags & F_CLOSED:
            if not self._flags & (F_PAUSED | F_MEM_PAUSED):
                self._transport.pause_reading()
            self._flags |= F_PAUSED

    def resume_reading(self) -> None:
        if self._transport is not None and not self._flags & F_CLOSED:
            self._flags &= ~F_PAUSED
            if not self._flags & F_MEM_PAUSED:
                self._transport.resume_reading()
                self._schedule_held()

    # -- internals ----------------------------------------------------------------------------

    def _deadline_expired(self, kind: str) -> None:
        self._abort_with(DeadlineExceeded(kind))

    def _abort_with(self, exc: BaseException) -> None:
        if self._close_reason is None:
            self._close_reason = exc
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, where: str, exc: BaseException) -> None:
        self._hub.log_error(self, where, exc)
        self._abort_with(exc)

    def _mem_pause(self) -> None:
        if self._transport is not None and not self._flags & (F_CLOSED | F_MEM_PAUSED):
            if not self._flags & F_PAUSED:
                self._transport.pause_reading()
            self._flags |= F_MEM_PAUSED

    def _mem_resume(self) -> None:
        if self._transport is not None and self._flags & F_MEM_PAUSED:
            self._flags &= ~F_MEM_PAUSED
            if not self._flags & (F_PAUSED | F_CLOSED):
                self._transport.resume_reading()
                self._schedule_held()

    def _hold(self, data: bytes) -> None:
        """Keep ``data`` for later: reading is paused (or held data is still waiting to be
        delivered, and order matters). Makes sure the transport really stops reading."""
        self._held = bytes(data) if self._held is None else self._held + data
        if self._flags & (F_PAUSED | F_MEM_PAUSED) and self._transport is not None:
            self._transport.pause_reading()

    def _schedule_held(self) -> None:
        if self._held is not None:
            self._hub.engine.loop.call_soon(self._release_held)

    def _release_held(self) -> None:
        data = self._held
        if data is None or self._flags & (F_PAUSED | F_MEM_PAUSED | F_CLOSED):
            return
        self._held = None
        try:
            self._hub.on_data(self, data)
        except Exception as exc:
            self._fail("on_data", exc)

    def _sync_buffered(self) -> None:
        transport = self._transport
        if transport is None or self._flags & F_CLOSED:
            return
        eng: PortableEngine = self._hub.engine
        size = transport.get_write_buffer_size()
        files = self._files
        pending = files.pending if files is not None else 0
        old = self._wbuf
        new = size + pending
        self._wbuf = new
        eng.buffered_changed(new - old)
        if size > eng.max_write_buffer:
            self._abort_with(WriteBufferOverflow(size, eng.max_write_buffer))
            return
        if new <= eng.write_low_water and eng.drain_waiters:
            eng.wake_drain(self, None)
        if size == 0 and files:
            self._pump_files()
            return
        if new == 0 and old > 0:
            if self._flags & F_CLOSING:
                transport.close()
                return
            on_drain = self._hub.on_drain
            if on_drain is not None:
                try:
                    on_drain(self)
                except Exception as exc:
                    self._fail("on_drain", exc)


class PortableUdpConn(ConnBase):
    """One peer of a UDP endpoint on the portable backend."""

    __slots__ = ("_addr", "_endpoint")

    def __init__(self, hub: Hub, endpoint: PortableUdp, addr: Any) -> None:
        ConnBase.__init__(self, hub)
        self._endpoint = endpoint
        self._addr = addr

    def __repr__(self) -> str:
        return f"<nbio.UdpConn(asyncio) {self._addr!r}{' closed' if self.closed else ''}>"

    @property
    def local_address(self) -> Any:
        return self._endpoint.address

    @property
    def remote_address(self) -> Any:
        return self._addr if self._addr is not None else self._endpoint.remote

    def write(self, data: Any) -> None:
        if self._flags & F_CLOSED or self._endpoint.transport is None:
            raise ConnectionClosed(None, "write on a closed connection")
        eng: PortableEngine = self._hub.engine
        self._endpoint.transport.sendto(bytes(data), self._addr)
        eng.bytes_out += len(data)
        self._touch()

    def close(self, reason: Optional[BaseException] = None) -> None:
        self._close(reason)

    abort = close

    def _deadline_expired(self, kind: str) -> None:
        self._close(DeadlineExceeded(kind))

    def _close(self, exc: Optional[BaseException]) -> None:
        if self._flags & F_CLOSED:
            return
        self._flags |= F_CLOSED
        self._endpoint.peers.pop(self._addr, None)
        self._hub.notify_close(self, exc)
        if self._endpoint.connected:
            self._endpoint.close()


class PortableUdp(asyncio.DatagramProtocol):
    """A UDP socket on the portable backend; each peer address is a connection."""

    def __init__(self, engine: PortableEngine, handler: Any, sock: Any, idle_timeout: float,
                 connected: bool) -> None:
        self.engine = engine
        self.hub = engine.hub_for(handler)
        self.sock = sock
        self.address = sock.getsockname()
        self.remote = sock.getpeername() if connected else None
        self.idle_timeout = idle_timeout
        self.connected = connected
        self.peers: Dict[Any, PortableUdpConn] = {}
        self.transport: Optional[asyncio.DatagramTransport] = None
        self.is_closed = False
        self.task = engine.loop.create_task(
            engine.loop.create_datagram_endpoint(lambda: self, sock=sock)
        )
        engine.tasks.add(self.task)
        self.task.add_done_callback(engine.tasks.discard)

    @property
    def closed(self) -> bool:
        return self.is_closed

    def __len__(self) -> int:
        return len(self.peers)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.is_closed:
            transport.close()

    def peer(self, addr: Any) -> PortableUdpConn:
        conn = PortableUdpConn(self.hub, self, addr)
        self.peers[addr] = conn
        if self.idle_timeout > 0:
            conn.set_idle_timeout(self.idle_timeout)
        on_open = self.hub.on_open
        if on_open is not None:
            try:
                on_open(conn)
            except Exception as exc:
                self.hub.log_error(conn, "on_open", exc)
                conn._close(exc)
        return conn

    def datagram_received(self, data: bytes, addr: Any) -> None:
        key = None if self.connected else addr
        conn = self.peers.get(key)
        if conn is None:
            if self.connected:
                return
            conn = self.peer(key)
            if conn.closed:
                return
        self.engine.bytes_in += len(data)
        conn._touch()
        try:
            self.hub.on_data(conn, data)
        except Exception as exc:
            self.hub.log_error(conn, "on_data", exc)
            conn._close(exc)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors (e.g. port unreachable) are not fatal for a UDP socket

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.close()

    def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        for conn in list(self.peers.values()):
            conn._flags |= F_CLOSED
            self.hub.notify_close(conn, None)
        self.peers.clear()
        self.engine.listeners.discard(self)
        if self.transport is not None:
            self.transport.close()
        elif not self.task.done():
            self.task.cancel()
            self.sock.close()


class PortableListener:
    """A listening socket served by ``loop.create_server`` on the portable backend."""

    def __init__(self, engine: PortableEngine, sock: Any, handler: Any, unix: bool) -> None:
        self.engine = engine
        self.sock = sock
        self.hub = engine.hub_for(handler)
        self.unix = unix
        self.is_closed = False
        self._address = sock.getsockname()
        self.server: Optional[asyncio.AbstractServer] = None
        hub = self.hub
        loop = engine.loop
        if unix:
            coro = loop.create_unix_server(lambda: PortableConn(hub), sock=sock, backlog=engine.backlog)
        else:
            coro = loop.create_server(lambda: PortableConn(hub), sock=sock, backlog=engine.backlog)
        self.task = loop.create_task(coro)
        engine.tasks.add(self.task)
        self.task.add_done_callback(self._started)

    def _started(self, task: asyncio.Task) -> None:
        self.engine.tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        self.server = task.result()
        if self.is_closed:
            self.server.close()

    @property
    def address(self) -> Any:
        return self._address

    @property
    def closed(self) -> bool:
        return self.is_closed

    def fileno(self) -> int:
        return self.sock.fileno() if not self.is_closed else -1

    def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        self.engine.listeners.discard(self)
        if self.server is not None:
            self.server.close()
        else:
            self.task.cancel()
        self.sock.close()  # uvloop serves a duplicate of the socket: close ours too
        if self.unix and isinstance(self._address, str) and self._address and not self._address.startswith("\0"):
            try:
                os.unlink(self._address)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"<nbio.Listener(asyncio) {self._address!r}{' closed' if self.is_closed else ''}>"


class PortableEngine:
    """Engine backend on asyncio transports (use :class:`nbio.engine.Engine`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, read_buffer_size: int = 65536,
                 max_reads_per_turn: int = 4, max_write_buffer: int = 4 * 1024 * 1024,
                 write_high_water: int = 65536, write_low_water: int = 16384, backlog: int = 1024,
                 max_connections: Optional[int] = None, memory_limit: Optional[int] = None,
                 timer_resolution: float = 0.05, close_timeout: float = 10.0,
                 tcp_nodelay: bool = True, max_events: int = 1024) -> None:
        self.loop = loop
        self.read_buffer_size = read_buffer_size  # asyncio picks its own read size
        self.max_reads = max_reads_per_turn
        self.max_write_buffer = max_write_buffer
        self.write_high_water = write_high_water
        self.write_low_water = min(write_low_water, write_high_water)
        self.backlog = backlog
        self.max_connections = max_connections or 0
        self.memory_limit = memory_limit or 0
        self.close_timeout = close_timeout
        self.tcp_nodelay = tcp_nodelay
        self.wheel = TimerWheel(loop, timer_resolution)
        self.open_count = 0
        self.accepted = self.dialed = self.closed_total = self.rejected = 0
        self.bytes_in = self.bytes_out = 0
        self.total_buffered = 0
        self.mem_paused = False
        self.conns: Set[PortableConn] = set()
        self.listeners: Set[Union[PortableListener, PortableUdp]] = set()
        self.drain_waiters: Dict[PortableConn, asyncio.Future] = {}
        self.tasks: Set[asyncio.Task] = set()
        self.hubs: Dict[Any, Hub] = {}
        self.closed = False

    def hub_for(self, handler: Any) -> Hub:
        """The shared callback record for ``handler`` (created once per handler)."""
        hub = self.hubs.get(handler)
        if hub is None:
            hub = self.hubs[handler] = Hub(self, handler, self.wheel)
        return hub

    def buffered_changed(self, delta: int) -> None:
        self.total_buffered += delta
        if not self.memory_limit:
            return
        if delta > 0 and not self.mem_paused and self.total_buffered > self.memory_limit:
            self.mem_paused = True
            for conn in self.conns:
                conn._mem_pause()
        elif delta < 0 and self.mem_paused and self.total_buffered <= self.memory_limit // 2:
            self.mem_paused = False
            for conn in self.conns:
                conn._mem_resume()

    def wake_drain(self, conn: PortableConn, exc: Optional[BaseException]) -> None:
        fut = self.drain_waiters.get(conn)
        if fut is None:
            return
        if exc is None and conn._wbuf > self.write_low_water:
            return
        del self.drain_waiters[conn]
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

    def add_listener(self, sock: Any, handler: Any, unix: bool) -> PortableListener:
        if self.closed:
            raise RuntimeError("engine is closed")
        lst = PortableListener(self, sock, handler, unix)
        self.listeners.add(lst)
        return lst

    def add_udp(self, sock: Any, handler: Any, idle_timeout: float, connected: bool) -> Any:
        if self.closed:
            raise RuntimeError("engine is closed")
        ep = PortableUdp(self, handler, sock, idle_timeout, connected)
        self.listeners.add(ep)
        if connected:
            return ep.peer(None)
        return ep

    async def dial(self, sock: Any, addr: Any, handler: Any, unix: bool) -> PortableConn:
        await self.loop.sock_connect(sock, addr)
        conn = PortableConn(Hub(self, handler, self.wheel), F_DIALED)  # per dial: not cached
        if unix:
            await self.loop.create_unix_connection(lambda: conn, sock=sock)
        else:
            await self.loop.create_connection(lambda: conn, sock=sock)
        return conn

    def connections(self) -> List[PortableConn]:
        return list(self.conns)

    def stats(self) -> Dict[str, Any]:
        return {
            "backend": "asyncio",
            "open": self.open_count,
            "accepted": self.accepted,
            "dialed": self.dialed,
            "closed": self.closed_total,
            "rejected": self.rejected,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "buffered": self.total_buffered,
            "udp_dropped": 0,
            "memory_paused": self.mem_paused,
            "timers": self.wheel.pending,
        }

    def close_listeners(self) -> None:
        for lst in list(self.listeners):
            lst.close()

    async def wait_tasks(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def release(self) -> None:
        for conn in list(self.conns):
            conn.abort()
        self.closed = True
        self.hubs.clear()
        self.wheel.close()


__all__ = ["PortableConn", "PortableEngine", "PortableListener", "PortableUdp", "PortableUdpConn"]

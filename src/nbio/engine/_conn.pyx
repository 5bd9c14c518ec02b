# cython: language_level=3
"""The connection base class shared by both engine backends.

A connection is one compact object: the handler's callbacks live in a :class:`Hub` shared
by every connection of a listener, deadlines are a few integers read by the engine's timer
wheel, and the user's state goes into ``session``.
"""

import logging

from nbio.errors import ConnectionClosed

logger = logging.getLogger("nbio.engine")


class _Ready:
    """Awaitable that is already complete (``drain()`` with nothing to wait for)."""
    __slots__ = ()

    def __await__(self):
        return
        yield  # pragma: no cover

_READY = _Ready()


class Handler:
    """Base class for engine handlers; every callback is optional and a no-op here.

    The engine calls, for each connection of a listener (or a dial):

    * ``on_open(conn)`` once the connection is established;
    * ``on_data(conn, data)`` with what was read: a memoryview valid only during the call
      on the native backend (``bytes(data)`` keeps a copy);
    * ``on_close(conn, exc)`` exactly once, with the reason (see :mod:`nbio.errors`).

    Optional extras, looked up once per listener: ``on_eof(conn) -> bool`` when the peer
    half-closes (return True to keep writing; the default closes after flushing), and
    ``on_drain(conn)`` when the write queue becomes empty.

    An exception raised by a callback is logged and closes only that connection.
    """

    def on_open(self, conn):
        pass

    def on_data(self, conn, data):
        pass

    def on_close(self, conn, exc):
        pass


cdef object _noop_or(handler, str name):
    """The bound callback, or None where it is missing or the base class's no-op."""
    method = getattr(handler, name, None)
    if method is None:
        return None
    if getattr(method, "__func__", None) is getattr(Handler, name, object()):
        return None
    return method

cdef class Hub:
    def __init__(self, engine, handler, wheel):
        self.engine = engine
        self.handler = handler
        self.wheel = wheel
        self.on_open = _noop_or(handler, "on_open")
        self.on_data = getattr(handler, "on_data", None)
        self.on_close = _noop_or(handler, "on_close")
        self.on_eof = _noop_or(handler, "on_eof")
        self.on_drain = _noop_or(handler, "on_drain")
        if self.on_data is None:
            raise TypeError(f"handler {handler!r} has no on_data(conn, data) method")

    cpdef notify_close(self, object conn, object exc):
        """Call the handler's ``on_close(conn, exc)``; what it raises is logged."""
        if self.on_close is not None:
            try:
                self.on_close(conn, exc)
            except Exception as cb_exc:
                self.log_error(conn, "on_close", cb_exc)

    cpdef log_error(self, object conn, str where, object exc):
        logger.error("nbio: %s raised in %s for %r", type(exc).__name__, where, conn,
                     exc_info=(type(exc), exc, exc.__traceback__))


cdef class ConnBase:
    """Common state of an nbio connection (see :class:`nbio.engine.Conn` for the API)."""

    def __init__(self, Hub hub=None):
        self.hub = hub

    @property
    def engine(self):
        """The engine this connection belongs to."""
        return self.hub.engine

    @property
    def handler(self):
        """The handler object receiving this connection's callbacks."""
        return self.hub.handler

    @property
    def closed(self):
        """True once the connection is closed (``on_close`` has been or is being called)."""
        return bool(self.flags & F_CLOSED)

    @property
    def closing(self):
        """True after ``close()`` (while queued data is flushed) and once closed."""
        return bool(self.flags & (F_CLOSING | F_CLOSED))

    @property
    def buffered(self):
        """Bytes queued for the peer that the kernel has not accepted yet."""
        return self.wbuf

    @property
    def reading(self):
        """False while reading is paused (by the user or by the memory limit) or closed."""
        return not (self.flags & (F_PAUSED | F_MEM_PAUSED | F_CLOSED | F_CLOSING | F_EOF))

    def fileno(self):
        """The socket's file descriptor (-1 once closed)."""
        return self.fd

    def set_read_deadline(self, timeout):
        """Close with :class:`~nbio.errors.DeadlineExceeded` ("read") ``timeout`` seconds
        from now unless called again (pushing it back) or cleared with ``None`` before."""
        if timeout is None:
            self.read_dl = 0
        else:
            self.read_dl = self.hub.wheel.deadline_after(timeout)
            self.hub.wheel.file(self)

    def set_write_deadline(self, timeout):
        """Close with :class:`~nbio.errors.DeadlineExceeded` ("write") if data is still
        queued ``timeout`` seconds from now; ``None`` clears it."""
        if timeout is None:
            self.write_dl = 0
        else:
            self.write_dl = self.hub.wheel.deadline_after(timeout)
            self.hub.wheel.file(self)

    def set_idle_timeout(self, timeout):
        """Close with :class:`~nbio.errors.DeadlineExceeded` ("idle") after ``timeout``
        seconds without reads or writes; every read or write pushes it back."""
        if timeout is None:
            self.idle_ticks = 0
            self.idle_dl = 0
        else:
            self.idle_ticks = self.hub.wheel.ticks(timeout)
            self.idle_dl = self.hub.wheel.deadline_after(timeout)
            self.hub.wheel.file(self)

    def drain(self):
        """Awaitable: wait while more than the engine's ``write_high_water`` is queued, until
        the queue is at or below ``write_low_water``. Raises ConnectionClosed if it closes."""
        eng = self.hub.engine
        if self.flags & F_CLOSED:
            raise ConnectionClosed(None, "connection closed")
        if self.wbuf <= eng.write_high_water:
            return _READY
        waiters = eng.drain_waiters
        fut = waiters.get(self)
        if fut is None:
            fut = eng.loop.create_future()
            waiters[self] = fut
        return fut

    def set_handler(self, handler):
        """Hand this connection to another handler (e.g. HTTP -> WebSocket after an upgrade).

        Later callbacks go to ``handler``; its ``on_open`` is not called (the connection is
        already open). Handlers are shared: one record per handler object per engine."""
        self.hub = self.hub.engine.hub_for(handler)

    # Accessors for backends written in Python (the portable asyncio backend).
    @property
    def _hub(self):
        return self.hub

    @property
    def _flags(self):
        return self.flags

    @_flags.setter
    def _flags(self, unsigned int value):
        self.flags = value

    @property
    def _wbuf(self):
        return self.wbuf

    @_wbuf.setter
    def _wbuf(self, Py_ssize_t value):
        self.wbuf = value

    @property
    def _fd(self):
        return self.fd

    @_fd.setter
    def _fd(self, int value):
        self.fd = value

    def _touch(self):
        """Push the idle deadline back (portable backend: on every read and write)."""
        if self.idle_ticks:
            self.idle_dl = self.hub.wheel.deadline_after_ticks(self.idle_ticks)

    cpdef _deadline_expired(self, str kind):
        raise NotImplementedError

    cdef int _expire(self, uint32_t now) except -1:
        """Called by the timer wheel: fire every deadline that is due at tick ``now``."""
        if self.flags & F_CLOSED:
            return 0
        if self.read_dl and self.read_dl <= now:
            self.read_dl = 0
            self._deadline_expired("read")
        elif self.write_dl and self.write_dl <= now:
            self.write_dl = 0
            if self.wbuf > 0 or self.flags & F_CLOSING:
                self._deadline_expired("write")
        elif self.idle_dl and self.idle_dl <= now:
            self.idle_dl = 0
            self._deadline_expired("idle")
        return 0


# Flag values for backends written in Python.
FLAG_CLOSED = F_CLOSED
FLAG_CLOSING = F_CLOSING
FLAG_PAUSED = F_PAUSED
FLAG_MEM_PAUSED = F_MEM_PAUSED
FLAG_EOF = F_EOF
FLAG_DIALED = F_DIALED

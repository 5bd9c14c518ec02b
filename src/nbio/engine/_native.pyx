# cython: language_level=3
"""The native nbio engine: Linux epoll driven from the asyncio event loop.

One epoll instance per engine is registered with ``loop.add_reader``; when it becomes
readable the engine drains ready events without blocking. Reads go into one engine-wide
buffer and reach the handler as a memoryview valid during ``on_data``; writes go straight to
the socket and only what the kernel refused is queued (EPOLLOUT is armed only while a queue
exists). A connection is a small C object referenced from an fd-indexed table.
"""

import errno as _errno
import os
import socket as _socket

from cpython.buffer cimport PyBUF_SIMPLE, PyObject_GetBuffer, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from libc.errno cimport errno, EAGAIN, EINTR, EINPROGRESS, ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, strerror

from nbio.engine._conn cimport (
    ConnBase, Hub, F_CLOSED, F_CLOSING, F_PAUSED, F_MEM_PAUSED, F_EPOLLOUT, F_UNIX, F_UDP,
    F_EOF, F_DIALED,
)
from nbio.engine._timers cimport TimerWheel
from nbio.engine._files import file_range
from nbio.errors import (
    ClosedByPeer, ConnectionClosed, DeadlineExceeded, TooManyConnections, WriteBufferOverflow,
)

cdef extern from "Python.h":
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    int PyBUF_READ
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)
    # CPython's memoryview object (same layout 3.9 - 3.13): the engine re-targets its one
    # read view at each delivery instead of allocating two objects per read.
    ctypedef struct PyMemoryViewObject:
        Py_hash_t hash
        Py_ssize_t exports
        Py_buffer view

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLLIN
        EPOLLOUT
        EPOLLRDHUP
        EPOLLHUP
        EPOLLERR

cdef extern from "<sys/types.h>":
    ctypedef long off_t

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    int accept4(int sockfd, sockaddr *addr, socklen_t *addrlen, int flags)
    ssize_t recv(int sockfd, void *buf, size_t len, int flags)
    ssize_t send(int sockfd, const void *buf, size_t len, int flags)
    ssize_t recvfrom(int sockfd, void *buf, size_t len, int flags, sockaddr *src, socklen_t *addrlen)
    ssize_t sendto(int sockfd, const void *buf, size_t len, int flags, const sockaddr *dest, socklen_t addrlen)
    int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen)
    int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen)
    int shutdown(int sockfd, int how)
    int getsockname(int sockfd, sockaddr *addr, socklen_t *addrlen)
    int getpeername(int sockfd, sockaddr *addr, socklen_t *addrlen)
    enum:
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        MSG_NOSIGNAL
        SOL_SOCKET
        SO_ERROR
        SHUT_WR

cdef extern from "<netinet/in.h>":
    enum:
        IPPROTO_TCP

cdef extern from "<netinet/tcp.h>":
    enum:
        TCP_NODELAY

cdef extern from "<sys/uio.h>" nogil:
    ssize_t writev(int fd, const iovec *iov, int iovcnt)

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t c_sendfile "sendfile"(int out_fd, int in_fd, off_t *offset, size_t count)

cdef extern from "<unistd.h>" nogil:
    int c_close "close"(int fd)


# kinds of fd-table entries
cdef enum:
    K_NONE = 0
    K_CONN = 1
    K_LISTENER = 2
    K_DIAL = 3
    K_UDP = 4

cdef enum:
    MAX_IOV = 64
    MAX_ACCEPTS = 256
    MAX_DATAGRAMS = 64
    F_REG_IN = 512        # EPOLLIN currently registered

cdef uint32_t EV_READ = EPOLLIN | EPOLLRDHUP


cdef object _os_error(int err):
    return OSError(err, strerror(err).decode("utf-8", "replace"))


cdef object _sockaddr_to_py(sockaddr *sa, socklen_t salen):
    """Convert a C sockaddr into the tuple/str form the socket module uses."""
    if salen == 0:
        return None
    # The socket module already knows how to decode every family: borrow a throwaway
    # socket of the right family and let it parse the raw bytes via recvfrom-less path.
    return _decode_sockaddr(PyBytes_FromStringAndSize(<char *>sa, salen))


cdef object _socket_address(int fd, bint peer):
    """``getpeername``/``getsockname`` of ``fd`` decoded, or None (closed socket)."""
    cdef sockaddr_storage ss
    cdef socklen_t n = sizeof(ss)
    cdef int rc
    if fd < 0:
        return None
    rc = getpeername(fd, <sockaddr *>&ss, &n) if peer else getsockname(fd, <sockaddr *>&ss, &n)
    if rc != 0:
        return None
    return _sockaddr_to_py(<sockaddr *>&ss, n)


def _decode_sockaddr(bytes raw):
    """Decode raw ``struct sockaddr`` bytes (AF_INET, AF_INET6, AF_UNIX)."""
    import struct
    family = int.from_bytes(raw[:2], "little")
    if family == _socket.AF_INET:
        port = struct.unpack("!H", raw[2:4])[0]
        return (_socket.inet_ntop(_socket.AF_INET, raw[4:8]), port)
    if family == _socket.AF_INET6:
        port, flow = struct.unpack("!HI", raw[2:8])
        scope = int.from_bytes(raw[24:28], "little")
        return (_socket.inet_ntop(_socket.AF_INET6, raw[8:24]), port, flow, scope)
    if family == _socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return path.rstrip(b"\0") if path.strip(b"\0") else ""
        return path.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return raw


# A poll round that returns fewer events than this ends the engine's turn (see _on_ready).
cdef int REPOLL_MIN_EVENTS = 8

cdef class UdpSocket
cdef class Listener


cdef class WriteQueue:
    """What the kernel has not taken yet: bytes objects and file ranges, in order."""
    def __cinit__(self):
        self.items = []
        self.head = 0
        self.mem = 0


cdef class _FileRange:
    cdef object file
    cdef int fd
    cdef off_t offset
    cdef Py_ssize_t remaining




cdef class Conn(ConnBase):
    """A TCP or Unix stream connection on the native engine.

    ``on_data`` receives a memoryview into the engine's read buffer that is only valid
    during the call; copy (``bytes(data)``) what you keep.
    """

    def __repr__(self):
        state = "closed" if self.flags & F_CLOSED else ("closing" if self.flags & F_CLOSING else "open")
        return f"<nbio.Conn fd={self.fd} {state} buffered={self.wbuf}>"

    # -- public API -------------------------------------------------------------------------


    @property
    def local_address(self):
        """The local socket address (as the socket module formats it)."""
        return _socket_address(self.fd, False)

    @property
    def remote_address(self):
        """The peer's socket address (as the socket module formats it)."""
        return _socket_address(self.fd, True)

    cpdef write(self, object data):
        """Send ``data`` (any bytes-like object). What the kernel cannot take now is copied
        into the connection's queue and sent when the socket becomes writable.

        Raises :class:`nbio.errors.ConnectionClosed` after ``close()`` or once closed."""
        cdef Py_buffer view
        cdef const char *p
        cdef Py_ssize_t n, sent
        cdef NativeEngine eng
        if self.flags & (F_CLOSED | F_CLOSING):
            raise ConnectionClosed(None, "write on a closed connection")
        if type(data) is bytes:
            p = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
            return self._write_raw(p, n)
        eng = <NativeEngine>self.hub.engine
        if data is eng.rview:
            # echoing what on_data just received: no buffer export needed
            return self._write_raw(eng.rbuf, (<PyMemoryViewObject *>data).view.len)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._write_raw(<const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef _write_raw(self, const char *p, Py_ssize_t n):
        cdef Py_ssize_t sent
        cdef int err
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        if n == 0:
            return
        if self.idle_ticks:
            self.idle_dl = eng.tick + self.idle_ticks
        if self.wq is not None:
            self._enqueue(p, n)
            return
        cdef iovec iov
        iov.iov_base = <void *>p
        iov.iov_len = n
        sent = self._send_iov(&iov, 1)
        if 0 <= sent < n:
            self._enqueue(p + sent, n - sent)

    cdef Py_ssize_t _send_iov(self, iovec *iov, int cnt) except -2:
        """Send what the kernel takes now: bytes sent (0 if it is full), or -1 after a
        socket error closed the connection."""
        cdef Py_ssize_t sent
        cdef int err
        while True:
            if cnt == 1:
                sent = send(self.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
            else:
                sent = writev(self.fd, iov, cnt)
            if sent >= 0:
                (<NativeEngine>self.hub.engine).bytes_out += sent
                return sent
            err = errno
            if err == EINTR:
                continue
            if err == EAGAIN:
                return 0
            self._close(_os_error(err))
            return -1

    def writelines(self, chunks):
        """Send several buffers with one gathered ``writev`` (no concatenation)."""
        cdef list bufs = [c for c in chunks]
        cdef Py_buffer views[MAX_IOV]
        cdef iovec iov[MAX_IOV]
        cdef int cnt = 0, i
        if self.flags & (F_CLOSED | F_CLOSING):
            raise ConnectionClosed(None, "write on a closed connection")
        if self.wq is not None or len(bufs) > MAX_IOV or len(bufs) < 2:
            for c in bufs:
                self.write(c)
            return
        for c in bufs:
            PyObject_GetBuffer(c, &views[cnt], PyBUF_SIMPLE)
            iov[cnt].iov_base = views[cnt].buf
            iov[cnt].iov_len = views[cnt].len
            cnt += 1
        try:
            self._write_iov(iov, cnt)
        finally:
            for i in range(cnt):
                PyBuffer_Release(&views[i])

    cdef int _write_iov(self, iovec *iov, int cnt) except -1:
        """Send ``cnt`` buffers with one gathered write; queue what the kernel refused
        (everything when a queue already exists). The caller checked the flags."""
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        cdef Py_ssize_t total = 0, sent, skip
        cdef int i
        for i in range(cnt):
            total += iov[i].iov_len
        if total == 0:
            return 0
        if self.idle_ticks:
            self.idle_dl = eng.tick + self.idle_ticks
        sent = 0 if self.wq is not None else self._send_iov(iov, cnt)
        if 0 <= sent < total:
            skip = sent
            for i in range(cnt):
                if skip >= <Py_ssize_t>iov[i].iov_len:
                    skip -= iov[i].iov_len
                    continue
                self._enqueue(<const char *>iov[i].iov_base + skip, iov[i].iov_len - skip)
                skip = 0
                if self.flags & F_CLOSED:
                    break
        return 0

    def sendfile(self, file, Py_ssize_t offset=0, count=None):
        """Send ``count`` bytes of an open regular ``file`` from ``offset`` with the kernel's
        ``sendfile`` (zero-copy); queued like any other write. The file must stay open until
        the range is sent (``await conn.drain()`` or ``on_drain``)."""
        cdef _FileRange fr
        cdef int fd
        if self.flags & (F_CLOSED | F_CLOSING):
            raise ConnectionClosed(None, "write on a closed connection")
        fd, count = file_range(file, offset, count)
        if count <= 0:
            return
        fr = _FileRange()
        fr.file = file
        fr.fd = fd
        fr.offset = offset
        fr.remaining = count
        if self.wq is None:
            self.wq = WriteQueue()
            self._sync_events()
        self.wq.items.append(fr)
        self.wbuf += fr.remaining
        self._flush()

    def close(self, reason=None):
        """Close gracefully: stop reading, flush what is queued, then close. ``on_close``
        gets ``reason`` (default ``None``: closed locally). A peer that does not read the
        rest within ``close_timeout`` is cut off."""
        cdef NativeEngine eng
        if self.flags & (F_CLOSED | F_CLOSING):
            return
        if self.wq is None:
            self._close(reason)
            return
        eng = <NativeEngine>self.hub.engine
        if reason is not None:
            eng.close_reasons[self] = reason
        self.flags |= F_CLOSING
        if self.write_dl == 0:
            self.write_dl = eng.wheel.now_tick() + eng.wheel.ticks_for(eng.close_timeout)
            eng.wheel.schedule(self)
        self._sync_events()

    def abort(self, reason=None):
        """Close at once, dropping anything queued. ``on_close`` gets ``reason``."""
        self._close(reason)

    def pause_reading(self):
        """Stop delivering data (the kernel buffers, then the peer's sends block)."""
        if not (self.flags & F_CLOSED):
            self.flags |= F_PAUSED
            self._sync_events()

    def resume_reading(self):
        """Deliver data again after :meth:`pause_reading`."""
        if not (self.flags & F_CLOSED):
            self.flags &= ~F_PAUSED
            self._sync_events()

    # -- engine internals -----------------------------------------------------------------

    cpdef _deadline_expired(self, str kind):
        self._close(DeadlineExceeded(kind))

    cdef int _read(self) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        cdef Py_ssize_t n
        cdef int k, err
        for k in range(eng.max_reads):
            n = recv(self.fd, eng.rbuf, eng.read_buffer_size, 0)
            if n > 0:
                eng.bytes_in += n
                if self.idle_ticks:
                    self.idle_dl = eng.tick + self.idle_ticks
                eng._deliver(self, self.hub, n)
                if self.flags & (F_CLOSED | F_CLOSING | F_PAUSED | F_MEM_PAUSED):
                    return 0
                if n < eng.read_buffer_size:
                    return 0
            elif n == 0:
                self._on_eof()
                return 0
            else:
                err = errno
                if err == EAGAIN:
                    return 0
                if err == EINTR:
                    continue
                self._close(_os_error(err))
                return 0
        return 0

    cdef int _on_eof(self) except -1:
        keep = False
        if self.hub.on_eof is not None:
            try:
                keep = self.hub.on_eof(self)
            except Exception as exc:
                self.hub.log_error(self, "on_eof", exc)
                self._close(exc)
                return 0
        if self.flags & F_CLOSED:
            return 0
        if keep:
            self.flags |= F_EOF
            self._sync_events()
            return 0
        self.close(ClosedByPeer())
        return 0

    cdef int _hangup(self) except -1:
        """EPOLLHUP/EPOLLERR on a connection that is not reading."""
        cdef int err = 0
        cdef socklen_t n = sizeof(err)
        getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &n)
        self._close(_os_error(err) if err else ClosedByPeer())
        return 0

    cdef int _enqueue(self, const char *p, Py_ssize_t n) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        if self.wq is None:
            self.wq = WriteQueue()
            self._sync_events()
        self.wq.items.append(PyBytes_FromStringAndSize(p, n))
        self.wq.mem += n
        self.wbuf += n
        eng._buffered_changed(n)
        if self.wq.mem > eng.max_write_buffer:
            self._close(WriteBufferOverflow(self.wq.mem, eng.max_write_buffer))
        return 0

    cdef int _flush(self) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        cdef WriteQueue q = self.wq
        cdef iovec iov[MAX_IOV]
        cdef int cnt, err
        cdef Py_ssize_t sent, size, sent_now, offered
        cdef _FileRange fr
        cdef object item
        cdef list items
        if q is None:
            return 0
        items = q.items
        while items:
            item = items[0]
            if type(item) is _FileRange:
                fr = <_FileRange>item
                sent = c_sendfile(self.fd, fr.fd, &fr.offset, fr.remaining if fr.remaining < (1 << 30) else (1 << 30))
                if sent < 0:
                    err = errno
                    if err == EAGAIN:
                        break
                    if err == EINTR:
                        continue
                    self._close(_os_error(err))
                    return 0
                if sent == 0:
                    self._close(OSError(_errno.EIO, "sendfile: file shorter than the requested range"))
                    return 0
                fr.remaining -= sent
                self.wbuf -= sent
                eng.bytes_out += sent
                if fr.remaining == 0:
                    del items[0]
                continue
            cnt = 0
            offered = -q.head
            for item in items:
                if cnt == MAX_IOV or type(item) is not bytes:
                    break
                iov[cnt].iov_base = PyBytes_AS_STRING(item)
                iov[cnt].iov_len = PyBytes_GET_SIZE(item)
                offered += iov[cnt].iov_len
                cnt += 1
            iov[0].iov_base = <char *>iov[0].iov_base + q.head
            iov[0].iov_len -= q.head
            sent = self._send_iov(iov, cnt)
            if sent < 0:
                return 0      # closed
            if sent == 0:
                break         # the kernel is full
            sent_now = sent
            self.wbuf -= sent
            q.mem -= sent
            eng._buffered_changed(-sent)
            sent += q.head
            q.head = 0
            while sent > 0:
                size = PyBytes_GET_SIZE(items[0])
                if sent >= size:
                    sent -= size
                    del items[0]
                else:
                    q.head = sent
                    sent = 0
            if sent_now < offered:
                break       # the kernel is full
        if self.idle_ticks:
            self.idle_dl = eng.tick + self.idle_ticks
        if not items:
            self.wq = None
            self._after_drain()
        elif eng.drain_waiters and self.wbuf <= eng.write_low_water:
            eng._wake_drain(self, None)
        return 0

    cdef int _after_drain(self) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        if self.flags & F_CLOSED:
            return 0
        if self.flags & F_CLOSING:
            self._close(eng.close_reasons.pop(self, None))
            return 0
        self._sync_events()
        if eng.drain_waiters:
            eng._wake_drain(self, None)
        if self.hub.on_drain is not None:
            try:
                self.hub.on_drain(self)
            except Exception as exc:
                self.hub.log_error(self, "on_drain", exc)
                self._close(exc)
        return 0

    cdef int _sync_events(self) except -1:
        """Make the epoll registration match what the connection wants now."""
        cdef uint32_t want = 0
        cdef unsigned int have = self.flags & (F_REG_IN | F_EPOLLOUT)
        cdef unsigned int new = 0
        if self.flags & F_CLOSED:
            return 0
        if not (self.flags & (F_PAUSED | F_MEM_PAUSED | F_CLOSING | F_EOF)):
            want |= EV_READ
            new |= F_REG_IN
        if self.wq is not None:
            want |= EPOLLOUT
            new |= F_EPOLLOUT
        if new != have:
            (<NativeEngine>self.hub.engine)._ctl(EPOLL_CTL_MOD, self.fd, want)
            self.flags = (self.flags & ~(F_REG_IN | F_EPOLLOUT)) | new
        return 0

    cdef int _close(self, object exc) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        cdef int fd = self.fd
        if self.flags & F_CLOSED:
            return 0
        self.flags |= F_CLOSED
        if self.wq is not None:
            eng._buffered_changed(-self.wq.mem)
            self.wq = None
        self.wbuf = 0
        self.fd = -1
        eng.open_count -= 1
        eng.closed_total += 1
        if eng.close_reasons:
            eng.close_reasons.pop(self, None)
        if fd >= 0:
            eng._unregister(fd)
            c_close(fd)
        if eng.drain_waiters:
            eng._wake_drain(self, exc if exc is not None else ConnectionClosed(None, "connection closed"))
        self.hub.notify_close(self, exc)
        return 0


cdef int _c_write(object conn, const char *a, Py_ssize_t an, const char *b,
                  Py_ssize_t bn) except -1:
    """C entry point for protocol modules that must not link against this Linux-only
    module (see ``write_capsule``): ``conn.write(a[:an] + b[:bn])`` for a :class:`Conn`,
    sent with one gathered write and no concatenation."""
    cdef Conn c = <Conn>conn
    cdef iovec iov[2]
    if c.flags & (F_CLOSED | F_CLOSING):
        raise ConnectionClosed(None, "write on a closed connection")
    iov[0].iov_base = <void *>a
    iov[0].iov_len = an
    iov[1].iov_base = <void *>b
    iov[1].iov_len = bn
    return c._write_iov(iov, 2 if bn else 1)


# ``int (*)(object conn, const char *a, Py_ssize_t an, const char *b, Py_ssize_t bn)
# except -1``: write to a :class:`Conn` (checked by the caller) without a Python call.
write_capsule = PyCapsule_New(<void *>_c_write, b"nbio.engine._native.write", NULL)


cdef class UdpConn(ConnBase):
    """One peer of a UDP socket, seen as a connection (datagrams in, datagrams out)."""
    cdef UdpSocket sock
    cdef bytes addr          # raw sockaddr of the peer (b"" on a connected socket)

    def __repr__(self):
        return f"<nbio.UdpConn {self.remote_address!r}{' closed' if self.flags & F_CLOSED else ''}>"

    def fileno(self):
        return self.sock.fd

    @property
    def local_address(self):
        return self.sock.sock.getsockname()

    @property
    def remote_address(self):
        if not self.addr:
            return self.sock.sock.getpeername()
        return _decode_sockaddr(self.addr)

    def write(self, data):
        """Send ``data`` as one datagram. A datagram the kernel refuses (buffer full) is
        dropped, as UDP allows, and counted in ``engine.stats()['udp_dropped']``."""
        cdef Py_buffer view
        cdef ssize_t n
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        if self.flags & F_CLOSED:
            raise ConnectionClosed(None, "write on a closed connection")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self.addr:
                n = sendto(self.sock.fd, view.buf, view.len, 0,
                           <sockaddr *>PyBytes_AS_STRING(self.addr), PyBytes_GET_SIZE(self.addr))
            else:
                n = send(self.sock.fd, view.buf, view.len, 0)
            if n < 0:
                if errno in (EAGAIN, ENOBUFS):
                    eng.udp_dropped += 1
                else:
                    raise _os_error(errno)
            else:
                eng.bytes_out += n
                if self.idle_ticks:
                    self.idle_dl = eng.tick + self.idle_ticks
        finally:
            PyBuffer_Release(&view)

    def close(self, reason=None):
        """Forget this peer (``on_close(conn, reason)``); a dialed UDP socket is closed."""
        self._close(reason)

    abort = close

    cpdef _deadline_expired(self, str kind):
        self._close(DeadlineExceeded(kind))

    cdef _close(self, exc):
        if self.flags & F_CLOSED:
            return
        self.flags |= F_CLOSED
        self.sock.peers.pop(self.addr, None)
        self.hub.notify_close(self, exc)
        if self.sock.connected:
            self.sock.close()


cdef class UdpSocket:
    """A UDP socket on the native engine; each peer address is a :class:`UdpConn`."""
    cdef readonly object sock
    cdef int fd
    cdef Hub hub
    cdef dict peers
    cdef bint connected
    cdef double idle_timeout
    cdef bint closed

    @property
    def address(self):
        return self.sock.getsockname()

    def __len__(self):
        return len(self.peers)

    cdef UdpConn _peer(self, bytes key):
        cdef UdpConn conn = UdpConn.__new__(UdpConn)
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        conn.hub = self.hub
        conn.sock = self
        conn.addr = key
        conn.fd = self.fd
        conn.flags = F_UDP
        self.peers[key] = conn
        if self.idle_timeout > 0:
            conn.idle_ticks = eng.wheel.ticks_for(self.idle_timeout)
            conn.idle_dl = eng.tick + conn.idle_ticks
            eng.wheel.schedule(conn)
        if self.hub.on_open is not None:
            try:
                self.hub.on_open(conn)
            except Exception as exc:
                self.hub.log_error(conn, "on_open", exc)
                conn._close(exc)
        return conn

    cdef int _read(self) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        cdef sockaddr_storage ss
        cdef socklen_t alen
        cdef ssize_t n
        cdef int i
        cdef UdpConn conn
        for i in range(MAX_DATAGRAMS):
            if self.closed:
                return 0
            alen = sizeof(ss)
            n = recvfrom(self.fd, eng.rbuf, eng.read_buffer_size, 0, <sockaddr *>&ss, &alen)
            if n < 0:
                if errno == EINTR:
                    continue
                return 0        # EAGAIN, or an ICMP error reported on the socket: not fatal
            eng.bytes_in += n
            key = b"" if self.connected else PyBytes_FromStringAndSize(<char *>&ss, alen)
            conn = self.peers.get(key)
            if conn is None:
                if self.connected:
                    continue
                conn = self._peer(key)
                if conn.flags & F_CLOSED:
                    continue
            if conn.idle_ticks:
                conn.idle_dl = eng.tick + conn.idle_ticks
            eng._deliver(conn, self.hub, n)
        return 0

    def close(self):
        """Close the socket; every peer connection gets ``on_close(conn, None)``."""
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        if self.closed:
            return
        self.closed = True
        for conn in list(self.peers.values()):
            (<UdpConn>conn).flags |= F_CLOSED
            self.hub.notify_close(conn, None)
        self.peers.clear()
        eng.listeners.discard(self)
        eng._unregister(self.fd)
        self.sock.close()


cdef class Listener:
    """A listening TCP or Unix socket on the native engine."""
    cdef readonly object sock
    cdef int fd
    cdef Hub hub
    cdef bint is_unix
    cdef bint is_closed

    @property
    def address(self):
        """The bound address: ``(host, port)`` for TCP, the path for Unix sockets."""
        return self.sock.getsockname()

    @property
    def closed(self):
        """True once :meth:`close` was called."""
        return self.is_closed

    def fileno(self):
        return self.fd

    cdef int _accept(self) except -1:
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        cdef int i, cfd, err, one = 1
        cdef Conn conn
        for i in range(MAX_ACCEPTS):
            if self.is_closed:
                return 0
            cfd = accept4(self.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if cfd < 0:
                err = errno
                if err == EAGAIN:
                    return 0
                if err == EINTR or err == ECONNABORTED:
                    continue
                if err in (EMFILE, ENFILE, ENOBUFS, ENOMEM):
                    # Out of descriptors: stop accepting briefly instead of spinning.
                    self._pause_accept(err)
                    return 0
                self.hub.log_error(self, "accept", _os_error(err))
                return 0
            if eng.max_connections and eng.open_count >= eng.max_connections:
                c_close(cfd)
                eng.rejected += 1
                continue
            if not self.is_unix and eng.tcp_nodelay:
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
            eng.accepted += 1
            conn = eng._new_conn(cfd, self.hub, F_UNIX if self.is_unix else 0)
            eng._register(cfd, conn, K_CONN, EV_READ)
            conn.flags |= F_REG_IN
            if self.hub.on_open is not None:
                try:
                    self.hub.on_open(conn)
                except Exception as exc:
                    self.hub.log_error(conn, "on_open", exc)
                    conn._close(exc)
        return 0

    cdef _pause_accept(self, int err):
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        self.hub.log_error(self, "accept", _os_error(err))
        eng._ctl(EPOLL_CTL_MOD, self.fd, 0)
        eng.loop.call_later(0.1, self._resume_accept)

    def _resume_accept(self):
        if not self.is_closed:
            (<NativeEngine>self.hub.engine)._ctl(EPOLL_CTL_MOD, self.fd, EPOLLIN)

    def close(self):
        """Stop accepting; connections already accepted stay open."""
        cdef NativeEngine eng = <NativeEngine>self.hub.engine
        if self.is_closed:
            return
        self.is_closed = True
        eng.listeners.discard(self)
        eng._unregister(self.fd)
        path = self.sock.getsockname() if self.is_unix else None
        self.sock.close()
        if path and isinstance(path, str) and not path.startswith("\0"):
            try:
                os.unlink(path)
            except OSError:
                pass

    def __repr__(self):
        return f"<nbio.Listener {self.sock.getsockname() if not self.is_closed else 'closed'!r}>"


cdef class _Dial:
    cdef Conn conn
    cdef object future
    cdef object sock


cdef class NativeEngine:
    """The epoll engine (use :class:`nbio.engine.Engine`, which picks a backend)."""

    def __cinit__(self):
        self.epfd = -1
        self.events = NULL
        self.table = NULL
        self.kinds = NULL
        self.rbuf = NULL

    def __init__(self, loop, *, Py_ssize_t read_buffer_size=65536, int max_reads_per_turn=4,
                 Py_ssize_t max_write_buffer=4 * 1024 * 1024, Py_ssize_t write_high_water=65536,
                 Py_ssize_t write_low_water=16384, int backlog=1024, max_connections=None,
                 memory_limit=None, double timer_resolution=0.05, double close_timeout=10.0,
                 bint tcp_nodelay=True, int max_events=1024, int poll_rounds=4):
        self.loop = loop
        self.read_buffer_size = read_buffer_size
        self.max_reads = max(1, max_reads_per_turn)
        self.max_write_buffer = max_write_buffer
        self.write_high_water = write_high_water
        self.write_low_water = min(write_low_water, write_high_water)
        self.backlog = backlog
        self.max_connections = max_connections or 0
        self.memory_limit = memory_limit or 0
        self.close_timeout = close_timeout
        self.tcp_nodelay = tcp_nodelay
        self.wheel = TimerWheel(loop, timer_resolution)
        self.maxevents = max_events
        self.max_rounds = max(1, poll_rounds)
        self.mem_paused_conns = []
        self.drain_waiters = {}
        self.close_reasons = {}
        self.dials = {}
        self.hubs = {}
        self.listeners = set()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise _os_error(errno)
        self.events = malloc(sizeof(epoll_event) * max_events)
        self.rbuf = <char *>malloc(read_buffer_size)
        if self.events == NULL or self.rbuf == NULL:
            raise MemoryError()
        self._ensure_slot(1024)
        loop.add_reader(self.epfd, self._on_ready)
        self.reader_added = True

    def __dealloc__(self):
        cdef int i
        if self.table != NULL:
            for i in range(self.table_size):
                if self.table[i] != NULL:
                    Py_DECREF(<object>self.table[i])
            free(self.table)
        free(self.kinds)
        free(self.events)
        free(self.rbuf)
        if self.epfd >= 0:
            c_close(self.epfd)

    # -- fd table ---------------------------------------------------------------------------

    cdef int _ensure_slot(self, int fd) except -1:
        cdef int n = self.table_size if self.table_size else 1024
        cdef void **t
        cdef unsigned char *k
        if fd < self.table_size:
            return 0
        while n <= fd:
            n <<= 1
        t = <void **>realloc(self.table, n * sizeof(void *))
        if t == NULL:
            raise MemoryError()
        self.table = t
        k = <unsigned char *>realloc(self.kinds, n)
        if k == NULL:
            raise MemoryError()
        self.kinds = k
        memset(self.table + self.table_size, 0, (n - self.table_size) * sizeof(void *))
        memset(self.kinds + self.table_size, 0, n - self.table_size)
        self.table_size = n
        return 0

    cdef int _ctl(self, int op, int fd, uint32_t events) except -1:
        cdef epoll_event ev
        ev.events = events
        ev.data.u64 = 0
        ev.data.fd = fd
        if epoll_ctl(self.epfd, op, fd, &ev) != 0:
            raise _os_error(errno)
        return 0

    cdef int _register(self, int fd, object obj, unsigned char kind, uint32_t events) except -1:
        self._ensure_slot(fd)
        self._ctl(EPOLL_CTL_ADD, fd, events)
        Py_INCREF(obj)
        if self.table[fd] != NULL:     # pragma: no cover - defensive
            Py_DECREF(<object>self.table[fd])
        self.table[fd] = <void *>obj
        self.kinds[fd] = kind
        return 0

    cdef int _unregister(self, int fd) except -1:
        cdef epoll_event ev
        cdef void *p
        if fd < 0 or fd >= self.table_size:
            return 0
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)
        p = self.table[fd]
        self.table[fd] = NULL
        self.kinds[fd] = K_NONE
        if p != NULL:
            Py_DECREF(<object>p)
        return 0

    cdef int _deliver(self, object conn, Hub hub, Py_ssize_t n) except -1:
        """Hand the first ``n`` bytes of the read buffer to ``hub``'s ``on_data``; a handler
        that raises is logged and its connection closed with the exception."""
        cdef object mv = self._read_view(n)
        try:
            hub.on_data(conn, mv)
        except Exception as exc:
            hub.log_error(conn, "on_data", exc)
            conn.abort(exc)
        if _refcnt(<PyObject *>mv) > 2:
            self._view_escaped(mv)
        return 0

    cdef object _read_view(self, Py_ssize_t n):
        """The engine's read view, re-targeted at the first ``n`` bytes of the read buffer."""
        cdef PyMemoryViewObject *m
        if self.rview is None or _refcnt(<PyObject *>self.rview) != 1 \
                or (<PyMemoryViewObject *>self.rview).exports != 0:
            self.rview = PyMemoryView_FromMemory(self.rbuf, self.read_buffer_size, PyBUF_READ)
            self.views_created += 1
        m = <PyMemoryViewObject *>self.rview
        m.view.len = n
        m.view.shape[0] = n
        m.hash = -1
        return self.rview

    cdef int _view_escaped(self, object mv) except -1:
        """A handler kept the read view: invalidate it (it must not show later reads) and
        use a fresh one from now on."""
        if mv is self.rview:
            self.rview = None
        try:
            mv.release()
        except BufferError:
            pass
        return 0

    cdef Conn _new_conn(self, int fd, Hub hub, unsigned int flags):
        cdef Conn conn = Conn.__new__(Conn)
        conn.hub = hub
        conn.fd = fd
        conn.flags = flags
        self.open_count += 1
        return conn

    # -- event dispatch ---------------------------------------------------------------------

    def _on_ready(self):
        cdef int rounds
        if self.closed:
            return
        # Drain ready events; poll again while the previous round found a batch worth the
        # extra epoll_wait, so a busy engine handles several batches per loop turn. A round
        # with only a few events means a lightly loaded engine: polling again would mostly
        # find nothing and cost a syscall per wake-up (the loop calls us again anyway).
        for rounds in range(self.max_rounds):
            if self._poll_once() < REPOLL_MIN_EVENTS or self.closed:
                return

    cdef int _poll_once(self) except -1:
        cdef epoll_event *evs = <epoll_event *>self.events
        cdef int n, i, fd
        cdef uint32_t ev
        cdef unsigned char kind
        cdef void *p
        cdef Conn conn
        cdef object obj
        n = epoll_wait(self.epfd, evs, self.maxevents, 0)
        if n <= 0:
            return 0
        self.polls += 1
        self.events_total += n
        self.tick = self.wheel.now_tick()
        for i in range(n):
            fd = evs[i].data.fd
            ev = evs[i].events
            if fd >= self.table_size:
                continue
            p = self.table[fd]
            if p == NULL:
                continue
            kind = self.kinds[fd]
            obj = <object>p
            if kind == K_CONN:
                conn = <Conn>obj
                if ev & EPOLLOUT and conn.wq is not None:
                    conn._flush()
                if conn.flags & F_CLOSED:
                    continue
                if ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                    if conn.flags & (F_PAUSED | F_EOF | F_CLOSING | F_MEM_PAUSED):
                        if ev & (EPOLLHUP | EPOLLERR):
                            conn._hangup()
                    elif self.mem_paused:
                        conn.flags |= F_MEM_PAUSED
                        self.mem_paused_conns.append(conn)
                        conn._sync_events()
                    else:
                        conn._read()
            elif kind == K_LISTENER:
                (<Listener>obj)._accept()
            elif kind == K_DIAL:
                self._dial_ready(fd)
            elif kind == K_UDP:
                (<UdpSocket>obj)._read()
        return n

    # -- memory accounting ------------------------------------------------------------------

    cdef int _buffered_changed(self, Py_ssize_t delta) except -1:
        self.total_buffered += delta
        if self.memory_limit:
            if delta > 0 and not self.mem_paused and self.total_buffered > self.memory_limit:
                self.mem_paused = True
            elif delta < 0 and self.mem_paused and self.total_buffered <= self.memory_limit // 2:
                self._mem_resume()
        return 0

    cdef int _mem_resume(self) except -1:
        cdef Conn conn
        self.mem_paused = False
        paused, self.mem_paused_conns = self.mem_paused_conns, []
        for obj in paused:
            conn = <Conn>obj
            if not (conn.flags & F_CLOSED):
                conn.flags &= ~F_MEM_PAUSED
                conn._sync_events()
        return 0

    cdef int _wake_drain(self, Conn conn, object exc) except -1:
        fut = self.drain_waiters.get(conn)
        if fut is None:
            return 0
        if exc is None and conn.wbuf > self.write_low_water:
            return 0
        del self.drain_waiters[conn]
        if not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
        return 0

    # -- listeners and dials (socket set-up happens in nbio.engine._sockets) ----------------

    def hub_for(self, handler):
        """The shared callback record for ``handler`` (created once per handler)."""
        hub = self.hubs.get(handler)
        if hub is None:
            hub = Hub(self, handler, self.wheel)
            self.hubs[handler] = hub
        return hub

    def add_listener(self, sock, handler, bint is_unix):
        """Serve ``sock`` (bound and listening, non-blocking) with ``handler``."""
        cdef Listener lst = Listener.__new__(Listener)
        if self.closed:
            raise RuntimeError("engine is closed")
        lst.sock = sock
        lst.fd = sock.fileno()
        lst.hub = self.hub_for(handler)
        lst.is_unix = is_unix
        self._register(lst.fd, lst, K_LISTENER, EPOLLIN)
        self.listeners.add(lst)
        return lst

    def add_udp(self, sock, handler, double idle_timeout, bint connected):
        """Serve a bound (or connected) non-blocking UDP socket with ``handler``."""
        cdef UdpSocket us = UdpSocket.__new__(UdpSocket)
        if self.closed:
            raise RuntimeError("engine is closed")
        us.sock = sock
        us.fd = sock.fileno()
        us.hub = self.hub_for(handler)
        us.peers = {}
        us.connected = connected
        us.idle_timeout = idle_timeout
        self._register(us.fd, us, K_UDP, EPOLLIN)
        self.listeners.add(us)
        if connected:
            self.tick = self.wheel.now_tick()
            return us._peer(b"")
        return us

    def start_dial(self, sock, handler, bint is_unix):
        """Register a socket whose non-blocking connect is in progress; returns a future
        resolved with the :class:`Conn` once connected."""
        cdef _Dial d = _Dial.__new__(_Dial)
        cdef int fd = sock.fileno()
        if self.closed:
            raise RuntimeError("engine is closed")
        d.conn = self._new_conn(fd, Hub(self, handler, self.wheel), (F_UNIX if is_unix else 0) | F_DIALED)
        d.future = self.loop.create_future()
        d.sock = sock
        self._register(fd, d, K_DIAL, EPOLLOUT)
        self.dials[fd] = d
        return d.future

    def cancel_dial(self, fut):
        """Abandon a dial whose future is ``fut`` (timeout or cancellation)."""
        cdef _Dial d
        for fd, obj in list(self.dials.items()):
            d = <_Dial>obj
            if d.future is fut:
                del self.dials[fd]
                self._unregister(fd)
                self.open_count -= 1
                d.conn.flags |= F_CLOSED
                d.conn.fd = -1
                d.sock.close()
                return True
        return False

    cdef _dial_ready(self, int fd):
        cdef _Dial d = <_Dial>self.dials.pop(fd)
        cdef int err = 0, one = 1
        cdef socklen_t n = sizeof(err)
        cdef Conn conn = d.conn
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &n)
        if err != 0:
            self._unregister(fd)
            self.open_count -= 1
            conn.flags |= F_CLOSED
            conn.fd = -1
            d.sock.close()
            if not d.future.done():
                d.future.set_exception(_os_error(err))
            return
        d.sock.detach()
        self._unregister(fd)
        if not (conn.flags & F_UNIX) and self.tcp_nodelay:
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        self._register(fd, conn, K_CONN, EV_READ)
        conn.flags |= F_REG_IN
        self.dialed += 1
        self.tick = self.wheel.now_tick()
        if conn.hub.on_open is not None:
            try:
                conn.hub.on_open(conn)
            except Exception as exc:
                conn.hub.log_error(conn, "on_open", exc)
                conn._close(exc)
        if not d.future.done():
            d.future.set_result(conn)
        elif not (conn.flags & F_CLOSED):
            conn._close(None)      # the dialer gave up (cancelled) just as it connected

    # -- introspection and shutdown ---------------------------------------------------------

    def connections(self):
        """A list of the open stream connections."""
        cdef int i
        return [<object>self.table[i] for i in range(self.table_size)
                if self.table[i] != NULL and self.kinds[i] == K_CONN]

    def stats(self):
        """Counters: open connections, totals, bytes in/out, bytes buffered."""
        return {
            "backend": "native",
            "open": self.open_count - len(self.dials),
            "accepted": self.accepted,
            "dialed": self.dialed,
            "closed": self.closed_total,
            "rejected": self.rejected,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "buffered": self.total_buffered,
            "udp_dropped": self.udp_dropped,
            "memory_paused": bool(self.mem_paused),
            "timers": self.wheel.pending,
            "polls": self.polls,
            "events": self.events_total,
            "read_views": self.views_created,
        }

    def close_listeners(self):
        for lst in list(self.listeners):
            lst.close()

    def release(self):
        """Final step of shutdown: every connection is already closed."""
        cdef int i
        if self.closed:
            return
        for fut_fd in list(self.dials):
            self.cancel_dial((<_Dial>self.dials[fut_fd]).future)
        for i in range(self.table_size):
            if self.table[i] != NULL and self.kinds[i] == K_CONN:
                (<Conn>self.table[i])._close(None)
        self.closed = True
        self.hubs.clear()
        self.wheel.close()
        if self.reader_added:
            self.loop.remove_reader(self.epfd)
            self.reader_added = False
        c_close(self.epfd)
        self.epfd = -1

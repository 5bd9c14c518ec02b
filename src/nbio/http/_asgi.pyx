# cython: language_level=3, boundscheck=False, wraparound=False
"""The per-request path of the ASGI adapter (Cython): the http scope's ``receive``/``send``
(:class:`Cycle`) and :class:`AsgiSessionCore`, the compiled base of ``asgi._AsgiSession``
(dispatching a request to the app in a task). See :mod:`nbio.http.asgi`."""

import asyncio
import logging
import os
from urllib.parse import unquote

from nbio.engine import TLSConn
from nbio.errors import ConnectionClosed

from nbio.http._h1 cimport Request, ServerConnection
from nbio.http._server cimport HttpRequest, SessionCore, loop_of, new_request
from nbio.http._server import register_compiled_session

logger = logging.getLogger("nbio.http.asgi")

cdef dict _ASGI = {"version": "3.0", "spec_version": "2.3"}
EXTENSIONS = {"http.response.trailers": {}, "http.response.pathsend": {}}
cdef dict _EXTENSIONS = EXTENSIONS
cdef dict _DISCONNECT = {"type": "http.disconnect"}
cdef dict _VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
cdef dict _METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                              "OPTIONS")}
cdef object _current_task = asyncio.current_task
cdef object _CancelledError = asyncio.CancelledError


def http_version(bytes version):
    """The ASGI ``http_version`` of a request's version bytes."""
    return _VERSIONS.get(version, "1.1")


def scope_path(bytes raw):
    """The ASGI ``path`` of a raw path: latin-1 text, percent-decoded as UTF-8."""
    return _scope_path(raw)


cdef str _scope_path(bytes raw):
    cdef str text = raw.decode("latin-1")
    if "%" in text:
        return unquote(text, "utf-8", "surrogateescape")
    return text


def addr(address):
    """An engine address as an ASGI ``client``/``server`` pair (None for Unix sockets)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return (address[0], address[1])
    return None


cdef class Cycle:
    """One request/response exchange: the ``receive`` and ``send`` callables of an http
    scope."""

    cdef public SessionCore session  # the AsgiSessionCore (None once the response is done)
    cdef public HttpRequest req
    cdef public object status
    cdef public object headers
    cdef public bint started        # http.response.start received
    cdef public bint done           # the response is complete
    cdef public bint trailers       # the app will send trailers
    cdef public bint disconnected

    def __init__(self, session, HttpRequest req):
        self.session = session
        self.req = req
        self.status = 0
        self.headers = []

    async def receive(self):
        req = self.req
        if not self.done and not self.disconnected:
            try:
                await req._wait_body()
            except Exception:
                self.disconnected = True
                return _DISCONNECT
            message = req._body_message()
            if message is not None:
                return message
            # the body was read: wait until the response is done or the client leaves
            waiter = loop_of(req._session).create_future()
            req._waiter = waiter
            try:
                await waiter
            except Exception:
                pass
        return _DISCONNECT

    async def send(self, message):
        cdef SessionCore session = self.session
        cdef ServerConnection h1
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.done:
                raise RuntimeError(f"unexpected ASGI message {kind!r}")
            if session is None or session.conn is None:
                return  # the client is gone: drop (as uvicorn does)
            body = message.get("body", b"")
            more = message.get("more_body", False)
            h1 = <ServerConnection?>session.h1
            conn = session.conn
            if not session.started:
                session.started = True
                if not more and not self.trailers:
                    self._finish_with(h1.respond(self.status, self.headers, body))
                    return
                head = h1.start_response(self.status, self.headers)
                data = h1.send_data(body) if body else b""
                conn.write(head + data if data else head)
            elif body:
                data = h1.send_data(body)
                if data:
                    conn.write(data)
            if not more:
                if self.trailers:
                    return
                self._finish_with(h1.end_response())
            elif conn.buffered > 65536:
                await conn.drain()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            headers = message.get("headers")
            if headers:
                self.headers = headers if isinstance(headers, list) else list(headers)
            self.trailers = bool(message.get("trailers", False))
            if session is not None and session.server.draining:
                self.headers = [*list(self.headers), (b"connection", b"close")]
        elif kind == "http.response.trailers":
            if not self.trailers or self.done:
                raise RuntimeError("unexpected http.response.trailers")
            if session is None or session.conn is None:
                return
            if not session.started:
                raise RuntimeError("http.response.trailers before the body")
            if not message.get("more_trailers", False):
                self._finish_with(session.h1.end_response(message.get("headers") or None))
        elif kind == "http.response.pathsend":
            if not self.started or self.done:
                raise RuntimeError("unexpected http.response.pathsend")
            if session is None or session.conn is None:
                return
            await self._pathsend(session, message["path"])
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an http scope")

    async def _pathsend(self, session, path):
        file = open(path, "rb", buffering=0)
        try:
            size = os.fstat(file.fileno()).st_size
            headers = [h for h in self.headers if h[0].lower() != b"content-length"]
            headers.append((b"content-length", b"%d" % size))
            h1 = session.h1
            session.started = True
            session.conn.write(h1.start_response(self.status, headers))
            if size and self.req.method != b"HEAD":
                session.conn.sendfile(file, 0, size)
            h1.skip_data(size)
            self._finish_with(h1.end_response())
        finally:
            file = None  # the engine's queue holds it until sent

    cdef _finish_with(self, data):
        session = self.session
        self.done = True
        self.req._wake()  # a receive() waiting for http.disconnect
        if session is None or session.conn is None:
            return
        if data:
            session.conn.write(data)
        self.session = None
        (<SessionCore>session)._finished()


cdef class AsgiSessionCore(SessionCore):
    """Connection state for ASGI, compiled part: every request runs the app in a task."""

    cdef public object client
    cdef public object local
    cdef public str scheme

    def __init__(self, server, conn):
        super(AsgiSessionCore, self).__init__(server, conn)
        self.scheme = "https" if isinstance(conn, TLSConn) else "http"

    def fast_path(self, head, eom):
        """A whole bodiless request with nothing in progress: straight to the app."""
        return self._fast(head, eom)

    cdef bint _fast(self, head, eom) except -1:
        if self.head_since:
            self.server._unwatch_head(self)
        req = new_request(head, self, eom)
        self.current = req
        self.busy = True
        self._dispatch(req)
        return True

    def dispatch(self, req):
        """Run the app for ``req`` (in a task)."""
        self._dispatch(req)

    cdef _dispatch(self, HttpRequest req):
        req._dispatched = True
        server = self.server
        cdef Request head = <Request?>req.head
        conn = self.conn
        if self.client is None:
            self.client = addr(conn.remote_address)
            self.local = addr(conn.local_address)
        raw_path = head.path
        method = head.method
        name = _METHODS.get(method)
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": _VERSIONS.get(head.http_version, "1.1"),
            "method": name if name is not None else method.decode("ascii"),
            "scheme": self.scheme,
            "path": _scope_path(raw_path),
            "raw_path": raw_path,
            "query_string": head.query,
            "root_path": server.root_path,
            "headers": head.headers,
            "client": self.client,
            "server": self.local,
            "extensions": _EXTENSIONS,
        }
        state = server.state
        if state is not None:
            scope["state"] = state.copy()
        cdef Cycle cycle = Cycle.__new__(Cycle)
        cycle.session = self
        cycle.req = req
        cycle.status = 0
        cycle.headers = []
        conn.set_idle_timeout(None)
        task = loop_of(self).create_task(self._run_app(scope, cycle))
        self.task = task
        server.tasks.add(task)  # _run_app removes it

    async def _run_app(self, scope, Cycle cycle):
        server = self.server
        try:
            await server.app_asgi(scope, cycle.receive, cycle.send)
        except BaseException as exc:
            server.tasks.discard(_current_task(loop_of(self)))
            if isinstance(exc, _CancelledError):
                self._task_done()
                raise
            if cycle.session is not None and self.conn is not None:
                self._failed(exc)
                cycle.session = None
            elif not isinstance(exc, ConnectionClosed):
                logger.error("nbio.http: ASGI app failed after its response", exc_info=exc)
            return
        if cycle.session is not None and self.conn is not None:
            if not cycle.started:
                logger.error("nbio.http: ASGI app returned without a response")
                self._failed(RuntimeError("no response"))
            elif not cycle.done:
                logger.error("nbio.http: ASGI app returned before its response was complete")
                self._abort()
        task = _current_task(loop_of(self))
        server.tasks.discard(task)
        if self.task is task:
            self.task = None
        conn = self.conn
        if conn is not None and not self.busy:
            conn.set_idle_timeout(server.keep_alive_timeout)

    cdef _task_done(self):
        if self.task is _current_task(loop_of(self)):
            self.task = None
        conn = self.conn
        if conn is not None and not self.busy:
            conn.set_idle_timeout(self.server.keep_alive_timeout)


register_compiled_session(AsgiSessionCore)

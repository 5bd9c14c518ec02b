# cython: language_level=3, boundscheck=False, wraparound=False
"""The per-request hot path of :mod:`nbio.http.server` (Cython).

:class:`Response` and :class:`HttpRequest` (documented in :mod:`nbio.http.server`, which
re-exports them), and :class:`SessionCore`, the compiled base of the per-connection state:
``feed`` (parse, then answer a whole bodiless request on the shortcut) and ``on_data`` (the
server's engine callback). Everything that is not the shortcut stays in Python, in
``server._Session`` (a subclass), with identical behaviour.
"""

import asyncio
from asyncio import _get_running_loop

from nbio.errors import ConnectionClosed
from nbio.http._h1 cimport S_CLOSED, S_HEAD, EndOfMessage, Request, ServerConnection

cdef bytes _CONTENT_TYPE = b"content-type"
cdef bytes _TEXT_UTF8 = b"text/plain; charset=utf-8"
cdef Py_ssize_t _STREAM_HIGH_WATER = 65536  # streamed body bytes buffered before reading pauses



cdef inline list _headers(object headers, object content_type):
    cdef list out = list(headers) if headers else []
    if content_type is not None:
        out.append((_CONTENT_TYPE, content_type))
    return out


def make_headers(headers, content_type):
    """Headers as a new list, with ``content-type`` appended when given."""
    return _headers(headers, content_type)


cdef class Response:
    """A complete response: ``body`` (bytes; a str is UTF-8 encoded and defaults the
    content type to ``text/plain; charset=utf-8``), ``status`` and ``headers`` (pairs of
    str or bytes). Content-Length is added; Date comes from the server's cache."""

    def __init__(self, body=b"", status=200, headers=None, content_type=None):
        if isinstance(body, str):
            body = (<str>body).encode("utf-8")
            if content_type is None:
                content_type = _TEXT_UTF8
        self.status = status
        self.headers = _headers(headers, content_type)
        self.body = body

    def __repr__(self):
        return f"<Response {self.status} {len(self.body)} bytes>"


cdef class HttpRequest:
    """A request as the application sees it.

    Head attributes are those of :class:`nbio.http.h1.Request` (``method``, ``target``,
    ``path``, ``query``, ``http_version``: bytes; ``headers``: list of (lowercased name,
    value) bytes pairs; ``get_header(name)``), the parsed head itself is ``head``. The body:
    ``body`` (bytes, when complete), ``await read()``, ``async for chunk in stream()``;
    ``trailers`` once the body is complete."""

    def __init__(self, head, session=None, complete=False):
        self.head = head
        self._session = session
        self._chunks = []
        self._size = 0
        self._complete = complete
        self._waiter = None
        self._error = None
        self.trailers = ()
        self._dispatched = False
        self._consumed = False

    # -- head -------------------------------------------------------------------------------

    @property
    def method(self):
        return self.head.method

    @property
    def target(self):
        return self.head.target

    @property
    def path(self):
        return self.head.path

    @property
    def query(self):
        return self.head.query

    @property
    def http_version(self):
        return self.head.http_version

    @property
    def headers(self):
        return self.head.headers

    @property
    def keep_alive(self):
        return self.head.keep_alive

    @property
    def upgrade(self):
        return self.head.upgrade

    @property
    def content_length(self):
        return self.head.content_length

    @property
    def chunked(self):
        return self.head.chunked

    @property
    def expect_continue(self):
        return self.head.expect_continue

    def get_header(self, name, default=None):
        """First value of header ``name`` (case-insensitive), or ``default``."""
        return self.head.get_header(name, default)

    @property
    def conn(self):
        """The engine connection (None once the request is detached from it)."""
        s = self._session
        return s.conn if s is not None else None

    @property
    def client(self):
        """The peer's address."""
        c = self.conn
        return c.remote_address if c is not None else None

    def __repr__(self):
        return f"<HttpRequest {self.head.method!r} {self.head.target!r}>"

    # -- body -------------------------------------------------------------------------------

    @property
    def complete(self):
        """True once the whole body has arrived."""
        return self._complete

    @property
    def body(self):
        """The whole body (``b""`` when there is none); only once it is complete."""
        if not self._complete:
            raise RuntimeError("the body has not fully arrived: use await request.read()")
        cdef list chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        data = b"".join(chunks)
        self._chunks = [data] if data else []
        return data

    async def read(self):
        """The whole body, waiting for it."""
        while not self._complete:
            await self._wait()
        return self.body

    async def stream(self):
        """The body, chunk by chunk as it arrives (once)."""
        if self._consumed:
            raise RuntimeError("the body was already streamed")
        self._consumed = True
        while True:
            if self._chunks:
                chunks, self._chunks, self._size = self._chunks, [], 0
                self._resume_input()
                for chunk in chunks:
                    yield chunk
            elif self._complete:
                return
            else:
                await self._wait()

    def _wait(self):
        if self._error is not None:
            raise self._error
        session = self._session
        if session is None or session.conn is None:
            raise ConnectionClosed(None, "connection closed before the body arrived")
        session.send_continue()
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = loop_of(session).create_future()
        return waiter

    def _wake(self):
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _feed(self, chunk):
        self._chunks.append(chunk)
        self._size += len(chunk)
        self._wake()
        session = self._session
        if (self._dispatched and self._size > _STREAM_HIGH_WATER and session is not None
                and session.conn is not None):
            session.pause_input()

    def _end(self, trailers):
        self._complete = True
        self.trailers = trailers
        self._wake()

    def _fail(self, exc):
        self._error = exc
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: nobody may be waiting

    def _resume_input(self):
        session = self._session
        if session is not None and session.input_paused:
            session.resume_input()

    async def _wait_body(self):
        """Until body bytes or the end arrived (raises when the client is gone): the ASGI
        ``receive`` of every protocol."""
        while not self._chunks and not self._complete:
            await self._wait()

    def _body_message(self):
        """The ASGI ``http.request`` message of what arrived and was not handed over yet
        (reading resumes), or None once the whole body was."""
        if self._chunks or not self._consumed:
            chunks, self._chunks, self._size = self._chunks, [], 0
            self._consumed = self._complete
            self._resume_input()
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return {"type": "http.request", "body": body, "more_body": not self._complete}
        return None


cdef object loop_of(object session):
    """The running loop, from the session when it knows it."""
    loop = (<SessionCore>session).loop if isinstance(session, SessionCore) else None
    return loop if loop is not None else asyncio.get_running_loop()


cdef HttpRequest new_request(object head, object session, object eom):
    cdef HttpRequest req = HttpRequest.__new__(HttpRequest)
    req.head = head
    req._session = session
    req._chunks = []
    req._complete = True
    req.trailers = eom.trailers or ()
    return req


cdef dict _PLAIN_FAST = {}
cdef set COMPILED_SESSIONS = set()


cdef bint _plain_fast(type cls) except -1:
    """True when ``cls`` takes ``fast_path`` from a compiled session class (so ``feed``
    calls its C implementation directly), False when a Python subclass overrides it."""
    found = _PLAIN_FAST.get(cls)
    if found is None:
        found = False
        for klass in cls.__mro__:
            if "fast_path" in klass.__dict__:
                found = klass in COMPILED_SESSIONS
                break
        _PLAIN_FAST[cls] = found
    return found


def register_compiled_session(cls):
    """Mark a compiled subclass of :class:`SessionCore` whose ``fast_path`` is its ``_fast``."""
    COMPILED_SESSIONS.add(cls)
    _PLAIN_FAST.clear()
    return cls


cdef class SessionCore:
    """The HTTP state of one connection (``conn.session``): the compiled part.

    ``server._Session`` subclasses it with the general machinery (``process``, ``dispatch``,
    streaming, errors); ``feed`` handles the common case -- one whole bodiless request,
    nothing in progress -- without it."""

    def __init__(self, server, conn):
        self.server = server
        self.conn = conn
        self.rx = None
        self.current = None
        self.task = None
        self._plain_fast = _plain_fast(type(self))
        self.loop = _get_running_loop()

    def feed(self, data):
        """Parse ``data`` and handle the events."""
        self._feed(data)

    cdef int _feed(self, data) except -1:
        cdef ServerConnection h1 = <ServerConnection?>self.h1
        cdef list events = h1.receive_data(data)
        cdef bint done = False
        if len(events) == 2 and not self.busy and type(events[1]) is EndOfMessage:
            head = events[0]
            if type(head) is Request and (<Request>head).upgrade is None:
                if self._plain_fast:
                    done = self._fast(head, events[1])
                else:
                    done = self.fast_path(head, events[1])
            if done:
                return 0
            self.process(events)
        elif events:
            self.process(events)
        if self.conn is None:
            return 0
        if h1._state == S_HEAD:
            if not self.head_since:
                self.server._watch_head(self)
        if self.busy and not self.input_paused and h1._held:
            # a pipelined request is waiting behind the one being answered
            self.pause_input()
        return 0

    def finished(self):
        """The current response is complete: go on with the next request or close."""
        self._finished()

    cdef int _finished(self) except -1:
        self.busy = False
        self.started = False
        self.current = None
        conn = self.conn
        if conn is None:
            return 0
        cdef ServerConnection h1 = <ServerConnection?>self.h1
        if h1._must_close or self.server.draining:
            self._end_connection()
            return 0
        if self.rx is not None or self.in_process:
            return 0   # the rest of the body is dropped / the process loop goes on
        if self.declined or h1._held:
            self.process([])    # the next request (pipelined), or the declined upgrade's
        elif h1._held is not None:
            h1.resume()         # nothing held: what process([]) would do, in short
        if self.input_paused and self.conn is not None and not self.busy:
            self.resume_input()
        return 0

    def end_connection(self):
        """Close the connection after its last response (written already).

        When the client may still be sending -- an error response (the request was not read
        whole), a request in progress, or a keep-alive client whose next request may be on
        its way -- it is a lingering close (``server.lingering``, :mod:`nbio.http._linger`):
        closing with unread input would send an RST that can destroy the response before the
        client reads it (RFC 9112 section 9.6). A request that announced the close itself
        (``Connection: close``, HTTP/1.0) and was read whole is just closed. Either way the
        session writes nothing more."""
        self._end_connection()

    cdef int _end_connection(self) except -1:
        conn = self.conn
        if conn is None:
            return 0
        if (<ServerConnection?>self.h1)._state == S_CLOSED:
            conn.close()
        else:
            self.conn = None  # the lingering handler owns the socket; on_close still comes
            self.server.lingering.start(conn)
        return 0

    def fast_path(self, head, eom):
        """A whole bodiless request with nothing in progress, for a plain handler that
        returns a Response: answered without the general machinery. False if the request
        must go the general way (which it then does from scratch)."""
        return self._fast(head, eom)

    cdef bint _fast(self, head, eom) except -1:
        server = self.server
        if server.fast is False:
            return False
        if self.head_since:
            server._unwatch_head(self)
        cdef HttpRequest req = new_request(head, self, eom)
        self.current = req
        self.busy = True
        try:
            resp = server.app(req)
        except Exception as exc:
            self._failed(exc)
            self._next()
            return True
        cdef ServerConnection h1
        if type(resp) is Response and not server.draining:
            h1 = <ServerConnection?>self.h1
            try:
                data = h1.respond((<Response>resp).status, (<Response>resp).headers,
                                  (<Response>resp).body)
            except ValueError as exc:
                self._failed(exc)
                return True
            self.conn.write(data)
            self.busy = False
            self.current = None
            if h1._must_close:
                self._end_connection()
            elif h1._held or self.declined:
                self._next()
            else:
                h1.resume()
            return True
        # anything else: go on as dispatch() would with this result
        req._dispatched = True
        self._handle_result(resp)
        self._next()
        return True


COMPILED_SESSIONS.add(SessionCore)


def on_data(self, conn, data):
    """The server's ``on_data`` engine callback."""
    (<SessionCore>conn.session)._feed(data)

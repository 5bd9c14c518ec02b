# distutils: sources = vendor/llhttp/llhttp.c vendor/llhttp/api.c vendor/llhttp/http.c
# distutils: include_dirs = vendor/llhttp
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Sans-IO HTTP/1.1 core (Cython): parsing with llhttp (driven from C), serializing by hand.

See :mod:`nbio.http.h1` for the documentation of the public API; this module holds the
implementation. Everything here is bytes in, events/bytes out: no sockets, no event loop.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.string cimport memcmp, memcpy

import time as _time
from email.utils import formatdate as _formatdate
from http import HTTPStatus as _HTTPStatus

from nbio.errors import HTTPMessageTooBig, HTTPProtocolError

# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


cdef inline object _find_header(list headers, name):
    cdef bytes key = _lower(_as_bytes(name))
    for pair in headers:
        if (<tuple>pair)[0] == key:
            return (<tuple>pair)[1]
    return None


cdef class Request:
    """A request head (server side). Header names are lowercased, values are as sent."""


    def __init__(self, method, target, headers=None, http_version=b"1.1", *,
                 keep_alive=True, expect_continue=False, upgrade=None, content_length=None,
                 chunked=False):
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = [] if headers is None else list(headers)
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.content_length = content_length
        self.chunked = chunked

    @property
    def path(self):
        """The target up to ``?`` (bytes)."""
        cdef bytes t = self.target
        cdef Py_ssize_t i = t.find(b"?")
        return t if i < 0 else t[:i]

    @property
    def query(self):
        """The target after ``?`` (bytes, ``b""`` when there is none)."""
        cdef bytes t = self.target
        cdef Py_ssize_t i = t.find(b"?")
        return b"" if i < 0 else t[i + 1:]

    def get_header(self, name, default=None):
        """First value of header ``name`` (case-insensitive), or ``default``."""
        v = _find_header(self.headers, name)
        return default if v is None else v

    def _key(self):
        return (self.method, self.target, self.http_version, self.headers, self.keep_alive,
                self.expect_continue, self.upgrade, self.content_length, self.chunked)

    def __eq__(self, other):
        if type(other) is not Request:
            return NotImplemented
        return self._key() == (<Request>other)._key()

    __hash__ = None

    def __repr__(self):
        return ("Request(method=%r, target=%r, http_version=%r, headers=%r, keep_alive=%r, "
                "expect_continue=%r, upgrade=%r, content_length=%r, chunked=%r)" % self._key())


cdef class Response:
    """A response head (client side); ``status < 200`` marks an interim (1xx) response,
    which is never followed by :class:`Data` or :class:`EndOfMessage`."""

    cdef readonly int status
    cdef readonly bytes reason
    cdef readonly bytes http_version
    cdef readonly list headers
    cdef readonly bint keep_alive
    cdef readonly object content_length
    cdef readonly bint chunked

    def __init__(self, status, headers=None, reason=b"", http_version=b"1.1", *,
                 keep_alive=True, content_length=None, chunked=False):
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = [] if headers is None else list(headers)
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked

    def get_header(self, name, default=None):
        """First value of header ``name`` (case-insensitive), or ``default``."""
        v = _find_header(self.headers, name)
        return default if v is None else v

    def _key(self):
        return (self.status, self.reason, self.http_version, self.headers, self.keep_alive,
                self.content_length, self.chunked)

    def __eq__(self, other):
        if type(other) is not Response:
            return NotImplemented
        return self._key() == (<Response>other)._key()

    __hash__ = None

    def __repr__(self):
        return ("Response(status=%r, reason=%r, http_version=%r, headers=%r, keep_alive=%r, "
                "content_length=%r, chunked=%r)" % self._key())


cdef class Data:
    """A piece of a message body (``data`` is ``bytes``, chunk framing already removed)."""

    cdef readonly bytes data

    def __init__(self, data):
        self.data = bytes(data)

    def __eq__(self, other):
        if type(other) is not Data:
            return NotImplemented
        return self.data == (<Data>other).data

    __hash__ = None

    def __repr__(self):
        return "Data(%r)" % (self.data,)


cdef class EndOfMessage:
    """The end of a message body; ``trailers`` is a tuple of (lowercased name, value) pairs."""


    def __init__(self, trailers=()):
        self.trailers = tuple(trailers)

    def __eq__(self, other):
        if type(other) is not EndOfMessage:
            return NotImplemented
        return self.trailers == (<EndOfMessage>other).trailers

    __hash__ = None

    def __repr__(self):
        return "EndOfMessage(%r)" % (self.trailers,) if self.trailers else "EndOfMessage()"


cdef EndOfMessage _EOM = EndOfMessage()


cdef inline Data _data(bytes chunk):
    cdef Data d = Data.__new__(Data)
    d.data = chunk
    return d


# ---------------------------------------------------------------------------------------------
# Byte helpers
# ---------------------------------------------------------------------------------------------

cdef unsigned char _LOWER[256]
cdef unsigned char _TOKEN[256]   # 1 for RFC 9110 tchar
cdef unsigned char _VALUE[256]   # 1 for bytes allowed in a field value (VCHAR, obs-text, SP, HTAB)
cdef unsigned char _TARGET[256]  # 1 for bytes allowed in a request target (no CTL, SP)

cdef _init_tables():
    cdef int i
    for i in range(256):
        _LOWER[i] = i + 32 if 65 <= i <= 90 else i
        _TOKEN[i] = 0
        _VALUE[i] = 1 if (i >= 0x20 and i != 0x7f) or i == 0x09 else 0
        _TARGET[i] = 1 if i > 0x20 and i != 0x7f else 0
    for c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        _TOKEN[c] = 1

_init_tables()


cdef inline bytes _lower(bytes s):
    """ASCII-lowercase ``s``; returns ``s`` itself when it has no uppercase letter."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(s)
    cdef unsigned char* q
    for i in range(n):
        if 65 <= p[i] <= 90:
            break
    else:
        return s
    out = PyBytes_FromStringAndSize(NULL, n)
    q = <unsigned char*>PyBytes_AS_STRING(out)
    for i in range(n):
        q[i] = _LOWER[p[i]]
    return <bytes>out


cdef inline bint _ieq(bytes s, const char* lit, Py_ssize_t n):
    """Case-insensitive comparison of ``s`` with the lowercase literal ``lit`` of length n."""
    cdef const unsigned char* p
    cdef Py_ssize_t i
    if PyBytes_GET_SIZE(s) != n:
        return False
    p = <const unsigned char*>PyBytes_AS_STRING(s)
    for i in range(n):
        if _LOWER[p[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef inline bytes _as_bytes(object v):
    if type(v) is bytes:
        return <bytes>v
    if isinstance(v, str):
        return (<str>v).encode("latin-1")
    if isinstance(v, int):
        return str(v).encode("ascii")
    return bytes(v)


cdef inline bytes _rstrip_ows(bytes v):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v)
    cdef const char* p = PyBytes_AS_STRING(v)
    if n == 0 or (p[n - 1] != b' ' and p[n - 1] != b'\t'):
        return v
    while n > 0 and (p[n - 1] == b' ' or p[n - 1] == b'\t'):
        n -= 1
    return v[:n]


cdef inline int _check_token(bytes name, str what) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(name)
    if n == 0:
        raise ValueError("empty %s" % what)
    for i in range(n):
        if not _TOKEN[p[i]]:
            raise ValueError("invalid %s %r" % (what, name))
    return 0


cdef inline int _check_value(bytes value) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(value)
    for i in range(n):
        if not _VALUE[p[i]]:
            raise ValueError("invalid character in header value %r" % (value,))
    return 0


cdef inline int _check_target(bytes target) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(target), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(target)
    if n == 0:
        raise ValueError("empty request target")
    for i in range(n):
        if not _TARGET[p[i]]:
            raise ValueError("invalid character in request target %r" % (target,))
    return 0


cdef inline bint _has_token(bytes value, const char* tok, Py_ssize_t n):
    """True if the comma-separated list ``value`` contains ``tok`` (lowercase), any case."""
    cdef Py_ssize_t size = PyBytes_GET_SIZE(value), i = 0, start, end, k
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(value)
    while i <= size:
        start = i
        while i < size and p[i] != b',':
            i += 1
        end = i
        while start < end and (p[start] == b' ' or p[start] == b'\t'):
            start += 1
        while end > start and (p[end - 1] == b' ' or p[end - 1] == b'\t'):
            end -= 1
        if end - start == n:
            for k in range(n):
                if _LOWER[p[start + k]] != <unsigned char>tok[k]:
                    break
            else:
                return True
        i += 1
    return False


cdef inline long long _parse_length(bytes value) except -2:
    """Parse a Content-Length value we are about to send; -1 is never returned for valid input."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), i
    cdef const char* p = PyBytes_AS_STRING(value)
    cdef long long r = 0
    if n == 0 or n > 18:
        raise ValueError("invalid Content-Length %r" % (value,))
    for i in range(n):
        if p[i] < b'0' or p[i] > b'9':
            raise ValueError("invalid Content-Length %r" % (value,))
        r = r * 10 + (p[i] - 48)
    return r


# ---------------------------------------------------------------------------------------------
# Serialization helpers: status lines, Date, fields
# ---------------------------------------------------------------------------------------------

cdef list _STATUS_LINES = [None] * 600
for _st in _HTTPStatus:
    if 100 <= _st.value < 600:
        _STATUS_LINES[_st.value] = b"HTTP/1.1 %d %s\r\n" % (_st.value, _st.phrase.encode("ascii"))

cdef bytes _status_line(int status, object reason):
    cdef object line
    if reason is None and 100 <= status < 600:
        line = _STATUS_LINES[status]
        if line is not None:
            return <bytes>line
    if not 100 <= status <= 999:
        raise ValueError("invalid status code %d" % status)
    if reason is None:
        reason = b""
    else:
        reason = _as_bytes(reason)
        if b"\r" in reason or b"\n" in reason:
            raise ValueError("invalid reason phrase %r" % (reason,))
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


cdef bytes _DATE_LINE = b""
cdef double _DATE_AT = -1.0


def refresh_date(now=None):
    """Recompute the cached ``Date`` header from ``now`` (seconds since the epoch; default
    ``time.time()``). Call it at most once per second, e.g. from a timer; returns the value."""
    global _DATE_LINE, _DATE_AT
    if now is None:
        now = _time.time()
    cdef double t = <double>(<long long>now)
    if t != _DATE_AT:
        _DATE_AT = t
        _DATE_LINE = b"Date: " + _formatdate(t, usegmt=True).encode("ascii") + b"\r\n"
    return _DATE_LINE[6:len(_DATE_LINE) - 2]


def date_header():
    """The cached ``Date`` header value (bytes) put in every response."""
    return _DATE_LINE[6:len(_DATE_LINE) - 2]


refresh_date()


cdef struct _Fields:
    long long content_length     # -1: none given
    bint chunked                 # Transfer-Encoding: chunked given
    bint close                   # Connection: close given
    bint keep_alive              # Connection: keep-alive given
    bint date                    # Date given
    bint host                    # Host given


# A head is written into one C buffer (on the stack, moved to the heap when it outgrows it)
# and becomes one bytes object: no list of parts, no join.

cdef int _out_grow(_Out* o, Py_ssize_t need) except -1:
    cdef Py_ssize_t cap = o.cap * 2
    cdef char* p
    while cap < need:
        cap *= 2
    if o.heap:
        p = <char*>PyMem_Realloc(o.p, cap)
    else:
        p = <char*>PyMem_Malloc(cap)
        if p != NULL:
            memcpy(p, o.p, o.n)
    if p == NULL:
        raise MemoryError()
    o.p = p
    o.cap = cap
    o.heap = True
    return 0


cdef inline int _out_add(_Out* o, const char* s, Py_ssize_t n) except -1:
    if o.n + n > o.cap:
        _out_grow(o, o.n + n)
    memcpy(o.p + o.n, s, n)
    o.n += n
    return 0


cdef inline int _out_bytes(_Out* o, bytes b) except -1:
    return _out_add(o, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


cdef inline void _out_free(_Out* o) noexcept:
    if o.heap:
        PyMem_Free(o.p)
        o.heap = False


cdef bytes _out_take(_Out* o, bytes tail):
    """The buffer's content followed by ``tail`` (may be None) as one bytes object."""
    cdef Py_ssize_t t = PyBytes_GET_SIZE(tail) if tail is not None else 0
    cdef bytes out = PyBytes_FromStringAndSize(NULL, o.n + t)
    cdef char* q = PyBytes_AS_STRING(out)
    memcpy(q, o.p, o.n)
    if t:
        memcpy(q + o.n, PyBytes_AS_STRING(tail), t)
    return out


cdef int _out_length(_Out* o, long long n) except -1:
    """``Content-Length: <n>\r\n``."""
    cdef char buf[40]
    cdef Py_ssize_t i = 38
    buf[38] = b'\r'
    buf[39] = b'\n'
    if n == 0:
        i -= 1
        buf[i] = b'0'
    while n:
        i -= 1
        buf[i] = <char>(48 + n % 10)
        n //= 10
    i -= 16
    memcpy(buf + i, b"Content-Length: ", 16)
    return _out_add(o, buf + i, 40 - i)


# Recently written plain fields (not framing, Connection, Date or Host): a direct-mapped cache
# from the (name, value) tuple object -- immutable, of exact bytes -- to its serialized line,
# so that the constant headers an application passes with every response are validated once.
# Entries hold a reference to their tuple, so an identity match is the same field.
cdef enum:
    _PLAIN_SLOTS = 64
    _PLAIN_MAX = 256     # longest line cached

cdef object _PLAIN_KEYS = [None] * _PLAIN_SLOTS
cdef object _PLAIN_LINES = [None] * _PLAIN_SLOTS


cdef _Fields _append_fields(_Out* o, object headers) except *:
    """Validate ``headers`` and write their serialization to ``o``; report the framing
    and connection-management fields found. Transfer-Encoding is reported, not copied."""
    cdef _Fields f
    cdef bytes name, value
    cdef Py_ssize_t n
    f.content_length = -1
    f.chunked = f.close = f.keep_alive = f.date = f.host = False
    cdef Py_ssize_t slot
    cdef bint cacheable
    for item in headers:
        slot = (<Py_ssize_t><void*>item >> 4) & (_PLAIN_SLOTS - 1)
        if (<list>_PLAIN_KEYS)[slot] is item:
            _out_bytes(o, <bytes>(<list>_PLAIN_LINES)[slot])
            continue
        cacheable = (type(item) is tuple and PyTuple_GET_SIZE(item) == 2
                     and type(item[0]) is bytes and type(item[1]) is bytes)
        name, value = _as_bytes(item[0]), _as_bytes(item[1])
        _check_token(name, "header name")
        _check_value(value)
        n = PyBytes_GET_SIZE(name)
        if n == 14 and _ieq(name, "content-length", 14):
            if f.content_length >= 0:
                raise ValueError("duplicate Content-Length header")
            f.content_length = _parse_length(value)
        elif n == 17 and _ieq(name, "transfer-encoding", 17):
            if not _ieq(value, "chunked", 7) or f.chunked:
                raise ValueError("unsupported Transfer-Encoding %r (only 'chunked')" % (value,))
            f.chunked = True
            continue
        elif n == 10 and _ieq(name, "connection", 10):
            if _has_token(value, "close", 5):
                f.close = True
            elif _has_token(value, "keep-alive", 10):
                f.keep_alive = True
        elif n == 4 and (_ieq(name, "date", 4) or _ieq(name, "host", 4)):
            if _ieq(name, "date", 4):
                f.date = True
            else:
                f.host = True
        elif cacheable and n + PyBytes_GET_SIZE(value) + 4 <= _PLAIN_MAX:
            line = b"%s: %s\r\n" % (name, value)
            (<list>_PLAIN_KEYS)[slot] = item
            (<list>_PLAIN_LINES)[slot] = line
            _out_bytes(o, line)
            continue
        _out_bytes(o, name)
        _out_add(o, ": ", 2)
        _out_bytes(o, value)
        _out_add(o, "\r\n", 2)
    if f.chunked and f.content_length >= 0:
        raise ValueError("both Content-Length and Transfer-Encoding given")
    return f


cdef const char* _HEX = b"0123456789abcdef"


cdef bytes _chunk(object chunk):
    cdef Py_ssize_t n = len(chunk), i = 18
    cdef char buf[20]
    if n == 0:
        return b""
    buf[18] = b'\r'
    buf[19] = b'\n'
    while n:
        i -= 1
        buf[i] = _HEX[n & 15]
        n >>= 4
    return b"".join([PyBytes_FromStringAndSize(buf + i, 20 - i), chunk, b"\r\n"])


cdef bytes _last_chunk(object trailers):
    if not trailers:
        return b"0\r\n\r\n"
    cdef char stack[512]
    cdef _Out o = _Out(&stack[0], 0, 512, False)
    cdef _Fields f
    try:
        _out_add(&o, "0\r\n", 3)
        f = _append_fields(&o, trailers)
        if f.content_length >= 0 or f.chunked:
            raise ValueError("framing fields are not allowed in trailers")
        _out_add(&o, "\r\n", 2)
        return _out_take(&o, None)
    finally:
        _out_free(&o)


cdef inline bytes _body_bytes(object body):
    if type(body) is bytes:
        return <bytes>body
    return bytes(body)


# ---------------------------------------------------------------------------------------------
# The shared parsing half
# ---------------------------------------------------------------------------------------------


cdef enum:
    C_CLOSE = 1
    C_KEEP_ALIVE = 2

cdef enum:
    F_NONE = 0       # no body bytes (HEAD, 1xx, 204, 304, 101)
    F_LENGTH = 1     # Content-Length
    F_CHUNKED = 2    # chunked
    F_CLOSE = 3      # delimited by closing the connection


# --- llhttp, driven with C callbacks -----------------------------------------------------------

# llhttp (vendor/llhttp, MIT) is compiled into this module: see the distutils directives at the
# top (paths valid from the project root, where setup.py builds, and from src/, where
# `cythonize -i` builds, through the src/vendor symlink).
cdef extern from "llhttp.h":
    ctypedef struct llhttp_t:
        int error
        void* data
        uint64_t content_length
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint8_t upgrade
        uint16_t status_code

    ctypedef int (*llhttp_data_cb)(llhttp_t*, const char*, size_t) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t*) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_status
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete
        llhttp_cb on_url_complete
        llhttp_cb on_status_complete
        llhttp_cb on_header_field_complete
        llhttp_cb on_header_value_complete

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_PAUSED_UPGRADE
        HPE_USER

    ctypedef enum llhttp_type_t:
        HTTP_REQUEST
        HTTP_RESPONSE

    void llhttp_init(llhttp_t* parser, llhttp_type_t type, const llhttp_settings_t* settings)
    void llhttp_settings_init(llhttp_settings_t* settings)
    llhttp_errno_t llhttp_execute(llhttp_t* parser, const char* data, size_t len)
    int llhttp_should_keep_alive(const llhttp_t* parser)
    void llhttp_resume_after_upgrade(llhttp_t* parser)
    const char* llhttp_get_error_reason(const llhttp_t* parser)
    const char* llhttp_get_error_pos(const llhttp_t* parser)
    const char* llhttp_method_name(int method)


# Each callback hands over to a method of the connection (``parser.data``, borrowed: the
# connection owns the parser). An exception is kept in ``_cb_error`` and stops the parser;
# ``_feed`` reports it.

cdef int _cb_message_begin(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_begin()
    except BaseException as exc:
        self._cb_error = exc
        return -1
    return 0


cdef int _cb_url(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_url(at, n)
    except BaseException as exc:
        self._cb_error = exc
        return HPE_USER
    return 0


cdef int _cb_url_complete(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_url_complete()
    except BaseException as exc:
        self._cb_error = exc
        return -1
    return 0


cdef int _cb_status(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_status(at, n)
    except BaseException as exc:
        self._cb_error = exc
        return HPE_USER
    return 0


cdef int _cb_status_complete(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_status_complete()
    except BaseException as exc:
        self._cb_error = exc
        return -1
    return 0


cdef int _cb_span(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._span(at, n)
    except BaseException as exc:
        self._cb_error = exc
        return HPE_USER
    return 0


cdef int _cb_field_complete(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    self._flen = self._slen
    return 0


cdef int _cb_value_complete(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_header()
    except BaseException as exc:
        self._cb_error = exc
        return -1
    return 0


cdef int _cb_headers_complete(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_headers_complete()
    except BaseException as exc:
        self._cb_error = exc
        return -1
    return 1 if p.upgrade else 0    # an upgrade's bytes belong to the new protocol


cdef int _cb_body(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_body(at, n)
    except BaseException as exc:
        self._cb_error = exc
        return HPE_USER
    return 0


cdef int _cb_message_complete(llhttp_t* p) noexcept:
    cdef _H1Parser self = <_H1Parser>p.data
    try:
        self._on_message_complete()
    except BaseException as exc:
        self._cb_error = exc
        return -1
    return 0


cdef llhttp_settings_t _SETTINGS
llhttp_settings_init(&_SETTINGS)
_SETTINGS.on_message_begin = _cb_message_begin
_SETTINGS.on_url = _cb_url
_SETTINGS.on_url_complete = _cb_url_complete
_SETTINGS.on_status = _cb_status
_SETTINGS.on_status_complete = _cb_status_complete
_SETTINGS.on_header_field = _cb_span
_SETTINGS.on_header_field_complete = _cb_field_complete
_SETTINGS.on_header_value = _cb_span
_SETTINGS.on_header_value_complete = _cb_value_complete
_SETTINGS.on_headers_complete = _cb_headers_complete
_SETTINGS.on_body = _cb_body
_SETTINGS.on_message_complete = _cb_message_complete

cdef list _METHODS = [None] * 256   # llhttp method number -> name (filled as seen)


cdef inline bytes _method_name(uint8_t m):
    name = _METHODS[m]
    if name is None:
        name = _METHODS[m] = <bytes>llhttp_method_name(m)
    return <bytes>name


cdef inline bytes _lower_from(const char* s, Py_ssize_t n):
    """A new bytes: the ASCII-lowercase copy of ``s[:n]``."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(out)
    cdef const unsigned char* p = <const unsigned char*>s
    cdef Py_ssize_t i
    for i in range(n):
        q[i] = _LOWER[p[i]]
    return out


# Common field names, lowercase, shared by every message that uses them (no allocation).
cdef tuple _COMMON_NAMES = (
    b"host", b"date", b"vary", b"etag", b"accept", b"cookie", b"origin", b"pragma",
    b"server", b"expect", b"range", b"referer", b"upgrade", b"alt-svc", b"location",
    b"keep-alive", b"connection", b"user-agent", b"set-cookie", b"x-real-ip", b"sec-ch-ua",
    b"content-type", b"content-length", b"cache-control", b"authorization",
    b"if-none-match", b"last-modified", b"accept-ranges", b"accept-encoding",
    b"accept-language", b"content-encoding", b"x-forwarded-for", b"x-requested-with",
    b"transfer-encoding", b"sec-websocket-key", b"x-forwarded-proto", b"if-modified-since",
    b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest", b"sec-fetch-user",
    b"sec-ch-ua-mobile", b"sec-ch-ua-platform", b"sec-websocket-version",
    b"sec-websocket-protocol", b"sec-websocket-extensions", b"upgrade-insecure-requests",
)
cdef list _NAMES_BY_LEN = [()] * 32
for _name in _COMMON_NAMES:
    _NAMES_BY_LEN[len(_name)] = _NAMES_BY_LEN[len(_name)] + (_name,)


cdef inline bytes _field_name(const char* s, Py_ssize_t n):
    """The lowercase field name ``s[:n]``: a shared object for common names, else a new one."""
    cdef const unsigned char* p = <const unsigned char*>s
    cdef const unsigned char* c
    cdef Py_ssize_t i
    if n < 32:
        for cand in <tuple>_NAMES_BY_LEN[n]:
            c = <const unsigned char*>PyBytes_AS_STRING(<bytes>cand)
            for i in range(n):
                if _LOWER[p[i]] != c[i]:
                    break
            else:
                return <bytes>cand
    return _lower_from(s, n)


cdef class _H1Parser:
    """What both sides share: limits, field collection, body/trailer events, error mapping,
    and the llhttp parser (fed by :meth:`_feed`, calling back the ``_on_*`` methods)."""


    def __cinit__(self):
        self._events = None
        self._state = S_IDLE
        self._trailing = b""
        self._feed_len = 0
        self._llp = NULL
        self._sbuf = NULL
        self._slen = self._scap = self._flen = 0

    def __dealloc__(self):
        PyMem_Free(self._llp)
        PyMem_Free(self._sbuf)

    cdef int _init_parser(self, int kind) except -1:
        cdef llhttp_t* p = <llhttp_t*>self._llp
        if p == NULL:
            p = <llhttp_t*>PyMem_Malloc(sizeof(llhttp_t))
            if p == NULL:
                raise MemoryError()
            self._llp = p
        llhttp_init(p, <llhttp_type_t>kind, &_SETTINGS)
        p.data = <void*>self
        return 0

    cdef _set_limits(self, max_header_bytes, max_header_count, max_body_size):
        if max_header_bytes < 64 or max_header_count < 1:
            raise ValueError("max_header_bytes must be >= 64 and max_header_count >= 1")
        self._max_header_bytes = max_header_bytes
        self._max_header_count = max_header_count
        self._max_body_size = -1 if max_body_size is None else max_body_size
        if max_body_size is not None and max_body_size < 0:
            raise ValueError("max_body_size must be >= 0 or None")

    cdef int _span(self, const char* at, size_t n) except -1:
        """Append a piece of the span being collected to ``_sbuf``."""
        cdef Py_ssize_t need = self._slen + <Py_ssize_t>n, cap
        cdef char* buf
        if need > self._scap:
            cap = self._scap * 2 if self._scap else 256
            while cap < need:
                cap *= 2
            buf = <char*>PyMem_Realloc(self._sbuf, cap)
            if buf == NULL:
                raise MemoryError()
            self._sbuf = buf
            self._scap = cap
        memcpy(self._sbuf + self._slen, at, n)
        self._slen = need
        return 0

    cdef int _on_begin(self) except -1:
        self._begin()
        return 0

    cdef int _on_url(self, const char* at, size_t n) except -1:
        return 0

    cdef int _on_url_complete(self) except -1:
        return 0

    cdef int _on_status(self, const char* at, size_t n) except -1:
        return 0

    cdef int _on_status_complete(self) except -1:
        return 0

    cdef int _on_headers_complete(self) except -1:
        return 0

    cdef int _on_message_complete(self) except -1:
        return 0

    cdef _begin(self):
        self._state = S_HEAD
        self._headers = []
        self._trailers = None
        self._head_bytes = 0
        self._head_fed = -self._feed_len
        self._header_count = 0
        self._body_bytes = 0
        self._content_length = None
        self._te = None
        self._upgrade = None
        self._expect = None
        self._host_count = 0
        self._conn_tokens = 0
        self._slen = self._flen = 0

    cdef _too_big(self, str what):
        return HTTPProtocolError(431 if self._status_bad is not None else None, what)

    cdef int _on_header(self) except -1:
        """A field (name in ``_sbuf[:_flen]``, value after it) is complete."""
        cdef Py_ssize_t n = self._flen, vn = self._slen - self._flen
        cdef const char* s = self._sbuf
        cdef bytes name, value, te
        self._slen = self._flen = 0
        self._head_bytes += n + vn + 4
        self._header_count += 1
        if self._head_bytes > self._max_header_bytes:
            raise self._too_big("header section too large")
        if self._header_count > self._max_header_count:
            raise self._too_big("too many header fields")
        name = _field_name(s, n)
        while vn > 0 and (s[n + vn - 1] == b' ' or s[n + vn - 1] == b'\t'):
            vn -= 1
        value = PyBytes_FromStringAndSize(s + n, vn)
        if self._state != S_HEAD:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return 0
        if n == 4:
            if memcmp(PyBytes_AS_STRING(name), b"host", 4) == 0:
                self._host_count += 1
        elif n == 6:
            if memcmp(PyBytes_AS_STRING(name), b"expect", 6) == 0:
                self._expect = _lower(value)
        elif n == 7:
            if memcmp(PyBytes_AS_STRING(name), b"upgrade", 7) == 0:
                self._upgrade = _lower(value)
        elif n == 10:
            if memcmp(PyBytes_AS_STRING(name), b"connection", 10) == 0:
                if _has_token(value, "close", 5):
                    self._conn_tokens |= C_CLOSE
                if _has_token(value, "keep-alive", 10):
                    self._conn_tokens |= C_KEEP_ALIVE
        elif n == 14:
            if memcmp(PyBytes_AS_STRING(name), b"content-length", 14) == 0:
                self._content_length = int(value)  # llhttp validated: digits only, no dups
        elif n == 17:
            if memcmp(PyBytes_AS_STRING(name), b"transfer-encoding", 17) == 0:
                te = _lower(value)
                self._te = te if self._te is None else self._te + b", " + te
        self._headers.append((name, value))
        return 0

    cdef int _on_body(self, const char* at, size_t n) except -1:
        self._body_bytes += n
        if self._max_body_size >= 0 and self._body_bytes > self._max_body_size:
            raise HTTPMessageTooBig(413 if self._status_bad is not None else None,
                                    "body larger than %d bytes" % self._max_body_size)
        self._on_body_started()
        self._events.append(_data(PyBytes_FromStringAndSize(at, n)))
        return 0

    cdef _on_body_started(self):
        pass

    cdef EndOfMessage _eom(self):
        cdef EndOfMessage eom
        if self._trailers is None:
            return _EOM
        eom = EndOfMessage.__new__(EndOfMessage)
        eom.trailers = tuple(self._trailers)
        self._trailers = None
        return eom

    cdef bytes _version(self, bint keep_alive):
        # llhttp (strict) only accepts 0.9, 1.0, 1.1 and 2.0
        cdef llhttp_t* p = <llhttp_t*>self._llp
        if p.http_major == 1:
            if p.http_minor == 1:
                return b"1.1"
            if p.http_minor == 0:
                return b"1.0"
            return b"1.%d" % p.http_minor
        raise HTTPProtocolError(505 if self._status_bad is not None else None,
                                "unsupported HTTP version %d.%d" % (p.http_major, p.http_minor))

    cdef _fail(self, err):
        self._state = S_ERROR
        self._events.append(err)

    cdef list _feed(self, data):
        """Run the parser over ``data``; the events land in (and are returned as) a new list."""
        cdef list events = []
        cdef llhttp_t* p = <llhttp_t*>self._llp
        cdef Py_buffer view
        cdef const char* buf
        cdef Py_ssize_t n, pos
        cdef bint owned = False
        cdef llhttp_errno_t err
        if type(data) is bytes:
            buf = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            owned = True
            buf = <const char*>view.buf
            n = view.len
        self._events = events
        self._feed_len = n
        try:
            err = llhttp_execute(p, buf, <size_t>n)
            if err == HPE_OK:
                if self._state == S_HEAD:
                    self._head_fed += self._feed_len
                    if self._head_fed > self._max_header_bytes:
                        self._fail(self._too_big("header section too large"))
            elif err == HPE_PAUSED_UPGRADE and p.upgrade:
                pos = llhttp_get_error_pos(p) - buf
                llhttp_resume_after_upgrade(p)
                self._trailing = PyBytes_FromStringAndSize(buf + pos, n - pos)
                self._state = S_UPGRADED
            elif self._cb_error is not None:
                exc = self._cb_error
                self._cb_error = None
                if not isinstance(exc, HTTPProtocolError):
                    raise exc
                self._fail(exc)
            elif self._state != S_CLOSED:
                self._fail(self._map_error(
                    (<bytes>llhttp_get_error_reason(p)).decode("latin-1")))
        finally:
            if owned:
                PyBuffer_Release(&view)
            self._events = None   # the caller owns the list now; idle connections keep nothing
        return events

    cdef _map_error(self, str reason):
        if self._status_bad is None:
            return HTTPProtocolError(None, "malformed response: " + reason)
        if reason == "Invalid HTTP version":
            return HTTPProtocolError(505, "unsupported HTTP version")
        return HTTPProtocolError(400, reason)

    @property
    def trailing_data(self):
        """Bytes received after the head of a request/response that switched protocols
        (Upgrade, CONNECT, 101): they belong to the new protocol."""
        return self._trailing


# ---------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------

cdef class ServerConnection(_H1Parser):
    """Server side of one HTTP/1.1 connection; see :mod:`nbio.http.h1`."""


    def __init__(self, *, max_header_bytes=65536, max_header_count=100, max_body_size=None,
                 max_request_line=8192, pause_after_message=False):
        self._set_limits(max_header_bytes, max_header_count, max_body_size)
        if max_request_line < 16:
            raise ValueError("max_request_line must be >= 16")
        self._max_request_line = max_request_line
        self._status_bad = 400
        self._pending = []
        self._pause_at = -1
        self._held = None
        self.pause_after_message = pause_after_message
        self._init_parser(HTTP_REQUEST)

    # -- parser callbacks -------------------------------------------------------------------

    cdef int _on_begin(self) except -1:
        self._begin()
        self._url = None
        return 0

    cdef int _on_url(self, const char* at, size_t n) except -1:
        self._head_bytes += n
        self._span(at, n)
        if self._slen > self._max_request_line:
            raise HTTPProtocolError(414, "request target too long")
        return 0

    cdef int _on_url_complete(self) except -1:
        self._url = PyBytes_FromStringAndSize(self._sbuf, self._slen)
        self._slen = 0
        return 0

    cdef int _on_headers_complete(self) except -1:
        cdef Request req
        cdef object cl = self._content_length
        cdef bint chunked = False
        cdef llhttp_t* p = <llhttp_t*>self._llp
        cdef bint keep_alive = llhttp_should_keep_alive(p)
        cdef bytes version = self._version(keep_alive)
        if version == b"1.1":
            if self._host_count != 1:
                raise HTTPProtocolError(400, "missing Host header" if self._host_count == 0
                                        else "duplicate Host header")
        elif self._host_count > 1:
            raise HTTPProtocolError(400, "duplicate Host header")
        if self._te is not None:
            chunked = self._check_te(version)
        elif cl is not None and self._max_body_size >= 0 and cl > self._max_body_size:
            raise HTTPMessageTooBig(413, "body larger than %d bytes" % self._max_body_size)
        req = Request.__new__(Request)
        req.method = _method_name(p.method)
        req.target = self._url if self._url is not None else b""
        req.http_version = version
        req.headers = self._headers
        req.keep_alive = keep_alive
        req.content_length = cl
        req.chunked = chunked
        req.upgrade = None
        if self._upgrade is not None or req.method == b"CONNECT":
            if p.upgrade:
                req.upgrade = self._upgrade if req.method != b"CONNECT" else b"connect"
                if chunked or (cl is not None and cl > 0):
                    # llhttp hands the body over to the new protocol: we cannot go on in HTTP.
                    req.keep_alive = False
        if self._expect is not None and version != b"1.0":
            req.expect_continue = self._expect == b"100-continue"
        else:
            req.expect_continue = False
        self._req = req
        self._state = S_BODY
        self._headers = None
        self._url = None
        self._pending.append(req)
        self._events.append(req)
        return 0

    cdef bint _check_te(self, bytes version) except -1:
        # RFC 9112 6.1: a 1.0 message with Transfer-Encoding has faulty framing.
        if version == b"1.0":
            raise HTTPProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip() for c in self._te.split(b",")]
        if codings[len(codings) - 1] != b"chunked":
            raise HTTPProtocolError(400, "chunked is not the final transfer coding")
        if len(codings) > 1:
            raise HTTPProtocolError(501, "unsupported transfer coding %r" % (self._te,))
        return True

    cdef _on_body_started(self):
        self._req._body_started = True

    cdef int _on_message_complete(self) except -1:
        # RFC 9112 9.6: nothing after a request without keep-alive is processed (llhttp
        # reports "Data after Connection: close", which is ignored).
        self._state = S_IDLE if self._req.keep_alive else S_CLOSED
        self._req._body_done = True
        self._req = None
        self._events.append(self._eom())
        if self.pause_after_message and self._pause_at < 0:
            self._pause_at = len(self._events)
        return 0

    # -- input ------------------------------------------------------------------------------

    cpdef list receive_data(self, data):
        """Parse ``data`` (bytes-like; it may be a memoryview valid only during the call)
        and return the new events in order."""
        cdef list events
        cdef Py_ssize_t at
        if self._state >= S_UPGRADED:
            if self._state == S_UPGRADED and len(data):
                self._trailing += bytes(data)
            return []
        events = self._feed(data)
        at = self._pause_at
        self._pause_at = -1
        if self._state == S_ERROR:
            self._error = events[len(events) - 1]
        if self._held is not None:
            self._held.extend(events)
            return []
        if at >= 0:
            if at == len(events):
                self._held = []
            else:
                self._held = events[at:]
                del events[at:]
        return events

    def receive_eof(self):
        """The peer closed its sending side. Returns ``[HTTPProtocolError(400)]`` when a
        request was cut short, else ``[]``."""
        if self._state == S_HEAD or self._state == S_BODY:
            err = HTTPProtocolError(400, "connection closed in the middle of a request")
            self._state = S_ERROR
            self._error = err
            if self._held is not None:
                self._held.append(err)
                return []
            return [err]
        return []

    @property
    def paused(self):
        """True after a message ended while ``pause_after_message`` is set, until
        :meth:`resume`; meanwhile :meth:`receive_data` parses but holds the events back."""
        return self._held is not None

    @property
    def holding(self):
        """True while paused with events of a following request held back (pipelining)."""
        return self._held is not None and len(self._held) > 0

    cpdef list resume(self):
        """Return the held events, up to and including the next EndOfMessage (staying paused
        after it when ``pause_after_message`` is set)."""
        cdef list held = self._held
        cdef Py_ssize_t i, n
        self._held = None
        if held is None:
            return []
        if self.pause_after_message:
            n = len(held)
            for i in range(n):
                if type(held[i]) is EndOfMessage:
                    self._held = held[i + 1:]
                    del held[i + 1:]
                    break
        return held

    def decline_upgrade(self):
        """Go on in HTTP/1.1 after an Upgrade request without a body was answered normally:
        parses the bytes that arrived after it and returns their events."""
        if self._state != S_UPGRADED:
            raise RuntimeError("no upgrade to decline")
        data = self._trailing
        self._trailing = b""
        self._state = S_IDLE
        return self.receive_data(data)

    @property
    def upgraded(self):
        """True once a 101 (Switching Protocols) response was built."""
        return self._switched

    @property
    def receiving_head(self):
        """True while a request head has begun arriving but is not complete (for header
        timeouts: a slow client is inside a head)."""
        return self._state == S_HEAD

    # -- output -----------------------------------------------------------------------------

    @property
    def must_close(self):
        """True once a response that requires closing the connection after it was built."""
        return self._must_close

    @property
    def pending_requests(self):
        """Number of requests received and not yet answered completely."""
        return len(self._pending)

    def send_100_continue(self):
        """``b"HTTP/1.1 100 Continue\\r\\n\\r\\n"`` if the request being answered waits for it
        (Expect: 100-continue, no body byte received, no response started), else ``b""``.
        Call it when the application starts reading the body."""
        cdef Request req
        if not self._pending or self._rstarted:
            return b""
        req = self._pending[0]
        if req.expect_continue and not (req._body_started or req._body_done or req._sent_100):
            req._sent_100 = True
            return b"HTTP/1.1 100 Continue\r\n\r\n"
        return b""

    cdef int _head(self, _Out* o, int status, object headers, object reason,
                   long long body_len) except -1:
        """Build the head of a response to the oldest pending request."""
        cdef Request req
        cdef _Fields f
        cdef bint close, no_body
        if not self._pending:
            raise RuntimeError("no request to respond to")
        if self._rstarted:
            raise RuntimeError("a response is already in progress")
        req = self._pending[0]
        _out_bytes(o, _status_line(status, reason))
        f = _append_fields(o, headers)
        if status < 200:
            if status == 101:
                self._switched = True
                self._pending.pop(0)
            if not f.date:
                _out_bytes(o, _DATE_LINE)
            _out_add(o, "\r\n", 2)
            return 0
        no_body = status == 204 or status == 304
        self._rhead_only = req.method == b"HEAD"
        close = self._must_close or f.close or not req.keep_alive
        if no_body:
            self._rframing = F_NONE
            if body_len > 0:
                raise ValueError("a %d response has no body" % status)
        elif body_len >= 0:
            if f.chunked or (f.content_length >= 0 and f.content_length != body_len
                             and not (self._rhead_only and body_len == 0)):
                # (a response to HEAD may announce the length of the body it does not send)
                raise ValueError("framing headers disagree with the body length")
            if f.content_length < 0:
                _out_length(o, body_len)
            self._rframing = F_LENGTH
            self._rremaining = body_len
        elif f.content_length >= 0:
            self._rframing = F_LENGTH
            self._rremaining = f.content_length
        elif req.http_version == b"1.0":
            # no chunked coding for 1.0 clients: the end of the body is the end of the connection
            self._rframing = F_CLOSE
            close = True
        else:
            if not self._rhead_only:
                _out_add(o, "Transfer-Encoding: chunked\r\n", 28)
            self._rframing = F_CHUNKED
        if self._rhead_only:
            self._rframing = F_NONE
        if req.expect_continue and not (req._body_started or req._body_done or req._sent_100):
            # the client may never send the body it announced: we cannot read the next request
            close = True
        if close:
            self._must_close = True
            if not f.close:
                _out_add(o, "Connection: close\r\n", 19)
        elif req.http_version == b"1.0" and not f.keep_alive:
            _out_add(o, "Connection: keep-alive\r\n", 24)
        if not f.date:
            _out_bytes(o, _DATE_LINE)
        _out_add(o, "\r\n", 2)
        return 0

    cpdef bytes respond(self, int status, headers=(), body=b"", reason=None):
        """Build a complete response (head and body, Content-Length set) to the oldest pending
        request. For HEAD requests the body is measured but not sent."""
        cdef bytes b = _body_bytes(body)
        cdef char stack[1024]
        cdef _Out o = _Out(&stack[0], 0, 1024, False)
        try:
            self._head(&o, status, headers, reason, PyBytes_GET_SIZE(b))
            if status < 200:
                return _out_take(&o, None)
            del self._pending[0]
            return _out_take(&o, b if self._rframing != F_NONE else None)
        finally:
            _out_free(&o)

    def start_response(self, int status, headers=(), reason=None):
        """Build a response head whose body follows with :meth:`send_data` and
        :meth:`end_response`. Content-Length in ``headers`` selects identity framing, else
        chunked (HTTP/1.1) or close-delimited (HTTP/1.0). A 1xx status builds an interim
        response (101 switches protocols)."""
        cdef char stack[1024]
        cdef _Out o = _Out(&stack[0], 0, 1024, False)
        try:
            self._head(&o, status, headers, reason, -1)
            if status >= 200:
                self._rstarted = True
            return _out_take(&o, None)
        finally:
            _out_free(&o)

    def send_data(self, data):
        """Frame a piece of the body of the response in progress."""
        cdef Py_ssize_t n
        if not self._rstarted:
            raise RuntimeError("no response in progress")
        if self._rframing == F_CHUNKED:
            return _chunk(data)
        n = len(data)
        if self._rframing == F_LENGTH:
            self._rremaining -= n
            if self._rremaining < 0:
                raise ValueError("more body than the declared Content-Length")
            return _body_bytes(data)
        if self._rframing == F_CLOSE:
            return _body_bytes(data)
        if n and not self._rhead_only:
            raise ValueError("this response has no body")
        return b""

    def skip_data(self, long long n):
        """Account for ``n`` body bytes of the response in progress that the caller sends
        itself (e.g. with ``sendfile``); only valid with Content-Length framing (or for a
        response that carries no body, such as one to HEAD, where it does nothing)."""
        if not self._rstarted:
            raise RuntimeError("no response in progress")
        if self._rframing == F_LENGTH:
            if n > self._rremaining:
                raise ValueError("more body than the declared Content-Length")
            self._rremaining -= n
        elif self._rframing != F_NONE:
            raise RuntimeError("skip_data needs a Content-Length response")

    def end_response(self, trailers=None):
        """Finish the response in progress (trailers only with chunked framing)."""
        if not self._rstarted:
            raise RuntimeError("no response in progress")
        self._rstarted = False
        self._pending.pop(0)
        if self._rframing == F_CHUNKED:
            return _last_chunk(trailers)
        if self._rframing == F_LENGTH and self._rremaining:
            self._must_close = True
            raise ValueError("%d body bytes missing for the declared Content-Length"
                             % self._rremaining)
        return b""

    def error_response(self, error=None):
        """A complete ``Connection: close`` response for a protocol error event (or a status
        code); marks the connection for closing."""
        cdef int status
        cdef bytes body, line
        if error is None or isinstance(error, int):
            status = 400 if error is None else error
            line = _status_line(status, None)
            body = line[13:len(line) - 2]
        else:
            status = error.status or 400
            line = _status_line(status, None)
            body = str(error.reason).encode("utf-8", "replace")
        self._must_close = True
        cdef char stack[512]
        cdef _Out o = _Out(&stack[0], 0, 512, False)
        try:
            _out_bytes(&o, line)
            _out_add(&o, "Content-Type: text/plain; charset=utf-8\r\n", 41)
            _out_length(&o, PyBytes_GET_SIZE(body))
            _out_add(&o, "Connection: close\r\n", 19)
            _out_bytes(&o, _DATE_LINE)
            _out_add(&o, "\r\n", 2)
            return _out_take(&o, body)
        finally:
            _out_free(&o)

    def close(self):
        """Stop parsing; the object is unusable after."""
        self._state = S_ERROR


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------

cdef class ClientConnection(_H1Parser):
    """Client side of one HTTP/1.1 connection (one request at a time); see
    :mod:`nbio.http.h1`."""

    cdef bytes _reason
    cdef bytes _method            # method of the outstanding request (None: none)
    cdef bint _sending            # request body still being sent
    cdef int _qframing
    cdef long long _qremaining
    cdef bint _close_sent         # we sent Connection: close
    cdef bint _resp_keep_alive
    cdef bint _interim            # the response being parsed is 1xx
    cdef bint _resp_done          # final response complete
    cdef int _rframing_in         # framing of the response being parsed
    cdef bint _head_only          # outstanding request is HEAD/CONNECT: parse heads by hand
    cdef bint _connect            # outstanding request is CONNECT
    cdef bytes _buf

    def __init__(self, *, max_header_bytes=65536, max_header_count=100, max_body_size=None):
        self._set_limits(max_header_bytes, max_header_count, max_body_size)
        self._status_bad = None
        self._buf = b""
        self._init_parser(HTTP_RESPONSE)

    # -- output -----------------------------------------------------------------------------

    def send_request(self, method, target, headers=(), body=None, *, stream=False):
        """Build a request head (and body). ``body`` given: Content-Length framing and the
        request is complete. ``stream=True``: the body follows with :meth:`send_data` and
        :meth:`end_request` (Content-Length from ``headers`` if given, else chunked). Otherwise
        the request has no body (``Content-Length: 0`` for POST/PUT/PATCH). A Host header is
        required."""
        cdef bytes m = _as_bytes(method), t = _as_bytes(target)
        cdef char stack[1024]
        cdef _Out o = _Out(&stack[0], 0, 1024, False)
        if self._method is not None or self._state == S_UPGRADED or self._state == S_ERROR:
            raise RuntimeError("the connection is busy or unusable (one request at a time)")
        _check_token(m, "method")
        _check_target(t)
        try:
            return self._request(&o, m, t, headers, body, stream)
        finally:
            _out_free(&o)

    cdef bytes _request(self, _Out* o, bytes m, bytes t, headers, body, bint stream):
        cdef bytes b = None
        cdef _Fields f
        _out_bytes(o, m)
        _out_add(o, " ", 1)
        _out_bytes(o, t)
        _out_add(o, " HTTP/1.1\r\n", 11)
        f = _append_fields(o, headers)
        if not f.host:
            raise ValueError("a Host header is required")
        if body is not None:
            if stream:
                raise ValueError("give either body or stream=True")
            b = _body_bytes(body)
            if f.chunked or (f.content_length >= 0 and f.content_length != len(b)):
                raise ValueError("framing headers disagree with the body length")
        if f.chunked or (stream and f.content_length < 0):
            if not stream:
                raise ValueError("Transfer-Encoding: chunked needs stream=True")
            _out_add(o, "Transfer-Encoding: chunked\r\n", 28)
            self._qframing = F_CHUNKED
        elif stream:
            self._qframing = F_LENGTH
            self._qremaining = f.content_length
        else:
            self._qframing = F_NONE
            if f.content_length < 0 and (b or m in (b"POST", b"PUT", b"PATCH")):
                _out_length(o, len(b) if b is not None else 0)
            elif f.content_length > 0 and b is None:
                raise ValueError("Content-Length given without a body (use stream=True)")
        _out_add(o, "\r\n", 2)
        self._method = m
        self._sending = stream
        self._close_sent = f.close
        self._resp_done = False
        self._connect = m == b"CONNECT"
        self._head_only = self._connect or m == b"HEAD"
        return _out_take(o, b)

    def send_data(self, data):
        """Frame a piece of the request body."""
        if not self._sending:
            raise RuntimeError("no request body in progress")
        if self._qframing == F_CHUNKED:
            return _chunk(data)
        self._qremaining -= len(data)
        if self._qremaining < 0:
            raise ValueError("more body than the declared Content-Length")
        return _body_bytes(data)

    def end_request(self, trailers=None):
        """Finish the request body (trailers only with chunked framing)."""
        if not self._sending:
            raise RuntimeError("no request body in progress")
        self._sending = False
        if self._qframing == F_CHUNKED:
            return _last_chunk(trailers)
        if self._qremaining:
            self._close_sent = True   # the stream is out of sync: never reuse it
            raise ValueError("%d body bytes missing for the declared Content-Length"
                             % self._qremaining)
        return b""

    # -- parser callbacks -------------------------------------------------------------------

    cdef int _on_begin(self) except -1:
        if self._method is None:
            raise HTTPProtocolError(None, "response without a request")
        self._begin()
        self._reason = b""
        return 0

    cdef int _on_status(self, const char* at, size_t n) except -1:
        self._head_bytes += n
        self._span(at, n)
        if self._head_bytes > self._max_header_bytes:
            raise self._too_big("status line too long")
        return 0

    cdef int _on_status_complete(self) except -1:
        self._reason = PyBytes_FromStringAndSize(self._sbuf, self._slen)
        self._slen = 0
        return 0

    cdef int _on_headers_complete(self) except -1:
        cdef Response resp
        cdef int status
        cdef object cl = self._content_length
        cdef llhttp_t* p = <llhttp_t*>self._llp
        resp = Response.__new__(Response)
        status = p.status_code
        resp.status = status
        resp.reason = self._reason
        resp.keep_alive = llhttp_should_keep_alive(p)
        if self._head_only and not resp.keep_alive:
            # llhttp thinks an unframed body runs to EOF; a response to HEAD has none
            resp.http_version = self._version(False)
            resp.keep_alive = not (self._conn_tokens & C_CLOSE) and (
                resp.http_version != b"1.0" or bool(self._conn_tokens & C_KEEP_ALIVE))
        else:
            resp.http_version = self._version(resp.keep_alive)
        resp.headers = self._headers
        self._headers = None
        resp.content_length = cl
        resp.chunked = self._te is not None and _has_token(self._te, "chunked", 7)
        self._interim = status < 200
        if not self._interim:
            if self._head_only or status == 204 or status == 304:
                self._rframing_in = F_NONE
            elif resp.chunked:
                self._rframing_in = F_CHUNKED
            elif cl is not None:
                self._rframing_in = F_LENGTH
                if self._max_body_size >= 0 and cl > self._max_body_size:
                    raise HTTPMessageTooBig(None, "body larger than %d bytes"
                                            % self._max_body_size)
            else:
                self._rframing_in = F_CLOSE
            self._resp_keep_alive = resp.keep_alive
            self._state = S_BODY
        self._events.append(resp)
        return 0

    cdef int _on_message_complete(self) except -1:
        self._state = S_IDLE
        if self._interim:
            self._trailers = None
            return 0
        if not self._head_only:
            self._finish()
        return 0

    cdef _finish(self):
        self._events.append(self._eom())
        self._method = None
        self._resp_done = True
        self._state = S_IDLE

    # -- input ------------------------------------------------------------------------------

    def receive_data(self, data):
        """Parse ``data`` (bytes-like, possibly a memoryview valid only during the call) and
        return the new events in order."""
        if self._state >= S_UPGRADED:
            if self._state == S_UPGRADED and len(data):
                self._trailing += bytes(data)
            return []
        if self._head_only:
            return self._receive_heads(bytes(data))
        return self._feed(data)

    cdef list _receive_heads(self, bytes data):
        """Responses to HEAD/CONNECT: llhttp cannot be told there is no body, so each head is
        cut at its blank line and fed alone to a throw-away parser."""
        cdef list events = []
        cdef Py_ssize_t end
        cdef Response resp
        cdef llhttp_t tmp
        cdef void* main = self._llp
        self._buf += data
        try:
            while self._head_only and self._state < S_UPGRADED:
                if self._method is None:
                    if self._buf:
                        self._events = events
                        self._fail(HTTPProtocolError(None, "data after the response"))
                    break
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > self._max_header_bytes:
                        self._events = events
                        self._fail(self._too_big("response head too large"))
                    break
                head = self._buf[:end + 4]
                self._buf = self._buf[end + 4:]
                llhttp_init(&tmp, HTTP_RESPONSE, &_SETTINGS)
                tmp.data = <void*>self
                self._llp = &tmp
                n = len(events)
                events.extend(self._feed(head))
                if self._state == S_ERROR:
                    break
                if self._state == S_UPGRADED:     # 101
                    self._trailing = self._buf
                    self._buf = b""
                    break
                if len(events) > n and not self._interim:
                    resp = events[len(events) - 1]
                    self._events = events
                    self._finish()
                    self._head_only = False
                    if self._connect and 200 <= resp.status < 300:
                        self._state = S_UPGRADED
                        self._trailing = self._buf
                        self._buf = b""
                        self._resp_keep_alive = False
        finally:
            self._llp = main
        if not self._head_only and self._buf and self._state < S_UPGRADED:
            rest = self._buf
            self._buf = b""
            events.extend(self._feed(rest))
        self._events = None
        return events

    def receive_eof(self):
        """The server closed the connection: ends a close-delimited body
        (``[EndOfMessage()]``), reports a cut-short response (``[HTTPProtocolError]``), else
        ``[]``."""
        cdef list events = []
        self._events = events
        if self._state == S_BODY and self._rframing_in == F_CLOSE:
            self._finish()
        elif self._state == S_HEAD or self._state == S_BODY or (self._head_only and self._buf):
            self._fail(HTTPProtocolError(None, "connection closed in the middle of a response"))
        self._resp_keep_alive = False
        self._events = None
        return events

    @property
    def response_complete(self):
        """True once the final response to the last request has been fully received."""
        return self._resp_done

    @property
    def reusable(self):
        """True when another request may be sent on this connection (keep-alive)."""
        return (self._resp_done and self._method is None and not self._sending
                and self._resp_keep_alive and not self._close_sent and self._state == S_IDLE)

    def close(self):
        """Stop parsing; the object is unusable after."""
        self._state = S_ERROR

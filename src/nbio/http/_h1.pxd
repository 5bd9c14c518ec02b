# Declarations of nbio.http._h1 for other Cython modules (nbio.http._server).

cdef enum:
    S_IDLE = 0       # between messages
    S_HEAD = 1       # inside a head (request/status line or fields)
    S_BODY = 2       # head done, body (or trailers) in progress
    S_UPGRADED = 3   # the connection switched protocols; bytes go to trailing_data
    S_ERROR = 4      # a protocol error was reported; nothing more is parsed
    S_CLOSED = 5     # the last message did not keep the connection alive: input is ignored


cdef struct _Out:                   # a growing output buffer (see _h1.pyx)
    char* p
    Py_ssize_t n
    Py_ssize_t cap
    bint heap


cdef class Request:
    cdef readonly bytes method
    cdef readonly bytes target
    cdef readonly bytes http_version
    cdef readonly list headers
    cdef readonly bint keep_alive
    cdef readonly bint expect_continue
    cdef readonly object upgrade
    cdef readonly object content_length
    cdef readonly bint chunked
    # connection-private bookkeeping for the 100-continue dance
    cdef bint _body_started
    cdef bint _body_done
    cdef bint _sent_100


cdef class EndOfMessage:
    cdef readonly tuple trailers


cdef class _H1Parser:
    cdef void* _llp                 # llhttp_t* (llhttp is only visible inside _h1.pyx)
    cdef char* _sbuf                # the span being collected: URL, reason, field + value
    cdef Py_ssize_t _slen
    cdef Py_ssize_t _scap
    cdef Py_ssize_t _flen           # length of the field name at the start of _sbuf
    cdef object _cb_error           # exception raised inside a parser callback
    cdef list _events
    cdef int _state
    cdef object _status_bad         # status for malformed input: 400 (server) / None (client)
    # limits
    cdef Py_ssize_t _max_header_bytes
    cdef Py_ssize_t _max_header_count
    cdef long long _max_body_size   # -1: unlimited
    # per-message head state
    cdef list _headers
    cdef list _trailers
    cdef Py_ssize_t _head_bytes      # exact bytes of completed fields (+ target)
    cdef Py_ssize_t _head_fed        # lower bound of head bytes fed (bounds the span buffer)
    cdef Py_ssize_t _feed_len
    cdef Py_ssize_t _header_count
    cdef long long _body_bytes
    cdef object _content_length
    cdef bytes _te
    cdef bytes _upgrade
    cdef bytes _expect
    cdef int _host_count
    cdef int _conn_tokens            # C_CLOSE | C_KEEP_ALIVE seen in Connection
    cdef bytes _trailing

    cdef _set_limits(self, max_header_bytes, max_header_count, max_body_size)
    cdef int _init_parser(self, int kind) except -1
    cdef int _span(self, const char* at, size_t n) except -1
    cdef int _on_begin(self) except -1
    cdef int _on_url(self, const char* at, size_t n) except -1
    cdef int _on_url_complete(self) except -1
    cdef int _on_status(self, const char* at, size_t n) except -1
    cdef int _on_status_complete(self) except -1
    cdef int _on_header(self) except -1
    cdef int _on_headers_complete(self) except -1
    cdef int _on_body(self, const char* at, size_t n) except -1
    cdef int _on_message_complete(self) except -1
    cdef _begin(self)
    cdef _too_big(self, str what)
    cdef _on_body_started(self)
    cdef EndOfMessage _eom(self)
    cdef bytes _version(self, bint keep_alive)
    cdef _fail(self, err)
    cdef list _feed(self, data)
    cdef _map_error(self, str reason)


cdef class ServerConnection(_H1Parser):
    cdef bytes _url
    cdef Py_ssize_t _max_request_line
    cdef Request _req               # request being parsed (None between requests)
    cdef list _pending              # requests awaiting a response, oldest first
    cdef public bint pause_after_message
    cdef Py_ssize_t _pause_at
    cdef list _held
    # response state
    cdef int _rframing
    cdef bint _rhead_only           # response to HEAD: the body is not sent
    cdef bint _rstarted
    cdef long long _rremaining
    cdef bint _must_close
    cdef bint _switched
    cdef object _error

    cdef bint _check_te(self, bytes version) except -1
    cdef int _head(self, _Out* o, int status, object headers, object reason,
                   long long body_len) except -1
    cpdef list receive_data(self, data)
    cpdef bytes respond(self, int status, headers=*, body=*, reason=*)
    cpdef list resume(self)

# Declarations of nbio.http._server for other Cython modules (nbio.http._asgi).

cdef class Response:
    cdef public object body
    cdef public object headers
    cdef public object status


cdef class HttpRequest:
    cdef public object head
    cdef public object _session
    cdef public list _chunks
    cdef public Py_ssize_t _size
    cdef public bint _complete
    cdef public object _waiter
    cdef public object _error
    cdef public object trailers
    cdef public bint _dispatched
    cdef public bint _consumed


cdef object loop_of(object session)
cdef HttpRequest new_request(object head, object session, object eom)


cdef class SessionCore:
    cdef public object server
    cdef public object conn
    cdef public object h1
    cdef public object rx           # request whose body is arriving
    cdef public object current      # request being answered
    cdef public bint busy           # a request is being answered
    cdef public bint started        # its response head is written
    cdef public object task
    cdef public double head_since   # when the head in progress began (0: none tracked)
    cdef public bint in_process
    cdef public bint input_paused
    cdef public bint declined       # an upgrade answered normally: go on in HTTP/1.1 after it
    cdef bint _plain_fast           # fast_path comes from a compiled class: call _fast
    cdef public object loop         # the event loop (asyncio.get_running_loop() is a
                                    # getpid() syscall on Python <= 3.11: asked once)

    cdef int _feed(self, data) except -1
    cdef bint _fast(self, head, eom) except -1
    cdef int _finished(self) except -1
    cdef int _end_connection(self) except -1

from libc.stdint cimport uint32_t, uint64_t

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
from nbio.engine._conn cimport ConnBase, Hub
from nbio.engine._timers cimport TimerWheel

cdef class WriteQueue:
    cdef list items
    cdef Py_ssize_t head     # bytes of items[0] already sent
    cdef Py_ssize_t mem      # bytes held in memory (file ranges excluded)


cdef class Conn(ConnBase):
    cdef WriteQueue wq
    cdef int _read(self) except -1
    cdef int _on_eof(self) except -1
    cdef int _enqueue(self, const char *p, Py_ssize_t n) except -1
    cdef int _flush(self) except -1
    cdef int _after_drain(self) except -1
    cdef int _sync_events(self) except -1
    cdef int _close(self, object exc) except -1
    cdef int _hangup(self) except -1
    cpdef write(self, object data)
    cdef _write_raw(self, const char *p, Py_ssize_t n)
    cdef Py_ssize_t _send_iov(self, iovec *iov, int cnt) except -2
    cdef int _write_iov(self, iovec *iov, int cnt) except -1


cdef class NativeEngine:
    cdef readonly object loop
    cdef int epfd
    cdef void *events
    cdef int maxevents
    cdef int max_rounds
    cdef void **table
    cdef unsigned char *kinds
    cdef int table_size
    cdef char *rbuf
    cdef object rview
    cdef unsigned long long polls
    cdef unsigned long long events_total
    cdef unsigned long long views_created
    cdef readonly Py_ssize_t read_buffer_size
    cdef readonly int max_reads
    cdef readonly Py_ssize_t max_write_buffer
    cdef readonly Py_ssize_t write_high_water
    cdef readonly Py_ssize_t write_low_water
    cdef readonly int backlog
    cdef readonly Py_ssize_t max_connections
    cdef readonly Py_ssize_t memory_limit
    cdef readonly double close_timeout
    cdef readonly bint tcp_nodelay
    cdef readonly TimerWheel wheel
    cdef uint32_t tick
    cdef Py_ssize_t total_buffered
    cdef Py_ssize_t open_count
    cdef unsigned long long accepted
    cdef unsigned long long dialed
    cdef unsigned long long closed_total
    cdef unsigned long long rejected
    cdef unsigned long long bytes_in
    cdef unsigned long long bytes_out
    cdef unsigned long long udp_dropped
    cdef bint mem_paused
    cdef list mem_paused_conns
    cdef readonly dict drain_waiters
    cdef dict close_reasons
    cdef dict dials
    cdef dict hubs
    cdef set listeners
    cdef bint closed
    cdef bint reader_added

    cdef int _ensure_slot(self, int fd) except -1
    cdef int _register(self, int fd, object obj, unsigned char kind, uint32_t events) except -1
    cdef int _unregister(self, int fd) except -1
    cdef int _ctl(self, int op, int fd, uint32_t events) except -1
    cdef int _buffered_changed(self, Py_ssize_t delta) except -1
    cdef int _mem_resume(self) except -1
    cdef int _wake_drain(self, Conn conn, object exc) except -1
    cdef Conn _new_conn(self, int fd, Hub hub, unsigned int flags)
    cdef int _deliver(self, object conn, Hub hub, Py_ssize_t n) except -1
    cdef object _read_view(self, Py_ssize_t n)
    cdef int _view_escaped(self, object mv) except -1
    cdef _dial_ready(self, int fd)
    cdef int _poll_once(self) except -1

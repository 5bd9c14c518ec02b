# cython: language_level=3
"""Hashed timing wheel for connection deadlines.

Each connection carries its read/write/idle deadlines as tick numbers. The wheel holds a
connection in the slot of its earliest deadline; pushing a deadline later only rewrites an
integer (the entry is revisited when its old slot comes round and re-filed), so keep-alive
style "push back on every read" costs nothing. One loop timer drives the whole wheel, and it
is armed only while entries exist: no loop handle per connection.
"""

from libc.stdint cimport uint32_t
from libc.time cimport timespec
from nbio.engine._conn cimport ConnBase, F_CLOSED

cdef extern from "<time.h>" nogil:
    int clock_gettime(int clk_id, timespec *tp)
    int CLOCK_MONOTONIC


cdef inline double monotonic() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef class TimerWheel:
    """Timing wheel bound to an event loop (``resolution`` seconds per tick)."""

    def __init__(self, loop, double resolution=0.05, int slots=4096):
        cdef int n = 1
        while n < slots:
            n <<= 1
        self.slots = [None] * n
        self.mask = n - 1
        self.resolution = resolution
        self.origin = monotonic()
        self.cur_tick = 0
        self.entries = 0
        self.loop = loop
        self.handle = None
        self.closed = False

    cdef uint32_t now_tick(self):
        return <uint32_t>((monotonic() - self.origin) / self.resolution)

    cdef uint32_t ticks_for(self, double seconds):
        """Number of ticks covering ``seconds`` (rounded up, at least 1)."""
        cdef double t = seconds / self.resolution
        cdef uint32_t n = <uint32_t>t
        if n < t:
            n += 1
        return n if n > 0 else 1

    def deadline_after(self, double seconds):
        """The tick at which a deadline ``seconds`` from now falls due."""
        return self.now_tick() + self.ticks_for(seconds)

    def deadline_after_ticks(self, uint32_t ticks):
        """The tick ``ticks`` ticks from now."""
        return self.now_tick() + ticks

    def ticks(self, double seconds):
        """Ticks covering ``seconds``."""
        return self.ticks_for(seconds)

    def file(self, ConnBase conn):
        """File ``conn`` under its earliest deadline."""
        self.schedule(conn)

    cdef int schedule(self, ConnBase conn) except -1:
        """File ``conn`` under its earliest deadline (no-op if already filed at or before it)."""
        cdef uint32_t t = conn.earliest_deadline()
        cdef list slot
        if t == 0 or self.closed:
            return 0
        if conn.timer_tick != 0 and conn.timer_tick <= t:
            return 0
        if t <= self.cur_tick:
            t = self.cur_tick + 1
        conn.timer_tick = t
        slot = <list>self.slots[t & self.mask] if self.slots[t & self.mask] is not None else None
        if slot is None:
            slot = []
            self.slots[t & self.mask] = slot
        slot.append(conn)
        self.entries += 1
        if self.handle is None:
            self._arm()
        return 0

    cdef int _arm(self) except -1:
        cdef double delay = (self.cur_tick + 1) * self.resolution + self.origin - monotonic()
        if delay < 0:
            delay = 0
        self.handle = self.loop.call_later(delay, self._on_tick)
        return 0

    def _on_tick(self):
        cdef uint32_t now = self.now_tick()
        cdef uint32_t tick, last
        cdef list bucket, keep
        cdef ConnBase conn
        cdef object item
        self.handle = None
        if self.closed:
            return
        last = now
        if last - self.cur_tick > self.mask + 1:
            last = self.cur_tick + self.mask + 1
        tick = self.cur_tick
        while tick != last:
            tick += 1
            bucket = self.slots[tick & self.mask]
            if bucket is None:
                continue
            self.slots[tick & self.mask] = None
            self.entries -= len(bucket)
            keep = None
            for item in bucket:
                conn = <ConnBase>item
                if conn.flags & F_CLOSED or conn.timer_tick == 0 \
                        or (conn.timer_tick & self.mask) != (tick & self.mask):
                    continue            # stale entry: closed or re-filed elsewhere
                if conn.timer_tick > now:
                    if keep is None:
                        keep = []
                    keep.append(conn)   # due in a later revolution
                    continue
                conn.timer_tick = 0
                try:
                    conn._expire(now)
                except Exception as exc:  # pragma: no cover - _expire isolates user errors
                    conn.hub.log_error(conn, "deadline", exc)
                if not (conn.flags & F_CLOSED):
                    self.cur_tick = tick
                    self.schedule(conn)
            if keep is not None:
                if self.slots[tick & self.mask] is None:
                    self.slots[tick & self.mask] = keep
                else:
                    (<list>self.slots[tick & self.mask]).extend(keep)
                self.entries += len(keep)
        self.cur_tick = last
        if self.entries > 0 and not self.closed:
            self._arm()

    def close(self):
        """Stop the wheel and drop every entry."""
        self.closed = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.slots = [None] * (self.mask + 1)
        self.entries = 0

    @property
    def pending(self):
        """Entries currently filed (including stale ones not yet swept)."""
        return self.entries

"""The queue of response events one HTTP client exchange hands to its reader (HTTP/1.1
connection, HTTP/2 stream, HTTP/3 stream alike)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Deque, Optional

from nbio.errors import DeadlineExceeded

__all__ = ["EventQueue"]


class EventQueue:
    """Events pushed by the protocol side, read by one consumer; ``error`` (set once) is
    raised after the events queued before it are read."""

    __slots__ = ("error", "events", "waiter")

    def __init__(self) -> None:
        self.events: Deque[Any] = deque()
        self.waiter: Optional[asyncio.Future[None]] = None
        self.error: Optional[BaseException] = None

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def _next(self, read_timeout: Optional[float]) -> Any:
        """The next event; raises ``error`` once the queue is empty, or
        ``DeadlineExceeded("read")`` after ``read_timeout`` seconds without an event."""
        while not self.events:
            if self.error is not None:
                raise self.error
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, read_timeout)
            except asyncio.TimeoutError:
                raise DeadlineExceeded("read") from None
        return self.events.popleft()

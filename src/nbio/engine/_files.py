"""File ranges for connections that cannot use the kernel's zero-copy ``sendfile``.

The portable backend and TLS send a file range by reading it a chunk at a time, paced by the
connection's write queue; writes issued meanwhile wait behind the file, in order.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple

CHUNK = 256 * 1024

__all__ = ["CHUNK", "FileQueue", "file_range"]


def file_range(file: Any, offset: int, count: Optional[int]) -> Tuple[int, int]:
    """The descriptor of ``file`` (an open file or a descriptor) and the byte count to send
    from ``offset`` (``None``: to the end of the file)."""
    fd = file if isinstance(file, int) else file.fileno()
    if count is None:
        count = os.fstat(fd).st_size - offset
    return fd, count


class FileQueue:
    """File ranges, and the writes queued behind them, waiting to be sent."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        # [file, fd, offset, remaining]; fd -1 marks plain bytes held in ``file``
        self.items: Deque[List[Any]] = deque()

    def add_file(self, file: Any, fd: int, offset: int, count: int) -> None:
        self.items.append([file, fd, offset, count])

    def add_bytes(self, data: Any) -> None:
        data = bytes(data)
        self.items.append([data, -1, 0, len(data)])

    @property
    def pending(self) -> int:
        """Bytes still to send."""
        return sum(item[3] for item in self.items)

    def pump(self, write: Callable[[bytes], None], has_room: Callable[[], bool]) -> bool:
        """Write chunks while ``has_room()``; True once everything is sent. Raises OSError if
        a file turns out shorter than its range."""
        items = self.items
        while items and has_room():
            item = items[0]
            if item[1] == -1:
                items.popleft()
                write(item[0])
                continue
            chunk = os.pread(item[1], min(item[3], CHUNK), item[2])
            if not chunk:
                raise OSError(errno.EIO, "sendfile: file shorter than the requested range")
            write(chunk)
            item[2] += len(chunk)
            item[3] -= len(chunk)
            if item[3] == 0:
                items.popleft()
        return not items

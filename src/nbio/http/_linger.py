"""Lingering close (nginx's ``lingering_close``): after a server's last frame (an HTTP/2
GOAWAY, an HTTP/1.1 ``Connection: close`` answer), close the write side only and keep reading,
discarding, until the peer closes or a bound is hit.

Closing a TCP socket that still has unread bytes in its receive queue makes the kernel send an
RST, and an RST makes the peer's kernel drop what it has received but not yet read -- the last
response and the GOAWAY that explains the close (RFC 9113 sections 5.4.1 and 6.8). A client
still sending (a request body, WINDOW_UPDATE, a request it sent before it saw the GOAWAY)
hits this every time.

TLS connections already do this in :class:`~nbio.engine.TLSConn`: close() sends close_notify
and reads (discarding) until the peer's close_notify or EOF, so they are just closed.
"""

from __future__ import annotations

import socket
from typing import Any, Dict, Optional

from nbio.engine import Handler, TLSConn

__all__ = ["LINGER_MAX_BYTES", "LINGER_TIMEOUT", "Lingering"]

#: Longest a lingering connection stays open (seconds).
LINGER_TIMEOUT = 2.0
#: Most bytes read and discarded before the connection is closed anyway.
LINGER_MAX_BYTES = 65536


def _shutdown_write(conn: Any) -> bool:
    """Half-close ``conn``'s socket (FIN; reading goes on). False if that is not possible."""
    fd = conn.fileno()
    if fd < 0:
        return False
    try:
        # a duplicate of the descriptor: shutdown() acts on the socket, close() only on the dup
        sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, AttributeError, ValueError):
        return False
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return False
    finally:
        sock.close()
    return True


class Lingering(Handler):
    """The engine handler of connections in a lingering close: ``start(conn)`` hands ``conn``
    over; once what is queued is written the socket is half-closed (SHUT_WR), everything
    received is discarded, and the connection closes when the peer closes, after ``timeout``
    seconds or after ``max_bytes`` received since the half-close (not before it: closing while
    our last bytes are still queued would lose them). ``inner`` (the connection's previous handler)
    still gets ``on_close``."""

    def __init__(self, inner: Any, timeout: float = LINGER_TIMEOUT,
                 max_bytes: int = LINGER_MAX_BYTES) -> None:
        self.inner = inner
        self.timeout = timeout
        self.max_bytes = max_bytes
        # bytes discarded since the half-close (None: not half-closed yet), per connection
        self.received: Dict[Any, Optional[int]] = {}

    def start(self, conn: Any) -> None:
        """Close ``conn`` gracefully, lingering as above."""
        if conn.closed or conn.closing:
            return
        if isinstance(conn, TLSConn):
            conn.close()  # close_notify, then the TLS layer reads until the peer's
            return
        self.received[conn] = None
        conn.set_handler(self)
        conn.set_idle_timeout(None)
        conn.set_read_deadline(self.timeout)  # the bound: not pushed back by reads
        if not conn.buffered:
            self.on_drain(conn)

    def on_drain(self, conn: Any) -> None:
        """Everything is written: FIN (or, if the socket cannot be half-closed, close)."""
        if conn in self.received:
            if _shutdown_write(conn):
                self.received[conn] = 0
            else:
                conn.close()

    def on_data(self, conn: Any, data: Any) -> None:
        n = self.received.get(conn)
        if n is not None:
            n += len(data)
            self.received[conn] = n
            if n > self.max_bytes:
                conn.close()

    def on_eof(self, conn: Any) -> bool:
        return False  # the peer has closed too: close (after flushing)

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        self.received.pop(conn, None)
        self.inner.on_close(conn, exc)

"""Misbehaving and slow peers for the fault suite, on plain non-blocking sockets.

Every peer here is driven from the test's event loop (``loop.sock_*``), so a test can run a
server and several such peers in one loop, each with its own bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Optional, Tuple

__all__ = ["RawPeer", "read_at_rate"]


class RawPeer:
    """A TCP client socket with a small receive buffer (so a server's data backs up into the
    server's own queue quickly), read and written from the event loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.received = 0

    @classmethod
    async def connect(cls, addr: Tuple[str, int], rcvbuf: Optional[int] = 4096) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr), 10)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data: bytes, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), timeout)

    async def recv(self, n: int = 65536, timeout: float = 10.0) -> bytes:
        """One read (b"" at EOF); raises TimeoutError when nothing arrives in ``timeout``."""
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, n), timeout)
        self.received += len(data)
        return data

    async def read_until_close(self, timeout: float = 30.0, limit: Optional[int] = None) -> bytes:
        """Everything until EOF (or a reset, which ends the read as EOF does)."""
        out = bytearray()
        deadline = self.loop.time() + timeout
        while True:
            left = deadline - self.loop.time()
            if left <= 0:
                raise TimeoutError(f"peer still open after {timeout} s ({len(out)} bytes read)")
            try:
                chunk = await self.recv(1 << 18, left)
            except (ConnectionResetError, BrokenPipeError):
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk
            if limit is not None and len(out) >= limit:
                return bytes(out)

    async def closed_by_server(self, timeout: float) -> bool:
        """True when the server ends the connection (EOF or reset) within ``timeout``,
        discarding whatever it sends first."""
        deadline = self.loop.time() + timeout
        while True:
            left = deadline - self.loop.time()
            if left <= 0:
                return False
            try:
                chunk = await self.recv(1 << 18, left)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except (asyncio.TimeoutError, TimeoutError):
                return False
            if not chunk:
                return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    async def __aenter__(self) -> RawPeer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()


async def read_at_rate(peer: RawPeer, total: int, bytes_per_s: float, slow_for: float,
                       timeout: float = 60.0) -> bytes:
    """Read ``total`` bytes: at about ``bytes_per_s`` for the first ``slow_for`` seconds (a
    slow reader), then as fast as possible. Returns what was read (less at EOF)."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    start = loop.time()
    deadline = start + timeout
    step = max(1, int(bytes_per_s / 20))
    while len(out) < total:
        now = loop.time()
        if now > deadline:
            raise TimeoutError(f"read {len(out)} of {total} bytes in {timeout} s")
        slow = now - start < slow_for
        try:
            chunk = await peer.recv(min(step, total - len(out)) if slow else 1 << 18,
                                    deadline - now)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        out += chunk
        if slow:
            # pace the reads: this sleep is the slow reader's speed, not synchronisation
            await asyncio.sleep(len(chunk) / bytes_per_s)
    return bytes(out)

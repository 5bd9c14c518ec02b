"""Socket set-up shared by both engine backends: listening sockets and non-blocking dials.

Only set-up lives here (it runs once per listener or dial); the per-byte work is in the
backends.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from typing import Any, Optional, Tuple

__all__ = ["bind_local", "listen_socket", "resolve", "start_connect", "udp_socket"]


def _unlink_stale_unix_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def listen_socket(
    host: Optional[str],
    port: int,
    path: Optional[str],
    backlog: int,
    reuse_port: bool,
) -> socket.socket:
    """A bound, listening, non-blocking TCP (``host``/``port``) or Unix (``path``) socket."""
    if path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if not path.startswith("\0"):
                _unlink_stale_unix_socket(path)
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
    else:
        host = host or "0.0.0.0"
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
        except BaseException:
            sock.close()
            raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def udp_socket(
    host: Optional[str], port: int, reuse_port: bool, remote: Optional[Tuple[Any, ...]] = None
) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` (or connected to ``remote``)."""
    target = remote if remote is not None else (host or "0.0.0.0", port)
    infos = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if remote is None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
        else:
            sock.connect(addr)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def resolve(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> Tuple[int, Tuple[Any, ...]]:
    """Resolve ``host:port`` for a TCP connect without blocking the loop."""
    try:
        info = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
    except socket.gaierror:
        info = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not info:
        raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host!r}")
    family, _, _, _, addr = info[0]
    return family, addr


#: Linux ``IP_BIND_ADDRESS_NO_PORT`` (not exported by every Python's socket module).
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def bind_local(sock: socket.socket, local_addr: Tuple[Any, ...]) -> None:
    """Bind a socket about to connect to ``local_addr`` (``(host, port)``).

    With port 0 on Linux, ``IP_BIND_ADDRESS_NO_PORT`` defers the choice of the source port
    to ``connect()``, which picks it per destination: many connections from one source
    address then do not exhaust its ephemeral ports. Raises OSError (e.g.
    EADDRNOTAVAIL, EADDRINUSE)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and local_addr[1] == 0:
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        except OSError:  # pragma: no cover - not Linux
            pass
    sock.bind(local_addr)


def start_connect(
    family: int, addr: Any, local_addr: Optional[Tuple[Any, ...]] = None
) -> Tuple[socket.socket, bool]:
    """Create a non-blocking stream socket (bound to ``local_addr`` if given) and start
    connecting; returns (socket, connected)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    if local_addr is not None:
        try:
            bind_local(sock, local_addr)
        except BaseException:
            sock.close()
            raise
    err = sock.connect_ex(addr)
    if err == 0:
        return sock, True
    if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
        if family == socket.AF_UNIX and err != errno.EINPROGRESS:
            sock.close()
            raise OSError(err, f"unix socket {addr!r}: listen backlog full")
        return sock, False
    sock.close()
    raise OSError(err, f"connect to {addr!r}: {os.strerror(err)}")

"""nbio.ws: WebSocket (RFC 6455 + RFC 7692 permessage-deflate), server and client.

* Callback API (no task or buffer per idle connection): :class:`WebSocketUpgrader` with
  ``on_open(ws)``, ``on_message(ws, data, is_text)``, ``on_close(ws, code, reason)``;
  ``ws`` is a :class:`WebSocketConn` (``ws.send(...)``, ``ws.close()``).
* Async API like ``websockets``: :func:`serve`, :func:`connect`, :class:`WebSocket`
  (``await ws.recv()``, ``async for message in ws``, ``await ws.send(...)``).
* :func:`broadcast` frames (and compresses) a message once for many connections.
* :class:`Rooms`: named groups of connections; ``publish(room, message)`` reaches every
  member in every process sharing a backplane (:mod:`nbio.ws.rooms`).
"""

from __future__ import annotations

from nbio.ws._conn import WebSocketConn
from nbio.ws.client import connect
from nbio.ws.connection import WebSocket
from nbio.ws.deflate import DeflateConfig
from nbio.ws.handshake import HandshakeError
from nbio.ws.rooms import Rooms
from nbio.ws.server import Server, WebSocketUpgrader, adopt, broadcast, serve

__all__ = [
    "DeflateConfig",
    "HandshakeError",
    "Rooms",
    "Server",
    "WebSocket",
    "WebSocketConn",
    "WebSocketUpgrader",
    "adopt",
    "broadcast",
    "connect",
    "serve",
]

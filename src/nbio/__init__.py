"""nbio: non-blocking networking for Python.

A native epoll event engine (with a portable asyncio backend), HTTP/1.1, WebSocket and a
bidirectional RPC layer, all running on the asyncio event loop.
"""

from __future__ import annotations

from . import errors
from .engine import Conn, Engine, Handler, Listener, get_engine

__version__ = "0.1.0"

__all__ = ["Conn", "Engine", "Handler", "Listener", "__version__", "errors", "get_engine"]

"""nbio.rpc: bidirectional RPC, wire-compatible with Go arpc.

Both ends of a connection can call and notify each other::

    router = Router()

    @router.handle("/echo")
    def echo(ctx):                 # plain function: runs inline, no task
        return ctx.bind(str)

    server = Server(router)
    host, port = await server.listen("127.0.0.1", 0)
    async with Client(host, port) as client:
        assert await client.call("/echo", "hello", as_type=str) == "hello"

See docs/rpc.md.
"""

from __future__ import annotations

from typing import Any

from nbio.errors import ConnectionLost, NotConnected, RpcError, RpcTimeout
from nbio.rpc.client import FIRST_SEQ, Client, Peer, connect
from nbio.rpc.codec import Codec, JsonCodec, MsgpackCodec, RawCodec
from nbio.rpc.coder import Coder, GzipCoder
from nbio.rpc.context import Context
from nbio.rpc.message import Message
from nbio.rpc.pool import ClientPool
from nbio.rpc.pubsub import Backplane, LocalBackplane, PubSubClient, PubSubServer
from nbio.rpc.router import Router, logging_middleware, recover, require
from nbio.rpc.server import Server
from nbio.rpc.stream import Stream
from nbio.rpc.sync import SyncClient

# Transports over the HTTP and WebSocket layers, imported on first use (keeps
# ``import nbio.rpc`` light): name -> module.
_LAZY = {
    "HttpRpcClient": "nbio.rpc.transport_http",
    "HttpRpcEndpoint": "nbio.rpc.transport_http",
    "WebSocketClient": "nbio.rpc.transport_ws",
    "WebSocketEndpoint": "nbio.rpc.transport_ws",
    "WebSocketRefused": "nbio.rpc.transport_ws",
    "connect_websocket": "nbio.rpc.transport_ws",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbio.rpc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FIRST_SEQ",
    "Backplane",
    "Client",
    "ClientPool",
    "Codec",
    "Coder",
    "ConnectionLost",
    "Context",
    "GzipCoder",
    "HttpRpcClient",
    "HttpRpcEndpoint",
    "JsonCodec",
    "LocalBackplane",
    "Message",
    "MsgpackCodec",
    "NotConnected",
    "Peer",
    "PubSubClient",
    "PubSubServer",
    "RawCodec",
    "Router",
    "RpcError",
    "RpcTimeout",
    "Server",
    "Stream",
    "SyncClient",
    "WebSocketClient",
    "WebSocketEndpoint",
    "WebSocketRefused",
    "connect",
    "connect_websocket",
    "logging_middleware",
    "recover",
    "require",
]

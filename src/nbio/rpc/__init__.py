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
    "connect",
    "logging_middleware",
    "recover",
    "require",
]

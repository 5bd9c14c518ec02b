"""nbio.http3: HTTP/3 server and client on the nbio engine's UDP support.

The QUIC and HTTP/3 protocol cores are aioquic's sans-IO ``QuicConnection`` and
``H3Connection``; :mod:`nbio.http3.quic` drives them with engine UDP sockets (datagrams
routed by connection ID, one timer per connection). :class:`H3Server` serves native handlers
and ASGI apps with the HTTP/1.1 server's request/response objects; :class:`H3Client` answers
the HTTP/1.1 client's :class:`~nbio.http.client.ClientResponse`.
"""

from __future__ import annotations

from nbio.http3.client import H3Client
from nbio.http3.quic import QuicLink, QuicProtocol, QuicServerEndpoint, connect_quic
from nbio.http3.server import H3Server, server_configuration

__all__ = [
    "H3Client",
    "H3Server",
    "QuicLink",
    "QuicProtocol",
    "QuicServerEndpoint",
    "connect_quic",
    "server_configuration",
]

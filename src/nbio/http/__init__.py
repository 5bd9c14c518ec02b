"""nbio.http: HTTP/1.1 server (native handler API, upgrades), ASGI adapter and client.

The sans-IO protocol core is :mod:`nbio.http.h1`; the server is :mod:`nbio.http.server`,
the ASGI 3 adapter :mod:`nbio.http.asgi`, the client :mod:`nbio.http.client`.
"""

from __future__ import annotations

from nbio.http.client import ClientResponse, HttpClient, TooManyRedirects
from nbio.http.server import (
    FileResponse,
    HttpRequest,
    HttpServer,
    Response,
    StreamingResponse,
    UpgradeHandler,
)

__all__ = [
    "ClientResponse",
    "FileResponse",
    "HttpClient",
    "HttpRequest",
    "HttpServer",
    "Response",
    "StreamingResponse",
    "TooManyRedirects",
    "UpgradeHandler",
]

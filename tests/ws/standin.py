"""Test-only stand-in for the nbio HTTP server's upgrade routing.

It parses the request with ``h1.ServerConnection`` and calls the upgrader exactly as the HTTP
server does (``upgrade(conn, request, leftover)``); other requests get a 404.
"""

from __future__ import annotations

from typing import Any, Tuple

from nbio.engine import Engine, Handler
from nbio.http.h1 import EndOfMessage, Request, ServerConnection


class UpgradeStandIn(Handler):
    """HTTP/1.1 stand-in: routes upgrade requests to ``upgrader``, answers 404 else."""

    def __init__(self, upgrader: Any) -> None:
        self.upgrader = upgrader

    def on_open(self, conn: Any) -> None:
        conn.session = [ServerConnection(), None]

    def on_data(self, conn: Any, data: Any) -> None:
        state = conn.session
        http: ServerConnection = state[0]
        for event in http.receive_data(data):
            if isinstance(event, Request):
                state[1] = event
            elif isinstance(event, EndOfMessage):
                request = state[1]
                if request.upgrade == b"websocket":
                    self.upgrader.upgrade(conn, request, http.trailing_data)
                    return
                conn.write(http.respond(404, [(b"content-type", b"text/plain")], b"no\n"))
                conn.close()
                return
            else:  # HTTPProtocolError
                conn.write(http.error_response(event))
                conn.close()
                return


def listen(engine: Engine, upgrader: Any) -> Tuple[str, int]:
    """Listen on a free port with the stand-in; returns ``(host, port)``."""
    listener = engine.listen(UpgradeStandIn(upgrader), "127.0.0.1", 0)
    host, port = listener.address[:2]
    return host, port

"""The chat demo as an ASGI application (Starlette): the RPC WebSocket endpoint mounted as
an ASGI route next to the page. Run: ``nbio serve examples.chat.asgi_app:app``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route, WebSocketRoute

from nbio.demo import STATIC, ChatDemo

chat = ChatDemo()


def static(name: str, media_type: str) -> Route:
    async def endpoint(request: object) -> FileResponse:
        return FileResponse(STATIC / name, media_type=media_type)

    return Route("/" if name == "index.html" else "/" + name, endpoint)


app = Starlette(
    routes=[
        static("index.html", "text/html"),
        static("chat.js", "text/javascript"),
        static("arpc.js", "text/javascript"),
        WebSocketRoute("/rpc", chat.endpoint),  # arpc over WebSocket, as an ASGI route
    ]
)

from typing import Any, Dict, MutableMapping

from nbio.http._server import HttpRequest, SessionCore

EXTENSIONS: Dict[str, Any]

def http_version(version: bytes) -> str: ...
def scope_path(raw: bytes) -> str: ...
def addr(address: Any) -> Any: ...

class Cycle:
    session: Any
    req: HttpRequest
    status: int
    headers: Any
    started: bool
    done: bool
    trailers: bool
    disconnected: bool
    def __init__(self, session: Any, req: HttpRequest) -> None: ...
    async def receive(self) -> MutableMapping[str, Any]: ...
    async def send(self, message: MutableMapping[str, Any]) -> None: ...

class AsgiSessionCore(SessionCore):
    client: Any
    local: Any
    scheme: str
    def dispatch(self, req: HttpRequest) -> None: ...

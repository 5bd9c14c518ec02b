"""Type stub for the Cython module nbio.ws._conn (the callback-API connection)."""

from typing import Any, Callable, Optional, Union

from nbio.ws._protocol import Handler, WebSocketCore

class Dispatch(Handler):
    cb_open: Optional[Callable[..., Any]]
    cb_message: Callable[..., Any]
    cb_close: Optional[Callable[..., Any]]
    cb_ping: Optional[Callable[..., Any]]
    cb_pong: Optional[Callable[..., Any]]
    is_client: bool
    max_frame_size: int
    max_write_buffer: int
    close_timeout: float
    ping_interval: float
    ping_timeout: float
    request: Any
    engine_side: EngineSide
    def __init__(
        self,
        on_message: Callable[..., Any],
        on_open: Optional[Callable[..., Any]] = ...,
        on_close: Optional[Callable[..., Any]] = ...,
        on_ping: Optional[Callable[..., Any]] = ...,
        on_pong: Optional[Callable[..., Any]] = ...,
        *,
        is_client: bool = ...,
        max_frame_size: Optional[int] = ...,
        max_write_buffer: Optional[int] = ...,
        close_timeout: float = ...,
        ping_interval: Optional[float] = ...,
        ping_timeout: Optional[float] = ...,
    ) -> None: ...

class EngineSide:
    dispatch: Dispatch
    def __init__(self, dispatch: Dispatch) -> None: ...
    def on_data(self, conn: Any, data: Any) -> None: ...
    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None: ...

class WebSocketConn(WebSocketCore):
    session: Any
    def __init__(
        self,
        dispatch: Dispatch,
        conn: Any,
        *,
        max_size: Optional[int] = ...,
        deflate: Any = ...,
        subprotocol: Optional[str] = ...,
    ) -> None: ...
    def _keepalive(self) -> bool: ...
    def _feed(self, data: bytes) -> None: ...
    def _ws_flags(self) -> int: ...
    def send(self, data: Union[str, bytes, bytearray, memoryview]) -> None: ...
    def send_frame(self, frame: bytes) -> None: ...
    def ping(self, payload: Union[str, bytes, bytearray, memoryview] = ...) -> None: ...  # type: ignore[override]
    def close(self, code: Optional[int] = ..., reason: str = ...) -> None: ...
    def abort(self) -> None: ...
    @property
    def conn(self) -> Any: ...
    @property
    def closed(self) -> bool: ...
    @property
    def open(self) -> bool: ...
    @property
    def subprotocol(self) -> Optional[str]: ...
    @property
    def request(self) -> Any: ...
    @property
    def buffered(self) -> int: ...
    @property
    def remote_address(self) -> Any: ...
    @property
    def local_address(self) -> Any: ...
    @property
    def dispatch(self) -> Dispatch: ...

def open_conn(
    dispatch: Dispatch,
    conn: Any,
    leftover: bytes = ...,
    *,
    max_size: Optional[int] = ...,
    deflate: Any = ...,
    subprotocol: Optional[str] = ...,
    request: Any = ...,
    session: Any = ...,
) -> WebSocketConn: ...

"""Type stub for the Cython module nbio.http._h1 (documented in nbio.http.h1)."""

from typing import Iterable, List, Optional, Sequence, Tuple, Union

from nbio.errors import HTTPProtocolError

Header = Tuple[bytes, bytes]
HeaderLike = Tuple[Union[bytes, str], Union[bytes, str, int]]
BytesLike = Union[bytes, bytearray, memoryview]

class Request:
    method: bytes
    target: bytes
    http_version: bytes
    headers: List[Header]
    keep_alive: bool
    expect_continue: bool
    upgrade: Optional[bytes]
    content_length: Optional[int]
    chunked: bool
    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: Optional[Iterable[Header]] = ...,
        http_version: bytes = ...,
        *,
        keep_alive: bool = ...,
        expect_continue: bool = ...,
        upgrade: Optional[bytes] = ...,
        content_length: Optional[int] = ...,
        chunked: bool = ...,
    ) -> None: ...
    @property
    def path(self) -> bytes: ...
    @property
    def query(self) -> bytes: ...
    def get_header(
        self, name: Union[bytes, str], default: Optional[bytes] = ...
    ) -> Optional[bytes]: ...

class Response:
    status: int
    reason: bytes
    http_version: bytes
    headers: List[Header]
    keep_alive: bool
    content_length: Optional[int]
    chunked: bool
    def __init__(
        self,
        status: int,
        headers: Optional[Iterable[Header]] = ...,
        reason: bytes = ...,
        http_version: bytes = ...,
        *,
        keep_alive: bool = ...,
        content_length: Optional[int] = ...,
        chunked: bool = ...,
    ) -> None: ...
    def get_header(
        self, name: Union[bytes, str], default: Optional[bytes] = ...
    ) -> Optional[bytes]: ...

class Data:
    data: bytes
    def __init__(self, data: BytesLike) -> None: ...

class EndOfMessage:
    trailers: Tuple[Header, ...]
    def __init__(self, trailers: Iterable[Header] = ...) -> None: ...

ServerEvent = Union[Request, Data, EndOfMessage, HTTPProtocolError]
ClientEvent = Union[Response, Data, EndOfMessage, HTTPProtocolError]

def refresh_date(now: Optional[float] = ...) -> bytes: ...
def date_header() -> bytes: ...

class ServerConnection:
    pause_after_message: bool
    def __init__(
        self,
        *,
        max_header_bytes: int = ...,
        max_header_count: int = ...,
        max_body_size: Optional[int] = ...,
        max_request_line: int = ...,
        pause_after_message: bool = ...,
    ) -> None: ...
    def receive_data(self, data: BytesLike) -> List[ServerEvent]: ...
    def receive_eof(self) -> List[ServerEvent]: ...
    @property
    def paused(self) -> bool: ...
    @property
    def holding(self) -> bool: ...
    def resume(self) -> List[ServerEvent]: ...
    def decline_upgrade(self) -> List[ServerEvent]: ...
    @property
    def upgraded(self) -> bool: ...
    @property
    def receiving_head(self) -> bool: ...
    @property
    def trailing_data(self) -> bytes: ...
    @property
    def must_close(self) -> bool: ...
    @property
    def pending_requests(self) -> int: ...
    def send_100_continue(self) -> bytes: ...
    def respond(
        self,
        status: int,
        headers: Iterable[HeaderLike] = ...,
        body: BytesLike = ...,
        reason: Union[bytes, str, None] = ...,
    ) -> bytes: ...
    def start_response(
        self,
        status: int,
        headers: Iterable[HeaderLike] = ...,
        reason: Union[bytes, str, None] = ...,
    ) -> bytes: ...
    def send_data(self, data: BytesLike) -> bytes: ...
    def skip_data(self, n: int) -> None: ...
    def end_response(self, trailers: Optional[Sequence[HeaderLike]] = ...) -> bytes: ...
    def error_response(self, error: Union[HTTPProtocolError, int, None] = ...) -> bytes: ...
    def close(self) -> None: ...

class ClientConnection:
    def __init__(
        self,
        *,
        max_header_bytes: int = ...,
        max_header_count: int = ...,
        max_body_size: Optional[int] = ...,
    ) -> None: ...
    def send_request(
        self,
        method: Union[bytes, str],
        target: Union[bytes, str],
        headers: Iterable[HeaderLike] = ...,
        body: Optional[BytesLike] = ...,
        *,
        stream: bool = ...,
    ) -> bytes: ...
    def send_data(self, data: BytesLike) -> bytes: ...
    def end_request(self, trailers: Optional[Sequence[HeaderLike]] = ...) -> bytes: ...
    def receive_data(self, data: BytesLike) -> List[ClientEvent]: ...
    def receive_eof(self) -> List[ClientEvent]: ...
    @property
    def trailing_data(self) -> bytes: ...
    @property
    def response_complete(self) -> bool: ...
    @property
    def reusable(self) -> bool: ...
    def close(self) -> None: ...

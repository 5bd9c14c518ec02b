"""The engine handler of the callback API, driven without sockets: whatever way the engine
splits the input (memoryview chunks on the native backend, bytes on the portable one), the
same messages come out and the same frames are written (hypothesis)."""

from __future__ import annotations

from typing import Any, List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from nbio.engine._conn import ConnBase
from nbio.ws._conn import Dispatch, WebSocketConn, open_conn
from nbio.ws._frames import encode_frame, encode_message
from nbio.ws.protocol import OP_PING, OP_PONG


class FakeConn(ConnBase):
    """Just enough of an engine connection: records writes."""

    def __init__(self) -> None:
        super().__init__()
        self.out: List[bytes] = []
        self.closed_by: Any = None

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def close(self) -> None:
        self.closed_by = "close"

    def set_handler(self, handler: Any) -> None:
        pass

    def set_idle_timeout(self, timeout: Any) -> None:
        pass

    def set_read_deadline(self, timeout: Any) -> None:
        pass


messages = st.lists(
    st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=8
)


def build_input(msgs: List[Any], frag: int) -> bytes:
    out = b""
    for i, m in enumerate(msgs):
        out += encode_message(m, mask=True, max_frame_size=frag)
        if i == 0:
            out += encode_frame(OP_PING, b"p", mask=True)
    return out


def run(stream: bytes, cuts: List[int], as_view: bool) -> Tuple[List[Any], List[bytes]]:
    got: List[Any] = []
    d = Dispatch(lambda ws, data, is_text: (got.append(data), ws.send(data)))
    conn = FakeConn()
    open_conn(d, conn)
    pos = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        chunk = stream[pos:cut]
        if chunk:
            d.engine_side.on_data(conn, memoryview(chunk) if as_view else chunk)
        pos = max(pos, cut)
    return got, conn.out


@settings(max_examples=150, deadline=None)
@given(
    msgs=messages,
    frag=st.sampled_from([0, 1, 7, 100]),
    data=st.data(),
    as_view=st.booleans(),
)
def test_any_split_gives_the_same_messages_and_replies(
    msgs: List[Any], frag: int, data: Any, as_view: bool
) -> None:
    stream = build_input(msgs, frag)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    got, out = run(stream, cuts, as_view)
    assert got == msgs
    expected = [encode_message(msgs[0]), encode_frame(OP_PONG, b"p")]
    expected += [encode_message(m) for m in msgs[1:]]
    assert out == expected


def test_handler_error_closes_with_1011_and_logs(caplog: Any) -> None:
    def broken(ws: WebSocketConn, data: Any, is_text: bool) -> None:
        raise KeyError("oops")

    d = Dispatch(broken)
    conn = FakeConn()
    ws = open_conn(d, conn)
    d.engine_side.on_data(conn, encode_message("x", mask=True))
    assert conn.out == [encode_frame(8, b"\x03\xf3internal error")]
    assert conn.closed_by == "close"
    assert ws.close_code == 1011
    assert "KeyError" in caplog.text

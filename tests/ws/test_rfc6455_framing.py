"""RFC 6455 section 5.2/5.3/5.5/5.6: base framing, masking, lengths, opcodes, RSV bits.

Table-driven byte-level cases, hypothesis round-trips over random split points, and
cross-checks with the ``websockets`` and ``wsproto`` frame codecs.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from wsutil import KEY, Recorder, client, failure, feed_split, mask_py, raw_frame, server

from nbio.errors import MessageTooBig, ProtocolError
from nbio.ws._frames import apply_mask, encode_frame, encode_message
from nbio.ws.protocol import Close, Message, Ping, Pong, WebSocketCore

# ------------------------------------------------------------------ valid frames

VALID = [
    ("text", raw_frame(1, b"Hello"), [Message("Hello", True)]),
    ("binary", raw_frame(2, b"\x00\xff"), [Message(b"\x00\xff", False)]),
    ("empty text", raw_frame(1, b""), [Message("", True)]),
    ("empty binary", raw_frame(2, b""), [Message(b"", False)]),
    ("125 bytes", raw_frame(2, b"a" * 125), [Message(b"a" * 125, False)]),
    ("126 bytes", raw_frame(2, b"b" * 126), [Message(b"b" * 126, False)]),
    ("65535 bytes", raw_frame(2, b"c" * 65535), [Message(b"c" * 65535, False)]),
    ("65536 bytes", raw_frame(2, b"d" * 65536), [Message(b"d" * 65536, False)]),
    ("non-minimal 16-bit", raw_frame(2, b"x", length_form=16), [Message(b"x", False)]),
    ("non-minimal 64-bit", raw_frame(1, b"y", length_form=64), [Message("y", True)]),
    ("long text", raw_frame(1, "é".encode() * 3000), [Message("é" * 3000, True)]),
    ("ping", raw_frame(9, b"hey"), [Ping(b"hey")]),
    ("empty ping", raw_frame(9), [Ping(b"")]),
    ("pong", raw_frame(10, b"ho"), [Pong(b"ho")]),
    ("ping 125", raw_frame(9, b"p" * 125), [Ping(b"p" * 125)]),
    (
        "several frames",
        raw_frame(1, b"a") + raw_frame(9, b"") + raw_frame(2, b"b"),
        [Message("a", True), Ping(b""), Message(b"b", False)],
    ),
]


@pytest.mark.parametrize("name,data,expected", VALID, ids=[v[0] for v in VALID])
def test_valid_frames_server_side(name: str, data: bytes, expected: list) -> None:
    assert server().receive_data(data) == expected


# Byte-by-byte feeding of the multi-kilobyte frames adds nothing over the small ones.
VALID_SMALL = [v for v in VALID if len(v[1]) <= 3000]


@pytest.mark.parametrize("name,data,expected", VALID_SMALL, ids=[v[0] for v in VALID_SMALL])
def test_valid_frames_byte_by_byte(name: str, data: bytes, expected: list) -> None:
    assert feed_split(server(), data, range(len(data))) == expected


@pytest.mark.parametrize("name,data,expected", VALID, ids=[v[0] for v in VALID])
def test_valid_frames_client_side_unmasked(name: str, data: bytes, expected: list) -> None:
    # Re-encode the same frames unmasked: what a server sends.
    p = server(max_size=0)
    p.receive_data(data)
    unmasked = b"".join(
        raw_frame(
            {Message: 1, Ping: 9, Pong: 10}[type(e)]
            if not isinstance(e, Message) or e.is_text
            else 2,
            e.data.encode()
            if isinstance(e, Message) and e.is_text
            else (e.data if isinstance(e, Message) else e.payload),
            mask=None,
        )
        for e in expected
    )
    assert client().receive_data(unmasked) == expected


# ------------------------------------------------------------------ invalid frames

INVALID = [
    ("rsv1 without extension", raw_frame(1, b"a", rsv=0b100), 1002),
    ("rsv2", raw_frame(1, b"a", rsv=0b010), 1002),
    ("rsv3", raw_frame(2, b"a", rsv=0b001), 1002),
    ("rsv on ping", raw_frame(9, b"", rsv=0b010), 1002),
    *[(f"reserved opcode {op}", raw_frame(op, b"x"), 1002) for op in (3, 4, 5, 6, 7)],
    *[(f"reserved opcode {op}", raw_frame(op, b""), 1002) for op in (11, 12, 13, 14, 15)],
    ("unmasked from client", raw_frame(1, b"a", mask=None), 1002),
    ("64-bit length MSB", raw_frame(2, b"", length_form=64, length=1 << 63), 1002),
    ("ping over 125", raw_frame(9, b"p" * 126), 1002),
    ("close over 125", raw_frame(8, b"\x03\xe8" + b"r" * 124), 1002),
    ("fragmented ping", raw_frame(9, b"", fin=False), 1002),
    ("fragmented close", raw_frame(8, b"", fin=False), 1002),
    ("continuation first", raw_frame(0, b"a"), 1002),
    ("text invalid utf-8", raw_frame(1, b"\xff"), 1007),
    ("too big", raw_frame(2, b"z" * 101), 1009),
    ("too big header only", raw_frame(2, b"", length=10**6)[:8], 1009),
]


@pytest.mark.parametrize("name,data,code", INVALID, ids=[v[0] for v in INVALID])
def test_invalid_frames_fail(name: str, data: bytes, code: int) -> None:
    p = server(max_size=100, auto_reply=False)
    events = p.receive_data(data + raw_frame(1, b"after"))
    assert failure(events) == code
    assert Message("after", True) not in events
    assert p.failed and p.state == 2 and p.closed_by == "local"
    exc = p.exception
    assert isinstance(exc, MessageTooBig if code == 1009 else ProtocolError)
    assert exc.close_code == code
    # The close frame we owe carries the code.
    assert p.data_to_send() == b""
    reply = p.close_reply()
    assert reply[0] == 0x88 and int.from_bytes(reply[2:4], "big") == code
    assert p.state == 3 and p.close_reply() == b""
    # Further input is ignored.
    assert p.receive_data(raw_frame(1, b"more")) == []


def test_masked_frame_from_server_fails_client() -> None:
    events = client().receive_data(raw_frame(1, b"hi"))
    assert failure(events) == 1002


def test_rsv1_on_control_frame_with_deflate() -> None:
    from nbio.ws.deflate import PerMessageDeflate

    p = server(deflate=PerMessageDeflate())
    assert failure(p.receive_data(raw_frame(9, b"", rsv=0b100))) == 1002


def test_frame_too_big_detected_from_header() -> None:
    # Only the header of a 10 MB frame arrives: fail at once, allocate nothing.
    p = server(max_size=1 << 20)
    assert failure(p.receive_data(raw_frame(2, b"", length=10 << 20)[:14])) == 1009


def test_unlimited_max_size() -> None:
    p = server(max_size=0)
    data = os.urandom(3 << 20)
    assert p.receive_data(raw_frame(2, data)) == [Message(data, False)]


# ------------------------------------------------------------------ masking


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_apply_mask_matches_reference(data: bytes, key: bytes) -> None:
    assert apply_mask(data, key) == mask_py(data, key)
    assert apply_mask(apply_mask(data, key), key) == data


def test_client_frames_use_fresh_random_keys() -> None:
    keys = {encode_frame(2, b"abc", mask=True)[2:6] for _ in range(2000)}
    assert len(keys) > 1990  # 4 KiB urandom pool refills every 1024 frames


def test_encode_frame_headers() -> None:
    assert encode_frame(1, b"Hello") == b"\x81\x05Hello"
    assert encode_frame(2, b"", fin=False) == b"\x02\x00"
    assert encode_frame(1, b"x", rsv1=True) == b"\xc1\x01x"
    assert encode_frame(2, b"a" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert encode_frame(2, b"a" * 65536)[:10] == b"\x82\x7f" + (65536).to_bytes(8, "big")
    f = encode_frame(1, b"Hello", mask=True)
    assert f[:2] == b"\x81\x85" and mask_py(f[6:], f[2:6]) == b"Hello"
    with pytest.raises(ValueError):
        encode_frame(16, b"")


# ------------------------------------------------------------------ core object


def test_idle_core_is_small() -> None:
    core = WebSocketCore()
    assert sys.getsizeof(core) <= 120
    assert not hasattr(core, "__dict__")


def test_callback_api_passes_conn_and_accepts_buffers() -> None:
    core = WebSocketCore()
    rec = Recorder()
    data = raw_frame(1, b"one") + raw_frame(2, b"two")
    conn = object()
    core.feed(memoryview(bytearray(data)), rec, conn)
    assert rec.calls == [("message", "one", True), ("message", b"two", False)]
    assert rec.conns == [conn, conn]


def test_handler_exception_propagates() -> None:
    class Boom(Recorder):
        def on_message(self, conn: object, data: object, is_text: bool) -> None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        WebSocketCore().feed(raw_frame(1, b"x"), Boom())


def test_input_is_copied_when_incomplete() -> None:
    # The engine's buffer is reused after feed(): partial frames must not refer to it.
    p = server()
    buf = bytearray(raw_frame(2, b"abcdef"))
    events = p.receive_data(memoryview(buf)[:5])
    buf[:] = b"\x00" * len(buf)
    events += p.receive_data(raw_frame(2, b"abcdef")[5:])
    assert events == [Message(b"abcdef", False)]


def test_send_side_masking_rules() -> None:
    s, c = server(), client()
    assert s.encode_message("hi") == b"\x81\x02hi"
    framed = c.encode_message(b"hi")
    assert framed[1] & 0x80
    assert s.receive_data(framed) == [Message(b"hi", False)]
    assert c.receive_data(s.encode_message(b"yo")) == [Message(b"yo", False)]
    assert s.receive_data(c.ping(b"p")) == [Ping(b"p")]
    assert c.receive_data(s.pong(b"q")) == [Pong(b"q")]
    with pytest.raises(ValueError):
        s.ping(b"x" * 126)


def test_auto_pong() -> None:
    p = server()
    assert p.receive_data(raw_frame(9, b"abc")) == [Ping(b"abc")]
    assert p.data_to_send() == b"\x8a\x03abc"
    assert p.data_to_send() == b""


# ------------------------------------------------------------------ random streams

message_st = st.one_of(
    st.text(max_size=200).map(lambda s: ("t", s)),
    st.binary(max_size=300).map(lambda b: ("b", b)),
    st.binary(max_size=125).map(lambda b: ("ping", b)),
    st.binary(max_size=125).map(lambda b: ("pong", b)),
)


def _expected(items: list) -> list:
    out = []
    for kind, v in items:
        if kind == "t":
            out.append(Message(v, True))
        elif kind == "b":
            out.append(Message(v, False))
        else:
            out.append(Ping(v) if kind == "ping" else Pong(v))
    return out


def _encode_ours(items: list, mask: bool) -> bytes:
    ops = {"t": 1, "b": 2, "ping": 9, "pong": 10}
    return b"".join(encode_frame(ops[k], v, mask=mask) for k, v in items)


@settings(max_examples=200, deadline=None)
@given(st.lists(message_st, max_size=12), st.lists(st.integers(0, 5000), max_size=20))
def test_roundtrip_random_split_points(items: list, cuts: list) -> None:
    data = _encode_ours(items, mask=True)
    assert feed_split(server(), data, cuts) == _expected(items)
    data = _encode_ours(items, mask=False)
    assert feed_split(client(), data, cuts) == _expected(items)


# ------------------------------------------------------------------ peers


def _ws_parse(data: bytes, mask: bool) -> list:
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        gen = Frame.parse(reader.read_exact, mask=mask)
        try:
            next(gen)
        except StopIteration as stop:
            frames.append(stop.value)
        else:  # pragma: no cover - would mean the data is truncated
            raise AssertionError("incomplete frame")
    return frames


@settings(max_examples=100, deadline=None)
@given(st.lists(message_st, min_size=1, max_size=8), st.booleans())
def test_websockets_parses_our_frames(items: list, mask: bool) -> None:
    frames = _ws_parse(_encode_ours(items, mask=mask), mask=mask)
    got = []
    for f in frames:
        if f.opcode == Opcode.TEXT:
            got.append(Message(f.data.decode(), True))
        elif f.opcode == Opcode.BINARY:
            got.append(Message(bytes(f.data), False))
        elif f.opcode == Opcode.PING:
            got.append(Ping(bytes(f.data)))
        else:
            got.append(Pong(bytes(f.data)))
    assert got == _expected(items)


@settings(max_examples=100, deadline=None)
@given(st.lists(message_st, min_size=1, max_size=8), st.lists(st.integers(0, 3000)))
def test_we_parse_websockets_frames(items: list, cuts: list) -> None:
    ops = {"t": Opcode.TEXT, "b": Opcode.BINARY, "ping": Opcode.PING, "pong": Opcode.PONG}
    for mask, proto in ((True, server()), (False, client())):
        data = b"".join(
            Frame(ops[k], v.encode() if k == "t" else v).serialize(mask=mask) for k, v in items
        )
        assert feed_split(proto, data, cuts) == _expected(items)


def test_wsproto_decodes_our_frames_and_we_decode_wsproto() -> None:
    from wsproto.frame_protocol import FrameProtocol
    from wsproto.frame_protocol import Opcode as WOp

    ours = encode_message("héllo", mask=True) + encode_message(b"\x00" * 70000, mask=True)
    peer = FrameProtocol(client=False, extensions=[])
    peer.receive_bytes(ours)
    frames = list(peer.received_frames())
    assert [(f.opcode, f.payload) for f in frames] == [
        (WOp.TEXT, "héllo"),
        (WOp.BINARY, bytearray(70000)),
    ]
    sender = FrameProtocol(client=False, extensions=[])
    data = sender.send_data("ünïcode", fin=True) + sender.send_data(b"\x01\x02", fin=True)
    data += sender.ping(b"pp")
    assert client().receive_data(data) == [
        Message("ünïcode", True),
        Message(b"\x01\x02", False),
        Ping(b"pp"),
    ]


def test_close_event_type() -> None:
    events = server().receive_data(raw_frame(8, b"\x03\xe8"))
    assert events == [Close(1000, "")]
    assert KEY  # fixed mask key used by raw_frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=8), st.booleans())
def test_garbage_never_crashes(data: bytes, cuts: list, is_client: bool) -> None:
    # Any input yields events or a clean failure (1002/1007/1009), never an exception.
    p = client() if is_client else server(max_size=200)
    events = feed_split(p, data, cuts)
    code = failure(events)
    assert code in (None, 1002, 1007, 1009)
    if code is not None:
        assert p.state == 3  # auto_reply sent our Close

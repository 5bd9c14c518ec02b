"""Golden byte vectors for the arpc wire format.

Each vector is derived from arpc's Go source (proto.go newMessage / Header, client.go
Call/Notify, context.go write, handler.go OnMessage, extension/pubsub/topic.go), by hand,
byte by byte, so the tests do not depend on our encoder to define what is right.
"""

from __future__ import annotations

import pytest

from nbio.rpc import message as m
from nbio.rpc.codec import JsonCodec, value_to_payload
from nbio.rpc.pubsub_wire import ROUTE_PUBLISH, decode_topic, encode_topic


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


SEQ2 = "0200000000000000"

GOLDEN = [
    # The vector: Call("/echo", "hello") as a client's seq-2 request.
    (
        "call",
        m.request("/echo", 2, "hello"),
        h("0a000000 00 01 00 05" + SEQ2 + "2f6563686f 68656c6c6f"),
    ),
    # CallAsync sets the async flag (client.go newRequestMessage(..., isAsync=true)).
    (
        "call_async",
        m.request("/echo", 2, b"hello", is_async=True),
        h("0a000000 00 01 02 05" + SEQ2 + "2f6563686f 68656c6c6f"),
    ),
    # The response repeats method, seq and the async bit (context.go write).
    (
        "response",
        m.response("/echo", 2, b"hello"),
        h("0a000000 00 02 00 05" + SEQ2 + "2f6563686f 68656c6c6f"),
    ),
    (
        "response_async",
        m.response("/echo", 2, b"hello", is_async=True),
        h("0a000000 00 02 02 05" + SEQ2 + "2f6563686f 68656c6c6f"),
    ),
    # Unknown method: error flag, the error text raw (ErrMethodNotFound).
    (
        "method_not_found",
        m.error_response("/echo", 2, m.ERR_METHOD_NOT_FOUND),
        h("15000000 00 02 01 05" + SEQ2 + "2f6563686f" + b"method not found".hex()),
    ),
    (
        "error_async",
        m.error_response("/x", 7, "boom", is_async=True),
        h("06000000 00 02 03 02 0700000000000000 2f78 626f6f6d"),
    ),
    # Notify: arpc's client sets the async flag on notifies and numbers them.
    ("notify", m.notify("/n", 3, b"hi"), h("04000000 00 03 02 02 0300000000000000 2f6e 6869")),
    # ctx.Write(nil): empty payload, body = method only.
    ("empty_payload", m.response("/echo", 2), h("05000000 00 02 00 05" + SEQ2 + "2f6563686f")),
    # PingMessage / PongMessage: newMessage(CmdPing, "", nil, ..., seq 0): a bare header.
    ("ping", m.PING_FRAME, h("00000000 00 04 00 00 0000000000000000")),
    ("pong", m.PONG_FRAME, h("00000000 00 05 00 00 0000000000000000")),
    # Streams: seq is the stream id; 0x80 local (creator's side), 0x40 EOF (last frame).
    (
        "stream_local",
        m.stream_frame("/s", 5, b"a", local=True),
        h("03000000 00 86 00 02 0500000000000000 2f73 61"),
    ),
    (
        "stream_remote",
        m.stream_frame("/s", 5, b"a", local=False),
        h("03000000 00 06 00 02 0500000000000000 2f73 61"),
    ),
    # CloseSend: an empty frame with the EOF bit.
    (
        "stream_close_send",
        m.stream_frame("/s", 5, local=True, eof=True),
        h("02000000 00 c6 00 02 0500000000000000 2f73"),
    ),
    (
        "stream_remote_eof",
        m.stream_frame("/s", 5, b"z", local=False, eof=True),
        h("03000000 00 46 00 02 0500000000000000 2f73 7a"),
    ),
    # uint64 seq, little endian.
    ("seq_max", m.request("/a", 2**64 - 1, b""), h("02000000 00 01 00 02 ffffffffffffffff 2f61")),
    (
        "seq_order",
        m.request("/a", 0x0102030405060708, b""),
        h("02000000 00 01 00 02 0807060504030201 2f61"),
    ),
    # Coder bits live in byte 4 (SetFlagBit index 0..7 on HeaderIndexReserved).
    (
        "coder_bits",
        m.encode(m.CMD_REQUEST, "/a", 1, b"", coder_flags=m.CODER_FLAG_TRACER),
        h("02000000 01 01 00 02 0100000000000000 2f61"),
    ),
    # A 127-byte method (MaxMethodLen).
    (
        "method_127",
        m.request("m" * 127, 1),
        h("7f000000 00 01 00 7f 0100000000000000" + "6d" * 127),
    ),
]


@pytest.mark.parametrize("name,got,want", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_encode(name: str, got: bytes, want: bytes) -> None:
    assert got == want


@pytest.mark.parametrize("name,got,want", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_decode(wire, name: str, got: bytes, want: bytes) -> None:
    msg = wire.parse_frame(want)
    assert msg.to_bytes() == want
    assert wire.FrameReader().feed(want) == [msg]


def test_golden_call_fields(wire) -> None:
    msg = wire.parse_frame(h("0a000000 00 01 00 05" + SEQ2 + "2f6563686f 68656c6c6f"))
    assert (msg.cmd, msg.method, msg.seq, msg.payload) == (m.CMD_REQUEST, "/echo", 2, b"hello")
    assert not msg.is_error and not msg.is_async and msg.body_len == 10


def test_golden_error_fields(wire) -> None:
    msg = wire.parse_frame(m.error_response("/echo", 2, m.ERR_METHOD_NOT_FOUND, is_async=True))
    assert msg.is_error and msg.is_async and msg.error == "method not found"


def test_golden_stream_fields(wire) -> None:
    msg = wire.parse_frame(h("02000000 00 c6 00 02 0500000000000000 2f73"))
    assert msg.cmd == m.CMD_STREAM and msg.cmd_byte == 0xC6
    assert msg.is_stream_local and msg.is_stream_eof and msg.stream_id == 5
    assert msg.payload == b""


def test_response_to_and_error_response_to_mirror_the_request(wire) -> None:
    req = wire.parse_frame(m.request("/echo", 9, b"x", is_async=True))
    assert m.response_to(req, b"y") == m.response("/echo", 9, b"y", is_async=True)
    assert m.error_response_to(req, m.ERR_METHOD_NOT_FOUND) == m.error_response(
        "/echo", 9, "method not found", is_async=True
    )


def test_encode_header_is_the_frame_prefix(wire) -> None:
    full = m.request("/echo", 2, "hello")
    assert wire.encode_header(m.CMD_REQUEST, "/echo", 2, 5) + b"hello" == full


@pytest.mark.parametrize(
    "value,payload",
    [
        ("hello", b"hello"),  # string: raw
        (b"\x00\xff", b"\x00\xff"),  # []byte: raw
        (None, b""),  # nil: empty
        (ValueError("bad thing"), b"bad thing"),  # error: its text
        ([1, 2], b"[1,2]"),  # through encoding/json, compact
        ({"a": 1, "b": "x"}, b'{"a":1,"b":"x"}'),
        ({"html": "<a&b>"}, b'{"html":"\\u003ca\\u0026b\\u003e"}'),  # Go escapes <>&
        ("é", "é".encode()),
        ({"s": "é\u2028"}, '{"s":"é'.encode() + b'\\u2028"}'),
        (True, b"true"),
        (12, b"12"),
    ],
)
def test_golden_value_to_payload(value: object, payload: bytes) -> None:
    assert value_to_payload(value, JsonCodec()) == payload


def test_golden_json_call() -> None:
    frame = m.request("/sum", 2, value_to_payload([1, 2]))
    assert frame == h("09000000 00 01 00 04" + SEQ2 + "2f73756d 5b312c325d")


def test_golden_pubsub_topic() -> None:
    # data || name || uint16 LE len(name) || int64 LE UnixNano
    body = encode_topic("room", b"hi", 0x0102030405060708)
    assert body == b"hi" + b"room" + h("0400 0807060504030201")
    assert decode_topic(body) == ("room", b"hi", 0x0102030405060708)
    frame = m.encode(m.CMD_NOTIFY, ROUTE_PUBLISH, 0, body)
    assert frame[:8] == h("14000000 00 03 00 04")

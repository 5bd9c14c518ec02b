"""Message, encoder and FrameReader behaviour, byte-level tables and property tests.

Grouped as arpc's source groups the rules: header layout (proto.go), receive limits
(handler.go Recv / Header.message), dispatch checks (handler.go OnMessage).
"""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbio.errors import MessageTooBig, ProtocolError
from nbio.rpc import message as m

HDR = struct.Struct("<IBBBBQ")


def frame(
    cmd: int,
    method: bytes = b"/m",
    seq: int = 1,
    payload: bytes = b"",
    *,
    flags: int = 0,
    coder: int = 0,
    ml: int | None = None,
    body_len: int | None = None,
) -> bytes:
    """A frame assembled field by field, allowing inconsistent values."""
    ml = len(method) if ml is None else ml
    bl = len(method) + len(payload) if body_len is None else body_len
    return HDR.pack(bl, coder, cmd, flags, ml, seq) + method + payload


# --- header layout ---------------------------------------------------------------------


def test_header_size_and_limits() -> None:
    assert m.HEADER_SIZE == 16
    assert m.MAX_METHOD_LEN == 127
    assert m.DEFAULT_MAX_BODY_LEN == 64 * 1024 * 1024 - 16


@pytest.mark.parametrize("cmd", [1, 2, 3, 4, 5, 6, 0x86, 0xC6, 0x46])
def test_every_command_round_trips(wire, cmd: int) -> None:
    method = "" if cmd in (4, 5) else "/m"
    raw = wire.encode(cmd, method, 42, b"data", m.FLAG_ASYNC, 0x01)
    msg = wire.parse_frame(raw)
    assert (msg.cmd_byte, msg.cmd, msg.seq, msg.method, msg.payload) == (
        cmd,
        cmd & 0x3F,
        42,
        method,
        b"data",
    )
    assert msg.is_async and not msg.is_error and msg.coder_flags == 1
    assert msg == wire.Message(cmd, method, 42, b"data", m.FLAG_ASYNC, 0x01)


def test_message_constructor_and_repr(wire) -> None:
    msg = wire.Message(m.CMD_REQUEST, b"/m", 3, "p")
    assert msg.method == "/m" and msg.payload == b"p" and msg.to_bytes() == m.request("/m", 3, b"p")
    assert "method='/m'" in repr(msg)
    with pytest.raises(ValueError):
        wire.Message(256)
    with pytest.raises(AttributeError):
        msg.seq = 3  # type: ignore[misc]


def test_non_utf8_method_round_trips(wire) -> None:
    raw = frame(1, b"/\xff\xfe")
    msg = wire.parse_frame(raw)
    assert msg.method == "/\udcff\udcfe"
    assert msg.to_bytes() == raw
    assert m.response_to(msg, b"")[16:19] == b"/\xff\xfe"


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        (dict(cmd=1, method="m" * 128, seq=1), ValueError),
        (dict(cmd=256, method="/m", seq=1), ValueError),
        (dict(cmd=-1, method="/m", seq=1), ValueError),
        (dict(cmd=1, method="/m", seq=1, flags=256), ValueError),
        (dict(cmd=1, method="/m", seq=1, coder_flags=-1), ValueError),
        (dict(cmd=1, method="/m", seq=-1), OverflowError),
        (dict(cmd=1, method="/m", seq=2**64), OverflowError),
    ],
)
def test_encode_rejects_bad_fields(wire, kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        wire.encode(**kwargs)


def test_encode_accepts_bytes_like_payloads(wire) -> None:
    want = m.request("/m", 1, b"abc")
    for payload in (b"abc", bytearray(b"abc"), memoryview(b"xabc")[1:], "abc"):
        assert wire.encode(1, "/m", 1, payload) == want
    assert wire.encode(1, "/m", 1, None) == m.request("/m", 1)


@pytest.mark.parametrize("helper", [m.request, m.notify])
@pytest.mark.parametrize("method", ["", "m" * 128])
def test_helpers_require_method_1_to_127(helper, method: str) -> None:
    with pytest.raises(ValueError):
        helper(method, 1, b"")


# --- receive limits: these close the connection ----------------------------------------


def test_body_over_default_limit_raises_after_four_bytes(wire) -> None:
    r = wire.FrameReader()
    with pytest.raises(MessageTooBig):
        r.feed(struct.pack("<I", m.DEFAULT_MAX_BODY_LEN + 1))


def test_body_at_limit_is_accepted(wire) -> None:
    r = wire.FrameReader(max_body_len=7)
    assert r.feed(frame(1, b"/m", payload=b"12345")) == [
        wire.parse_frame(frame(1, b"/m", payload=b"12345"))
    ]
    with pytest.raises(MessageTooBig):
        r.feed(frame(1, b"/m", payload=b"123456"))


def test_body_limit_checked_across_chunks(wire) -> None:
    r = wire.FrameReader(max_body_len=100)
    data = frame(1, b"/m", payload=b"x" * 200)
    assert r.feed(data[:2]) == []
    with pytest.raises(MessageTooBig):
        r.feed(data[2:5])


def test_parse_frame_body_limit(wire) -> None:
    with pytest.raises(MessageTooBig):
        wire.parse_frame(frame(1, b"/m", payload=b"xx"), max_body_len=3)


@pytest.mark.parametrize("cmd", [0, 7, 8, 0x1F, 0x3F, 0x80, 0xC0, 0x87, 0xFF])
def test_unknown_command_is_a_protocol_error(wire, cmd: int) -> None:
    with pytest.raises(ProtocolError, match="invalid cmd"):
        wire.FrameReader().feed(frame(cmd))
    with pytest.raises(ProtocolError):
        wire.parse_frame(frame(cmd))


def test_is_protocol_error_not_too_big(wire) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.FrameReader().feed(frame(9))
    assert not isinstance(info.value, MessageTooBig)


# --- dispatch checks: arpc drops the message, the connection stays ----------------------

INVALID_METHOD = [
    ("request_ml_0", frame(1, b"", payload=b"x")),
    ("notify_ml_0", frame(3, b"", payload=b"x")),
    ("response_ml_0", frame(2, b"", payload=b"x")),
    ("stream_ml_0", frame(6, b"")),
    ("ml_over_body", frame(1, b"/m", ml=3)),
    ("ml_128", frame(1, b"m" * 128)),
    ("ml_255", frame(1, b"m" * 255)),
]


@pytest.mark.parametrize("name,bad", INVALID_METHOD, ids=[x[0] for x in INVALID_METHOD])
def test_invalid_method_length_is_dropped_and_counted(wire, name: str, bad: bytes) -> None:
    good = m.request("/ok", 5, b"y")
    r = wire.FrameReader()
    assert r.feed(bad + good) == [wire.parse_frame(good)]
    assert r.dropped == 1
    with pytest.raises(ProtocolError, match="method length"):
        wire.parse_frame(bad)


@pytest.mark.parametrize("cmd", [m.CMD_PING, m.CMD_PONG])
def test_ping_pong_need_no_method(wire, cmd: int) -> None:
    msgs = wire.FrameReader().feed(frame(cmd, b"", seq=0))
    assert len(msgs) == 1 and msgs[0].cmd == cmd and msgs[0].method == ""
    # a method length past the body on ping is tolerated, as arpc answers before checking
    assert wire.FrameReader().feed(frame(cmd, b"", ml=5))[0].cmd == cmd


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", frame(1)[:15], frame(1, payload=b"abc")[:-1]],
    ids=["empty", "1_byte", "header_minus_1", "body_minus_1"],
)
def test_parse_frame_rejects_wrong_lengths(wire, raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        wire.parse_frame(raw)


def test_parse_frame_rejects_trailing_bytes(wire) -> None:
    with pytest.raises(ProtocolError):
        wire.parse_frame(frame(1) + b"\x00")


# --- incremental reading ---------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 5, 15, 16, 17, 20, 21, 22], ids=lambda c: f"cut{c}")
def test_truncated_input_waits_for_more(wire, cut: int) -> None:
    data = m.request("/echo", 2, b"hello")  # 26 bytes
    r = wire.FrameReader()
    assert r.feed(data[:cut]) == []
    assert r.pending == cut
    assert r.feed(data[cut:]) == [wire.parse_frame(data)]
    assert r.pending == 0


def test_byte_by_byte(wire) -> None:
    data = m.request("/a", 1, b"x" * 40) + m.PING_FRAME + m.response("/b", 2, b"")
    r = wire.FrameReader()
    got = []
    for i in range(len(data)):
        got += r.feed(data[i : i + 1])
    assert [x.cmd for x in got] == [1, 4, 2]


def test_memoryview_valid_only_during_the_call(wire) -> None:
    data = m.request("/a", 1, b"hello") + m.request("/b", 2, b"world")
    buf = bytearray(data[:30])
    r = wire.FrameReader()
    got = r.feed(memoryview(buf))
    buf[:] = b"\xee" * len(buf)  # the engine reuses its buffer
    got += r.feed(memoryview(bytearray(data[30:])))
    assert [(x.method, x.payload) for x in got] == [("/a", b"hello"), ("/b", b"world")]


def test_callback_mode(wire) -> None:
    seen = []
    r = wire.FrameReader(seen.append)
    assert r.feed(m.request("/a", 1) + m.request("/b", 2)) is None
    assert [x.method for x in seen] == ["/a", "/b"]


def test_callback_exception_keeps_the_rest(wire) -> None:
    seen = []

    def cb(msg):
        seen.append(msg.method)
        if msg.method == "/boom":
            raise RuntimeError("handler failed")

    r = wire.FrameReader(cb)
    data = m.request("/a", 1) + m.request("/boom", 2) + m.request("/c", 3) + m.request("/d", 4)[:5]
    with pytest.raises(RuntimeError):
        r.feed(data)
    assert seen == ["/a", "/boom"]
    r.feed(m.request("/d", 4)[5:])
    assert seen == ["/a", "/boom", "/c", "/d"]


def test_callback_exception_on_a_buffered_frame_keeps_the_rest(wire) -> None:
    seen = []

    def cb(msg):
        seen.append(msg.method)
        if msg.method == "/boom":
            raise RuntimeError

    r = wire.FrameReader(cb)
    first = m.request("/boom", 1)
    r.feed(first[:10])
    with pytest.raises(RuntimeError):
        r.feed(first[10:] + m.request("/c", 2))
    r.feed(b"")
    assert seen == ["/boom", "/c"]


def test_idle_reader_holds_no_buffer(wire) -> None:
    r = wire.FrameReader()
    r.feed(m.request("/a", 1) * 3)
    assert r.pending == 0
    r.feed(b"\x01")
    assert r.pending == 1
    r.reset()
    assert r.pending == 0


def test_compiled_objects_are_small() -> None:
    if not m.COMPILED:
        pytest.skip("extension not built")
    from nbio.rpc import _message

    assert sys.getsizeof(_message.FrameReader()) <= 96
    assert sys.getsizeof(_message.parse_frame(m.request("/a", 1))) <= 64


def test_reader_rejects_bad_limit(wire) -> None:
    with pytest.raises(ValueError):
        wire.FrameReader(max_body_len=-1)
    with pytest.raises(ValueError):
        wire.FrameReader(max_body_len=2**32)


# --- property tests --------------------------------------------------------------------

messages = st.builds(
    lambda cmd, method, seq, payload, flags, coder, local, eof: (
        (cmd | (0x80 if local else 0) | (0x40 if eof else 0)) if cmd == 6 else cmd,
        "" if cmd in (4, 5) else method,
        seq,
        payload,
        flags,
        coder,
    ),
    st.integers(1, 6),
    st.text(min_size=1, max_size=20).filter(lambda s: 1 <= len(s.encode()) <= 127),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
    st.integers(0, 255),
    st.integers(0, 127),  # bit 7 (gzip) is the coder's
    st.booleans(),
    st.booleans(),
)


HYP = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYP
@given(msgs=st.lists(messages, max_size=12), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_random_split_points(wire, msgs, cuts) -> None:
    data = b"".join(wire.encode(*x) for x in msgs)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    r = wire.FrameReader()
    got = []
    for chunk in chunks:
        got += r.feed(memoryview(bytearray(chunk)))
    assert got == [wire.Message(*x) for x in msgs]
    assert r.pending == 0 and r.dropped == 0


@HYP
@given(msgs=st.lists(messages, max_size=5))
def test_encode_parse_round_trip(wire, msgs) -> None:
    for x in msgs:
        raw = wire.encode(*x)
        assert wire.parse_frame(raw).to_bytes() == raw
        assert raw == m.py_encode(*x)


def _outcome(impl, chunks):
    r = impl.FrameReader(max_body_len=1000)
    got = []
    try:
        for chunk in chunks:
            got += r.feed(chunk)
    except (ProtocolError, MessageTooBig) as exc:
        return got, type(exc), r.dropped
    return got, None, r.dropped, r.pending


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cut=st.integers(0, 400))
def test_compiled_and_python_agree_on_garbage(data, cut) -> None:
    if not m.COMPILED:
        pytest.skip("extension not built")
    from nbio.rpc import _message

    class C:
        FrameReader = _message.FrameReader

    class P:
        FrameReader = m.PyFrameReader

    chunks = [data[:cut], data[cut:]]
    a, b = _outcome(C, chunks), _outcome(P, chunks)
    assert [x.to_bytes() for x in a[0]] == [x.to_bytes() for x in b[0]]
    assert a[1:] == b[1:]

"""RFC 6455 section 5.4: fragmentation, interleaved control frames, continuation rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from wsutil import client, failure, feed_split, raw_frame, server

from nbio.ws._frames import encode_message
from nbio.ws.protocol import Message, Ping, Pong

CASES = [
    (
        "text in 3 fragments",
        raw_frame(1, b"Hel", fin=False) + raw_frame(0, b"lo ", fin=False) + raw_frame(0, b"you"),
        [Message("Hello you", True)],
    ),
    (
        "binary in 2 fragments",
        raw_frame(2, b"\x01", fin=False) + raw_frame(0, b"\x02"),
        [Message(b"\x01\x02", False)],
    ),
    (
        "empty fragments",
        raw_frame(1, b"", fin=False) + raw_frame(0, b"", fin=False) + raw_frame(0, b""),
        [Message("", True)],
    ),
    (
        "ping and pong between fragments",
        raw_frame(1, b"ab", fin=False)
        + raw_frame(9, b"p")
        + raw_frame(0, b"cd", fin=False)
        + raw_frame(10, b"q")
        + raw_frame(0, b"ef"),
        [Ping(b"p"), Pong(b"q"), Message("abcdef", True)],
    ),
    (
        "utf-8 sequence split across fragments",
        raw_frame(1, "é".encode()[:1], fin=False) + raw_frame(0, "é".encode()[1:]),
        [Message("é", True)],
    ),
    (
        "large fragments",
        raw_frame(2, b"a" * 70000, fin=False) + raw_frame(0, b"b" * 300),
        [Message(b"a" * 70000 + b"b" * 300, False)],
    ),
    (
        "message after fragmented message",
        raw_frame(2, b"a", fin=False) + raw_frame(0, b"b") + raw_frame(1, b"c"),
        [Message(b"ab", False), Message("c", True)],
    ),
]


@pytest.mark.parametrize("name,data,expected", CASES, ids=[c[0] for c in CASES])
def test_fragmented_messages(name: str, data: bytes, expected: list) -> None:
    assert server().receive_data(data) == expected
    cuts = range(0, len(data), 7 if len(data) < 1000 else 997)
    assert feed_split(server(), data, cuts) == expected


BAD = [
    ("continuation without start", raw_frame(0, b"x"), 1002),
    ("continuation after final", raw_frame(1, b"a") + raw_frame(0, b"b"), 1002),
    ("text while fragmented", raw_frame(1, b"a", fin=False) + raw_frame(1, b"b"), 1002),
    ("binary while fragmented", raw_frame(2, b"a", fin=False) + raw_frame(2, b"b"), 1002),
    (
        "fragmented ping inside message",
        raw_frame(1, b"a", fin=False) + raw_frame(9, fin=False),
        1002,
    ),
    ("fragments over max_size", raw_frame(2, b"a" * 60, fin=False) + raw_frame(0, b"b" * 60), 1009),
]


@pytest.mark.parametrize("name,data,code", BAD, ids=[c[0] for c in BAD])
def test_fragmentation_errors(name: str, data: bytes, code: int) -> None:
    events = server(max_size=100).receive_data(data)
    assert failure(events) == code


def test_message_size_limit_counts_all_fragments_before_payload_arrives() -> None:
    p = server(max_size=100)
    assert p.receive_data(raw_frame(2, b"a" * 90, fin=False)) == []
    # Only the header of the next fragment: 90 + 20 > 100 fails at once.
    assert failure(p.receive_data(raw_frame(0, b"b" * 20)[:6])) == 1009


def test_encode_message_fragments_at_max_frame_size() -> None:
    data = bytes(range(256)) * 40
    framed = encode_message(data, max_frame_size=1000)
    # 11 frames: first binary non-final, 9 continuations, last final.
    assert framed[0] == 0x02 and framed[1] == 126
    got = server(max_size=0).receive_data(encode_message(data, max_frame_size=1000, mask=True))
    assert got == [Message(data, False)]
    assert client().receive_data(framed) == [Message(data, False)]
    s = server()
    text = "ü" * 1000  # fragments split UTF-8 sequences: still one valid message
    assert s.receive_data(client().encode_message(text, max_frame_size=333)) == [
        Message(text, True)
    ]


def test_websockets_reassembles_our_fragments() -> None:
    from websockets.protocol import Protocol, Side

    peer = Protocol(Side.SERVER)
    peer.receive_data(client().encode_message("abc" * 1000, max_frame_size=100))
    frames = peer.events_received()
    assert frames[0].opcode == Opcode.TEXT and not frames[0].fin
    assert all(f.opcode == Opcode.CONT for f in frames[1:])
    assert frames[-1].fin
    assert b"".join(bytes(f.data) for f in frames).decode() == "abc" * 1000


@st.composite
def fragmented(draw: st.DrawFn) -> tuple:
    is_text = draw(st.booleans())
    data = draw(st.text(max_size=300)).encode() if is_text else draw(st.binary(max_size=300))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    controls = draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    return is_text, data, pieces, controls


@settings(max_examples=200, deadline=None)
@given(st.lists(fragmented(), max_size=5), st.lists(st.integers(0, 4000), max_size=15))
def test_random_fragmentation_and_splits(msgs: list, cuts: list) -> None:
    stream, expected = b"", []
    for is_text, data, pieces, controls in msgs:
        for i, (piece, ctrl) in enumerate(zip(pieces, controls)):
            op = (1 if is_text else 2) if i == 0 else 0
            if ctrl:
                stream += Frame(Opcode.PING, b"c%d" % i).serialize(mask=False)
                expected.append(Ping(b"c%d" % i))
            stream += Frame(Opcode(op), piece, fin=i == len(pieces) - 1).serialize(mask=False)
        expected.append(Message(data.decode() if is_text else data, is_text))
    assert feed_split(client(), stream, cuts) == expected

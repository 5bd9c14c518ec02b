"""RFC 6455 section 8.1 (and RFC 3629): text messages and close reasons must be UTF-8;
validation is incremental and fails fast, even across fragments and feed() calls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsutil import close_payload, failure, raw_frame, server

from nbio.ws._frames import Utf8Validator, validate_utf8
from nbio.ws.protocol import Message

INVALID_UTF8 = [
    ("lone continuation", b"\x80"),
    ("C0 overlong", b"\xc0\xaf"),
    ("C1 overlong", b"\xc1\xbf"),
    ("E0 overlong", b"\xe0\x80\xaf"),
    ("F0 overlong", b"\xf0\x8f\xbf\xbf"),
    ("surrogate D800", b"\xed\xa0\x80"),
    ("surrogate DFFF", b"\xed\xbf\xbf"),
    ("over U+10FFFF", b"\xf4\x90\x80\x80"),
    ("F5 lead", b"\xf5\x80\x80\x80"),
    ("FF", b"\xff"),
    ("FE", b"\xfe"),
    ("truncated 2-byte", b"a\xc3"),
    ("truncated 3-byte", b"\xe2\x82"),
    ("truncated 4-byte", b"\xf0\x9f\x98"),
    ("missing continuation", b"\xc3a"),
    ("valid then invalid", "κόσμε".encode() + b"\xed\xa0\x80edited"),
]

VALID_UTF8 = [
    b"",
    b"ascii only",
    "κόσμε".encode(),
    "\u0080\u07ff\u0800\uffff".encode(),
    "\U00010000\U0010ffff".encode(),
    "\ud7ff\ue000".encode(),
    "😀 emoji".encode(),
]


@pytest.mark.parametrize("name,data", INVALID_UTF8, ids=[c[0] for c in INVALID_UTF8])
def test_invalid_text_fails_1007(name: str, data: bytes) -> None:
    assert not validate_utf8(data)
    assert failure(server().receive_data(raw_frame(1, data))) == 1007
    # Same through the streaming path (frame split over feed() calls).
    p = server()
    frame = raw_frame(1, data + b"x" * 2000)
    events = p.receive_data(frame[:8]) + p.receive_data(frame[8:])
    assert failure(events) == 1007


@pytest.mark.parametrize("data", VALID_UTF8)
def test_valid_text(data: bytes) -> None:
    assert validate_utf8(data)
    assert server().receive_data(raw_frame(1, data)) == [Message(data.decode(), True)]


@pytest.mark.parametrize("name,data", INVALID_UTF8, ids=[c[0] for c in INVALID_UTF8])
def test_invalid_close_reason_fails_1007(name: str, data: bytes) -> None:
    assert failure(server().receive_data(raw_frame(8, close_payload(1000, data)))) == 1007


def test_fails_fast_in_first_fragment() -> None:
    # The invalid byte is in fragment 1: fail before the message is complete.
    events = server().receive_data(raw_frame(1, b"ok\xff", fin=False))
    assert failure(events) == 1007


def test_fails_fast_across_feed_calls_in_one_frame() -> None:
    p = server()
    frame = raw_frame(1, b"a" * 5000 + b"\xed\xa0\x80" + b"b" * 5000)
    assert p.receive_data(frame[:3000]) == []
    assert failure(p.receive_data(frame[3000:5020])) == 1007  # before the frame ends


def test_fails_fast_on_sequence_split_across_fragments() -> None:
    p = server()
    assert p.receive_data(raw_frame(1, b"x\xf0", fin=False)) == []
    assert failure(p.receive_data(raw_frame(0, b"\x8f", fin=False))) == 1007


def test_truncated_sequence_at_message_end() -> None:
    p = server()
    data = raw_frame(1, b"x\xe2\x82", fin=False) + raw_frame(0, b"")
    assert failure(p.receive_data(data)) == 1007


def test_binary_is_not_validated() -> None:
    assert server().receive_data(raw_frame(2, b"\xff\xfe")) == [Message(b"\xff\xfe", False)]


def _python_valid(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=500)
@given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_validator_matches_python(data: bytes) -> None:
    assert validate_utf8(data) == _python_valid(data)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from(
            [
                b"a",
                b"\xc3\xa9",
                b"\xe2\x82\xac",
                b"\xf0\x9f\x98\x80",
                b"\x80",
                b"\xed",
                b"\xa0",
                b"\xf4",
                b"\x90",
                b"\xc0",
            ]
        ),
        max_size=20,
    ),
    st.lists(st.integers(0, 60), max_size=5),
)
def test_incremental_validator_any_split(pieces: list, cuts: list) -> None:
    data = b"".join(pieces)
    v = Utf8Validator()
    ok = True
    prev = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        ok = v.feed(data[prev:cut]) and ok
        prev = cut
    valid = _python_valid(data)
    assert (ok and v.complete) == valid
    if not ok:
        # Fail fast: some prefix is already not a prefix of any valid UTF-8 string.
        assert not valid

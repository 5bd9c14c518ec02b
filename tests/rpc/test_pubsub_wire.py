"""arpc pub/sub topic bodies (extension/pubsub/topic.go toBytes/fromBytes)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbio.errors import ProtocolError
from nbio.rpc import pubsub_wire as ps


def test_routes() -> None:
    assert (ps.ROUTE_AUTHENTICATE, ps.ROUTE_SUBSCRIBE, ps.ROUTE_UNSUBSCRIBE) == (
        "in_A",
        "in_S",
        "in_U",
    )
    assert (ps.ROUTE_PUBLISH, ps.ROUTE_PUBLISH_TO_ONE) == ("in_P", "in_P1")


def test_layout() -> None:
    body = ps.encode_topic("t", b"data", -1)
    assert body == b"data" + b"t" + b"\x01\x00" + b"\xff" * 8
    assert ps.decode_topic(body) == ps.Topic("t", b"data", -1)


def test_subscribe_body_has_no_data() -> None:
    body = ps.encode_topic("news", timestamp=5)
    assert body == b"news\x04\x00" + struct.pack("<q", 5)


def test_default_timestamp_is_now_in_ns() -> None:
    import time

    before = time.time_ns()
    ts = ps.decode_topic(ps.encode_topic("x")).timestamp
    assert before <= ts <= time.time_ns()


@pytest.mark.parametrize(
    "name,err", [("", ps.ERR_INVALID_TOPIC_EMPTY), ("n" * 1025, ps.ERR_INVALID_TOPIC_NAME_LENGTH)]
)
def test_encode_rejects(name: str, err: str) -> None:
    with pytest.raises(ValueError, match=err.replace('"', ".")):
        ps.encode_topic(name)


def test_max_name_length() -> None:
    name = "n" * 1024
    assert ps.decode_topic(ps.encode_topic(name, b"d", 1)).name == name


@pytest.mark.parametrize(
    "body,err",
    [
        (b"", ps.ERR_INVALID_TOPIC_BYTES),
        (b"\x00" * 9, ps.ERR_INVALID_TOPIC_BYTES),
        (b"\x00\x00" + b"\x00" * 8, ps.ERR_INVALID_TOPIC_NAME_LENGTH),  # name length 0
        (b"x" * 1025 + struct.pack("<Hq", 1025, 0), ps.ERR_INVALID_TOPIC_NAME_LENGTH),
        (b"ab" + struct.pack("<Hq", 3, 0), ps.ERR_INVALID_TOPIC_BYTES),  # name longer than body
    ],
)
def test_decode_rejects(body: bytes, err: str) -> None:
    with pytest.raises(ProtocolError) as info:
        ps.decode_topic(body)
    assert str(info.value) == err


@given(
    name=st.text(min_size=1, max_size=50).filter(lambda s: len(s.encode()) <= 1024),
    data=st.binary(max_size=200),
    ts=st.integers(-(2**63), 2**63 - 1),
)
def test_round_trip(name: str, data: bytes, ts: int) -> None:
    assert ps.decode_topic(memoryview(ps.encode_topic(name, data, ts))) == (name, data, ts)

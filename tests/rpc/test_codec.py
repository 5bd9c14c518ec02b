"""Payload codecs and arpc's value -> payload rule (util.ValueToBytes, Context.Bind)."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbio.rpc import codec as c

try:
    import orjson  # noqa: F401

    HAVE_ORJSON = True
except ImportError:  # pragma: no cover
    HAVE_ORJSON = False

JSON_BACKENDS = [False] + ([True] if HAVE_ORJSON else [])

# (value, Go json.Marshal output)
GO_JSON = [
    ({"a": 1, "b": [True, None, "x"]}, b'{"a":1,"b":[true,null,"x"]}'),
    ([], b"[]"),
    ({}, b"{}"),
    ("é漢", '"é漢"'.encode()),
    ("<script>&", b'"\\u003cscript\\u003e\\u0026"'),
    ("a\u2028b\u2029", b'"a\\u2028b\\u2029"'),
    ('q"\\\n', b'"q\\"\\\\\\n"'),
    (-7, b"-7"),
    (2**53, b"9007199254740992"),
    (1.5, b"1.5"),
]


@pytest.mark.parametrize("use_orjson", JSON_BACKENDS)
@pytest.mark.parametrize("value,want", GO_JSON)
def test_json_matches_go_for_common_values(use_orjson: bool, value, want: bytes) -> None:
    codec = c.JsonCodec(use_orjson=use_orjson)
    assert codec.marshal(value) == want
    assert codec.unmarshal(want) == value


@pytest.mark.parametrize("use_orjson", JSON_BACKENDS)
def test_json_options(use_orjson: bool) -> None:
    assert c.JsonCodec(use_orjson=use_orjson, go_escape=False).marshal("<") == b'"<"'
    assert (
        c.JsonCodec(use_orjson=use_orjson, sort_keys=True).marshal({"b": 1, "a": 2})
        == b'{"a":2,"b":1}'
    )
    assert c.JsonCodec(use_orjson=use_orjson).marshal({1: "x"}) == b'{"1":"x"}'  # Go map[int]
    with pytest.raises(ValueError):
        c.JsonCodec(use_orjson=use_orjson).unmarshal(b"{bad")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_json_backends_agree_and_round_trip(value) -> None:
    out = c.JsonCodec(use_orjson=False).marshal(value)
    if HAVE_ORJSON:
        assert c.JsonCodec(use_orjson=True).marshal(value) == out
    assert json.loads(out) == value


def test_msgpack_cross_checked_with_msgpack_library() -> None:
    codec = c.MsgpackCodec()
    value = {"s": "é", "b": b"\x00\xff", "n": [1, -2, 3.5, None, True]}
    out = codec.marshal(value)
    assert out == msgpack.packb(value, use_bin_type=True)
    assert msgpack.unpackb(out, raw=False) == value
    assert codec.unmarshal(out) == value
    assert codec.unmarshal(msgpack.packb({1: 2})) == {1: 2}


def test_raw_codec() -> None:
    codec = c.RawCodec()
    assert codec.marshal(bytearray(b"ab")) == b"ab"
    assert codec.unmarshal(b"ab") == b"ab"
    with pytest.raises(TypeError):
        codec.marshal(1)


def test_codecs_satisfy_the_protocol() -> None:
    for codec in (c.JsonCodec(), c.MsgpackCodec(), c.RawCodec()):
        assert isinstance(codec, c.Codec)


@pytest.mark.parametrize(
    "value,want",
    [
        (None, b""),
        (b"raw", b"raw"),
        (bytearray(b"raw"), b"raw"),
        (memoryview(b"raw"), b"raw"),
        ("txt", b"txt"),
        (RuntimeError("oops"), b"oops"),
        ({"k": "v"}, b'{"k":"v"}'),
    ],
)
def test_value_to_payload(value, want: bytes) -> None:
    assert c.value_to_payload(value) == want


def test_value_to_payload_uses_the_given_codec() -> None:
    assert c.value_to_payload([1], c.MsgpackCodec()) == msgpack.packb([1])
    assert c.value_to_payload("s", c.MsgpackCodec()) == b"s"  # str stays raw whatever the codec


def test_payload_to_value() -> None:
    assert c.payload_to_value(b'{"a":1}') == {"a": 1}
    assert c.payload_to_value(b'{"a":1}', as_type=str) == '{"a":1}'
    assert c.payload_to_value(b"\x00", as_type=bytes) == b"\x00"
    assert c.payload_to_value(b"") is None
    assert c.payload_to_value(msgpack.packb([1]), c.MsgpackCodec()) == [1]

"""Coder middleware: arpc's gzip coder (extension/middleware/coder/gzip/gzip.go).

arpc gzips ``Buffer[5:]`` (everything after the coder byte) with Go's compress/gzip (RFC
1952 gzip, not raw flate), sets bit 7 of byte 4, and sets body length = len(gzip) + 5 - 16.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbio.errors import MessageTooBig, ProtocolError
from nbio.rpc import message as m
from nbio.rpc.coder import Coder, GzipCoder, coder_mask, decode_frame, encode_frame


def go_gzip_stored(data: bytes) -> bytes:
    """A gzip member as Go's gzip.Writer frames it (mtime 0, XFL 0, OS 255 "unknown"),
    with the data in one stored (uncompressed) deflate block: a byte-exact vector
    independent of any deflate implementation."""
    header = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"
    block = b"\x01" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data
    return header + block + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def test_coder_protocol_and_mask() -> None:
    g = GzipCoder()
    assert isinstance(g, Coder)
    assert g.flag == m.CODER_FLAG_GZIP == 0x80
    assert coder_mask([g]) == 0x80


def test_small_frames_are_not_compressed() -> None:
    f = m.request("/echo", 2, b"x" * 1000)  # 1021 bytes <= 1024
    assert GzipCoder().encode(f) == f


def test_incompressible_frames_are_kept() -> None:
    import os

    f = m.request("/r", 1, os.urandom(4000))
    assert GzipCoder(threshold=0).encode(f) == f


def test_encode_layout_and_python_gzip_interop() -> None:
    f = m.request("/echo", 7, b"a" * 5000, is_async=True)
    out = GzipCoder().encode(f)
    assert len(out) < len(f)
    (body_len,) = struct.unpack_from("<I", out)
    assert body_len == len(out) - 16
    assert out[4] == 0x80
    assert out[5:7] == b"\x1f\x8b"  # a gzip member (RFC 1952), as Go's compress/gzip writes
    assert gzip.decompress(out[5:]) == f[5:]  # what Go's gzip.NewReader does
    assert GzipCoder().decode(out) == f


def test_decode_go_framed_stored_member() -> None:
    inner = m.request("/echo", 2, b"hello")
    gz = go_gzip_stored(inner[5:])
    wire = struct.pack("<I", 5 + len(gz) - 16) + b"\x80" + gz
    assert GzipCoder().decode(wire) == inner


def test_decode_go_framed_deflate_member() -> None:
    inner = m.response("/data", 3, b"0123456789" * 300)
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = comp.compress(inner[5:]) + comp.flush()
    gz = (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        + raw
        + struct.pack("<II", zlib.crc32(inner[5:]), len(inner) - 5)
    )
    wire = struct.pack("<I", 5 + len(gz) - 16) + b"\x80" + gz
    assert GzipCoder().decode(wire) == inner


def test_decode_multistream() -> None:
    inner = m.request("/echo", 2, b"hello")
    body = inner[5:]
    gz = go_gzip_stored(body[:7]) + go_gzip_stored(body[7:])
    wire = struct.pack("<I", 5 + len(gz) - 16) + b"\x80" + gz
    assert GzipCoder().decode(wire) == inner


def test_other_coder_bits_are_kept() -> None:
    f = m.encode(m.CMD_REQUEST, "/a", 1, b"z" * 3000, coder_flags=m.CODER_FLAG_TRACER)
    out = GzipCoder().encode(f)
    assert out[4] == 0x81
    assert GzipCoder().decode(out) == f


def test_already_flagged_frames_are_not_compressed_twice() -> None:
    f = GzipCoder().encode(m.request("/a", 1, b"q" * 5000))
    assert GzipCoder(threshold=0).encode(f) == f


@pytest.mark.parametrize(
    "gz,exc",
    [
        (b"not gzip at all", ProtocolError),
        (gzip.compress(m.request("/a", 1, b"x" * 50)[5:])[:-6], ProtocolError),  # truncated
        (gzip.compress(b"short"), ProtocolError),  # inflates to less than a header
        (gzip.compress(m.request("/a", 1)[5:]) + b"garbage!", ProtocolError),
    ],
    ids=["garbage", "truncated", "short", "trailing_garbage"],
)
def test_decode_rejects_bad_data(gz: bytes, exc: type) -> None:
    wire = struct.pack("<I", 5 + len(gz) - 16) + b"\x80" + gz
    with pytest.raises(exc):
        GzipCoder().decode(wire)


def test_decompression_bomb_is_bounded() -> None:
    big = m.request("/a", 1, b"\x00" * 200_000)
    wire = GzipCoder().encode(big)
    with pytest.raises(MessageTooBig):
        GzipCoder(max_body_len=100_000).decode(wire)
    assert GzipCoder(max_body_len=200_002).decode(wire) == big


def test_encode_frame_and_decode_frame_order() -> None:
    class Tag:
        """A toy coder on bit 0 that appends one byte."""

        flag = 0x01

        def encode(self, frame: bytes) -> bytes:
            body = frame + b"!"
            return struct.pack("<I", len(body) - 16) + bytes((frame[4] | 1,)) + body[5:]

        def decode(self, frame: bytes) -> bytes:
            body = frame[:-1]
            return struct.pack("<I", len(body) - 16) + bytes((frame[4] & ~1,)) + body[5:]

    coders = [Tag(), GzipCoder(threshold=0)]
    f = m.request("/a", 1, b"b" * 2000)
    out = encode_frame(f, coders)
    assert out[4] == 0x81
    assert decode_frame(out, coders) == f


def test_reader_decodes_gzip_frames(wire) -> None:
    g = GzipCoder()
    frames = [m.request("/big", 1, b"y" * 4000), m.request("/small", 2, b"s"), m.PING_FRAME]
    data = b"".join(g.encode(f) for f in frames)
    assert data[4] == 0x80
    r = wire.FrameReader(coders=[g])
    got = r.feed(data[:100]) + r.feed(data[100:])
    assert got == [wire.parse_frame(f) for f in frames]


def test_reader_without_the_coder_sees_garbage(wire) -> None:
    out = GzipCoder().encode(m.request("/big", 1, b"y" * 4000))
    with pytest.raises(ProtocolError):  # cmd byte is gzip's 0x1f: arpc closes too
        wire.FrameReader().feed(out)


def test_reader_limit_applies_after_decoding(wire) -> None:
    out = GzipCoder().encode(m.request("/big", 1, b"y" * 4000))
    r = wire.FrameReader(max_body_len=1000, coders=[GzipCoder()])
    with pytest.raises(MessageTooBig):
        r.feed(out)


@settings(max_examples=50, deadline=None)
@given(payload=st.binary(max_size=3000), pad=st.integers(0, 3000))
def test_gzip_round_trip(payload: bytes, pad: int) -> None:
    f = m.request("/p", 9, payload + b"a" * pad)
    g = GzipCoder(threshold=0)
    assert g.decode(g.encode(f)) == f

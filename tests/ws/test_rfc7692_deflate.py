"""RFC 7692 permessage-deflate: negotiation (section 7.1), compression (7.2), limits,
and interoperation with the ``websockets`` implementation."""

from __future__ import annotations

import tracemalloc
import zlib
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.extensions.permessage_deflate import PerMessageDeflate as WSDeflate
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from wsutil import client, failure, feed_split, raw_frame, server

from nbio.ws.deflate import (
    DeflateConfig,
    NegotiationError,
    PerMessageDeflate,
    accept_offer,
    accept_response,
    build_offer,
    compress_message,
)
from nbio.ws.handshake import parse_extensions
from nbio.ws.protocol import BroadcastMessage, Message, encode_broadcast


def params(text: str) -> list:
    ((name, ps),) = parse_extensions([text])
    assert name == "permessage-deflate"
    return ps


# ------------------------------------------------------------------ negotiation: server

SERVER_CASES = [
    # (offer, config kwargs, expected response or None when declined)
    ("permessage-deflate", {}, "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits", {}, "permessage-deflate"),
    (
        "permessage-deflate; client_max_window_bits=10",
        {},
        "permessage-deflate; client_max_window_bits=10",
    ),
    (
        "permessage-deflate; client_max_window_bits",
        {"client_max_window_bits": 11},
        "permessage-deflate; client_max_window_bits=11",
    ),
    (
        "permessage-deflate; client_max_window_bits=10",
        {"client_max_window_bits": 12},
        "permessage-deflate; client_max_window_bits=10",
    ),
    ("permessage-deflate", {"client_max_window_bits": 12}, None),
    (
        "permessage-deflate; server_max_window_bits=12",
        {},
        "permessage-deflate; server_max_window_bits=12",
    ),
    (
        "permessage-deflate; server_max_window_bits=12",
        {"server_max_window_bits": 10},
        "permessage-deflate; server_max_window_bits=10",
    ),
    (
        "permessage-deflate",
        {"server_max_window_bits": 10},
        "permessage-deflate; server_max_window_bits=10",
    ),
    ("permessage-deflate; server_max_window_bits=8", {}, None),
    (
        "permessage-deflate; server_no_context_takeover",
        {},
        "permessage-deflate; server_no_context_takeover",
    ),
    (
        "permessage-deflate",
        {"server_no_context_takeover": True},
        "permessage-deflate; server_no_context_takeover",
    ),
    (
        "permessage-deflate; client_no_context_takeover",
        {},
        "permessage-deflate; client_no_context_takeover",
    ),
    (
        "permessage-deflate",
        {"client_no_context_takeover": True},
        "permessage-deflate; client_no_context_takeover",
    ),
    (
        'permessage-deflate; server_max_window_bits="11"',
        {},
        "permessage-deflate; server_max_window_bits=11",
    ),
    # Invalid offers are declined.
    ("permessage-deflate; server_max_window_bits", {}, None),
    ("permessage-deflate; server_max_window_bits=16", {}, None),
    ("permessage-deflate; server_max_window_bits=7", {}, None),
    ("permessage-deflate; server_max_window_bits=010", {}, None),
    ("permessage-deflate; client_max_window_bits=16", {}, None),
    ("permessage-deflate; server_no_context_takeover=1", {}, None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", {}, None),
    ("permessage-deflate; unknown", {}, None),
]


@pytest.mark.parametrize("offer,config,expected", SERVER_CASES)
def test_server_accept_offer(offer: str, config: dict, expected: Optional[str]) -> None:
    result = accept_offer(params(offer), DeflateConfig(**config))
    if expected is None:
        assert result is None
    else:
        assert result is not None and result[0] == expected


def test_server_state_from_offer() -> None:
    result = accept_offer(
        params(
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=9; "
            "server_max_window_bits=10"
        ),
        DeflateConfig(server_no_context_takeover=True),
    )
    assert result is not None
    pmd = result[1]
    assert pmd.local_no_context_takeover and pmd.remote_no_context_takeover
    assert pmd.local_max_window_bits == 10 and pmd.remote_max_window_bits == 9


# ------------------------------------------------------------------ negotiation: client

CLIENT_BAD = [
    ({}, "permessage-deflate; unknown=1"),
    ({}, "permessage-deflate; client_max_window_bits"),  # a response needs a value
    ({}, "permessage-deflate; client_max_window_bits=8"),  # zlib cannot compress with 8
    ({"client_max_window_bits": 10}, "permessage-deflate; client_max_window_bits=12"),
    ({"server_max_window_bits": 10}, "permessage-deflate"),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=11"),
    ({"server_no_context_takeover": True}, "permessage-deflate"),
    ({}, "permessage-deflate; server_max_window_bits=20"),
    ({}, "permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
]


@pytest.mark.parametrize("config,response", CLIENT_BAD)
def test_client_rejects_bad_responses(config: dict, response: str) -> None:
    with pytest.raises(NegotiationError):
        accept_response(params(response), DeflateConfig(**config))


def test_client_offer_and_state() -> None:
    cfg = DeflateConfig(server_no_context_takeover=True, server_max_window_bits=12)
    assert build_offer(cfg) == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; "
        "client_max_window_bits"
    )
    pmd = accept_response(
        params(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=8; "
            "client_no_context_takeover; client_max_window_bits=9"
        ),
        cfg,
    )
    assert pmd.remote_no_context_takeover and pmd.local_no_context_takeover
    assert pmd.remote_max_window_bits == 8 and pmd.local_max_window_bits == 9
    with pytest.raises(ValueError):
        build_offer(DeflateConfig(client_max_window_bits=8))
    with pytest.raises(ValueError):
        DeflateConfig(server_max_window_bits=16)


@pytest.mark.parametrize(
    "client_kw,server_kw",
    [
        ({}, {}),
        ({"server_no_context_takeover": True}, {}),
        ({"client_no_context_takeover": True, "server_max_window_bits": 11}, {}),
        ({"client_max_window_bits": True}, {"client_max_window_bits": 10}),
        ({}, {"server_no_context_takeover": True, "server_max_window_bits": 12}),
    ],
)
def test_negotiation_against_websockets(client_kw: dict, server_kw: dict) -> None:
    # websockets client offer -> our server -> websockets client accepts our response.
    ws_client = ClientPerMessageDeflateFactory(**client_kw)
    offer = ", ".join(
        "permessage-deflate"
        + "".join(
            f"; {n}" if v is None else f"; {n}={v}" for n, v in ws_client.get_request_params()
        )
        for _ in range(1)
    )
    ours = DeflateConfig(**{k: v for k, v in server_kw.items()})
    result = accept_offer(params(offer), ours)
    assert result is not None
    ws_ext = ws_client.process_response_params(params(result[0]), [])
    _interop(result[1], ws_ext, our_side_is_client=False)

    # Our client offer -> websockets server -> our client accepts its response.
    cfg = DeflateConfig(**{k: v for k, v in client_kw.items() if k != "client_max_window_bits"})
    ws_server = ServerPerMessageDeflateFactory(**{k: v for k, v in server_kw.items()})
    resp_params, ws_ext = ws_server.process_request_params(params(build_offer(cfg)), [])
    pmd = accept_response(resp_params, cfg)
    _interop(pmd, ws_ext, our_side_is_client=True)


def _ws_parse(data: bytes, mask: bool, ext: WSDeflate) -> list:
    reader = StreamReader()
    reader.feed_data(data)
    frames = []
    while reader.buffer:
        gen = Frame.parse(reader.read_exact, mask=mask, extensions=[ext])
        try:
            next(gen)
        except StopIteration as stop:
            frames.append(stop.value)
    return frames


def _interop(pmd: PerMessageDeflate, ws_ext: WSDeflate, our_side_is_client: bool) -> None:
    """Messages flow both ways between our core and websockets' extension."""
    pmd.threshold = 0
    ours = client(deflate=pmd) if our_side_is_client else server(deflate=pmd)
    msgs = ["hello " * 50, b"\x00\x01" * 500, "", "x", "hello " * 50, "ünïcödé" * 30]
    for m in msgs:  # ours -> websockets
        (frame,) = _ws_parse(ours.encode_message(m), mask=our_side_is_client, ext=ws_ext)
        data = bytes(frame.data)
        assert (data.decode() if isinstance(m, str) else data) == m
    for m in msgs:  # websockets -> ours
        raw = m.encode() if isinstance(m, str) else m
        frame = Frame(Opcode.TEXT if isinstance(m, str) else Opcode.BINARY, raw)
        data = frame.serialize(mask=not our_side_is_client, extensions=[ws_ext])
        assert data[0] & 0x40  # compressed by websockets
        assert ours.receive_data(data) == [Message(m, isinstance(m, str))]


# ------------------------------------------------------------------ compression


@pytest.mark.parametrize("takeover", [True, False])
def test_roundtrip_between_our_cores(takeover: bool) -> None:
    c = client(deflate=PerMessageDeflate(not takeover, not takeover, threshold=16))
    s = server(deflate=PerMessageDeflate(not takeover, not takeover, threshold=16))
    for i in range(20):
        text = f"message {i} " * 20
        framed = c.encode_message(text)
        assert framed[0] & 0x40  # RSV1: compressed
        assert s.receive_data(framed) == [Message(text, True)]
        framed = s.encode_message(text.encode(), max_frame_size=40)
        assert c.receive_data(framed) == [Message(text.encode(), False)]
    # Context takeover makes repeated messages smaller.
    sizes = [len(s.encode_message("abcdefghijklmnop" * 8)) for _ in range(2)]
    assert (sizes[1] < sizes[0]) == takeover


def test_threshold_sends_small_messages_uncompressed() -> None:
    s = server(deflate=PerMessageDeflate(threshold=100))
    assert s.encode_message("short") == b"\x81\x05short"
    assert s.encode_message("x" * 100)[0] == 0xC1


def test_trailing_bytes_are_removed_and_restored() -> None:
    pmd = PerMessageDeflate()
    payload = pmd.compress(b"Hello")
    assert not payload.endswith(b"\x00\x00\xff\xff")
    # RFC 7692 section 7.2.3.1 example: "Hello" compressed, no context takeover.
    assert PerMessageDeflate().decompress_message(bytes.fromhex("f248cdc9c90700")) == b"Hello"
    # Section 7.2.3.3: a non-compressed (stored) block.
    assert (
        PerMessageDeflate().decompress_message(bytes.fromhex("0005 00fa ff48656c6c6f00"))
        == b"Hello"
    )


def test_rfc7692_example_frame() -> None:
    # Section 7.2.3.1: unmasked server frame 0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00
    c = client(deflate=PerMessageDeflate())
    assert c.receive_data(bytes.fromhex("c107f248cdc9c90700")) == [Message("Hello", True)]
    # Section 7.2.3.2: the same message split in two fragments.
    c = client(deflate=PerMessageDeflate())
    data = bytes.fromhex("4103f248cd") + bytes.fromhex("8004c9c90700")
    assert c.receive_data(data) == [Message("Hello", True)]


def test_rsv1_only_on_first_fragment() -> None:
    s = server(deflate=PerMessageDeflate())
    data = raw_frame(1, b"\xf2\x48", fin=False, rsv=0b100) + raw_frame(0, b"\xcd", rsv=0b100)
    assert failure(s.receive_data(data)) == 1002


def test_corrupt_compressed_data_fails_1007() -> None:
    s = server(deflate=PerMessageDeflate())
    assert failure(s.receive_data(raw_frame(2, b"\xff\xff\xff\xff", rsv=0b100))) == 1007


def test_compressed_invalid_utf8_fails_1007() -> None:
    s = server(deflate=PerMessageDeflate())
    payload = compress_message(b"ok \xff")
    assert failure(s.receive_data(raw_frame(1, payload, rsv=0b100))) == 1007


def test_zip_bomb_stops_at_the_cap() -> None:
    bomb = compress_message(b"\x00" * (64 << 20))  # 64 MiB of zeros -> ~64 KiB
    assert len(bomb) < 100_000
    s = server(deflate=PerMessageDeflate(), max_size=1 << 20)
    tracemalloc.start()
    try:
        events = s.receive_data(raw_frame(2, bomb, rsv=0b100))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert failure(events) == 1009
    assert peak < 8 << 20  # never inflated beyond ~the cap


def test_zip_bomb_across_fragments_and_feeds() -> None:
    bomb = compress_message(b"\x00" * (8 << 20))
    frames = raw_frame(2, bomb[:100], fin=False, rsv=0b100)
    frames += raw_frame(0, bomb[100:])
    s = server(deflate=PerMessageDeflate(), max_size=1 << 20)
    assert failure(feed_split(s, frames, range(0, len(frames), 4096))) == 1009


def test_decompress_limit_exact_boundary() -> None:
    data = b"a" * 1000
    pmd = PerMessageDeflate()
    assert pmd.decompress_message(pmd.compress(data), max_length=1000) == data
    pmd = PerMessageDeflate()
    from nbio.errors import MessageTooBig

    with pytest.raises(MessageTooBig):
        pmd.decompress_message(PerMessageDeflate().compress(data), max_length=999)


def test_idle_core_with_no_context_takeover_holds_no_zlib_objects() -> None:
    pmd = PerMessageDeflate(True, True)
    s = server(deflate=pmd)
    s.receive_data(raw_frame(1, compress_message(b"hi" * 100), rsv=0b100))
    s.encode_message("hello" * 100)
    assert pmd._dec is None and pmd._enc is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(max_size=2000) | st.text(max_size=500), min_size=1, max_size=6),
    st.booleans(),
    st.lists(st.integers(0, 20000), max_size=10),
)
def test_random_compressed_streams(msgs: list, takeover: bool, cuts: list) -> None:
    c = client(deflate=PerMessageDeflate(not takeover, not takeover, threshold=0))
    s = server(deflate=PerMessageDeflate(not takeover, not takeover, threshold=0))
    stream = b"".join(c.encode_message(m, max_frame_size=300) for m in msgs)
    assert feed_split(s, stream, cuts) == [Message(m, isinstance(m, str)) for m in msgs]


# ------------------------------------------------------------------ broadcast


def test_broadcast_frames_once_and_everyone_decodes() -> None:
    msg = BroadcastMessage("news " * 100)
    plain = [server() for _ in range(3)]
    nctx = [server(deflate=PerMessageDeflate(True, False)) for _ in range(3)]
    ctx = server(deflate=PerMessageDeflate(False, False))
    frames = [msg.frame_for(p) for p in plain + nctx]
    assert len({id(f) for f in frames[:3]}) == 1 and len({id(f) for f in frames[3:]}) == 1
    assert frames[3][0] == 0xC1 and len(frames[3]) < len(frames[0])
    # Each peer (client side) decodes its frame.
    assert client().receive_data(frames[0]) == [Message("news " * 100, True)]
    peer = client(deflate=PerMessageDeflate(False, True))
    assert peer.receive_data(frames[3]) == [Message("news " * 100, True)]
    # With context takeover the connection's own compressor frames it.
    ctx_peer = client(deflate=PerMessageDeflate(False, False))
    for _ in range(2):
        assert ctx_peer.receive_data(msg.frame_for(ctx)) == [Message("news " * 100, True)]
    assert encode_broadcast(b"x" * 500, compress=True)[0] == 0xC2
    assert zlib  # shared compressor uses zlib.Z_FULL_FLUSH

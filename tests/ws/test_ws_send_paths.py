"""The fast paths of sending and receiving, checked against slow references.

- ``send`` takes a C path on the native engine (stack-built header, one write) and the
  general ``encode_message`` path elsewhere or when fragmenting: every kind of payload
  gives the same frames on both, read by the ``websockets`` client and byte by byte.
- Unmasking runs 8 or 64 (AVX2) bytes per round: compared with a per-byte reference at
  sizes around every block boundary and at any split of the input.
- Binary messages of 513 B-64 KiB reuse one spare bytes object when the callback let go
  of the previous one: kept messages never change and hashes are never stale.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Dict, List, Optional, Tuple

import pytest
import websockets
from ws_helpers import listen, make_engine, raw_connect, read_frame, upgrade_request
from wsutil import mask_py, raw_frame

from nbio.ws import WebSocketUpgrader
from nbio.ws._frames import apply_mask
from nbio.ws._protocol import Handler, WebSocketCore
from nbio.ws.protocol import OP_BINARY, OP_CONT, OP_TEXT


class Text(str):
    """A str subclass: sent as text like any str."""


BLOB = bytes(random.Random(7).getrandbits(8) for _ in range(70_000))

# command -> (what the server sends, (payload the client must get, is_text))
PAYLOADS: Dict[str, Tuple[Any, Tuple[Any, bool]]] = {
    "str-subclass": (Text("héllo"), ("héllo", True)),
    "empty-str": ("", ("", True)),
    "empty-bytes": (b"", (b"", False)),
    "bytearray": (bytearray(BLOB[:300]), (BLOB[:300], False)),
    "memoryview": (memoryview(BLOB)[2:1002], (BLOB[2:1002], False)),
    "125": (BLOB[:125], (BLOB[:125], False)),
    "126": (BLOB[:126], (BLOB[:126], False)),
    "300": (BLOB[:300], (BLOB[:300], False)),
    "4096": (BLOB[:4096], (BLOB[:4096], False)),
    "4097": (BLOB[:4097], (BLOB[:4097], False)),
    "65535": (BLOB[:65535], (BLOB[:65535], False)),
    "65536": (BLOB[:65536], (BLOB[:65536], False)),
    "70000": (BLOB, (BLOB, False)),
    "text-5000": ("ü" * 2500, ("ü" * 2500, True)),
}


class Sender:
    """Callback handler: each text message names a payload to send back; ``bad:...``
    sends something that is not a message and answers with the error's type name."""

    def __init__(self) -> None:
        self.errors: List[BaseException] = []

    def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
        if data == "bad:int":
            bad: Any = 42
        elif data == "bad:strided":
            bad = memoryview(b"abcdef")[::2]
        else:
            ws.send(PAYLOADS[data][0])
            return
        try:
            ws.send(bad)
        except Exception as exc:  # what send raises is what the test checks
            self.errors.append(exc)
            ws.send(type(exc).__name__)


@pytest.mark.parametrize("max_frame_size", [0, 1000])
async def test_every_payload_kind_arrives_intact(engine: str, max_frame_size: int) -> None:
    eng = make_engine(engine)
    sender = Sender()
    host, port = listen(
        eng, WebSocketUpgrader(sender, compression=None, max_frame_size=max_frame_size)
    )
    async with websockets.connect(f"ws://{host}:{port}/", max_size=None) as client:
        for command, (_, (payload, is_text)) in PAYLOADS.items():
            await client.send(command)
            got = await client.recv()
            assert got == payload, command
            assert isinstance(got, str) is is_text, command
        await client.send("bad:int")
        assert await client.recv() == "TypeError"
        await client.send("bad:strided")
        assert await client.recv() == "BufferError"
        await client.send("70000")  # still open and sending after the errors
        assert await client.recv() == BLOB
    assert [type(e) for e in sender.errors] == [TypeError, BufferError]
    await eng.close()


@pytest.mark.parametrize(
    "command, max_frame_size, expected",
    [
        ("4097", 0, [(OP_BINARY, 0, 4097, True)]),
        ("70000", 0, [(OP_BINARY, 0, 70000, True)]),
        ("empty-bytes", 0, [(OP_BINARY, 0, 0, True)]),
        ("empty-str", 0, [(OP_TEXT, 0, 0, True)]),
        ("300", 1000, [(OP_BINARY, 0, 300, True)]),
        (
            "bytearray",
            100,
            [(OP_BINARY, 0, 100, False), (OP_CONT, 100, 200, False), (OP_CONT, 200, 300, True)],
        ),
        ("memoryview", 600, [(OP_BINARY, 0, 600, False), (OP_CONT, 600, 1000, True)]),
        ("4097", 4096, [(OP_BINARY, 0, 4096, False), (OP_CONT, 4096, 4097, True)]),
    ],
)
async def test_frames_on_the_wire(
    engine: str, command: str, max_frame_size: int, expected: List[Tuple[int, int, int, bool]]
) -> None:
    """Opcode, FIN and payload of each frame, read byte by byte (RFC 6455 5.2, 5.4)."""
    eng = make_engine(engine)
    host, port = listen(
        eng, WebSocketUpgrader(Sender(), compression=None, max_frame_size=max_frame_size)
    )
    reader, writer, head = await raw_connect(host, port, upgrade_request())
    assert head.startswith(b"HTTP/1.1 101 ")
    writer.write(raw_frame(OP_TEXT, command.encode()))
    payload = PAYLOADS[command][1][0]
    raw = payload.encode() if isinstance(payload, str) else payload
    for opcode, start, end, fin in expected:
        frame = await asyncio.wait_for(read_frame(reader), 5)
        assert frame == (opcode, raw[start:end], fin, False)
    writer.close()
    await writer.wait_closed()
    await eng.close()


# ------------------------------------------------------------------ unmasking

# one below, at and above each boundary of the 8-, 32- and 64-byte loops and the frame
# length forms
BOUNDARIES = (4, 8, 32, 64, 128, 256, 320, 384, 512, 1024, 4096, 65536)
SIZES = sorted({0, 300, 1000, 70001} | {b + d for b in BOUNDARIES for d in (-1, 0, 1)})


@pytest.mark.parametrize("size", SIZES)
def test_apply_mask_matches_the_reference_at_block_boundaries(size: int) -> None:
    rnd = random.Random(size)
    data = rnd.randbytes(size)
    key = rnd.randbytes(4)
    assert apply_mask(data, key) == mask_py(data, key)
    # an unaligned source: the vector loops must not assume alignment
    assert apply_mask(memoryview(b"\0" + data)[1:], key) == mask_py(data, key)


class Keeper(Handler):
    """Records each message (a copy and the hash seen in the callback); keeps the
    delivered object itself only when ``keep`` says so."""

    def __init__(self, keep: Optional[Any] = None) -> None:
        self.keep = keep or (lambda i: False)
        self.copies: List[Any] = []
        self.hashes: List[int] = []
        self.kept: Dict[int, Any] = {}
        self.ids: List[int] = []

    def on_message(self, conn: Any, data: Any, is_text: bool) -> None:
        i = len(self.copies)
        # bytes(data) would be data itself: a bytearray is a real copy
        self.copies.append(data if is_text else bytearray(data))
        self.hashes.append(hash(data))  # caches the hash in the object
        self.ids.append(id(data))
        if self.keep(i):
            self.kept[i] = data


def feed_cut(
    core: WebSocketCore, data: bytes, handler: Handler, rnd: random.Random, pieces: int
) -> None:
    cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(pieces))
    prev = 0
    for cut in [*cuts, len(data)]:
        core.feed(memoryview(data)[prev:cut], handler)
        prev = cut


@pytest.mark.parametrize("pieces", [0, 1, 7])
def test_unmasking_at_any_size_and_split(pieces: int) -> None:
    rnd = random.Random(pieces)
    messages = [(rnd.randbytes(n), rnd.randbytes(4)) for n in SIZES]
    stream = b"".join(raw_frame(OP_BINARY, m, mask=k) for m, k in messages)
    handler = Keeper()
    feed_cut(WebSocketCore(max_size=0), stream, handler, rnd, pieces)
    assert handler.copies == [m for m, _ in messages]


def test_masked_text_at_any_size() -> None:
    rnd = random.Random(3)
    texts = ["é" * (n // 2) + "x" * (n % 2) for n in SIZES]
    stream = b"".join(raw_frame(OP_TEXT, t.encode(), mask=rnd.randbytes(4)) for t in texts)
    handler = Keeper()
    WebSocketCore(max_size=0).feed(stream, handler)
    assert handler.copies == texts


# ------------------------------------------------------------------ spare payload buffer

SPARE_SIZES = [513, 1024, 600, 65536, 700, 513, 4000, 65537, 3000, 100, 2000, 1999, 1024]


def _binary_stream(seed: int) -> List[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(n) for n in SPARE_SIZES * 3]


def test_released_payloads_are_reused_with_fresh_content_and_hash() -> None:
    messages = _binary_stream(1)
    handler = Keeper()
    core = WebSocketCore(max_size=0)
    for m in messages:
        core.feed(raw_frame(OP_BINARY, m), handler)
    assert handler.copies == messages
    assert handler.hashes == [hash(m) for m in messages]
    # the spare really was lent out (else this test proves nothing about it)
    assert len(set(handler.ids)) < len(messages)


def test_kept_payloads_are_never_reused() -> None:
    messages = _binary_stream(2)
    handler = Keeper(keep=lambda i: i % 3 == 0)
    core = WebSocketCore(max_size=0)
    for m in messages:
        core.feed(raw_frame(OP_BINARY, m), handler)
    assert all(handler.kept[i] == messages[i] for i in handler.kept)
    assert all(hash(handler.kept[i]) == hash(messages[i]) for i in handler.kept)
    assert handler.copies == messages
    for i, data in handler.kept.items():
        assert id(data) not in handler.ids[i + 1 :]


def test_a_payload_shared_between_connections_is_not_reused() -> None:
    """Two cores share the module-wide spare: a message one callback keeps (here in a
    dict, as a key) stays intact while the other core keeps receiving."""
    rnd = random.Random(5)
    first = rnd.randbytes(2048)
    store: Dict[bytes, int] = {}

    class Store(Handler):
        def on_message(self, conn: Any, data: Any, is_text: bool) -> None:
            store[data] = len(data)

    WebSocketCore().feed(raw_frame(OP_BINARY, first), Store())
    other = Keeper()
    later = [rnd.randbytes(n) for n in (2048, 1024, 600)]
    core = WebSocketCore()
    for m in later:
        core.feed(raw_frame(OP_BINARY, m), other)
    assert other.copies == later
    assert list(store) == [first] and store[first] == 2048 and first in store

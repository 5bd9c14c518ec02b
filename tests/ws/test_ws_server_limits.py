"""Server limits and bad input: message size, zip bomb, invalid UTF-8, protocol errors,
write buffer, and bad opening handshakes (RFC 6455 section 4.2.2). Each on every
backend x loop; a misbehaving peer never disturbs another connection."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
import websockets
from ws_helpers import Events, listen, make_engine, raw_connect, read_frame, upgrade_request
from wsutil import close_payload, raw_frame

from nbio.ws import WebSocketUpgrader
from nbio.ws.protocol import OP_BINARY, OP_CLOSE, OP_TEXT

DEFLATE_EXT = "Sec-WebSocket-Extensions: permessage-deflate\r\n"


async def expect_close(reader: Any, code: int) -> bytes:
    opcode, payload, _, _ = await read_frame(reader)
    assert opcode == OP_CLOSE, (opcode, payload)
    assert struct.unpack("!H", payload[:2])[0] == code, payload
    assert await reader.read() == b""  # then the TCP connection is closed
    return payload[2:]


async def test_message_over_max_size_closes_1009(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, max_size=1000))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.write(raw_frame(OP_BINARY, b"x" * 1000))
    assert await read_frame(reader) == (OP_BINARY, b"x" * 1000, True, False)
    # fragmented: each frame fits, the message does not
    writer.write(raw_frame(OP_TEXT, b"y" * 600, fin=False) + raw_frame(0, b"y" * 600))
    reason = await expect_close(reader, 1009)
    assert b"too big" in reason
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed[0][0] == 1009
    writer.close()
    await eng.close()


async def test_zip_bomb_is_cut_off_at_max_size(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, max_size=64 * 1024))
    reader, writer, head = await raw_connect(host, port, upgrade_request(extra=DEFLATE_EXT))
    assert b"permessage-deflate" in head
    enc = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = enc.compress(b"\0" * (64 << 20)) + enc.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 100_000
    writer.write(raw_frame(OP_BINARY, bomb[:-4], rsv=0b100))
    await expect_close(reader, 1009)
    await ev.wait_for(lambda: ev.closed)
    assert ev.messages == []
    writer.close()
    await eng.close()


@pytest.mark.parametrize(
    "frames",
    [
        raw_frame(OP_TEXT, b"caf\xc3"),  # truncated sequence at the end
        raw_frame(OP_TEXT, b"ok", fin=False) + raw_frame(0, b"\xed\xa0\x80"),  # surrogate
        raw_frame(OP_CLOSE, close_payload(1000, b"\xff")),  # bad reason
    ],
    ids=["truncated", "surrogate-in-continuation", "close-reason"],
)
async def test_invalid_utf8_closes_1007(backend: str, frames: bytes) -> None:
    eng = make_engine(backend)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.write(frames)
    await expect_close(reader, 1007)
    await ev.wait_for(lambda: ev.closed)
    assert ev.closed[0][0] == 1007 and ev.messages == []
    writer.close()
    await eng.close()


@pytest.mark.parametrize(
    "frame",
    [
        raw_frame(OP_TEXT, b"unmasked", mask=None),
        raw_frame(3, b"reserved opcode"),
        raw_frame(OP_TEXT, b"rsv2", rsv=0b010),
        raw_frame(OP_TEXT, b"rsv1 without deflate", rsv=0b100),
        raw_frame(0, b"orphan continuation"),
    ],
    ids=["unmasked", "opcode", "rsv2", "rsv1", "continuation"],
)
async def test_protocol_errors_close_1002(backend: str, frame: bytes) -> None:
    eng = make_engine(backend)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, compression=None))
    reader, writer, _ = await raw_connect(host, port, upgrade_request())
    writer.write(frame)
    await expect_close(reader, 1002)
    writer.close()
    await eng.close()


async def test_bad_peer_does_not_disturb_others(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev, max_size=100))
    async with websockets.connect(f"ws://{host}:{port}/") as good:
        reader, writer, _ = await raw_connect(host, port, upgrade_request())
        writer.write(raw_frame(OP_BINARY, b"z" * 101))
        await expect_close(reader, 1009)
        await good.send("still fine")
        assert await good.recv() == "still fine"
        writer.close()
    await eng.close()


async def test_peer_that_does_not_read_is_dropped_at_max_write_buffer(engine: str) -> None:
    eng = make_engine(engine)
    ev = Events(echo=False)
    host, port = listen(eng, WebSocketUpgrader(ev, max_write_buffer=256 * 1024, compression=None))
    _reader, writer, _ = await raw_connect(host, port, upgrade_request())
    await ev.wait_for(lambda: ev.opened)
    ws = ev.opened[0]
    chunk = b"q" * 65536
    for _ in range(1000):  # 64 MiB: the kernel buffers fill, then the queue overflows
        if not ws.open:
            break
        ws.send(chunk)
    await ev.wait_for(lambda: ev.closed)
    code, reason = ev.closed[0]
    assert code == 1008 and "write buffer overflow" in reason
    assert ws.closed
    writer.close()
    await eng.close()


BAD_HANDSHAKES = [
    # (request, expected status, header that must be in the answer)
    (upgrade_request(version="8"), 426, b"Sec-WebSocket-Version: 13"),
    (upgrade_request().replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b""), 400, b""),
    (upgrade_request(key="c2hvcnQ="), 400, b""),
    (upgrade_request().replace(b"GET", b"POST"), 405, b"Allow: GET"),
]


@pytest.mark.parametrize(
    "request_bytes,status,header",
    BAD_HANDSHAKES,
    ids=["wrong-version", "missing-key", "short-key", "post"],
)
async def test_bad_handshake_gets_an_error_response(
    backend: str, request_bytes: bytes, status: int, header: bytes
) -> None:
    eng = make_engine(backend)
    ev = Events()
    host, port = listen(eng, WebSocketUpgrader(ev))
    reader, writer, head = await raw_connect(host, port, request_bytes)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert header in head
    await reader.read()  # the server closes
    assert ev.opened == []
    writer.close()
    await eng.close()


async def test_origin_check_hook(backend: str) -> None:
    eng = make_engine(backend)
    ev = Events()
    allowed = WebSocketUpgrader(ev, origins=lambda origin: origin == "https://ok.example")
    host, port = listen(eng, allowed)
    _, writer, head = await raw_connect(
        host, port, upgrade_request(extra="Origin: https://evil.example\r\n")
    )
    assert head.startswith(b"HTTP/1.1 403 ")
    writer.close()
    _, writer, head = await raw_connect(
        host, port, upgrade_request(extra="Origin: https://ok.example\r\n")
    )
    assert head.startswith(b"HTTP/1.1 101 ")
    writer.close()
    host, port = listen(eng, WebSocketUpgrader(ev, origins=["https://a.example"]))
    _, writer, head = await raw_connect(host, port, upgrade_request())
    assert head.startswith(b"HTTP/1.1 403 ")  # no Origin at all
    writer.close()
    await eng.close()


async def test_subprotocols_and_extra_headers(backend: str) -> None:
    eng = make_engine(backend)
    ev = Events()
    up = WebSocketUpgrader(
        ev, subprotocols=["v2", "v1"], extra_headers=[("X-Server", "nbio")], compression=None
    )
    host, port = listen(eng, up)
    _, writer, head = await raw_connect(
        host, port, upgrade_request(extra="Sec-WebSocket-Protocol: v1, v2\r\n")
    )
    assert b"Sec-WebSocket-Protocol: v2\r\n" in head and b"X-Server: nbio\r\n" in head
    assert b"Sec-WebSocket-Extensions" not in head
    await ev.wait_for(lambda: ev.opened)
    assert ev.opened[0].subprotocol == "v2"
    writer.close()
    await eng.close()

"""HTTP/2 abuse limits: rapid reset (CVE-2023-44487) and CONTINUATION floods close only the
offending connection (GOAWAY), while another connection keeps being served."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.errors
import h2.events
import pytest
from _h2_server_support import BACKENDS, H2Client, h2_serving
from hyperframe.frame import ContinuationFrame, HeadersFrame

from nbio.http.server import HttpRequest, Response

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def slow(req: HttpRequest) -> Any:
    if req.path == b"/slow":
        await asyncio.sleep(5)
    return Response(b"ok")


async def test_rapid_reset_closes_the_connection(backend: str) -> None:
    async with h2_serving(slow, backend, h2_max_resets=50) as (_server, addr):
        bystander = await H2Client.connect(addr)
        attacker = await H2Client.connect(addr)
        for _ in range(200):  # open a stream and cancel it at once, as fast as possible
            sid = attacker.request("/slow")
            attacker.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        attacker.flush()
        ev = await attacker.until(h2.events.ConnectionTerminated)
        assert ev is not None and ev.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        while await attacker.pump():  # then the server closes it
            pass
        assert attacker.closed
        # the other connection is still served
        assert (await bystander.response(bystander.request("/")))[1] == b"ok"
        assert not any(t for t in asyncio.all_tasks() if "slow" in repr(t.get_coro()))
        await attacker.close()
        await bystander.close()


async def test_resets_below_the_limit_are_fine(backend: str) -> None:
    async with h2_serving(slow, backend, h2_max_resets=50) as (_server, addr):
        c = await H2Client.connect(addr)
        for _ in range(20):
            sid = c.request("/slow")
            c.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        assert (await c.response(c.request("/")))[1] == b"ok"
        await c.close()


async def test_continuation_flood_closes_the_connection(backend: str) -> None:
    async with h2_serving(slow, backend) as (_server, addr):
        bystander = await H2Client.connect(addr)
        r, w = await asyncio.open_connection(*addr)
        w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        block = bystander.h2.encoder.encode([(":method", "GET"), (":path", "/"),
                                             (":scheme", "http"), (":authority", "x")])
        head = HeadersFrame(1)
        head.data = block  # no END_HEADERS: CONTINUATION frames must follow
        w.write(head.serialize())
        sent = 0
        closed = False
        for _ in range(10000):  # endless CONTINUATION frames (empty and 16 KiB ones)
            cont = ContinuationFrame(1)
            cont.data = b"" if sent % 2 else b"a" * 16000
            try:
                w.write(cont.serialize())
                await w.drain()
            except (ConnectionError, OSError):
                closed = True
                break
            sent += 1
            if r.at_eof():
                closed = True
                break
            await asyncio.sleep(0)
        data = b""
        try:
            while True:
                chunk = await asyncio.wait_for(r.read(65536), 10)
                if not chunk:
                    break
                data += chunk
        except ConnectionError:
            pass
        closed = True
        assert closed and sent < 1000  # bounded: cut off after a few frames
        if data:  # (a reset may discard it: the server closes with our frames unread)
            assert b"\x07\x00\x00\x00\x00\x00" in data  # a GOAWAY frame header
        w.close()
        assert (await bystander.response(bystander.request("/")))[1] == b"ok"
        await bystander.close()

"""Streams in both directions, per arpc's stream frames (cmd 6, 0x80 creator, 0x40 EOF)."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from tests.rpc._support import BACKENDS, client_for, open_raw, serving

from nbio.errors import ConnectionLost
from nbio.rpc import Router, Stream
from nbio.rpc.client import FIRST_SEQ
from nbio.rpc.message import CMD_STREAM, STREAM_EOF, STREAM_LOCAL, encode

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def sum_router() -> Router:
    r = Router()

    @r.handle_stream("/sum")
    async def summer(stream: Stream) -> None:
        total = 0
        async for n in stream:
            total += n
            await stream.send({"running": total})
        await stream.send_and_close({"total": total})

    return r


async def test_client_opened_stream(backend: str) -> None:
    async with serving(backend, sum_router()) as (_server, engine, addr):
        c = await client_for(engine, addr)
        st = c.stream("/sum")
        for n in (1, 2, 3):
            await st.send(n)
            assert await st.recv() == {"running": sum(range(1, n + 1))}
        await st.close_send()
        assert await st.recv() == {"total": 6}
        with pytest.raises(EOFError):
            await st.recv()
        assert c._lstreams == {}  # both halves closed: forgotten
        await c.close()


async def test_server_opened_stream_to_client(backend: str) -> None:
    cr = Router()
    got: List[Any] = []

    @cr.handle_stream("/feed")
    async def feed(stream: Stream) -> None:
        async for item in stream:
            got.append(item)
        await stream.send("thanks")

    async with serving(backend, Router()) as (server, engine, addr):
        c = await client_for(engine, addr, router=cr)
        (peer,) = server.clients
        st = peer.stream("/feed")
        for i in range(5):
            await st.send([i])
        await st.close_send()
        assert await st.recv(as_type=str) == "thanks"
        with pytest.raises(EOFError):
            await st.recv()
        assert got == [[0], [1], [2], [3], [4]]
        await c.close()


async def test_stream_frames_on_the_wire(backend: str) -> None:
    r = Router()

    @r.handle_stream("/up")
    async def up(stream: Stream) -> None:
        async for text in stream:
            await stream.send(text.upper())

    r_stream_as_text = r.stream_handler("/up")
    assert r_stream_as_text is not None
    async with serving(backend, r) as (server, _engine, addr):
        raw = await open_raw(addr)
        # the raw peer creates stream 9: its frames carry 0x80
        raw.send(encode(CMD_STREAM | STREAM_LOCAL, "/up", 9, b'"ab"'))
        msg = await raw.read()
        assert (msg.cmd_byte, msg.seq, msg.method, msg.payload) == (CMD_STREAM, 9, "/up", b"AB")
        raw.send(encode(CMD_STREAM | STREAM_LOCAL | STREAM_EOF, "/up", 9, b""))
        # the handler returns: its side is closed with an empty EOF frame
        msg = await raw.read()
        assert (msg.cmd_byte, msg.seq, msg.payload) == (CMD_STREAM | STREAM_EOF, 9, b"")
        # the server opens a stream to the raw peer: id from its seq counter, 0x80 set
        (peer,) = server.clients
        st = peer.stream("/down")
        await st.send("x")
        msg = await raw.read()
        assert (msg.cmd_byte, msg.seq, msg.payload) == (CMD_STREAM | STREAM_LOCAL, FIRST_SEQ, b"x")
        raw.send(encode(CMD_STREAM | STREAM_EOF, "/down", FIRST_SEQ, b'"bye"'))
        assert await st.recv(as_type=str) == '"bye"'
        with pytest.raises(EOFError):
            await st.recv()
        await raw.close()


async def test_stream_connection_lost(backend: str) -> None:
    r = Router()
    opened = asyncio.Event()

    @r.handle_stream("/hold")
    async def hold(stream: Stream) -> None:
        opened.set()
        await stream.recv()
        await asyncio.Event().wait()

    async with serving(backend, r) as (server, engine, addr):
        c = await client_for(engine, addr)
        st = c.stream("/hold")
        await st.send(1)
        await opened.wait()
        reader = asyncio.ensure_future(st.recv())
        await asyncio.sleep(0)
        server.clients[0].close()
        with pytest.raises(ConnectionLost):
            await reader
        with pytest.raises(ConnectionLost):
            await st.send(2)
        await c.close()


async def test_many_streams_interleaved(backend: str) -> None:
    async with serving(backend, sum_router()) as (_server, engine, addr):
        c = await client_for(engine, addr)

        async def one(k: int) -> Any:
            st = c.stream("/sum")
            for n in range(k):
                await st.send(n)
                await st.recv()
            await st.close_send()
            return await st.recv()

        results = await asyncio.gather(*(one(k) for k in range(1, 30)))
        assert results == [{"total": sum(range(k))} for k in range(1, 30)]
        await c.close()


async def test_send_after_close_send_is_refused(backend: str) -> None:
    async with serving(backend, sum_router()) as (_server, engine, addr):
        c = await client_for(engine, addr)
        st = c.stream("/sum")
        await st.close_send()
        with pytest.raises(RuntimeError):
            await st.send(1)
        assert await st.recv() == {"total": 0}
        await c.close()

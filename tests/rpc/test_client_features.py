"""Codecs and coders per server/client, auto-reconnect, client pool, synchronous client."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from tests.rpc._support import BACKENDS, client_for, open_raw, serving

from nbio.errors import ConnectionLost, NotConnected
from nbio.rpc import (
    Client,
    ClientPool,
    GzipCoder,
    MsgpackCodec,
    Router,
    Server,
    SyncClient,
)
from nbio.rpc.message import CMD_REQUEST, CODER_FLAG_GZIP, encode, parse_frame

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def echo_router() -> Router:
    r = Router()
    r.handle("/echo", lambda ctx: ctx.bind())
    r.handle("/echo_raw", lambda ctx: ctx.bind(bytes))
    return r


# -- codecs and coders ---------------------------------------------------------------------------


async def test_msgpack_codec(backend: str) -> None:
    async with serving(backend, echo_router(), codec=MsgpackCodec()) as (_server, engine, addr):
        c = await client_for(engine, addr, codec=MsgpackCodec())
        value = {"b": b"\x00\x01", "n": [1, 2.5, None], "s": "é"}
        assert await c.call("/echo", value) == value
        # msgpack on the wire
        raw = await open_raw(addr)
        import msgpack

        raw.send(encode(CMD_REQUEST, "/echo", 2, msgpack.packb([1, "x"])))
        msg = await raw.read()
        assert msgpack.unpackb(msg.payload) == [1, "x"]
        await raw.close()
        await c.close()


async def test_gzip_coder_both_ways(backend: str) -> None:
    big = "x" * 5000
    async with serving(backend, echo_router(), coders=[GzipCoder()]) as (_server, engine, addr):
        c = await client_for(engine, addr, coders=[GzipCoder()])
        assert await c.call("/echo", {"big": big}) == {"big": big}
        assert await c.call("/echo", {"small": 1}) == {"small": 1}
        # a raw peer: the big answer arrives compressed (bit 7), decodable by GzipCoder
        raw = await open_raw(addr)
        raw.send(encode(CMD_REQUEST, "/echo_raw", 2, big.encode()))
        wire = await raw.read_raw()
        assert wire[4] & CODER_FLAG_GZIP
        assert len(wire) < 200
        msg = parse_frame(GzipCoder().decode(wire))
        assert msg.payload == big.encode()
        # and it accepts compressed requests
        raw.send(GzipCoder().encode(encode(CMD_REQUEST, "/echo_raw", 3, big.encode())))
        msg = parse_frame(GzipCoder().decode(await raw.read_raw()))
        assert (msg.seq, msg.payload) == (3, big.encode())
        await raw.close()
        await c.close()


# -- reconnect ---------------------------------------------------------------------------------


async def test_reconnect_after_server_drops_connection(backend: str) -> None:
    async with serving(backend, echo_router()) as (server, engine, addr):
        reconnected = asyncio.Event()
        lost = asyncio.Event()
        r = Router()
        r.on_disconnect(lambda c: lost.set())
        c = await client_for(
            engine,
            addr,
            router=r,
            reconnect=True,
            reconnect_interval=0.01,
            on_reconnect=lambda c: reconnected.set(),
        )
        assert await c.call("/echo", 1) == 1
        server.clients[0].close()
        await lost.wait()
        # between attempts calls fail fast with a typed error
        assert c.reconnecting
        with pytest.raises(NotConnected, match="reconnecting"):
            await c.call("/echo", 2)
        with pytest.raises(NotConnected):
            c.notify("/echo", 2)
        assert isinstance(NotConnected("x"), ConnectionLost)
        await reconnected.wait()
        assert c.reconnects == 1
        assert await c.call("/echo", 3) == 3
        await c.close()
        with pytest.raises(NotConnected, match="closed"):
            await c.call("/echo", 4)


async def test_reconnect_gives_up_after_max_attempts(backend: str) -> None:
    from nbio.engine import Engine

    engine = Engine(backend=backend)
    server = Server(echo_router(), engine=engine)
    host, port = await server.listen()
    lost = asyncio.Event()
    r = Router()
    r.on_disconnect(lambda c: lost.set())
    c = await Client(
        host,
        port,
        engine=engine,
        router=r,
        reconnect=True,
        reconnect_interval=0.01,
        reconnect_max_attempts=3,
    ).connect()
    await server.close()  # listener gone: every attempt is refused
    await lost.wait()
    task = c._reconnect_task
    assert task is not None
    await task
    assert not c.connected and not c.reconnecting
    with pytest.raises(NotConnected, match="not connected"):
        await c.call("/echo", 1)
    await c.close()
    await engine.close()


async def test_reconnect_to_restarted_server(backend: str) -> None:
    from nbio.engine import Engine

    engine = Engine(backend=backend)
    server = Server(echo_router(), engine=engine)
    host, port = await server.listen()
    reconnected = asyncio.Event()
    c = await Client(
        host,
        port,
        engine=engine,
        reconnect=True,
        reconnect_interval=0.02,
        on_reconnect=lambda c: reconnected.set(),
    ).connect()
    await server.close()
    server2 = Server(echo_router(), engine=engine)
    await server2.listen(host, port)
    await reconnected.wait()
    assert await c.call("/echo_raw", "back", as_type=str) == "back"
    await c.close()
    await server2.close()
    await engine.close()


# -- pool --------------------------------------------------------------------------------------


async def test_pool_round_robin_over_healthy_clients(backend: str) -> None:
    r = Router()
    r.handle("/who", lambda ctx: ctx.client.get("id"))
    ids = iter(range(100))
    r.on_connect(lambda peer: peer.set("id", next(ids)))
    async with serving(backend, r) as (server, engine, addr):
        pool = await ClientPool.connect(3, addr[0], addr[1], engine=engine)
        got = [await pool.call("/who") for _ in range(6)]
        assert sorted(got[:3]) == [0, 1, 2] and got[3:] == got[:3]
        # one client goes down: the pool skips it
        lost = asyncio.Event()
        victim = pool.clients[1]
        victim.router.on_disconnect(lambda c: lost.set())
        for peer in server.clients:
            if peer.get("id") == got[1]:
                peer.close()
        await lost.wait()
        assert len(pool.healthy) == 2
        got2 = {await pool.call("/who") for _ in range(4)}
        assert got2 == {got[0], got[2]}
        await pool.close()
        with pytest.raises(NotConnected):
            pool.next()


# -- synchronous client ------------------------------------------------------------------------


async def test_sync_client(backend: str) -> None:
    r = echo_router()
    async with serving(backend, r) as (_server, _engine, addr):
        loop = asyncio.get_running_loop()

        def blocking_code() -> List[Any]:
            out: List[Any] = []
            with SyncClient(addr[0], addr[1]) as sc:
                out.append(sc.call("/echo", {"a": 1}))
                out.append(sc.call("/echo_raw", "raw", as_type=str))
                try:
                    sc.call("/missing")
                except Exception as exc:
                    out.append(type(exc).__name__)
                sc.notify("/echo", 1)
            return out

        assert await loop.run_in_executor(None, blocking_code) == [{"a": 1}, "raw", "RpcError"]


async def test_sync_client_connect_refused(backend: str, free_port: int) -> None:
    loop = asyncio.get_running_loop()

    def blocking_code() -> str:
        try:
            SyncClient("127.0.0.1", free_port, connect_timeout=5)
        except OSError as exc:
            return type(exc).__name__
        return "connected?"

    assert await loop.run_in_executor(None, blocking_code) == "ConnectionRefusedError"

"""RPC over a QUIC stream: Call and Notify both ways, several clients, broadcast, close and
shutdown, read timeout, and calls through a lossy relay."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, List, Tuple

import pytest
from tests.http3._h3_support import BACKENDS, Certs, LossyRelay, make_certs

from nbio.engine import Engine
from nbio.errors import ConnectionLost, NotConnected, RpcError
from nbio.rpc import Router, Server
from nbio.rpc.transport_quic import QuicRpcClient, QuicRpcEndpoint, connect_quic_rpc


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


def server_router(notes: List[Any]) -> Router:
    r = Router()

    @r.handle("/echo")
    def echo(ctx: Any) -> Any:
        return ctx.bind(bytes)

    @r.handle("/add")
    async def add(ctx: Any) -> Any:
        a, b = ctx.bind()
        return a + b

    @r.handle("/fail")
    def fail(ctx: Any) -> Any:
        raise ValueError("nope")

    @r.handle("/note")
    def note(ctx: Any) -> None:
        notes.append(ctx.bind())

    @r.handle("/callback")
    async def callback(ctx: Any) -> Any:
        ctx.client.notify("/pushed", ["from server"])
        return await ctx.client.call("/hello", ctx.bind(str), as_type=str, timeout=5)

    return r


def client_router(pushed: List[Any]) -> Router:
    r = Router()

    @r.handle("/hello")
    def hello(ctx: Any) -> Any:
        return "hello " + ctx.bind(str)

    @r.handle("/pushed")
    def on_push(ctx: Any) -> None:
        pushed.append(ctx.bind())

    return r


@contextlib.asynccontextmanager
async def quic_rpc(certs: Certs, backend: str = "native",
                   notes: Any = None) -> AsyncIterator[Tuple[Server, QuicRpcEndpoint, Engine]]:
    engine = Engine(backend=backend)
    server = Server(server_router(notes if notes is not None else []), engine=engine)
    endpoint = QuicRpcEndpoint(server, certfile=certs.certfile, keyfile=certs.keyfile)
    await endpoint.listen("127.0.0.1", 0)
    try:
        yield server, endpoint, engine
    finally:
        await server.shutdown(timeout=1)
        endpoint.close()
        await engine.close()


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_call_and_notify_both_ways(certs: Certs, backend: str) -> None:
    notes: List[Any] = []
    pushed: List[Any] = []
    async with quic_rpc(certs, backend, notes) as (server, endpoint, engine):
        port = endpoint.address[1]
        async with QuicRpcClient("localhost", port, cadata=certs.ca_pem, engine=engine,
                                 router=client_router(pushed), timeout=5) as client:
            assert await client.call("/echo", b"abc", as_type=bytes) == b"abc"
            assert await client.call("/add", [2, 3]) == 5
            with pytest.raises(RpcError, match="internal server error"):
                await client.call("/fail")
            client.notify("/note", {"n": 1})
            await wait_until(lambda: notes == [{"n": 1}])
            # the server calls and notifies the client over the same QUIC stream
            assert await client.call("/callback", "quic", as_type=str) == "hello quic"
            await wait_until(lambda: pushed == [["from server"]])
            (peer,) = server.clients
            assert await peer.call("/hello", "direct", as_type=str) == "hello direct"
            peer.notify("/pushed", 2)
            await wait_until(lambda: pushed == [["from server"], 2])
            big = bytes(range(256)) * 2000
            assert await client.call("/echo", big, as_type=bytes) == big
        await wait_until(lambda: len(server) == 0)


async def test_several_clients_broadcast_and_close(certs: Certs) -> None:
    async with quic_rpc(certs) as (server, endpoint, engine):
        port = endpoint.address[1]
        got: List[List[Any]] = [[], [], []]
        clients = [
            await connect_quic_rpc("127.0.0.1", port, cadata=certs.ca_pem, engine=engine,
                                   server_name="localhost", router=client_router(got[i]))
            for i in range(3)
        ]
        await wait_until(lambda: len(server) == 3)
        assert server.broadcast("/pushed", {"to": "all"}) == 3
        await wait_until(lambda: all(g == [{"to": "all"}] for g in got))
        results = await asyncio.gather(*[c.call("/add", [i, i]) for i, c in enumerate(clients)])
        assert results == [0, 2, 4]
        await clients[0].close()
        await wait_until(lambda: len(server) == 2)
        with pytest.raises(NotConnected):
            await clients[0].call("/add", [1, 1])
        (first, *_) = server.clients
        first.close()  # server side closes: the client sees its connection end
        await wait_until(lambda: sum(c.connected for c in clients) == 1)
        for c in clients:
            await c.close()


async def test_server_shutdown_fails_pending_calls(certs: Certs) -> None:
    router = Router()
    started = asyncio.Event()

    @router.handle("/hang")
    async def hang(ctx: Any) -> Any:
        started.set()
        await asyncio.sleep(30)

    async with Engine() as engine:
        server = Server(router, engine=engine)
        endpoint = QuicRpcEndpoint(server, certfile=certs.certfile, keyfile=certs.keyfile)
        await endpoint.listen()
        client = await connect_quic_rpc("127.0.0.1", endpoint.address[1], cadata=certs.ca_pem,
                                        server_name="localhost", engine=engine)
        call = asyncio.ensure_future(client.call("/hang"))
        await started.wait()
        await server.shutdown(timeout=0.1)
        endpoint.close()
        with pytest.raises(ConnectionLost):
            await call
        await client.close()


async def test_calls_through_packet_loss(certs: Certs) -> None:
    async with quic_rpc(certs) as (_server, endpoint, engine):
        relay = await LossyRelay.start(endpoint.address[:2], 5)
        try:
            async with QuicRpcClient(*relay.address, cadata=certs.ca_pem, engine=engine,
                                     server_name="localhost", timeout=10) as client:
                results = await asyncio.gather(
                    *[client.call("/add", [i, 1]) for i in range(50)]
                )
                assert results == [i + 1 for i in range(50)]
        finally:
            relay.close()
        assert relay.dropped_up > 0 and relay.dropped_down > 0

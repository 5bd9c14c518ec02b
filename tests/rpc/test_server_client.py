"""RPC server and client over the engine, on every backend: calls both ways, errors,
timeouts, lost connections, golden bytes on the wire, malformed input, limits, hooks."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, List

import pytest
from tests.rpc._support import (
    BACKENDS,
    GOLDEN_ANSWER,
    GOLDEN_CALL,
    client_for,
    echo_router,
    open_raw,
    serving,
)

from nbio.errors import ConnectionLost, RpcError, RpcTimeout
from nbio.rpc import Client, Router, Server
from nbio.rpc.client import FIRST_SEQ
from nbio.rpc.message import (
    CMD_NOTIFY,
    CMD_PING,
    CMD_PONG,
    CMD_REQUEST,
    CMD_RESPONSE,
    FLAG_ASYNC,
    FLAG_ERROR,
    encode,
)

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

# -- golden bytes ------------------------------------------------------------------------------


async def test_first_seq_constant(backend: str) -> None:
    assert FIRST_SEQ == 2


async def test_golden_call_answered_byte_for_byte(backend: str) -> None:
    async with serving(backend, echo_router()) as (_server, _engine, addr):
        raw = await open_raw(addr)
        raw.send(GOLDEN_CALL)
        assert await raw.read_raw() == GOLDEN_ANSWER
        await raw.close()


async def test_client_sends_golden_call(backend: str) -> None:
    """The client's first Call("/echo", "hello") is the issue's golden vector."""
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = await reader.readexactly(len(GOLDEN_CALL))
        got.set_result(frame)
        writer.write(GOLDEN_ANSWER)
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    from nbio.engine import Engine

    engine = Engine(backend=backend)
    client = await Client("127.0.0.1", port, engine=engine).connect()
    assert await client.call("/echo", "hello", as_type=str) == "hello"
    assert await got == GOLDEN_CALL
    await client.close()
    srv.close()
    await srv.wait_closed()
    await engine.close()


async def test_golden_notify_ping_and_errors(backend: str) -> None:
    async with serving(backend, echo_router()) as (_server, _engine, addr):
        raw = await open_raw(addr)
        # ping -> pong, a bare header
        raw.send(encode(CMD_PING, "", 0))
        assert await raw.read_raw() == bytes.fromhex("00000000 00 05 00 00 0000000000000000")
        # unknown method -> "method not found" error response, same method/seq/async bit
        raw.send(encode(CMD_REQUEST, "/nope", 7, b"x", FLAG_ASYNC))
        assert await raw.read_raw() == (
            bytes.fromhex("15000000 00 02 03 05 0700000000000000") + b"/nope" + b"method not found"
        )
        # unknown notify: dropped (the next answer is the pong)
        raw.send(encode(CMD_NOTIFY, "/nope", 8, b"x", FLAG_ASYNC))
        raw.send(encode(CMD_PING, "", 0))
        assert (await raw.read()).cmd == CMD_PONG
        # JSON values travel compact
        raw.send(encode(CMD_REQUEST, "/add", 9, b"[1, 2]"))
        assert await raw.read_raw() == encode(CMD_RESPONSE, "/add", 9, b"3")
        await raw.close()


async def test_server_notifies_and_calls_on_the_wire(backend: str) -> None:
    async with serving(backend, echo_router()) as (server, _engine, addr):
        raw = await open_raw(addr)
        raw.send(encode(CMD_PING, "", 0))
        await raw.read()
        (peer,) = server.clients
        peer.notify("/hi", {"a": 1})
        assert await raw.read_raw() == encode(CMD_NOTIFY, "/hi", FIRST_SEQ, b'{"a":1}', FLAG_ASYNC)
        task = asyncio.ensure_future(peer.call("/whoami", "?"))
        req = await raw.read()
        assert (req.cmd, req.method, req.seq, req.payload) == (CMD_REQUEST, "/whoami", 3, b"?")
        raw.send(encode(CMD_RESPONSE, "/whoami", req.seq, b'"raw peer"'))
        assert await task == "raw peer"
        await raw.close()


# -- calls ----------------------------------------------------------------------------------


async def test_calls_values_and_errors(backend: str) -> None:
    r = echo_router()

    @r.handle("/rpcerror")
    def rpcerror(ctx: Any) -> None:
        raise RpcError("bad input")

    @r.handle("/crash")
    def crash(ctx: Any) -> None:
        raise ValueError("secret detail")

    @r.handle("/acrash")
    async def acrash(ctx: Any) -> None:
        raise KeyError("x")

    @r.handle("/explicit")
    def explicit(ctx: Any) -> None:
        ctx.write({"n": ctx.bind()})

    @r.handle("/error")
    def error(ctx: Any) -> None:
        ctx.error("told you")

    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        assert await c.call("/echo", b"\x00\xff", as_type=bytes) == b"\x00\xff"
        assert await c.call("/add", [2, 3]) == 5
        assert await c.call("/aecho", {"k": [1, None]}) == {"k": [1, None]}
        assert await c.call("/explicit", 4) == {"n": 4}
        for method, text in [
            ("/rpcerror", "bad input"),
            ("/crash", "internal server error"),
            ("/acrash", "internal server error"),
            ("/error", "told you"),
            ("/missing", "method not found"),
        ]:
            with pytest.raises(RpcError) as ei:
                await c.call(method, 1)
            assert str(ei.value) == text
            assert not isinstance(ei.value, RpcTimeout)
        assert c.pending_calls == 0
        await c.close()


async def test_calls_both_directions(backend: str) -> None:
    sr = Router()
    cr = Router()

    @cr.handle("/client/name")
    def client_name(ctx: Any) -> str:
        return "client-1"

    @sr.handle("/whoami")
    async def whoami(ctx: Any) -> Any:
        # the server calls back the calling client while answering it
        name = await ctx.client.call("/client/name", as_type=str)
        return {"you": name}

    notified: asyncio.Future = asyncio.get_running_loop().create_future()

    @cr.handle("/news")
    def news(ctx: Any) -> None:
        notified.set_result(ctx.bind())

    async with serving(backend, sr) as (server, engine, addr):
        c = await client_for(engine, addr, router=cr)
        assert await c.call("/whoami") == {"you": "client-1"}
        (peer,) = server.clients
        assert await peer.call("/client/name", as_type=str) == "client-1"
        peer.notify("/news", [1, 2])
        assert await notified == [1, 2]
        await c.close()


async def test_callback_style_call(backend: str) -> None:
    r = echo_router()
    r.handle("/never", lambda ctx: None)
    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        loop = asyncio.get_running_loop()
        results: List[Any] = []
        done = loop.create_future()

        def cb(value: Any, exc: Any) -> None:
            results.append((value, type(exc).__name__ if exc else None))
            if len(results) == 3:
                done.set_result(None)

        c.call_async("/add", [1, 1], cb)
        c.call_async("/missing", 0, cb)
        c.call_async("/never", 0, cb, timeout=0.05)
        await done
        assert sorted(results, key=str) == sorted(
            [(2, None), (None, "RpcError"), (None, "RpcTimeout")], key=str
        )
        await c.close()


async def test_async_flag_echoed(backend: str) -> None:
    async with serving(backend, echo_router()) as (_server, _engine, addr):
        raw = await open_raw(addr)
        raw.send(encode(CMD_REQUEST, "/echo", 5, b"z", FLAG_ASYNC))
        msg = await raw.read()
        assert (msg.cmd, msg.flags, msg.seq, msg.payload) == (CMD_RESPONSE, FLAG_ASYNC, 5, b"z")
        await raw.close()


async def test_timeout_and_late_answer(backend: str) -> None:
    release = asyncio.Event()
    r = Router()

    @r.handle("/slow")
    async def slow(ctx: Any) -> str:
        await release.wait()
        return "late"

    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        with pytest.raises(RpcTimeout):
            await c.call("/slow", timeout=0.05)
        assert c.pending_calls == 0
        release.set()
        # the late answer is dropped; the connection keeps working
        release2 = asyncio.Event()
        release2.set()
        assert await c.call("/slow", timeout=5, as_type=str) == "late"
        await c.close()


async def test_client_default_timeout(backend: str) -> None:
    r = Router()
    r.handle("/never", lambda ctx: None)
    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr, timeout=0.05)
        with pytest.raises(RpcTimeout):
            await c.call("/never")
        await c.close()


async def test_cancelled_call_is_forgotten(backend: str) -> None:
    r = Router()
    r.handle("/never", lambda ctx: None)
    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        task = asyncio.ensure_future(c.call("/never"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c.pending_calls == 0
        await c.close()


async def test_disconnect_mid_call_fails_every_pending_call(backend: str) -> None:
    r = Router()
    entered: List[Any] = []
    all_in = asyncio.Event()

    @r.handle("/hang")
    async def hang(ctx: Any) -> None:
        entered.append(ctx)
        if len(entered) == 5:
            all_in.set()
        await asyncio.Event().wait()

    async with serving(backend, r) as (server, engine, addr):
        c = await client_for(engine, addr)
        calls = [asyncio.ensure_future(c.call("/hang", i)) for i in range(5)]
        await all_in.wait()
        server.clients[0].close()  # the server drops the connection mid-call
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(e, ConnectionLost) for e in results), results
        assert c.pending_calls == 0
        with pytest.raises(ConnectionLost):
            await c.call("/hang")
        await c.close()


async def test_server_peer_call_fails_when_client_leaves(backend: str) -> None:
    async with serving(backend, Router()) as (server, _engine, addr):
        raw = await open_raw(addr)
        raw.send(encode(CMD_PING, "", 0))
        await raw.read()
        (peer,) = server.clients
        call = asyncio.ensure_future(peer.call("/x"))
        await raw.read()
        await raw.close()
        with pytest.raises(ConnectionLost):
            await call


async def test_ten_thousand_concurrent_calls(backend: str) -> None:
    async with serving(backend, echo_router()) as (_server, engine, addr):
        c = await client_for(engine, addr)
        n = 10_000
        results = await asyncio.gather(*(c.call("/add", [i, 1]) for i in range(n)))
        assert results == [i + 1 for i in range(n)]
        assert c.pending_calls == 0
        await c.close()


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(bytes.fromhex("ffffffff 00 01 00 05 0200000000000000"), id="body-over-limit"),
        pytest.param(
            encode(CMD_REQUEST, "/echo", 2, b"x")[:5] + b"\x09" + b"\x00" * 10 + b"/echo" + b"x",
            id="unknown-command",
        ),
        pytest.param(
            bytes.fromhex("06000000 00 00 00 05 0200000000000000") + b"/echox", id="command-zero"
        ),
        pytest.param(
            bytes.fromhex("0a000000 80 01 00 05 0200000000000000") + b"notgzip!!!", id="bad-gzip"
        ),
    ],
)
async def test_malformed_frame_closes_only_that_connection(backend: str, junk: bytes) -> None:
    from nbio.rpc import GzipCoder

    async with serving(backend, echo_router(), max_body_len=1 << 20, coders=[GzipCoder()]) as (
        server,
        engine,
        addr,
    ):
        good = await client_for(engine, addr, coders=[GzipCoder()])
        raw = await open_raw(addr)
        raw.send(GOLDEN_CALL)
        assert await raw.read_raw() == GOLDEN_ANSWER
        raw.send(GOLDEN_CALL + junk + GOLDEN_CALL)
        # the call before the junk is answered, then the connection is dropped
        assert await raw.read_raw() == GOLDEN_ANSWER
        assert await raw.closed_by_peer()
        assert await good.call("/add", [1, 2]) == 3
        assert len(server.clients) == 1
        await raw.close()
        await good.close()


async def test_truncated_frame_then_close(backend: str) -> None:
    closed = asyncio.Event()
    r = echo_router()
    r.on_disconnect(lambda peer: closed.set())
    async with serving(backend, r) as (_server, engine, addr):
        good = await client_for(engine, addr)
        raw = await open_raw(addr)
        raw.send(GOLDEN_CALL[:10])
        await raw.close()
        await closed.wait()
        assert await good.call("/add", [1, 2]) == 3
        await good.close()


async def test_bad_method_length_dropped_connection_kept(backend: str) -> None:
    async with serving(backend, echo_router()) as (_server, _engine, addr):
        raw = await open_raw(addr)
        # method length 0 on a request: arpc drops the message and keeps reading
        raw.send(bytes.fromhex("05000000 00 01 00 00 0300000000000000") + b"hello")
        raw.send(GOLDEN_CALL)
        assert await raw.read_raw() == GOLDEN_ANSWER
        await raw.close()


async def test_byte_by_byte_input(backend: str) -> None:
    async with serving(backend, echo_router()) as (_server, _engine, addr):
        raw = await open_raw(addr)
        for i in range(len(GOLDEN_CALL)):
            raw.send(GOLDEN_CALL[i : i + 1])
            await raw.writer.drain()
        assert await raw.read_raw() == GOLDEN_ANSWER
        await raw.close()


# -- server features ---------------------------------------------------------------------------


async def test_hooks_broadcast_for_each(backend: str) -> None:
    sr = Router()
    events: List[str] = []
    sr.on_connect(lambda peer: events.append("connect"))
    sr.on_disconnect(lambda peer: events.append("disconnect"))

    @sr.handle("/join")
    def join(ctx: Any) -> None:
        ctx.client.set("room", ctx.bind(str))
        ctx.write("ok")

    got: List[List[Any]] = [[], [], []]
    waiters = [asyncio.Event() for _ in range(3)]

    def router_for(i: int) -> Router:
        r = Router()

        @r.handle("/chat")
        def chat(ctx: Any) -> None:
            got[i].append(ctx.bind())
            waiters[i].set()

        return r

    async with serving(backend, sr) as (server, engine, addr):
        clients = [await client_for(engine, addr, router=router_for(i)) for i in range(3)]
        for i, c in enumerate(clients):
            assert await c.call("/join", "a" if i < 2 else "b", as_type=str) == "ok"
        assert events == ["connect"] * 3
        n = server.broadcast("/chat", {"m": 1}, filter=lambda p: p.get("room") == "a")
        assert n == 2
        await waiters[0].wait()
        await waiters[1].wait()
        assert got[:2] == [[{"m": 1}], [{"m": 1}]]
        seen: List[Any] = []
        server.for_each(lambda p: seen.append(p.get("room")))
        assert sorted(seen) == ["a", "a", "b"]
        assert server.broadcast("/chat", ["all"]) == 3
        await waiters[2].wait()
        assert got[2] == [["all"]]
        await clients[2].close()
        await asyncio.wait_for(_until(lambda: len(server) == 2), 5)
        assert events[-1] == "disconnect"
        for c in clients[:2]:
            await c.close()


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0)


async def test_max_connections(backend: str) -> None:
    async with serving(backend, echo_router(), max_connections=2) as (server, engine, addr):
        a = await client_for(engine, addr)
        b = await client_for(engine, addr)
        raw = await open_raw(addr)
        assert await raw.closed_by_peer()
        assert server.rejected == 1
        assert await a.call("/add", [1, 1]) == 2
        await raw.close()
        await a.close()
        await b.close()


async def test_unix_socket(backend: str) -> None:
    from nbio.engine import Engine

    engine = Engine(backend=backend)
    server = Server(echo_router(), engine=engine)
    path = os.path.join(tempfile.mkdtemp(), "rpc.sock")
    await server.listen(path=path)
    c = await Client(path=path, engine=engine).connect()
    assert await c.call("/echo", "over unix", as_type=str) == "over unix"
    await c.close()
    await server.close()
    await engine.close()


async def test_graceful_shutdown_answers_in_flight_calls(backend: str) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    r = Router()

    @r.handle("/work")
    async def work(ctx: Any) -> str:
        started.set()
        await release.wait()
        return "finished"

    r.handle("/quick", lambda ctx: "quick")
    from nbio.engine import Engine

    engine = Engine(backend=backend)
    server = Server(r, engine=engine)
    host, port = await server.listen()
    c = await Client(host, port, engine=engine).connect()
    call = asyncio.ensure_future(c.call("/work", as_type=str))
    await started.wait()
    stop = asyncio.ensure_future(server.shutdown(timeout=5))
    await asyncio.sleep(0)
    with pytest.raises(RpcError, match="shutting down"):
        await c.call("/quick")
    assert not stop.done()
    release.set()
    assert await call == "finished"
    await stop
    await server.serve_forever()  # returns at once: the server is stopped
    assert len(server) == 0
    await c.close()
    await engine.close()


async def test_keepalive_and_read_timeout(backend: str) -> None:
    async with serving(
        backend, echo_router(), read_timeout=0.3, engine_kw={"timer_resolution": 0.01}
    ) as (_server, engine, addr):
        lost = asyncio.Event()
        r = Router()
        r.on_disconnect(lambda p: lost.set())
        silent = await client_for(engine, addr, router=r)
        alive = await client_for(engine, addr, keepalive=0.05)
        await asyncio.wait_for(lost.wait(), 5)  # the silent client was cut off
        assert not silent.connected
        assert alive.connected
        assert await alive.call("/add", [1, 1]) == 2
        await silent.close()
        await alive.close()


async def test_server_keepalive_pings(backend: str) -> None:
    async with serving(backend, echo_router(), keepalive=0.02) as (_server, _engine, addr):
        raw = await open_raw(addr)
        msg = await raw.read()
        assert msg.cmd == CMD_PING
        await raw.close()


async def test_client_read_timeout_with_server_keepalive(backend: str) -> None:
    async with serving(
        backend, echo_router(), keepalive=0.05, engine_kw={"timer_resolution": 0.01}
    ) as (_server, engine, addr):
        lost = asyncio.Event()
        r = Router()
        r.on_disconnect(lambda p: lost.set())
        c = await client_for(engine, addr, router=r, read_timeout=0.2)
        # the server's pings keep pushing the client's read deadline back: no disconnect
        # within three read timeouts
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lost.wait(), 0.6)
        assert c.connected
        await c.close()


async def test_error_flag_on_wire(backend: str) -> None:
    r = Router()
    r.handle("/e", lambda ctx: ctx.error("nope"))
    async with serving(backend, r) as (_server, _engine, addr):
        raw = await open_raw(addr)
        raw.send(encode(CMD_REQUEST, "/e", 11, b""))
        msg = await raw.read()
        assert (msg.flags, msg.payload, msg.error) == (FLAG_ERROR, b"nope", "nope")
        await raw.close()

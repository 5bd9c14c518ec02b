"""Router: middleware chain (next/abort, plain and coroutine), example middleware,
not-found handler, class-based services, inline execution of plain handlers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, List

import pytest
from tests.rpc._support import BACKENDS, client_for, open_raw, serving

from nbio.errors import RpcError
from nbio.rpc import Router, logging_middleware, recover, require
from nbio.rpc.context import Context
from nbio.rpc.message import CMD_NOTIFY, CMD_REQUEST, encode

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def test_plain_handler_runs_inline_without_a_task(backend: str) -> None:
    r = Router()
    seen: List[Any] = []

    @r.handle("/inline")
    def inline(ctx: Any) -> str:
        seen.append(asyncio.current_task())
        return "ok"

    async with serving(backend, r) as (server, engine, addr):
        c = await client_for(engine, addr)
        assert await c.call("/inline", as_type=str) == "ok"
        assert seen == [None]  # called from the engine's read callback, not from a task
        assert not server._tasks
        await c.close()


async def test_middleware_order_next_and_abort(backend: str) -> None:
    r = Router()
    trace: List[str] = []

    def outer(ctx: Context) -> None:
        trace.append("outer>")
        ctx.next()
        trace.append("<outer")

    async def async_mw(ctx: Context) -> None:
        trace.append("async>")
        await ctx.next()
        trace.append("<async")

    def gate(ctx: Context) -> None:
        if ctx.bind(str) == "stop":
            ctx.abort("stopped")

    r.use(outer)

    @r.handle("/sync", middleware=[gate])
    def sync_h(ctx: Context) -> str:
        trace.append("sync")
        ctx.set("k", 1)
        return "s"

    @r.handle("/async", middleware=[async_mw, gate])
    async def async_h(ctx: Context) -> Any:
        await asyncio.sleep(0)
        trace.append("handler")
        return ctx.get("missing", "default")

    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        assert await c.call("/sync", "go", as_type=str) == "s"
        assert trace == ["outer>", "sync", "<outer"]
        trace.clear()
        assert await c.call("/async", "go", as_type=str) == "default"
        # a plain middleware does not wait for the coroutine part of the chain
        assert trace == ["outer>", "<outer", "async>", "handler", "<async"]
        trace.clear()
        with pytest.raises(RpcError, match="stopped"):
            await c.call("/sync", "stop")
        assert trace == ["outer>", "<outer"]
        await c.close()


async def test_example_middleware(backend: str, caplog: Any) -> None:
    r = Router()
    r.use(recover(), logging_middleware(level=logging.INFO))
    r.use(require(lambda ctx: ctx.method == "/login" or ctx.client.get("user") is not None))

    @r.handle("/login")
    def login(ctx: Context) -> str:
        ctx.client.set("user", ctx.bind(str))
        return "welcome"

    @r.handle("/boom")
    def boom(ctx: Context) -> None:
        raise ValueError("kaboom")

    @r.handle("/aboom")
    async def aboom(ctx: Context) -> None:
        await asyncio.sleep(0)
        raise ValueError("async kaboom")

    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        with pytest.raises(RpcError, match="unauthorized"):
            await c.call("/boom")
        assert await c.call("/login", "ann", as_type=str) == "welcome"
        with caplog.at_level(logging.INFO, logger="nbio.rpc"):
            with pytest.raises(RpcError, match=r"^kaboom$"):  # recover exposes the text
                await c.call("/boom")
            with pytest.raises(RpcError, match=r"^async kaboom$"):
                await c.call("/aboom")
        assert any("rpc /boom seq=" in rec.getMessage() for rec in caplog.records)
        assert any("rpc /aboom seq=" in rec.getMessage() for rec in caplog.records)
        await c.close()


async def test_not_found_handler(backend: str) -> None:
    r = Router()
    missed: List[Any] = []
    got = asyncio.Event()

    @r.not_found
    def nf(ctx: Context) -> None:
        missed.append((ctx.method, ctx.is_request))
        if ctx.is_request:
            ctx.error(f"no such method {ctx.method}")
        else:
            got.set()

    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        with pytest.raises(RpcError, match="no such method /x"):
            await c.call("/x")
        c.notify("/y", 1)
        await got.wait()
        assert missed == [("/x", True), ("/y", False)]
        await c.close()


async def test_service_registration(backend: str) -> None:
    class Arith:
        def Add(self, args: Any) -> Any:
            return args["a"] + args["b"]

        async def Div(self, args: Any) -> Any:
            if args["b"] == 0:
                raise RpcError("divide by zero")
            return args["a"] / args["b"]

        def Nothing(self, args: Any) -> None:
            return None

        def _private(self) -> None:  # pragma: no cover - not registered
            pass

    r = Router()
    assert r.register(Arith()) == ["Arith.Add", "Arith.Div", "Arith.Nothing"]
    assert r.register(Arith(), name="Math") == ["Math.Add", "Math.Div", "Math.Nothing"]
    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        assert await c.call("Arith.Add", {"a": 1, "b": 2}) == 3
        assert await c.call("Math.Div", {"a": 1, "b": 4}) == 0.25
        assert await c.call("Arith.Nothing", {}) is None
        with pytest.raises(RpcError, match="divide by zero"):
            await c.call("Arith.Div", {"a": 1, "b": 0})
        await c.close()


async def test_notify_handler_return_value_is_not_sent(backend: str) -> None:
    r = Router()
    r.handle("/n", lambda ctx: "ignored")
    async with serving(backend, r) as (_server, _engine, addr):
        raw = await open_raw(addr)
        raw.send(encode(CMD_NOTIFY, "/n", 2, b"x"))
        raw.send(encode(CMD_REQUEST, "/n", 3, b"x"))
        msg = await raw.read()
        assert (msg.seq, msg.payload) == (3, b"ignored")  # the notify got nothing
        await raw.close()


async def test_answer_twice_is_refused(backend: str) -> None:
    r = Router()
    errors: List[Any] = []

    @r.handle("/twice")
    def twice(ctx: Context) -> None:
        ctx.write("one")
        try:
            ctx.write("two")
        except RuntimeError as exc:
            errors.append(exc)

    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        assert await c.call("/twice", as_type=str) == "one"
        assert len(errors) == 1
        await c.close()


async def test_deferred_answer_from_elsewhere(backend: str) -> None:
    """A plain handler may keep the context and answer later (arpc style)."""
    r = Router()
    kept: List[Context] = []
    r.handle("/later", lambda ctx: kept.append(ctx))
    async with serving(backend, r) as (_server, engine, addr):
        c = await client_for(engine, addr)
        call = asyncio.ensure_future(c.call("/later"))
        while not kept:
            await asyncio.sleep(0)
        kept[0].write({"done": True})
        assert await call == {"done": True}
        await c.close()


def test_invalid_registration(backend: str) -> None:
    r = Router()
    with pytest.raises(ValueError):
        r.handle("", lambda ctx: None)
    with pytest.raises(ValueError):
        r.handle("x" * 128, lambda ctx: None)
    with pytest.raises(TypeError):
        r.handle("/x", 42)  # type: ignore[arg-type]

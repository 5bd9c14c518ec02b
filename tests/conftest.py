"""Shared test fixtures.

Async tests are plain ``async def`` functions: this file runs each one in a fresh event loop
(asyncio's default loop, or uvloop when the test takes the ``loop_kind`` / ``engine``
parametrisation), so no plugin is needed. Engine-level tests take the ``engine`` fixture and
run once per backend x event loop, as uvloop runs its suites over uvloop and asyncio.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import socket
import sys
from typing import Any

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is part of the [test] extra on Linux
    uvloop = None

BACKENDS = ["native", "asyncio"] if sys.platform.startswith("linux") else ["asyncio"]
LOOPS = ["asyncio", "uvloop"] if uvloop is not None else ["asyncio"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        assert uvloop is not None
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _loop_kind_of(item: Any) -> str:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return "asyncio"
    for key in ("loop_kind", "engine", "backend"):
        value = callspec.params.get(key)
        if isinstance(value, str) and value.endswith("-uvloop"):
            return "uvloop"
        if key == "loop_kind" and isinstance(value, str):
            return value
    return "asyncio"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: Any) -> Any:
    """Run ``async def`` tests to completion in a fresh loop, then check nothing leaked."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    funcargs = pyfuncitem.funcargs
    kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    loop = new_loop(_loop_kind_of(pyfuncitem))
    timeout = float(os.environ.get("NBIO_TEST_TIMEOUT", "60"))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout))
        # Let callbacks scheduled by closing transports run, then insist on a clean loop.
        loop.run_until_complete(asyncio.sleep(0))
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            pytest.fail(f"test left {len(pending)} task(s) running: {pending!r}")
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
        gc.collect()
    return True


@pytest.fixture(params=LOOPS)
def loop_kind(request: Any) -> str:
    """Which event loop implementation the async test runs on."""
    return str(request.param)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""The chat demo (``nbio demo`` / ``python -m nbio.demo``): the page and its scripts over
HTTP, the chat over WebSocket RPC, with Python clients, then end to end in two headless
Chromium pages (Debian ``chromium`` + ``playwright-core``; skipped outside CI when
Chromium is missing, required in CI)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest
from tests.e2e._node import IN_CI, JS, REPO, node_env, npm_ci, require

from nbio.errors import RpcError
from nbio.rpc import Router
from nbio.rpc.transport_ws import WebSocketClient

CHROMIUM = "/usr/bin/chromium"


# -- in process: the app with Python clients ---------------------------------------------------


async def test_chat_with_python_clients() -> None:
    from nbio.demo import ChatDemo

    chat = ChatDemo()
    host, port = (await chat.start("127.0.0.1", 0))[:2]
    url = f"ws://{host}:{port}/rpc"
    inbox: asyncio.Queue[Tuple[str, Any]] = asyncio.Queue()

    def router(me: str) -> Router:
        r = Router()
        r.handle("/chat/message", lambda ctx: inbox.put_nowait((me, ctx.bind())))
        r.handle("/chat/presence", lambda ctx: inbox.put_nowait((me + ":presence", ctx.bind())))
        return r

    a = WebSocketClient(url, router=router("a"), timeout=5)
    b = WebSocketClient(url, router=router("b"), timeout=5)
    try:
        await a.connect()
        with pytest.raises(RpcError, match="join first"):
            await a.call("/chat/send", "too early")
        joined = await a.call("/chat/join", "  ann  ")
        assert joined == {"name": "ann", "people": ["ann"], "history": []}
        assert await inbox.get() == ("a:presence", {"people": ["ann"], "joined": "ann"})
        await b.connect()
        assert (await b.call("/chat/join", "ann"))["name"] == "ann-2"  # made unique
        presence = [await inbox.get(), await inbox.get()]
        assert sorted(p[0] for p in presence) == ["a:presence", "b:presence"]
        assert all(p[1] == {"people": ["ann", "ann-2"], "joined": "ann-2"} for p in presence)
        assert await a.call("/chat/send", "hello <b>") == 2
        got = sorted([await inbox.get(), await inbox.get()], key=lambda m: m[0])
        assert [m[0] for m in got] == ["a", "b"]
        assert got[0][1]["name"] == "ann" and got[0][1]["text"] == "hello <b>"
        with pytest.raises(RpcError, match="empty"):
            await b.call("/chat/send", "   ")
        await b.close()
        assert await inbox.get() == ("a:presence", {"people": ["ann"], "left": "ann-2"})
        late = WebSocketClient(url, timeout=5)
        await late.connect()
        history = (await late.call("/chat/join", "late"))["history"]
        assert [m["text"] for m in history] == ["hello <b>"]
        await late.close()
        assert chat.messages == 1 and chat.connections == 3
    finally:
        await a.close()
        await b.close()
        await chat.close()


async def test_page_and_scripts_are_served() -> None:
    from nbio.demo import ChatDemo

    chat = ChatDemo()
    host, port = (await chat.start("127.0.0.1", 0))[:2]
    base = f"http://{host}:{port}"

    def get(path: str) -> Tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                return resp.status, resp.headers["content-type"], resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["content-type"], err.read()

    loop = asyncio.get_running_loop()
    try:
        status, ctype, body = await loop.run_in_executor(None, get, "/")
        assert status == 200 and ctype.startswith("text/html")
        assert b'<script type="module" src="chat.js">' in body
        status, ctype, body = await loop.run_in_executor(None, get, "/arpc.js")
        assert status == 200 and "javascript" in ctype
        assert body == (JS / "arpc.js").read_bytes()  # the package data is js/arpc.js
        status, _, body = await loop.run_in_executor(None, get, "/chat.js")
        assert status == 200 and b'from "./arpc.js"' in body
        status, _, _ = await loop.run_in_executor(None, get, "/nope")
        assert status == 404
    finally:
        await chat.close()


# -- as a process ------------------------------------------------------------------------------


@pytest.fixture
def demo_process() -> Iterator[Tuple[subprocess.Popen, int]]:
    """``python -m nbio.demo --port 0``; yields (process, port); always reaped."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbio.demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "chat listening on 127.0.0.1:" in first, first + proc.stderr.read()
        port = int(first.split("127.0.0.1:")[1].split()[0])
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return str(out)


def test_demo_process_serves_the_page_and_stops_on_sigint(demo_process: Any) -> None:
    proc, port = demo_process
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert b"nbio chat" in resp.read()
    out = _stop(proc)
    assert "stopped after 0 connection(s), 0 message(s)" in out


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def test_chat_in_two_chromium_pages(demo_process: Any) -> None:
    chromium = _chromium()
    npm_ci()
    node = require("node")
    proc, port = demo_process
    run = subprocess.run(
        [node, str(JS / "e2e" / "chat.mjs"), f"http://127.0.0.1:{port}/", chromium],
        cwd=JS,
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = run.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    assert run.returncode == 0 and report.get("ok"), run.stdout + run.stderr
    assert report["names"] == ["alice", "bob"]
    out = _stop(proc)
    assert "stopped after 2 connection(s), 2 message(s)" in out


async def test_asgi_example_serves_the_same_chat() -> None:
    pytest.importorskip("starlette")
    from examples.chat.asgi_app import app

    from nbio.http.asgi import AsgiServer

    server = await AsgiServer.start(app, "127.0.0.1", 0, lifespan="off")
    port = server.address[1]
    got: asyncio.Queue[Any] = asyncio.Queue()
    router = Router()
    router.handle("/chat/message", lambda ctx: got.put_nowait(ctx.bind()))
    client = WebSocketClient(f"ws://127.0.0.1:{port}/rpc", router=router, timeout=5)
    try:
        page = await asyncio.get_running_loop().run_in_executor(
            None, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        )
        assert b"nbio chat" in page
        await client.connect()
        assert (await client.call("/chat/join", "asgi"))["name"] == "asgi"
        assert await client.call("/chat/send", "via ASGI") == 1
        assert (await got.get())["text"] == "via ASGI"
    finally:
        await client.close()
        server.close()
        await server.wait_closed()

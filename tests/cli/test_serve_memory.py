"""``nbio serve --memory-limit``: a real server process flooded by clients that request large
bodies and never read them stops reading new requests once the queued bytes pass the limit,
instead of growing without bound; it serves again once the slow clients go away.

The app samples its engine's stats every 10 ms on the event loop (which keeps running while
reading is paused) and writes them to a file the test polls: no sleeps as synchronisation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

from nbio.cli import Master, add_serve_arguments, parse_size

MiB = 1 << 20
LIMIT = 4 * MiB
QUEUED = 5 * MiB // 2  # what each slow client leaves queued in the server (user space)
MAX_WRITE_BUFFER = 4 * MiB  # the engine's default per-connection cap (closes beyond it)
SLOW_CLIENTS = 64  # unbounded buffering would queue SLOW_CLIENTS * QUEUED = 160 MiB

APP = textwrap.dedent("""
    import asyncio, json, os
    from nbio.http import Response

    STATS = os.environ["NBIO_TEST_STATS"]
    BODY = int(os.environ["NBIO_TEST_BODY"])
    state = {"samples": 0, "paused_samples": 0, "max_buffered": 0, "stats": None, "big": 0}
    started = []

    def sample(loop, engine):
        st = engine.stats()
        state["samples"] += 1
        state["paused_samples"] += bool(st["memory_paused"])
        state["max_buffered"] = max(state["max_buffered"], st["buffered"])
        state["stats"] = st
        with open(STATS + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(STATS + ".tmp", STATS)
        loop.call_later(0.01, sample, loop, engine)

    def app(request):
        if not started:
            started.append(True)
            sample(asyncio.get_running_loop(), request.conn.engine)
        if request.path == b"/big":
            state["big"] += 1
            return Response(b"x" * BODY)  # fresh memory every time: b"x" * n touches its pages
        now = dict(state, now=request.conn.engine.stats())
        return Response(json.dumps(now).encode(), content_type="application/json")
""")


def rss(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def poll(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.005)  # polling another process's state, not synchronising with a sleep


def read_stats(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def http_get(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return s


def read_response(s: socket.socket) -> Any:
    data = b""
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def kernel_capacity() -> int:
    """How many bytes the kernel takes from a server socket whose peer reads nothing (its
    send buffer plus the peer's tiny window): measured, since it depends on tcp_wmem."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(ls.getsockname())
        s, _ = ls.accept()
        s.setblocking(False)
        total = 0
        try:
            while True:
                total += s.send(b"x" * MiB)
        except BlockingIOError:
            pass
        s.close()
        c.close()
    return total


#: each response: what the kernel takes, plus QUEUED left in the server's write queue
BODY = kernel_capacity() + QUEUED


def slow_client(port: int) -> socket.socket:
    """A client with a tiny receive window that will never read."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    return s


def flood(server: Served, n: int) -> List[socket.socket]:
    """``n`` slow clients connect; once the server has accepted them all, each requests a
    big body (so the flood is requests on established connections, arriving together)."""
    accepted = server.stats()["stats"]["accepted"]
    slow = [slow_client(server.port) for _ in range(n)]
    poll(lambda: server.stats()["stats"]["accepted"] >= accepted + n, what="all accepted")
    for s in slow:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    return slow


class Served:
    def __init__(self, tmp_path: Path, backend: str, *extra: str) -> None:
        (tmp_path / "memapp.py").write_text(APP)
        self.stats_path = tmp_path / "stats.json"
        env = dict(os.environ, NBIO_TEST_STATS=str(self.stats_path), NBIO_TEST_BODY=str(BODY))
        src = str(Path(__file__).resolve().parents[2] / "src")
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nbio", "serve", "memapp:app", "--port", "0",
             "--interface", "native", "--backend", backend, "--app-dir", str(tmp_path), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert "nbio serve: listening on" in first, first + self.proc.stderr.read()  # type: ignore
        self.port = int(first.split("127.0.0.1:")[1].split()[0])
        status, _ = read_response(http_get(self.port, "/stats"))  # starts the sampler
        assert status == 200
        poll(lambda: read_stats(self.stats_path), what="first stats sample")

    def stats(self) -> Dict[str, Any]:
        return poll(lambda: read_stats(self.stats_path), what="stats")  # type: ignore

    def after_samples(self, n: int) -> Dict[str, Any]:
        """Stats once the event loop has run ``n`` more sampling rounds (a fence: whatever
        the engine could read by now, it has read)."""
        target = self.stats()["samples"] + n
        return poll(  # type: ignore[no-any-return]
            lambda: (s := read_stats(self.stats_path)) and s["samples"] >= target and s,
            what=f"{n} more samples",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


@pytest.mark.parametrize("backend", ["native", "asyncio"])
def test_memory_limit_pauses_reading_and_bounds_rss(tmp_path: Path, backend: str) -> None:
    server = Served(tmp_path, backend, "--memory-limit", "4M", "--keep-alive", "120")
    slow: List[socket.socket] = []
    try:
        base_rss = rss(server.proc.pid)
        accepted = server.stats()["stats"]["accepted"]
        fresh = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        poll(lambda: server.stats()["stats"]["accepted"] > accepted, what="fresh accepted")
        slow = flood(server, SLOW_CLIENTS)
        poll(lambda: server.stats()["stats"]["memory_paused"], what="memory pause")
        st = server.after_samples(5)
        assert st["stats"]["memory_paused"]  # nobody reads: the pause holds
        # The queues stop near the limit: one response more (it is what crossed it) plus
        # those of the same loop turn -- far below SLOW_CLIENTS * QUEUED.
        assert st["max_buffered"] <= LIMIT + 4 * MAX_WRITE_BUFFER, st
        assert st["big"] <= 12, st  # most requests were left unread
        growth = rss(server.proc.pid, "VmHWM") - base_rss
        assert growth < 48 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"

        # Another client's request is not read during the pause (new data is not accepted)...
        fresh.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert server.after_samples(5)["stats"]["memory_paused"]
        fresh.setblocking(False)
        with pytest.raises(BlockingIOError):
            fresh.recv(1)  # a native handler answers at once: nothing means not read
        fresh.setblocking(True)
        # ... and is served once the slow clients go away and the queues drain.
        for s in slow:
            s.close()
        slow = []
        status, body = read_response(fresh)
        assert status == 200
        state = json.loads(body)
        assert state["paused_samples"] >= 10
        assert not state["now"]["memory_paused"]  # resumed: that is how it read our request
        growth = rss(server.proc.pid, "VmHWM") - base_rss
        assert growth < 48 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
    finally:
        for s in slow:
            s.close()
        server.stop()
    assert server.proc.returncode == 0


def test_without_a_limit_the_same_flood_is_buffered(tmp_path: Path) -> None:
    """The control: the flood above does make the server queue what the limit prevents."""
    server = Served(tmp_path, "native")
    clients = 24
    slow: List[socket.socket] = []
    try:
        slow = flood(server, clients)
        st = poll(
            lambda: (s := read_stats(server.stats_path)) and s["big"] == clients and s,
            what="every request answered",
        )
        st = server.after_samples(2)
        assert st["max_buffered"] > 10 * LIMIT, st  # ~ clients * QUEUED
        assert st["paused_samples"] == 0 and not st["stats"]["memory_paused"]
    finally:
        for s in slow:
            s.close()
        server.stop()


# -- the option ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [
        ("65536", 65536),
        ("512K", 512 << 10),
        ("512k", 512 << 10),
        ("64M", 64 << 20),
        ("64MB", 64 << 20),
        ("64MiB", 64 << 20),
        ("1G", 1 << 30),
        ("1.5G", 3 << 29),
        ("10B", 10),
        ("0", None),
    ],
)
def test_parse_size(text: str, size: Optional[int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "x", "-1M", "1.2.3K", "inf", "12Q"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_bad_memory_limit_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nbio", "serve", "x:app", "--memory-limit", "lots"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and "not a size" in proc.stderr


def test_workers_get_the_limit() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["app:app", "--workers", "2", "--memory-limit", "64M"])
    assert args.memory_limit == 64 << 20
    argv = Master(args)._worker_argv()
    assert argv[argv.index("--memory-limit") + 1] == str(64 << 20)
    args = parser.parse_args(["app:app", "--workers", "2"])
    assert "--memory-limit" not in Master(args)._worker_argv()

"""``nbio serve`` as a real process: workers sharing a port, graceful drain on SIGTERM,
restart of a dead worker, native handlers on a Unix socket."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest

APP = textwrap.dedent('''
    import asyncio, os

    MARK = os.environ["NBIO_TEST_MARK"]

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    with open(MARK, "a") as f:
                        f.write("shutdown %d\\n" % os.getpid())
                    return
        if scope["path"] == "/slow":
            with open(MARK, "a") as f:
                f.write("start\\n")
            await asyncio.sleep(1.0)   # the work in flight when SIGTERM comes
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
''')

NATIVE = textwrap.dedent('''
    from nbio.http import Response

    def handler(request):
        return Response(b"native " + request.path)
''')


def start(tmp_path: Path, *args: str) -> Any:
    env = dict(os.environ, NBIO_TEST_MARK=str(tmp_path / "mark.txt"))
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbio", "serve", *args, "--app-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "nbio serve: listening on" in first, first + proc.stderr.read() if proc.stderr else ""
    return proc, first


def get(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def stop(proc: Any) -> Any:
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=10)


def test_workers_drain_in_flight_requests_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "drainapp.py").write_text(APP)
    proc, first = start(tmp_path, "drainapp:app", "--port", "0", "--workers", "2")
    try:
        port = int(first.split("127.0.0.1:")[1].split()[0])
        pids = {int(p) for p in first.split("workers: ")[1].rstrip(")\n").split(", ")}
        assert len(pids) == 2
        served = {int(get(port, "/")[1]) for _ in range(40)}
        assert served <= pids
        results: List[Any] = []
        threads = [threading.Thread(target=lambda: results.append(get(port, "/slow")))
                   for _ in range(8)]
        for t in threads:
            t.start()
        mark = tmp_path / "mark.txt"
        wait_for(lambda: mark.exists() and mark.read_text().count("start") == 8)
        proc.send_signal(signal.SIGTERM)   # all 8 are in flight now
        for t in threads:
            t.join(20)
        assert len(results) == 8 and all(status == 200 for status, _ in results), results
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "nbio serve: stopped" in out
        assert mark.read_text().count("shutdown") == 2  # lifespan shutdown in each worker
    finally:
        stop(proc)


def test_dead_worker_is_restarted(tmp_path: Path) -> None:
    (tmp_path / "restartapp.py").write_text(APP)
    proc, first = start(tmp_path, "restartapp:app", "--port", "0", "--workers", "2")
    try:
        port = int(first.split("127.0.0.1:")[1].split()[0])
        pids = [int(p) for p in first.split("workers: ")[1].rstrip(")\n").split(", ")]
        os.kill(pids[0], signal.SIGKILL)
        line = proc.stdout.readline()
        assert f"worker {pids[0]} exited" in line and "restarting" in line
        for _ in range(20):
            status, body = get(port, "/")
            assert status == 200 and int(body) != pids[0]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        stop(proc)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_native_handler_on_unix_socket(tmp_path: Path, workers: str) -> None:
    (tmp_path / f"nativeapp{workers}.py").write_text(NATIVE)
    path = str(tmp_path / "s.sock")
    proc, first = start(tmp_path, f"nativeapp{workers}:handler", "--uds", path,
                        "--workers", workers)
    try:
        assert f"unix:{path}" in first
        for i in range(4):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                s.sendall(b"GET /u%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"native /u%d" % i)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        stop(proc)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_https_with_ssl_certfile_and_keyfile(tmp_path: Path, workers: str) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / f"tlsapp{workers}.py").write_text(APP)
    proc, first = start(tmp_path, f"tlsapp{workers}:app", "--port", "0", "--workers", workers,
                        "--ssl-certfile", str(tmp_path / "cert.pem"),
                        "--ssl-keyfile", str(tmp_path / "key.pem"))
    try:
        assert "listening on https://127.0.0.1:" in first
        port = first.split("127.0.0.1:")[1].split()[0]
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--cacert", str(tmp_path / "ca.pem"),
             "-w", " %{http_code} %{http_version}", f"https://localhost:{port}/"],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        pid, code, version = out.stdout.split()
        assert int(pid) > 0 and code == "200" and version == "1.1"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        stop(proc)


def test_ssl_keyfile_without_certfile_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "noapp.py").write_text(NATIVE)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "nbio", "serve", "noapp:app", "--port", "0",
         "--app-dir", str(tmp_path), "--ssl-keyfile", str(tmp_path / "key.pem")],
        capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode != 0 and "--ssl-keyfile needs --ssl-certfile" in out.stderr

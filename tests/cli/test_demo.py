"""``nbio demo`` as a real process: it listens, echoes, and stops cleanly on SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys


def test_demo_serves_echo_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbio", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in first, first
        port = int(first.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            assert b"nbio echo demo" in f.readline()
            s.sendall(b"hello nbio\n")
            assert f.readline() == b"hello nbio\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped after 1 connection(s)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

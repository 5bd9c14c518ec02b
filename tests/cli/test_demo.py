"""``nbio demo`` as a real process: it serves the chat page, and stops cleanly on SIGINT.

The chat itself (two browsers exchanging messages) is tested in tests/e2e/test_chat_demo.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request


def test_demo_serves_the_chat_page_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbio", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "chat listening on 127.0.0.1:" in first, first
        port = int(first.split("127.0.0.1:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
            assert b"nbio chat" in resp.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped after 0 connection(s), 0 message(s)" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

"""The browser RPC client (js/arpc.js) under Node's test runner, against the real Python
server (js/test/server.py, started by the JS tests): wire vectors, calls both ways,
streams, reconnect, keepalive, HTTP-RPC."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e._node import JS, node_env, npm_ci, require


def test_js_client_suite() -> None:
    npm_ci()
    node = require("node")
    env = node_env()
    env["PYTHON"] = sys.executable
    proc = subprocess.run(
        [node, "--test", "test/"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = "\n".join(line for line in proc.stdout.splitlines() if line.startswith("# "))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "# fail 0" in summary, summary
    assert "# pass " in summary and "# pass 0" not in summary, summary

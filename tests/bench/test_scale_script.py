"""``bench/scale.py`` end to end at a tiny scale: its C load client (``bench/wsload.c``) opens
WebSocket connections to nbio workers, checks every handshake, runs the echo load and parses
every echoed frame; the bench's JSON line carries what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._programs import require

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


def test_scale_bench_runs_the_echo_load_over_every_connection() -> None:
    require("cc")
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--servers",
            "nbio",
            "--conns",
            "300",
            "--workers",
            "2",
            "--clients",
            "2",
            "--src-ips",
            "3",
            "--rate",
            "3000",
            "--seconds",
            "1",
            "--warmup",
            "0.5",
            "--idle",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "scale"
    nbio = result["results"]["nbio"]
    assert nbio["conns"] == 300
    assert nbio["failed"] == 0
    assert nbio["server_conns"] == 300
    assert nbio["bad_frames"] == 0
    assert nbio["dropped"] == 0
    # every message sent in the window is echoed; the rate is offered, so only a loose bound
    assert 1500 < nbio["msgs_per_s"] < 4500
    assert 0 < nbio["p50_ms"] <= nbio["p99_ms"]

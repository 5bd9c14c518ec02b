"""Helpers for the tests that drive Node: find node/npm, install js/'s packages when missing.

Outside CI a missing program skips the test; in CI (env ``CI`` set) it fails it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests._programs import IN_CI, require

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "js"


def npm_ci() -> None:
    """Install js/package-lock.json's packages (ws, playwright-core) when missing."""
    require("node")
    wanted = [JS / "node_modules" / "ws", JS / "node_modules" / "playwright-core"]
    if all(p.exists() for p in wanted):
        return
    npm = require("npm")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        message = f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def node_env() -> dict:
    """Environment for Node processes that start Python servers from this checkout."""
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env

"""Fixtures of the fault suite: every test runs over both engine backends.

The fault suite holds what a user or an attacker does to a server that the protocol suites
do not: big bodies, slow and stalled readers, stalled writers, vanished peers, floods and
malformed input. Each test fails on a server that loses data or holds resources, and is
bounded in time (no test waits on a real-world timeout: servers under test get short ones).
"""

from __future__ import annotations

from typing import Any

import pytest

from nbio.engine import BACKENDS

try:
    import uvloop  # noqa: F401

    LOOPS = ["asyncio", "uvloop"]
except ImportError:  # pragma: no cover
    LOOPS = ["asyncio"]


@pytest.fixture(params=list(BACKENDS))
def backend(request: Any) -> str:
    """The engine backend (``native`` or ``asyncio``) a test's server runs on."""
    return str(request.param)


@pytest.fixture(params=[f"{b}-{lp}" for b in BACKENDS for lp in LOOPS])
def engine(request: Any) -> str:
    """``"<backend>-<loop>"`` for engine-level tests (build with ``make_engine``)."""
    return str(request.param)

"""Fixtures of the WebSocket server/client tests (helpers live in ``ws_helpers.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from nbio.engine import BACKENDS

try:
    import uvloop  # noqa: F401

    LOOPS = ["asyncio", "uvloop"]
except ImportError:  # pragma: no cover
    LOOPS = ["asyncio"]


@pytest.fixture(params=[f"{b}-{lp}" for b in BACKENDS for lp in LOOPS])
def engine(request: Any) -> str:
    """``"<backend>-<loop>"``: build the engine with ``make_engine`` in the test body."""
    return str(request.param)


@pytest.fixture(params=list(BACKENDS))
def backend(request: Any) -> str:
    return str(request.param)

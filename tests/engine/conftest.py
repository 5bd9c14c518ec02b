"""Engine test fixtures: every test taking ``engine`` runs on each backend x loop."""

from __future__ import annotations

from typing import Any

import pytest
from tests.engine._engine_support import ENGINE_KINDS


@pytest.fixture(params=ENGINE_KINDS)
def engine(request: Any) -> str:
    """``"<backend>-<loop>"``: the async test body builds the engine with :func:`make_engine`."""
    return str(request.param)

"""Outside programs the tests use as independent peers (curl, h2load, node, ...).

A missing program skips the test on a developer's machine and fails it in CI (``CI`` set),
where ``.ci/run`` installs every one of them.
"""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


def require(program: str) -> str:
    """The path of ``program``; skips (fails in CI) when it is not installed."""
    found = shutil.which(program)
    if found is None:
        message = f"{program} is not installed"
        if IN_CI:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    return found

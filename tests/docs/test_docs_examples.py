"""Every ```python block in docs/*.md runs to completion (each in its own interpreter)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _examples() -> list:
    out = []
    for page in sorted(DOCS.glob("*.md")):
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            out.append(pytest.param(match.group(1), id=f"{page.stem}-{i}"))
    return out


@pytest.mark.parametrize("code", _examples())
def test_doc_example_runs(code: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr

"""The suite runs in pytest's default import mode, where two test modules with the same file
name in different folders collide: keep every test file name unique."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def test_test_module_names_are_unique() -> None:
    root = Path(__file__).parent
    names = Counter(p.name for p in root.rglob("*.py") if p.name != "conftest.py"
                    and p.name != "__init__.py" and "node_modules" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []

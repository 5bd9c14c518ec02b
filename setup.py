"""Build script for nbio's Cython extensions (metadata lives in pyproject.toml).

Every ``.pyx`` under ``src/nbio`` becomes an extension module; the epoll engine
(``nbio.engine._native``) is Linux-only and is skipped elsewhere, where the portable
asyncio backend is used instead.
"""

import os
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent
LINUX_ONLY = {"nbio.engine._native"}


def extensions() -> list:
    exts = []
    for pyx in sorted((ROOT / "src").rglob("*.pyx")):
        rel = pyx.relative_to(ROOT / "src").with_suffix("")
        name = ".".join(rel.parts)
        if name in LINUX_ONLY and not sys.platform.startswith("linux"):
            continue
        exts.append(
            Extension(
                name,
                [str(pyx.relative_to(ROOT))],
                extra_compile_args=["-O2"] if os.name != "nt" else [],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        extensions(),
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
        quiet=True,
    ),
)

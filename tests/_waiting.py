"""Bounded waits on a condition, shared by the test directories."""

from __future__ import annotations

import asyncio
from typing import Callable


async def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    """Yield to the loop until ``cond()`` is true; fail the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)

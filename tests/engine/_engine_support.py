"""Helpers for the engine tests: engines by kind ("<backend>-<loop>") and a recording handler."""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Tuple

from nbio.engine import BACKENDS, Engine, Handler

try:
    import uvloop  # noqa: F401

    LOOPS = ["asyncio", "uvloop"]
except ImportError:  # pragma: no cover
    LOOPS = ["asyncio"]

ENGINE_KINDS = [f"{b}-{lp}" for b in BACKENDS for lp in LOOPS]


def make_engine(kind: str, **settings: Any) -> Engine:
    """An engine of the backend named in ``kind``."""
    return Engine(backend=kind.split("-")[0], **settings)


class Recorder(Handler):
    """Handler that records callbacks and lets tests await them."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.loop = asyncio.get_running_loop()
        self.opened: List[Any] = []
        self.closed: List[Tuple[Any, Optional[BaseException]]] = []
        self.data = bytearray()
        self._waiters: List[Tuple[Any, asyncio.Future]] = []

    def _check(self) -> None:
        for cond, fut in list(self._waiters):
            if not fut.done() and cond():
                fut.set_result(None)
                self._waiters.remove((cond, fut))

    async def wait_for(self, cond: Any, timeout: float = 5.0) -> None:
        if cond():
            return
        fut = self.loop.create_future()
        self._waiters.append((cond, fut))
        await asyncio.wait_for(fut, timeout)

    def on_open(self, conn: Any) -> None:
        self.opened.append(conn)
        self._check()

    def on_data(self, conn: Any, data: Any) -> None:
        if self.echo:
            conn.write(data)
        self.data += data
        self._check()

    def on_close(self, conn: Any, exc: Optional[BaseException]) -> None:
        self.closed.append((conn, exc))
        self._check()

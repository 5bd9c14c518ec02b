"""The ``nbio`` command line: ``nbio demo`` starts a demo server on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any, List, Optional

from .engine import Engine, Handler

DEMO_PORT = 8765


class EchoHandler(Handler):
    """Echoes every byte back and counts connections."""

    def __init__(self) -> None:
        self.connections = 0

    def on_open(self, conn: Any) -> None:
        self.connections += 1
        conn.write(b"nbio echo demo: type a line, it comes back. Ctrl-] then quit to leave.\r\n")

    def on_data(self, conn: Any, data: Any) -> None:
        conn.write(data)


async def run_demo(host: str, port: int, seconds: Optional[float]) -> None:
    """Serve the echo demo until SIGINT/SIGTERM (or for ``seconds``)."""
    engine = Engine()
    listener = engine.listen(EchoHandler(), host, port, reuse_port=False)
    bound_host, bound_port = listener.address[:2]
    print(f"nbio demo: echo server listening on {bound_host}:{bound_port} "
          f"(engine backend: {engine.backend})", flush=True)
    print(f"  try:  nc {bound_host} {bound_port}     or:  telnet {bound_host} {bound_port}", flush=True)
    print("  stop: Ctrl-C", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    try:
        if seconds is not None:
            await asyncio.wait_for(stop.wait(), seconds)
        else:
            await stop.wait()
    except asyncio.TimeoutError:
        pass
    stats = engine.stats()
    await engine.close()
    print(f"nbio demo: stopped after {stats['accepted']} connection(s), "
          f"{stats['bytes_in']} bytes echoed", flush=True)


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
    else:
        uvloop.run(coro) if hasattr(uvloop, "run") else asyncio.run(coro)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``nbio`` command."""
    parser = argparse.ArgumentParser(prog="nbio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the demo server on 127.0.0.1")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=DEMO_PORT)
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    if args.command == "demo":
        _run(run_demo(args.host, args.port, args.seconds))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

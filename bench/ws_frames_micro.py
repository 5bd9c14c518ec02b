"""Micro-benchmark: ns to parse one 1 KiB masked client frame into one message.

nbio's C core (callback API with a no-op C handler and with a Python handler, and the
event API) against the sans-IO parsers of websockets and wsproto, in one run.
Not a test. Last line: {"bench": "ws_frames_micro", "results": {...}}.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict

from nbio.ws._frames import encode_frame
from nbio.ws.protocol import Handler, WebSocketCore, WebSocketProtocol

N = int(os.environ.get("N", "200000"))
BINARY = encode_frame(2, os.urandom(1024), mask=True)
TEXT = encode_frame(1, ("x" * 1022 + "é").encode(), mask=True)


class CountingHandler(Handler):
    count = 0

    def on_message(self, conn: object, data: object, is_text: bool) -> None:
        CountingHandler.count += 1


def check(frame: bytes) -> None:
    """Sanity: the core delivers every frame (a failed core would ignore input)."""
    core, h = WebSocketCore(), CountingHandler()
    CountingHandler.count = 0
    for _ in range(3):
        core.feed(frame, h, None)
    assert CountingHandler.count == 3 and not core.failed


def timeit(fn: Callable[[], None], n: int = N) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def nbio_c_handler(frame: bytes) -> Callable[[], None]:
    core, h = WebSocketCore(), Handler()
    feed = core.feed

    def run() -> None:
        for _ in range(N):
            feed(frame, h, None)

    return run


class PyHandler(Handler):
    def on_message(self, conn: object, data: object, is_text: bool) -> None:
        pass


def nbio_py_handler(frame: bytes) -> Callable[[], None]:
    core, h = WebSocketCore(), PyHandler()
    feed = core.feed

    def run() -> None:
        for _ in range(N):
            feed(frame, h, None)

    return run


def nbio_events(frame: bytes) -> Callable[[], None]:
    p = WebSocketProtocol()
    rd = p.receive_data

    def run() -> None:
        for _ in range(N):
            rd(frame)

    return run


def websockets_parser(frame: bytes) -> Callable[[], None]:
    from websockets.protocol import Protocol, Side

    p = Protocol(Side.SERVER, max_size=None)

    def run() -> None:
        rd, ev = p.receive_data, p.events_received
        for _ in range(N):
            rd(frame)
            ev()

    return run


def wsproto_parser(frame: bytes) -> Callable[[], None]:
    from wsproto.frame_protocol import FrameProtocol

    p = FrameProtocol(client=False, extensions=[])

    def run() -> None:
        for _ in range(N):
            p.receive_bytes(frame)
            for _f in p.received_frames():
                pass

    return run


def main() -> None:
    check(BINARY)
    check(TEXT)
    results: Dict[str, Dict[str, float]] = {}
    cases = {
        "nbio_callback_c": nbio_c_handler,
        "nbio_callback_py": nbio_py_handler,
        "nbio_events": nbio_events,
        "websockets": websockets_parser,
        "wsproto": wsproto_parser,
    }
    for name, make in cases.items():
        try:
            results[name] = {
                "ns_binary_1k": round(timeit(make(BINARY)), 1),
                "ns_text_1k": round(timeit(make(TEXT)), 1),
            }
        except ImportError:
            continue
    base = results["websockets"]["ns_binary_1k"]
    print(f"{'parser':20} {'binary 1K ns':>14} {'text 1K ns':>12} {'vs websockets':>14}")
    for name, r in results.items():
        ratio = r["ns_binary_1k"] / base
        r["ratio_vs_websockets"] = round(ratio, 3)
        print(f"{name:20} {r['ns_binary_1k']:14.1f} {r['ns_text_1k']:12.1f} {ratio:14.3f}")
    print(json.dumps({"bench": "ws_frames_micro", "results": results}))


if __name__ == "__main__":
    main()

"""http_hello: requests/s and server CPU per request of a "Hello, World!" HTTP/1.1 server.

    python bench/http_hello.py [--servers a,b] [--seconds 5] [--warmup 1] [--conns 64]

Servers (one worker each, one at a time, on uvloop, pinned to one core):

* ``nbio-native``   -- :class:`nbio.http.HttpServer` with a plain (sync) handler, native engine;
* ``nbio-asgi``     -- :class:`nbio.http.asgi.AsgiServer` with a bare ASGI hello app;
* ``uvicorn``       -- uvicorn (http=httptools, loop=uvloop) with the same ASGI app;
* ``raw-httptools`` -- a raw uvloop Protocol + httptools parser writing a prebuilt-style
  response (status line, Content-Type, Content-Length, keep-alive handling): the floor for
  a Python HTTP/1.1 server on uvloop.

The load generator is ``wrk -t1 -c64`` pinned to the other core. After ``--warmup`` s of
load, the server's ``utime + stime`` (``/proc/PID/stat``) is read before and after a
``--seconds`` s wrk run; figures: ``req_per_s`` (wrk), ``user_us_per_req`` and
``total_us_per_req`` (server CPU over the run / requests wrk completed). Ratios are against
``raw-httptools`` (CPU per request) and ``uvicorn``. Targets: nbio-native total CPU/request
<= raw-httptools's; nbio-asgi <= 0.5x uvicorn's.

The last line is ``{"bench": "http_hello", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import servers_http as H

BENCH = "http_hello"
SERVERS = ("nbio-native", "nbio-asgi", "uvicorn", "raw-httptools")


# --------------------------------------------------------------------------------------------
# The servers (run in a child: ``http_hello.py --serve NAME``), from servers_http.py
# --------------------------------------------------------------------------------------------


async def serve_nbio(asgi: bool) -> None:
    from nbio.engine import Engine

    engine = Engine(backend="native")
    listener = engine.listen(H.nbio_hello_server(asgi), "127.0.0.1", 0)
    C.ready(listener.address[1])
    await asyncio.Event().wait()


async def serve_raw_httptools() -> None:
    server = await asyncio.get_running_loop().create_server(H.HelloProtocol, "127.0.0.1", 0)
    C.ready(server.sockets[0].getsockname()[1])
    await asyncio.Event().wait()


def serve(name: str) -> None:
    import uvloop

    if name == "uvicorn":
        H.run_uvicorn()
    elif name == "raw-httptools":
        uvloop.run(serve_raw_httptools())
    else:
        uvloop.run(serve_nbio(name == "nbio-asgi"))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    server_cpu, client_cpu = C.cpu_layout()
    argv = [sys.executable, os.path.abspath(__file__), "--serve", name]
    child, port, _ = C.start_server(argv, server_cpu, name, 30)
    try:
        url = f"http://127.0.0.1:{port}/"
        return C.measure_requests(
            child,
            name,
            lambda t: C.run_wrk(url, t, args.conns, client_cpu),
            args.warmup,
            args.seconds,
            "wrk",
        )
    finally:
        child.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--conns", type=int, default=64)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    C.install_cleanup()
    print(f"{BENCH}: {C.machine_info()}")
    print(
        f"wrk -t1 -c{args.conns}, {args.seconds:g} s after {args.warmup:g} s warm-up; "
        "one worker per server, uvloop"
    )
    results: dict[str, dict[str, float]] = {}
    for name in C.pick_servers(p, args.servers, SERVERS):
        t = time.monotonic()
        results[name] = measure(name, args)
        print(f"  {name}: done in {time.monotonic() - t:.1f} s", flush=True)
    raw = results.get("raw-httptools", {}).get("total_us_per_req")
    uvi = results.get("uvicorn", {}).get("total_us_per_req")
    for r in results.values():
        if raw:
            r["cpu_vs_raw_httptools"] = r["total_us_per_req"] / raw
        if uvi:
            r["cpu_vs_uvicorn"] = r["total_us_per_req"] / uvi
    rows = [
        [
            n,
            r["req_per_s"],
            r["user_us_per_req"],
            r["total_us_per_req"],
            r["server_cpu_pct"],
            r.get("cpu_vs_raw_httptools"),
            r.get("cpu_vs_uvicorn"),
        ]
        for n, r in results.items()
    ]
    C.print_table(
        [
            "server",
            "req/s",
            "user us/req",
            "total us/req",
            "server cpu %",
            "cpu vs raw",
            "cpu vs uvicorn",
        ],
        rows,
    )
    if "nbio-native" in results and raw:
        ok = results["nbio-native"]["total_us_per_req"] <= raw
        print(f"target nbio-native <= raw-httptools CPU/request: {'met' if ok else 'NOT met'}")
    if "nbio-asgi" in results and uvi:
        ok = results["nbio-asgi"]["total_us_per_req"] <= 0.5 * uvi
        print(f"target nbio-asgi <= 0.5x uvicorn CPU/request: {'met' if ok else 'NOT met'}")
    C.emit_json(BENCH, results)


if __name__ == "__main__":
    main()

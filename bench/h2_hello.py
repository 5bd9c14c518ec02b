"""h2_hello: requests/s and server CPU per request of a "Hello, World!" HTTP/2 (h2c) server.

    python bench/h2_hello.py [--servers a,b] [--seconds 5] [--warmup 1]

Servers (one worker each, one at a time, on uvloop, pinned to one core):

* ``nbio-h2``      -- :class:`nbio.http.HttpServer` with a plain (sync) handler, native engine;
* ``nbio-h2-asgi`` -- :class:`nbio.http.asgi.AsgiServer` with a bare ASGI hello app;
* ``hypercorn``    -- hypercorn (uvloop worker) with the same ASGI app.

All serve h2c with prior knowledge. The load generator is ``h2load -c4 -m16`` (64 streams in
flight over 4 connections) pinned to the other core. After ``--warmup`` s of load, the
server's ``utime + stime`` (``/proc/PID/stat``) is read around a ``--seconds`` s h2load run;
figures: ``req_per_s`` (h2load), ``user_us_per_req`` and ``total_us_per_req`` (server CPU over
the run / requests completed). Target: nbio-h2-asgi CPU/request <= 0.5x hypercorn's.

The last line is ``{"bench": "h2_hello", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
from servers_http import BODY, hello_asgi

BENCH = "h2_hello"
SERVERS = ("nbio-h2", "nbio-h2-asgi", "hypercorn")


async def serve_nbio(asgi: bool) -> None:
    from nbio.engine import Engine
    from nbio.http import HttpServer, Response
    from nbio.http.asgi import AsgiServer

    headers = [(b"content-type", b"text/plain")]

    def hello(request):  # type: ignore[no-untyped-def]
        return Response(BODY, headers=headers)

    server = AsgiServer(hello_asgi, lifespan="off") if asgi else HttpServer(hello)
    engine = Engine(backend="native")
    listener = engine.listen(server, "127.0.0.1", 0)
    print(f"READY {listener.address[1]}", flush=True)
    await asyncio.Event().wait()


def serve_hypercorn() -> None:
    import socket

    from hypercorn.config import Config

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 60
    try:
        import uvloop
        from hypercorn.asyncio import serve

        print(f"READY {port}", flush=True)
        uvloop.run(serve(hello_asgi, config))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        from hypercorn.asyncio import serve

        print(f"READY {port}", flush=True)
        asyncio.run(serve(hello_asgi, config))  # type: ignore[arg-type]


def serve(name: str) -> None:
    import uvloop

    if name == "hypercorn":
        serve_hypercorn()
    else:
        uvloop.run(serve_nbio(name == "nbio-h2-asgi"))


def run_h2load(port: int, seconds: float, cpu: int | None) -> tuple[float, int]:
    """Run h2load for ``seconds``; return (requests/s, requests succeeded)."""
    out = subprocess.run(
        ["h2load", "-c4", "-m16", "-t1", f"-D{max(1, round(seconds))}",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, preexec_fn=lambda: C.pin(0, cpu), timeout=seconds + 60,
    ).stdout
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    done = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if m is None or done is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    if int(done.group(2)) or int(done.group(3)):
        C.warn(f"h2load reported failures:\n{out}")
    return float(m.group(1)), int(done.group(1))


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    server_cpu, client_cpu = C.cpu_layout()
    child = C.Child([sys.executable, os.path.abspath(__file__), "--serve", name],
                    cpu=server_cpu, env=C.python_env(), name=name)
    try:
        port = int(child.expect("READY", 30).split()[0])
        C.wait_port("127.0.0.1", port)
        return C.measure_requests(
            child, name, lambda t: run_h2load(port, t, client_cpu),
            args.warmup, args.seconds, "h2load")
    finally:
        child.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is needed: apt-get install -y nghttp2-client")
    names = C.pick_servers(p, args.servers, SERVERS)
    C.install_cleanup()
    print(f"{BENCH}: {C.machine_info()}")
    print(f"h2load -c4 -m16 (h2c), {args.seconds:g} s after {args.warmup:g} s warm-up; "
          "one worker per server, uvloop")
    results: dict[str, dict[str, float]] = {}
    for name in names:
        t = time.monotonic()
        results[name] = measure(name, args)
        print(f"  {name}: done in {time.monotonic() - t:.1f} s", flush=True)
    hyp = results.get("hypercorn", {}).get("total_us_per_req")
    for r in results.values():
        if hyp:
            r["cpu_vs_hypercorn"] = r["total_us_per_req"] / hyp
    rows = [[n, r["req_per_s"], r["user_us_per_req"], r["total_us_per_req"],
             r["server_cpu_pct"], r.get("cpu_vs_hypercorn")] for n, r in results.items()]
    C.print_table(["server", "req/s", "user us/req", "total us/req", "server cpu %",
                   "cpu vs hypercorn"], rows)
    if "nbio-h2-asgi" in results and hyp:
        ok = results["nbio-h2-asgi"]["total_us_per_req"] <= 0.5 * hyp
        print(f"target nbio-h2-asgi <= 0.5x hypercorn CPU/request: {'met' if ok else 'NOT met'}")
    C.emit_json(BENCH, results)


if __name__ == "__main__":
    main()

"""h3_hello: HTTP/3 requests/s and server CPU per request of a "Hello, World!" server.

    python bench/h3_hello.py [--servers a,b] [--seconds 4] [--warmup 1] [--conns 4] [--streams 16]

Servers (one process each, one at a time, on uvloop, pinned to one core):

* ``nbio-h3``      -- :class:`nbio.http3.H3Server` with a plain (sync) native handler, native
  engine (aioquic's sans-IO QUIC/H3 driven by engine UDP);
* ``nbio-h3-asgi`` -- the same server with a bare ASGI hello app;
* ``aioquic``      -- aioquic's own asyncio server (``aioquic.asyncio.serve``) with a minimal
  H3 handler, modeled on aioquic's examples/http3_server.py.

The load generator is a separate process pinned to the other core: aioquic's asyncio client
with ``--conns`` QUIC connections, each keeping ``--streams`` requests in flight. After
``--warmup`` s, the server's ``utime + stime`` is read before and after ``--seconds`` s;
figures: ``req_per_s``, ``user_us_per_req``, ``total_us_per_req``. QUIC in Python costs the
client about as much as the server, so the generator usually saturates its core: the req/s
then measure the client, and CPU per request is the figure to compare.

The last line is ``{"bench": "h3_hello", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
from servers_http import BODY, hello_asgi

BENCH = "h3_hello"
SERVERS = ("nbio-h3", "nbio-h3-asgi", "aioquic")


# --------------------------------------------------------------------------------------------
# Servers (``h3_hello.py --serve NAME CERT KEY``)
# --------------------------------------------------------------------------------------------


async def serve_nbio(asgi: bool, cert: str, key: str) -> None:
    from nbio.engine import Engine
    from nbio.http import Response
    from nbio.http3 import H3Server

    headers = [(b"content-type", b"text/plain")]

    def hello(request):  # type: ignore[no-untyped-def]
        return Response(BODY, headers=headers)

    engine = Engine(backend="native")
    server = await H3Server.start(hello_asgi if asgi else hello, certfile=cert, keyfile=key,
                                  engine=engine, asgi=asgi, lifespan="off")
    print(f"READY {server.address[1]}", flush=True)
    await asyncio.Event().wait()


async def serve_aioquic(cert: str, key: str) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ProtocolNegotiated

    class HttpServerProtocol(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.http = None

        def quic_event_received(self, event):  # type: ignore[no-untyped-def]
            if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
                self.http = H3Connection(self._quic)
            if self.http is None:
                return
            for ev in self.http.handle_event(event):
                if isinstance(ev, HeadersReceived) and ev.stream_ended:
                    self.http.send_headers(ev.stream_id, [
                        (b":status", b"200"), (b"content-type", b"text/plain"),
                        (b"content-length", b"%d" % len(BODY))])
                    self.http.send_data(ev.stream_id, BODY, end_stream=True)
            self.transmit()

    config = QuicConfiguration(is_client=False, alpn_protocols=list(H3_ALPN))
    config.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", 0, configuration=config,
                         create_protocol=HttpServerProtocol)
    print(f"READY {server._transport.get_extra_info('sockname')[1]}", flush=True)
    await asyncio.Event().wait()


def serve(name: str, cert: str, key: str) -> None:
    import uvloop

    if name == "aioquic":
        uvloop.run(serve_aioquic(cert, key))
    else:
        uvloop.run(serve_nbio(name == "nbio-h3-asgi", cert, key))


# --------------------------------------------------------------------------------------------
# Load generator (``h3_hello.py --load PORT CA CONNS STREAMS``): prints the number of
# completed requests each time a line arrives on stdin
# --------------------------------------------------------------------------------------------


async def load(port: int, ca: str, conns: int, streams: int) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, connect
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration

    done = [0]

    class Client(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.http = H3Connection(self._quic)
            self.waiters = {}

        async def get(self) -> None:
            sid = self._quic.get_next_available_stream_id()
            self.http.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                         (b":authority", b"localhost"), (b":path", b"/")],
                                   end_stream=True)
            fut = self._loop.create_future()
            self.waiters[sid] = fut
            self.transmit()
            await fut

        def quic_event_received(self, event):  # type: ignore[no-untyped-def]
            for ev in self.http.handle_event(event):
                if isinstance(ev, (HeadersReceived, DataReceived)) and ev.stream_ended:
                    fut = self.waiters.pop(ev.stream_id, None)
                    if fut is not None:
                        fut.set_result(None)

    async def worker(client: Client) -> None:
        while True:
            await client.get()
            done[0] += 1

    async def one(n: int) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN),
                                   server_name="localhost")
        config.load_verify_locations(ca)
        async with connect("127.0.0.1", port, configuration=config,
                           create_protocol=Client) as client:
            await asyncio.gather(*[worker(client) for _ in range(n)])  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(one(streams)) for _ in range(conns)]
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    while await reader.readline():
        print(f"COUNT {done[0]}", flush=True)
    for t in tasks:
        t.cancel()


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def measure(name: str, args: argparse.Namespace, cert: str, key: str, ca: str
            ) -> dict[str, float]:
    server_cpu, client_cpu = C.cpu_layout()
    me = os.path.abspath(__file__)
    server = C.Child([sys.executable, me, "--serve", name, cert, key],
                     cpu=server_cpu, env=C.python_env(), name=name)
    client = None
    try:
        port = int(server.expect("READY", 30).split()[0])
        client = C.Child([sys.executable, me, "--load", str(port), ca, str(args.conns),
                          str(args.streams)], cpu=client_cpu, env=C.python_env(), name="load")
        client.expect("READY", 30)
        time.sleep(args.warmup)
        client.send("count")
        n0 = int(client.expect("COUNT", 10))
        su0, ss0 = C.cpu_times(server.pid)
        cu0, cs0 = C.cpu_times(client.pid)
        time.sleep(args.seconds)
        client.send("count")
        n1 = int(client.expect("COUNT", 10))
        su1, ss1 = C.cpu_times(server.pid)
        cu1, cs1 = C.cpu_times(client.pid)
        if not server.alive():
            raise RuntimeError(f"{name} died during the run")
    finally:
        if client is not None:
            client.stop()
        server.stop()
    total = n1 - n0
    if total <= 0:
        raise RuntimeError(f"{name}: no request completed")
    client_pct = 100 * (cu1 - cu0 + cs1 - cs0) / args.seconds
    if client_pct > 90:
        C.warn(f"{name}: the load generator used {client_pct:.0f}% of its core: "
               "req/s measure the client; compare CPU per request")
    return {
        "req_per_s": total / args.seconds,
        "user_us_per_req": (su1 - su0) / total * 1e6,
        "total_us_per_req": (su1 - su0 + ss1 - ss0) / total * 1e6,
        "server_cpu_pct": 100 * (su1 - su0 + ss1 - ss0) / args.seconds,
        "client_cpu_pct": client_pct,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--streams", type=int, default=16)
    args = p.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.load:
        import uvloop

        port, ca, conns, streams = args.load
        uvloop.run(load(int(port), ca, int(conns), int(streams)))
        return
    import trustme

    C.install_cleanup()
    print(f"{BENCH}: {C.machine_info()}")
    print(f"aioquic client, {args.conns} connections x {args.streams} streams, "
          f"{args.seconds:g} s after {args.warmup:g} s warm-up; one process per server, uvloop")
    tmp = tempfile.mkdtemp(prefix="h3_hello")
    authority = trustme.CA()
    leaf = authority.issue_cert("localhost", "127.0.0.1")
    cert, key, ca = (os.path.join(tmp, n) for n in ("cert.pem", "key.pem", "ca.pem"))
    leaf.private_key_and_cert_chain_pem.write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    authority.cert_pem.write_to_path(ca)
    results: dict[str, dict[str, float]] = {}
    for name in args.servers.split(","):
        results[name] = measure(name, args, cert, key, ca)
    base = results.get("aioquic", {}).get("total_us_per_req")
    for r in results.values():
        if base:
            r["cpu_vs_aioquic"] = r["total_us_per_req"] / base
    rows = [[n, r["req_per_s"], r["user_us_per_req"], r["total_us_per_req"],
             r["server_cpu_pct"], r["client_cpu_pct"], r.get("cpu_vs_aioquic")]
            for n, r in results.items()]
    C.print_table(["server", "req/s", "user us/req", "total us/req", "server cpu %",
                   "client cpu %", "cpu vs aioquic"], rows)
    C.emit_json(BENCH, results)


if __name__ == "__main__":
    main()

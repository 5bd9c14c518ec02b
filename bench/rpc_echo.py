"""rpc_echo: server CPU per RPC call, throughput and latency, nbio.rpc vs grpcio.

    python bench/rpc_echo.py [--servers nbio-rpc,nbio-rpc-msgpack,grpcio] [--seconds 4]
                             [--warmup 1] [--conns 10] [--callers 100] [--rounds 1]

Every server echoes a 581-byte payload: a small record (dict) whose JSON encoding is 581
bytes. Servers, each in its own process pinned to one core:

* ``nbio-rpc``: ``nbio.rpc.Server`` (native engine, uvloop), JSON codec; the handler is a
  plain function ``lambda ctx: ctx.bind()`` (decode + encode the record);
* ``nbio-rpc-msgpack``: the same with the msgpack codec (the record as msgpack);
* ``grpcio``: ``grpc.aio`` unary-unary echo of the same 581 JSON bytes (generic handler,
  bytes in/out: no protobuf work, which favours grpcio).

The load generator, a separate process pinned to the other core, keeps ``--callers``
calls in flight over ``--conns`` connections (each caller sends its next call when its
answer arrives). For the nbio servers it speaks arpc frames directly (uvloop protocol +
nbio's compiled FrameReader, checking every answer byte for byte); for grpcio it is a
``grpc.aio`` client with one channel per connection. After ``--warmup`` s it samples the
server's utime+stime (all threads, /proc/PID/stat) and its call count, and again after
``--seconds`` s (>= 3). Figures: ``calls_per_s``, ``total_us_per_call`` (server CPU per
call), ``user_us_per_call``, ``p50_ms``, ``p99_ms`` (client-side, steady phase), plus
``client_cpu_pct``: when the generator saturates its core, calls/s measures the client.

The last line is ``{"bench": "rpc_echo", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

BENCH = "rpc_echo"
SERVERS = ("nbio-rpc", "nbio-rpc-msgpack", "grpcio")
PAYLOAD_SIZE = 581
METHOD = "/echo"
GRPC_METHOD = "/bench.Echo/Echo"


def record() -> dict:
    """The echoed value: a small record whose compact JSON is exactly 581 bytes."""
    rec: dict = {
        "id": 123456,
        "user": "ada.lovelace",
        "tags": ["alpha", "beta", "gamma"],
        "score": 98.5,
        "active": True,
        "text": "",
    }
    base = len(json.dumps(rec, separators=(",", ":")))
    rec["text"] = "lorem ipsum dolor sit amet " * 30
    rec["text"] = rec["text"][: PAYLOAD_SIZE - base]
    assert len(json.dumps(rec, separators=(",", ":"))) == PAYLOAD_SIZE
    return rec


def payload_for(server: str) -> bytes:
    if server == "nbio-rpc-msgpack":
        import msgpack

        return bytes(msgpack.packb(record(), use_bin_type=True))
    from nbio.rpc.codec import JsonCodec

    out = JsonCodec().marshal(record())
    assert len(out) == PAYLOAD_SIZE
    return out


# --------------------------------------------------------------------------------------------
# Servers (``rpc_echo.py --role server --server NAME``)
# --------------------------------------------------------------------------------------------


def run_server(name: str, port: int) -> None:
    if name == "grpcio":
        asyncio.run(_grpc_server(port))
        return
    import uvloop

    uvloop.install()
    asyncio.run(_nbio_server(name, port))


async def _nbio_server(name: str, port: int) -> None:
    from nbio.engine import Engine
    from nbio.rpc import MsgpackCodec, Router, Server

    engine = Engine(backend="native", backlog=4096)
    router = Router()
    router.handle(METHOD, lambda ctx: ctx.bind())
    codec = MsgpackCodec() if name == "nbio-rpc-msgpack" else None
    server = Server(router, codec=codec, engine=engine)
    _, bound = await server.listen("127.0.0.1", port)
    print(f"READY {bound}", flush=True)
    await _wait_stdin_eof()
    await server.close()
    await engine.close()


async def _grpc_server(port: int) -> None:
    import grpc

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"READY {bound}", flush=True)
    await _wait_stdin_eof()
    await server.stop(0)


async def _wait_stdin_eof() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


# --------------------------------------------------------------------------------------------
# Load generator (``rpc_echo.py --role client ...``)
# --------------------------------------------------------------------------------------------


class Phase(C.CpuSampler):
    """CPU samples at the start and end of the steady phase (see ``C.CpuSampler``); call
    latencies are kept only in between."""

    def __init__(self, server_pid: int) -> None:
        super().__init__(server_pid)
        self.steady = False
        self.latencies: list[float] = []

    def result(self) -> dict[str, float]:
        out = self.per_unit("call")
        lat = sorted(self.latencies)
        out["p50_ms"] = C.percentile(lat, 50) * 1e3
        out["p99_ms"] = C.percentile(lat, 99) * 1e3
        return out


async def _drive(phase: Phase, count: Any, warmup: float, seconds: float) -> None:
    await asyncio.sleep(warmup)
    phase.take(count())
    phase.steady = True
    await asyncio.sleep(seconds)
    phase.steady = False
    phase.take(count())


def run_arpc_client(args: argparse.Namespace, phase: Phase) -> None:
    """Raw arpc frames over uvloop protocols; every answer is checked byte for byte."""
    import uvloop

    from nbio.rpc.message import CMD_RESPONSE, FLAG_ERROR, FrameReader

    payload = payload_for(args.server)
    head = struct.Struct("<IBBBBQ")
    mb = METHOD.encode()
    body_len = len(mb) + len(payload)
    now = time.perf_counter

    class Caller(asyncio.Protocol):
        def __init__(self) -> None:
            self.sent: dict[int, float] = {}
            self.seq = 2
            self.n = 0
            self.reader = FrameReader(self.on_message)

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def send(self) -> None:
            seq = self.seq
            self.seq = seq + 1
            self.sent[seq] = now()
            self.transport.write(head.pack(body_len, 0, 1, 0, len(mb), seq) + mb + payload)

        def data_received(self, data: bytes) -> None:
            self.reader.feed(data)

        def on_message(self, msg: Any) -> None:
            t0 = self.sent.pop(msg.seq)
            if msg.cmd != CMD_RESPONSE or msg.flags & FLAG_ERROR or msg.payload != payload:
                raise RuntimeError(f"bad answer: {msg!r}")
            if phase.steady:
                phase.latencies.append(now() - t0)
            self.n += 1
            self.send()

        def connection_lost(self, exc: Any) -> None:
            if phase.steady:
                print(f"connection lost: {exc}", file=sys.stderr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        callers = []
        for _ in range(args.conns):
            _, p = await loop.create_connection(Caller, "127.0.0.1", args.port)
            callers.append(p)
        per_conn = args.callers // args.conns
        for p in callers:
            for _ in range(per_conn):
                p.send()
        await _drive(phase, lambda: sum(p.n for p in callers), args.warmup, args.seconds)
        for p in callers:
            p.transport.close()

    uvloop.install()
    asyncio.run(main())


def run_grpc_client(args: argparse.Namespace, phase: Phase) -> None:
    import grpc

    payload = payload_for(args.server)
    now = time.perf_counter

    async def main() -> None:
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{args.port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(args.conns)
        ]
        stubs = [ch.unary_unary(GRPC_METHOD) for ch in channels]
        done = [0]
        stop = [False]

        async def caller(stub: Any) -> None:
            while not stop[0]:
                t0 = now()
                answer = await stub(payload)
                if answer != payload:
                    raise RuntimeError("bad grpc echo")
                if phase.steady:
                    phase.latencies.append(now() - t0)
                done[0] += 1

        tasks = [asyncio.ensure_future(caller(stubs[i % args.conns])) for i in range(args.callers)]
        await _drive(phase, lambda: done[0], args.warmup, args.seconds)
        stop[0] = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()

    asyncio.run(main())


def run_client(args: argparse.Namespace) -> None:
    phase = Phase(args.server_pid)
    if args.server == "grpcio":
        run_grpc_client(args, phase)
    else:
        run_arpc_client(args, phase)
    print("RESULT " + json.dumps(phase.result()), flush=True)


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    server_cpu, client_cpu = C.cpu_layout()
    env = C.python_env()
    me = os.path.abspath(__file__)
    server = C.Child(
        [sys.executable, me, "--role", "server", "--server", name, "--port", "0"],
        cpu=server_cpu,
        env=env,
        name=name,
    )
    try:
        port = int(server.expect("READY", 30).split()[0])
        C.wait_port("127.0.0.1", port)
        client = C.Child(
            [
                sys.executable,
                me,
                "--role",
                "client",
                "--server",
                name,
                "--port",
                str(port),
                "--server-pid",
                str(server.pid),
                "--conns",
                str(args.conns),
                "--callers",
                str(args.callers),
                "--warmup",
                str(args.warmup),
                "--seconds",
                str(args.seconds),
            ],
            cpu=client_cpu,
            env=env,
            name=f"client:{name}",
        )
        with client:
            res = json.loads(client.expect("RESULT", args.warmup + args.seconds + 60))
    finally:
        server.stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    C.add_role_args(ap, ("bench", "server", "client"))
    ap.add_argument("--server", default="")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--callers", type=int, default=100)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if args.role == "server":
        run_server(args.server, args.port)
        return
    if args.role == "client":
        run_client(args)
        return
    if args.seconds < 3:
        ap.error("--seconds must be >= 3 (steady phase)")
    C.install_cleanup()
    names = C.pick_servers(ap, args.servers, SERVERS)
    print(f"rpc_echo  {C.machine_info()}")
    print(
        f"payload {PAYLOAD_SIZE} B, {args.callers} callers over {args.conns} connections, "
        f"warmup {args.warmup:g} s, steady {args.seconds:g} s, rounds {args.rounds}\n"
    )
    rounds = []
    for _ in range(args.rounds):
        rnd = {}
        for name in names:
            rnd[name] = measure(name, args)
        rounds.append(rnd)
    baseline = "grpcio" if "grpcio" in names else names[0]
    results = C.summarize_rounds(rounds, ("total_us_per_call", "calls_per_s"), baseline=baseline)
    figs = (
        "calls_per_s",
        "total_us_per_call",
        "user_us_per_call",
        "p50_ms",
        "p99_ms",
        "server_cpu_pct",
        "client_cpu_pct",
    )
    C.print_table(
        ("server", *figs, "cpu/call vs " + baseline),
        [
            [n] + [results[n].get(f) for f in figs] + [results[n].get("total_us_per_call_ratio")]
            for n in names
        ],
    )
    for n in names:
        if results[n]["client_cpu_pct"] > 90:
            C.warn(f"{n}: the load generator saturated its core; calls/s measures the client")
    print()
    C.emit_json(BENCH, results)


if __name__ == "__main__":
    main()

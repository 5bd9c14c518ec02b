"""tcp_echo: server CPU per echoed message and throughput, nbio engine vs peers.

    python bench/tcp_echo.py [--servers a,b] [--seconds 5] [--warmup 1] [--conns 64]
                             [--size 1024] [--client uvloop|epoll] [--rounds 1]

For each server of ``servers_tcp.py`` (one at a time, same load generator for all):

* the server runs pinned to one core, the load generator in a separate process pinned to the other;
* ``--conns`` connections each play ping-pong: send ``--size`` bytes, wait until they all came
  back (checked byte for byte when they arrive in one read), send again;
* after ``--warmup`` s, the generator samples the server's ``utime``/``stime`` (all threads, from
  ``/proc/PID/stat``) and its own message count, and again after ``--seconds`` s.

Figures per server: ``msgs_per_s``, ``user_us_per_msg`` and ``total_us_per_msg`` (server
utime, utime+stime over the steady phase divided by the messages echoed in it), plus the CPU
use of server and generator over the phase. Ratios are against ``uvloop-protocol``. If the
generator saturates its core, a warning says so: msgs/s then measures the client.

The last line is ``{"bench": "tcp_echo", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import select
import socket
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

BENCH = "tcp_echo"
CLIENT_SATURATED_PCT = 90.0
OTHER_LOAD_PCT = 10.0
RATIO_FIGURES = ("msgs_per_s", "user_us_per_msg", "total_us_per_msg")


# --------------------------------------------------------------------------------------------
# Load generator (runs in its own process: ``tcp_echo.py --role client ...``)
# --------------------------------------------------------------------------------------------


def _messages(conns: int, size: int) -> list[bytes]:
    """One distinct payload per connection, so crossed or stale buffers are detected."""
    out = []
    for i in range(conns):
        head = f"conn {i:06d} ".encode()
        body = bytes((i * 7 + j) & 0xFF for j in range(size))
        out.append((head + body)[:size])
    return out


def _connect(port: int, conns: int) -> list[socket.socket]:
    socks = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def run_epoll(
    port: int, conns: int, size: int, warmup: float, seconds: float, marks: C.CpuSampler
) -> None:
    """Raw non-blocking sockets + level-triggered ``select.epoll`` in a tight loop."""
    socks = _connect(port, conns)
    msgs = _messages(conns, size)
    maxfd = max(s.fileno() for s in socks) + 1
    rem = [0] * maxfd
    msg_of: list[bytes] = [b""] * maxfd
    ep = select.epoll(sizehint=conns)
    for i, s in enumerate(socks):
        fd = s.fileno()
        rem[fd] = size
        msg_of[fd] = msgs[i]
        ep.register(fd, select.EPOLLIN)
    read, write, poll, now = os.read, os.write, ep.poll, time.monotonic
    for s in socks:
        write(s.fileno(), msg_of[s.fileno()])
    count = 0
    phase_ends = [now() + warmup, 0.0]
    phase = 0
    end = phase_ends[0]
    while True:
        for fd, _ev in poll(0.2):
            data = read(fd, 65536)
            n = len(data)
            if n == size:
                if data != msg_of[fd] or rem[fd] != size:
                    raise RuntimeError(f"bad echo on fd {fd}")
            elif n == 0:
                raise ConnectionError("server closed a connection")
            else:
                r = rem[fd] - n
                if r > 0:
                    rem[fd] = r
                    continue
                if r < 0:
                    raise RuntimeError(f"server echoed {-r} bytes too many on fd {fd}")
                rem[fd] = size
            if write(fd, msg_of[fd]) != size:
                raise RuntimeError("short write on an empty socket buffer")
            count += 1
        if now() >= end:
            marks.take(count)
            if phase == 1:
                break
            phase = 1
            end = marks.samples[0]["t"] + seconds
    ep.close()
    for s in socks:
        s.close()


def run_uvloop(
    port: int, conns: int, size: int, warmup: float, seconds: float, marks: C.CpuSampler
) -> None:
    """A uvloop ``asyncio.Protocol`` client: ``data_received`` -> ``transport.write``."""
    import uvloop

    class Ping(asyncio.Protocol):
        transport: asyncio.Transport

        def __init__(self, msg: bytes) -> None:
            self.msg = msg
            self.rem = size
            self.n = 0
            self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            n = len(data)
            if n == size:
                if data != self.msg or self.rem != size:
                    raise RuntimeError("bad echo")
            else:
                r = self.rem - n
                if r > 0:
                    self.rem = r
                    return
                if r < 0:
                    raise RuntimeError(f"server echoed {-r} bytes too many")
                self.rem = size
            self.n += 1
            self.transport.write(self.msg)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.lost.done():
                self.lost.set_exception(ConnectionError(f"server closed a connection: {exc}"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        protos: list[Ping] = []
        for msg in _messages(conns, size):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setblocking(False)
            _, p = await loop.create_connection(functools.partial(Ping, msg), sock=sock)
            protos.append(p)
        done = loop.create_future()

        def mark() -> None:
            marks.take(sum(p.n for p in protos))
            if len(marks.samples) == 1:
                loop.call_at(loop.time() + seconds, mark)
            elif not done.done():
                done.set_result(None)

        for p in protos:
            p.transport.write(p.msg)
        loop.call_at(loop.time() + warmup, mark)
        lost = [p.lost for p in protos]
        finished, _ = await asyncio.wait([done, *lost], return_when=asyncio.FIRST_COMPLETED)
        for f in finished:
            f.result()
        for p in protos:
            p.transport.abort()
            if not p.lost.done():
                p.lost.cancel()

    uvloop.run(main())


CLIENTS: dict[str, Callable[..., None]] = {"uvloop": run_uvloop, "epoll": run_epoll}


def client_main(args: argparse.Namespace) -> None:
    marks = C.CpuSampler(args.server_pid, watch_cpus=True)
    CLIENTS[args.client](args.port, args.conns, args.size, args.warmup, args.seconds, marks)
    print("RESULT " + json.dumps(marks.window()), flush=True)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def run_one(
    name: str, args: argparse.Namespace, cpus: tuple[int | None, int | None]
) -> dict[str, float]:
    server, port = C.start_tcp_server(name, cpus[0])
    try:
        argv = [
            sys.executable, os.path.abspath(__file__), "--role", "client",
            "--client", args.client, "--port", str(port), "--server-pid", str(server.pid),
            "--conns", str(args.conns), "--size", str(args.size),
            "--warmup", str(args.warmup), "--seconds", str(args.seconds),
        ]  # fmt: skip
        with C.Child(argv, cpu=cpus[1], env=C.python_env(), name=f"client({name})") as client:
            raw = json.loads(client.expect("RESULT", args.warmup + args.seconds + 30))
        if not server.alive():
            raise RuntimeError(f"{name} died during the run")
    finally:
        server.stop()
    msgs, dt = raw["count"], raw["dt"]
    if msgs <= 0:
        raise RuntimeError(f"{name}: no message echoed in the steady phase")
    user, total = raw["server_user"], raw["server_user"] + raw["server_sys"]
    ours = total + raw["client_user"] + raw["client_sys"]
    # Busy time of the two cores not explained by server + generator, as % of one core.
    # Some noise remains: /proc/stat and /proc/PID/stat are sampled a few us apart.
    other = max(0.0, raw["cores_busy"] - ours)
    return {
        "msgs_per_s": msgs / dt,
        "user_us_per_msg": user * 1e6 / msgs,
        "total_us_per_msg": total * 1e6 / msgs,
        "server_cpu_pct": 100.0 * total / dt,
        "client_cpu_pct": 100.0 * (raw["client_user"] + raw["client_sys"]) / dt,
        "client_user_us_per_msg": raw["client_user"] * 1e6 / msgs,
        "client_total_us_per_msg": (raw["client_user"] + raw["client_sys"]) * 1e6 / msgs,
        "other_load_pct": 100.0 * other / dt,
    }


def run_least_disturbed(
    name: str, args: argparse.Namespace, cpus: tuple[int | None, int | None]
) -> dict[str, float]:
    """``run_one``, repeated up to ``--retries`` times while other load disturbs it."""
    best: dict[str, float] | None = None
    for attempt in range(1 + args.retries):
        r = run_one(name, args, cpus)
        if best is None or r["other_load_pct"] < best["other_load_pct"]:
            best = r
        if r["other_load_pct"] < OTHER_LOAD_PCT:
            break
        if attempt < args.retries:
            print(f"    disturbed (other load {r['other_load_pct']:.0f}%), again", flush=True)
    assert best is not None
    return best


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                round(r["msgs_per_s"]),
                r.get("msgs_per_s_ratio"),
                r["user_us_per_msg"],
                r.get("user_us_per_msg_ratio"),
                r["total_us_per_msg"],
                r.get("total_us_per_msg_ratio"),
                f"{r['server_cpu_pct']:.0f}%",
                f"{r['client_cpu_pct']:.0f}%",
                f"{r['other_load_pct']:.0f}%",
            ]
        )
    print()
    print(
        f"tcp_echo: {args.conns} conns x {args.size} B ping-pong, {args.client} client, "
        f"{args.seconds:g} s steady after {args.warmup:g} s warm-up, median of {args.rounds} round(s)"
    )
    print(
        f"x: ratio vs {C.BASELINE} in the same round (median over rounds); "
        "msgs/s higher is better, us/msg lower is better"
    )
    C.print_table(
        [
            "server",
            "msgs/s",
            "x",
            "user us/msg",
            "x",
            "total us/msg",
            "x",
            "srv CPU",
            "gen CPU",
            "other",
        ],
        rows,
    )
    print("srv/gen CPU: server / load generator CPU use over the steady phase (100% = one core);")
    print("other: busy time of their two cores not used by them (other processes, steal)")
    for name, r in results.items():
        if r["client_cpu_pct"] >= CLIENT_SATURATED_PCT:
            C.warn(
                f"load generator used {r['client_cpu_pct']:.0f}% of its core against {name}: "
                "msgs/s may measure the client, not the server (CPU per message is unaffected)"
            )
        if r["other_load_pct"] >= OTHER_LOAD_PCT:
            C.warn(
                f"other load used {r['other_load_pct']:.0f}% of a core on the bench cores during "
                f"{name}: its figures are disturbed; rerun on a quiet machine or with --rounds"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="TCP echo: server CPU per message, nbio vs peers")
    ap.add_argument(
        "--servers",
        default=",".join(C.TCP_SERVERS),
        help="comma-separated subset of: " + ", ".join(C.TCP_SERVERS),
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="steady phase (>= 3 s)")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--size", type=int, default=1024, help="message size in bytes")
    ap.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="epoll",
        help="load generator (default: epoll, measured the faster one; see README)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server this many times (interleaved), report medians",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"repeat a run disturbed by > {OTHER_LOAD_PCT:g}%% other load up to this many "
        "times, keep the least disturbed",
    )
    C.add_role_args(ap, ("driver", "client"))
    args = ap.parse_args(argv)

    if args.role == "client":
        client_main(args)
        return 0

    names = C.pick_servers(ap, args.servers, C.TCP_SERVERS)
    if args.seconds < 3:
        C.warn("--seconds < 3: shorter than the steady phase BENCHMARKS.md asks for")
    C.install_cleanup()
    cpus = C.cpu_layout()
    print(C.machine_info())
    if cpus[0] is None:
        C.warn("fewer than 2 CPUs available: server and load generator are not pinned")
    else:
        print(f"server pinned to CPU {cpus[0]}, load generator to CPU {cpus[1]}")

    rounds: list[dict[str, dict[str, float]]] = []
    failed: dict[str, str] = {}
    for rnd in range(args.rounds):
        rounds.append({})
        for name in names:
            if name in failed:
                continue
            print(f"[round {rnd + 1}/{args.rounds}] {name} ...", flush=True)
            try:
                r = run_least_disturbed(name, args, cpus)
            except Exception as exc:  # one broken server must not sink the others
                failed[name] = f"{type(exc).__name__}: {exc}"
                C.warn(f"{name} failed: {failed[name]}")
                continue
            rounds[-1][name] = r
            print(
                f"    {r['msgs_per_s']:,.0f} msgs/s, {r['total_us_per_msg']:.2f} us/msg "
                f"(user {r['user_us_per_msg']:.2f}), server CPU {r['server_cpu_pct']:.0f}%, "
                f"generator CPU {r['client_cpu_pct']:.0f}% "
                f"({r['client_total_us_per_msg']:.2f} us/msg, user {r['client_user_us_per_msg']:.2f}), "
                f"other load {r['other_load_pct']:.0f}%",
                flush=True,
            )
    results = C.summarize_rounds(rounds, RATIO_FIGURES)
    report(results, args)
    C.emit_json(BENCH, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

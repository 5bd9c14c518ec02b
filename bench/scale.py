"""scale: hundreds of thousands of WebSocket connections, then a steady echo load, nbio vs peers.

    python bench/scale.py [--servers nbio,picows,websockets] [--conns 200000]
                          [--peer-conns 20000] [--rate 50500] [--seconds 10] [--warmup 2]
                          [--workers W] [--clients C] [--src-ips 49] [--inflight 100]
                          [--size 1024] [--idle 2] [--tick-ms 5] [--timeout 15]

Run by hand (minutes, GBs of RAM at full scale); other benches stay short.

Method, for each server in turn (``nbio``: the ``nbio.ws`` callback API on the native engine;
``picows``; ``websockets``; all on uvloop, echoing every message, no compression, no
keepalive pings):

1. **Workers.** ``W`` server processes (default ``ceil(conns / 15000)``: one process may hold
   at most 20,000 fds, and SO_REUSEPORT spreads connections unevenly) listen on one
   127.0.0.1 port with ``SO_REUSEPORT``. The bench keeps the port reserved with a bound,
   non-listening SO_REUSEPORT socket so no other process takes it meanwhile.
2. **Clients.** ``C`` client processes (default ``ceil(conns / 18000)``, at most 19,000
   connections each) run ``bench/wsload.c``, a C epoll load client built on first use with the
   system compiler (``cc -O2``, cached under ``~/.cache/nbio/bench``): as wrk is for HTTP, it
   must cost the two shared cores far less than the servers. Raw TCP connections from the
   source addresses 127.0.0.2... (``--src-ips`` of them, round-robin, so the ephemeral ports of
   one source address never run out), a fixed HTTP upgrade request, a check of the 101 and its
   ``Sec-WebSocket-Accept``, then masked binary frames whose first 8 payload bytes carry the
   send time, and a full parser of the echoed frames. Every client keeps at most
   ``--inflight`` connects/handshakes pending (the listen backlogs never overflow); dials and
   handshakes time out after 15 s and count as failures.
3. **Baseline.** One client opens ``8 W`` warm-up connections (handshake plus one echo each)
   and closes them, so every worker has run its whole code path once; 1 s later the
   workers' ``VmRSS`` (``/proc/PID/status``) and fd counts are summed: the empty baseline.
4. **Establish.** All clients open their share of ``--conns`` at once; progress every ~10,000
   connections; ``open_s`` is the time until every client has finished (established or
   failed). Once the workers' fd counts show every connection and they sat idle ``--idle``
   s, ``bytes_per_conn`` = (summed RSS - baseline) / established connections.
5. **Steady phase.** Every client sends ``--size``-byte messages at ``--rate / C`` msg/s,
   spread round-robin over all its connections (every connection echoes): every ``--tick-ms``
   (5 ms) it sends the messages due by then, and reads echoes as they arrive (a client starved
   of CPU for more than 50 ms skips the messages it is late with, counted in
   ``send_skipped``, rather than bursting them). After ``--warmup`` s the bench samples the workers' ``utime + stime``
   (``/proc/PID/stat``) and tells the clients to start counting; ``--seconds`` later it
   samples again and collects from each client its echo count, its window and a latency
   histogram (2 % buckets of the send-to-echo time of each message). Figures:
   ``msgs_per_s`` (echoes received per second), ``p50_ms``/``p90_ms``/``p99_ms``/``p999_ms``
   (merged histograms),
   ``total_us_per_msg``/``user_us_per_msg`` = workers' CPU delta / echoes in the window,
   and the CPU use of servers, clients and the whole machine (``/proc/stat``): clients and
   servers share the two cores, so a saturated machine is reported, not hidden), with the
   hypervisor's ``steal_pct`` and the packets the kernel dropped from a full receive backlog
   (``kernel_backlog_drops``, ``/proc/net/softnet_stat``: each costs a TCP retransmit) and
   how many workers and clients were runnable but waiting for a CPU on average
   (``server_runq_waiting``/``client_runq_waiting``, ``/proc/PID/schedstat``: the queueing
   behind the latency tail when clients and servers share the cores).

The peers run at ``--peer-conns`` (default 20,000: enough to compare bytes per connection
and CPU per message, and within their memory); nbio at ``--conns``.
Targets (issue 8) for nbio: 200,000 connections, ``bytes_per_conn`` <= 400 (1M connections
< 600 MB extrapolated: ``rss_1m_mb`` = one worker's baseline + 1M x ``bytes_per_conn``, i.e.
one process holding them where the fd limit allows), >= 50,000 msgs/s with ``p99_ms`` < 50.
``idle_server_cpu_pct`` is the workers' CPU while the connections sit idle (should be ~0).

The last line is ``{"bench": "scale", "results": {SERVER: {FIGURE: number}}}`` with
``conns``, ``failed``, ``bytes_per_conn``, ``msgs_per_s``, ``p50_ms``, ``p99_ms``,
``total_us_per_msg`` and more (null where no echo came back in the window).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import selectors
import socket
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import servers_ws as WS

BENCH = "scale"
SERVERS = ("nbio", "picows", "websockets")
FD_LIMIT = 20_000
CONNS_PER_WORKER = 15_000
CONNS_PER_CLIENT = 18_000
MAX_CONNS_PER_CLIENT = 19_000
BACKLOG = 4096
MAX_SIZE = 1 << 20
HIST_K = 1 / math.log(1.02)  # histogram bucket i holds RTTs in [1.02**i, 1.02**(i+1)) us


# ---------------------------------------------------------------------------------------------
# Server worker (``scale.py --role server --server NAME --port P``)
# ---------------------------------------------------------------------------------------------


# The echo servers are servers_ws.py's, listening with SO_REUSEPORT and a deep backlog, with
# messages capped at MAX_SIZE (no compression, no keepalive pings: servers_ws's defaults).
STARTERS: Dict[str, Callable[..., Awaitable[Any]]] = {
    "nbio": WS.nbio_callback,
    "picows": WS.picows_server,
    "websockets": WS.websockets_server,
}


async def _server_main(name: str, port: int) -> None:
    _server = await STARTERS[name](port, reuse_port=True, backlog=BACKLOG, max_size=MAX_SIZE)
    C.ready(port)
    await asyncio.get_running_loop().create_future()  # until SIGTERM's default action


# ---------------------------------------------------------------------------------------------
# Load client: bench/wsload.c, compiled on first use
# ---------------------------------------------------------------------------------------------

LOAD_CLIENT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wsload.c")


def build_load_client() -> str:
    """Compile ``wsload.c`` (cached by its content hash) and return the executable's path."""
    with open(LOAD_CLIENT_SOURCE, "rb") as f:
        source = f.read()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nbio", "bench"
    )
    exe = os.path.join(cache, f"wsload-{digest}")
    if not os.path.exists(exe):
        os.makedirs(cache, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        tmp = f"{exe}.{os.getpid()}"
        cmd = [cc, "-O2", "-Wall", "-o", tmp, LOAD_CLIENT_SOURCE, "-lm"]
        try:
            subprocess.run(cmd, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(
                f"scale: cannot build the load client ({' '.join(cmd)}): {exc}"
            ) from exc
        os.replace(tmp, exe)
    return exe


# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------


def reserve_port() -> Tuple[socket.socket, int]:
    """A bound, non-listening SO_REUSEPORT socket on 127.0.0.1: holds a free port for the
    workers (only listening sockets receive connections)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def collect(
    children: List[C.Child],
    prefix: str,
    timeout: float,
    on_other: Optional[Callable[[C.Child, str], None]] = None,
) -> Dict[C.Child, str]:
    """Read the lines of all ``children`` at once until each printed one starting with
    ``prefix``; other lines go to ``on_other``. Returns the rest of each child's line."""
    deadline = time.monotonic() + timeout
    got: Dict[C.Child, str] = {}

    def drain(child: C.Child, wait: float) -> None:
        while child not in got:
            try:
                line = child.readline(wait)
            except TimeoutError:
                return
            wait = 0.0
            if line.startswith(prefix):
                got[child] = line[len(prefix) :].strip()
            elif on_other is not None:
                on_other(child, line)
            else:
                print(f"  [{child.name}] {line}", file=sys.stderr)

    with selectors.DefaultSelector() as sel:
        for child in children:
            assert child.proc.stdout is not None
            sel.register(child.proc.stdout.fileno(), selectors.EVENT_READ, child)
            drain(child, 0.0)  # lines already buffered by an earlier read
        while len(got) < len(children):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(c.name for c in children if c not in got)
                raise TimeoutError(f"no {prefix} line within {timeout:.0f} s from {missing}")
            for key, _ in sel.select(min(left, 1.0)):
                drain(key.data, 0.002)
            for child in children:
                if child not in got and not child.alive():
                    drain(child, 0.0)
                    if child not in got:
                        raise EOFError(f"{child.name} exited (rc={child.proc.returncode})")
    return got


def _sum(pids: List[int], fn: Callable[[int], Any]) -> Any:
    return sum(fn(pid) for pid in pids)


def _cpu(pids: List[int]) -> Tuple[float, float]:
    user = system = 0.0
    for pid in pids:
        u, s = C.cpu_times(pid)
        user += u
        system += s
    return user, system


def _runq_wait(pids: List[int]) -> float:
    """Seconds ``pids`` spent runnable but waiting for a CPU (``/proc/PID/schedstat``
    field 2), summed; 0 for a process that is gone or a kernel without schedstats."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def _softnet_drops() -> int:
    """Packets the kernel dropped because a CPU's receive backlog was full
    (``/proc/net/softnet_stat`` column 2; loopback traffic goes through that backlog)."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f if line.strip())


def _check_alive(children: List[C.Child], when: str) -> None:
    dead = [f"{c.name} (rc={c.proc.returncode})" for c in children if not c.alive()]
    if dead:
        raise RuntimeError(f"{when}: exited: {', '.join(dead)}")


def _percentile(hist: Dict[int, int], q: float) -> Optional[float]:
    """The ``q`` quantile (0..1) of a merged RTT histogram, in ms (bucket middle)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return math.exp((b + 0.5) / HIST_K) / 1000.0
    return None


def run_server(name: str, conns: int, args: argparse.Namespace) -> Dict[str, Any]:
    """Workers + clients for one server; returns its figures."""
    workers_n = args.workers or max(1, math.ceil(conns / CONNS_PER_WORKER))
    clients_n = args.clients or max(1, math.ceil(conns / CONNS_PER_CLIENT))
    if math.ceil(conns / clients_n) > MAX_CONNS_PER_CLIENT:
        raise ValueError(f"{conns} connections need more than {clients_n} clients")
    env = C.python_env()
    me = os.path.abspath(__file__)
    load_client = build_load_client()
    holder, port = reserve_port()
    children: List[C.Child] = []
    try:
        print(
            f"## {name}: {conns:,} connections, {workers_n} workers, {clients_n} clients, "
            f"port {port}",
            flush=True,
        )
        workers = [
            C.Child(
                [sys.executable, me, "--role", "server", "--server", name, "--port", str(port)],
                env=env,
                name=f"{name}-w{i}",
            )
            for i in range(workers_n)
        ]
        children += workers
        collect(workers, "READY", 60)
        C.wait_port("127.0.0.1", port, 10)
        wpids = [w.pid for w in workers]
        shares = [
            conns // clients_n + (1 if i < conns % clients_n else 0) for i in range(clients_n)
        ]
        clients = [
            C.Child(
                [
                    load_client,
                    "--port",
                    str(port),
                    "--conns",
                    str(shares[i]),
                    "--size",
                    str(args.size),
                    "--src-ips",
                    str(args.src_ips),
                    "--ip-offset",
                    str(i),
                    "--inflight",
                    str(args.inflight),
                    "--timeout",
                    str(args.timeout),
                    "--tick-ms",
                    str(args.tick_ms),
                ],
                env=env,
                name=f"{name}-client{i}",
            )
            for i in range(clients_n)
        ]
        children += clients
        collect(clients, "READY", 60)

        # 3. warm-up and baseline
        clients[0].send(f"warm {8 * workers_n}")
        warm = collect(clients[:1], "WARMED", 120)[clients[0]].split()
        if int(warm[1]):
            C.warn(f"{name}: {warm[1]} warm-up connections failed: {' '.join(warm[3:])}")
        time.sleep(1.0)
        _check_alive(workers, "after the warm-up")
        base_rss = _sum(wpids, C.rss_bytes)
        base_fds = _sum(wpids, C.fd_count)

        # 4. establish
        progress = [0] * clients_n
        failed_p = [0] * clients_n
        last_print = [0]
        cpids = [c.pid for c in clients]
        open_cpu = (sum(_cpu(wpids)), sum(_cpu(cpids)))
        t_open = time.monotonic()

        def on_progress(child: C.Child, line: str) -> None:
            if not line.startswith("PROG"):
                print(f"  [{child.name}] {line}", file=sys.stderr)
                return
            i = clients.index(child)
            progress[i], failed_p[i] = (int(x) for x in line.split()[1:3])
            total = sum(progress)
            if total - last_print[0] >= 10_000:
                last_print[0] = total
                print(
                    f"  {total:>9,} open  {sum(failed_p):,} failed  "
                    f"{time.monotonic() - t_open:6.1f} s",
                    flush=True,
                )

        for c in clients:
            c.send("open")
        opened = collect(clients, "OPEN", max(300.0, conns / 200), on_progress)
        open_s = time.monotonic() - t_open
        open_cpu = (sum(_cpu(wpids)) - open_cpu[0], sum(_cpu(cpids)) - open_cpu[1])
        ok = failed = 0
        errors: Dict[str, int] = {}
        for line in opened.values():
            parts = line.split(None, 3)
            ok += int(parts[0])
            failed += int(parts[1])
            for k, v in json.loads(parts[3]).items():
                errors[k] = errors.get(k, 0) + v
        open_us = (open_cpu[0] / max(1, ok) * 1e6, open_cpu[1] / max(1, ok) * 1e6)
        print(
            f"  {ok:,} open, {failed:,} failed in {open_s:.1f} s ({ok / open_s:,.0f} conn/s); "
            f"CPU per connection: servers {open_us[0]:.0f} us, clients {open_us[1]:.0f} us",
            flush=True,
        )
        if failed:
            C.warn(f"{name}: {failed} connections failed: {errors}")
        deadline = time.monotonic() + 30
        while _sum(wpids, C.fd_count) < base_fds + ok and time.monotonic() < deadline:
            time.sleep(0.2)
        idle_cpu = sum(_cpu(wpids))
        time.sleep(args.idle)
        idle_cpu = sum(_cpu(wpids)) - idle_cpu
        _check_alive(workers, "after opening")
        rss = _sum(wpids, C.rss_bytes)
        server_conns = _sum(wpids, C.fd_count) - base_fds
        per_worker = [C.fd_count(p) for p in wpids]
        bytes_per_conn = (rss - base_rss) / max(1, ok)
        print(
            f"  workers hold {server_conns:,} connections (per worker {min(per_worker):,}"
            f"..{max(per_worker):,} fds); RSS {base_rss / 2**20:,.1f} -> {rss / 2**20:,.1f} MB: "
            f"{bytes_per_conn:,.0f} bytes/conn; idle CPU {idle_cpu / args.idle * 100:.1f}%",
            flush=True,
        )

        # 5. steady phase
        for c in clients:
            c.send(f"rate {args.rate / clients_n}")
        time.sleep(args.warmup)
        cpus = sorted(os.sched_getaffinity(0))
        a_cpu = _cpu(wpids)
        a_busy = C.cpus_busy(cpus)
        a_steal = C.cpus_steal(cpus)
        a_drops = _softnet_drops()
        a_wait = (_runq_wait(wpids), _runq_wait(cpids))
        a_t = time.monotonic()
        for c in clients:
            c.send("mark")
        collect(clients, "MARKED", 30)
        time.sleep(args.seconds)
        b_cpu = _cpu(wpids)
        b_busy = C.cpus_busy(cpus)
        b_steal = C.cpus_steal(cpus)
        b_drops = _softnet_drops()
        b_wait = (_runq_wait(wpids), _runq_wait(cpids))
        b_t = time.monotonic()
        for c in clients:
            c.send("report")
        reports = [json.loads(v) for v in collect(clients, "RESULT", 60).values()]
        _check_alive(workers, "after the steady phase")
        rss_steady = _sum(wpids, C.rss_bytes)
        dt = b_t - a_t
        echoed = sum(r["echoed"] for r in reports)
        hist: Dict[int, int] = {}
        for r in reports:
            for b, n in r["hist"].items():
                hist[int(b)] = hist.get(int(b), 0) + n
        user = b_cpu[0] - a_cpu[0]
        total = user + b_cpu[1] - a_cpu[1]
        msgs_per_s = sum(r["echoed"] / r["seconds"] for r in reports)
        client_cpu = sum(r["cpu_pct"] for r in reports)
        behind = sum(r["behind"] for r in reports)
        res: Dict[str, Any] = {
            "conns": ok,
            "failed": failed,
            "workers": workers_n,
            "clients": clients_n,
            "open_s": open_s,
            "conns_per_s": ok / open_s,
            "open_server_us_per_conn": open_us[0],
            "open_client_us_per_conn": open_us[1],
            "server_conns": server_conns,
            "rss_base_mb": base_rss / 2**20,
            "rss_mb": rss / 2**20,
            "rss_steady_mb": rss_steady / 2**20,
            "bytes_per_conn": bytes_per_conn,
            "rss_worker_base_mb": base_rss / workers_n / 2**20,
            "rss_1m_mb": (base_rss / workers_n + bytes_per_conn * 1_000_000) / 2**20,
            "idle_server_cpu_pct": idle_cpu / args.idle * 100,
            "target_rate": args.rate,
            "msgs_per_s": msgs_per_s,
            "p50_ms": _percentile(hist, 0.50),
            "p99_ms": _percentile(hist, 0.99),
            "p90_ms": _percentile(hist, 0.90),
            "p999_ms": _percentile(hist, 0.999),
            "user_us_per_msg": user / echoed * 1e6 if echoed else None,
            "total_us_per_msg": total / echoed * 1e6 if echoed else None,
            "server_cpu_pct": total / dt * 100,
            "client_cpu_pct": client_cpu,
            "machine_cpu_pct": (b_busy - a_busy) / dt * 100,
            "steal_pct": (b_steal - a_steal) / dt * 100,
            "kernel_backlog_drops": b_drops - a_drops,
            "server_runq_waiting": (b_wait[0] - a_wait[0]) / dt,
            "client_runq_waiting": (b_wait[1] - a_wait[1]) / dt,
            "send_skipped": behind,
            "dropped": sum(r["dropped"] for r in reports),
            "bad_frames": sum(r["bad"] for r in reports),
        }
        print(
            f"  steady: {msgs_per_s:,.0f} msg/s (target {args.rate:,.0f}), latency p50 "
            f"{C.fmt(res['p50_ms'])} p90 {C.fmt(res['p90_ms'])} p99 {C.fmt(res['p99_ms'])} "
            f"p99.9 {C.fmt(res['p999_ms'])} ms, server {C.fmt(res['total_us_per_msg'])} us/msg, "
            f"CPU server {res['server_cpu_pct']:.0f}% clients {client_cpu:.0f}% machine "
            f"{res['machine_cpu_pct']:.0f}% (steal {res['steal_pct']:.1f}%), waiting for a CPU "
            f"on average: {res['server_runq_waiting']:.1f} workers, "
            f"{res['client_runq_waiting']:.1f} clients",
            flush=True,
        )
        if behind:
            C.warn(
                f"{name}: the clients fell > 50 ms behind the target rate and skipped {behind:,} "
                "messages: msgs/s is bounded by the machine, not only by the server"
            )
        if res["kernel_backlog_drops"]:
            C.warn(
                f"{name}: the kernel dropped {res['kernel_backlog_drops']:,} packets (receive "
                "backlog full, net.core.netdev_max_backlog): TCP retransmits show up as latency"
            )
        if res["machine_cpu_pct"] > 190:
            C.warn(f"{name}: both cores were saturated during the steady phase")
        if res["dropped"] or res["bad_frames"]:
            C.warn(f"{name}: {res['dropped']} connections dropped, {res['bad_frames']} bad frames")
        return res
    finally:
        for child in children:  # workers first: no server logs about vanished clients
            child.stop(grace=1.0)
        holder.close()


def _targets(r: Dict[str, Any]) -> None:
    checks = [
        ("200,000 connections", r["conns"] >= 200_000),
        ("bytes/conn <= 400", r["bytes_per_conn"] <= 400),
        ("1M conns < 600 MB (one worker's baseline + 1M x bytes/conn)", r["rss_1m_mb"] < 600),
        (">= 50,000 msg/s", r["msgs_per_s"] >= 50_000),
        ("p99 < 50 ms", r["p99_ms"] is not None and r["p99_ms"] < 50),
    ]
    print(
        "nbio targets (issue 8): "
        + ", ".join(f"{what}: {'ok' if good else 'MISSED'}" for what, good in checks)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="bench", choices=["bench", "server"])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--conns", type=int, default=200_000, help="connections for nbio")
    parser.add_argument("--peer-conns", type=int, default=20_000, help="connections for peers")
    parser.add_argument(
        "--rate", type=float, default=50_500, help="aggregate msg/s offered (1%% over 50k)"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0, help="default ceil(conns/15000)")
    parser.add_argument("--clients", type=int, default=0, help="default ceil(conns/18000)")
    parser.add_argument("--src-ips", type=int, default=49, help="source addresses 127.0.0.2...")
    parser.add_argument("--inflight", type=int, default=100, help="pending dials per client")
    parser.add_argument("--timeout", type=float, default=15.0, help="dial/handshake timeout")
    parser.add_argument(
        "--tick-ms", type=float, default=5.0, help="clients send the messages due once per tick"
    )
    # internal (worker role)
    parser.add_argument("--server", choices=SERVERS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ip-offset", type=int, default=0)
    args = parser.parse_args()
    if not 1 <= args.src_ips <= 250:
        parser.error("--src-ips must be 1..250")
    if args.role == "server":
        import uvloop

        uvloop.install()
        asyncio.run(_server_main(args.server, args.port))
        return
    C.install_cleanup()
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in SERVERS:
            parser.error(f"unknown server {n!r}; have {SERVERS}")
    print(
        f"# {BENCH}: nbio {args.conns:,} / peers {args.peer_conns:,} WebSocket connections, "
        f"{args.size}-byte echo at {args.rate:,.0f} msg/s for {args.seconds:g} s; "
        f"{C.machine_info()}",
        flush=True,
    )
    results: Dict[str, Dict[str, Any]] = {}
    failed_any = False
    for name in names:
        conns = args.conns if name == "nbio" else args.peer_conns
        try:
            results[name] = run_server(name, conns, args)
        except Exception as exc:
            failed_any = True
            C.warn(f"{name} failed: {type(exc).__name__}: {exc}")
    print()
    C.print_table(
        [
            "server",
            "conns",
            "failed",
            "open s",
            "RSS MB",
            "bytes/conn",
            "msgs/s",
            "p50 ms",
            "p99 ms",
            "total us/msg",
            "user us/msg",
            "srv cpu%",
            "cli cpu%",
            "all cpu%",
        ],
        [
            [
                n,
                int(r["conns"]),
                int(r["failed"]),
                r["open_s"],
                r["rss_mb"],
                r["bytes_per_conn"],
                r["msgs_per_s"],
                r["p50_ms"],
                r["p99_ms"],
                r["total_us_per_msg"],
                r["user_us_per_msg"],
                r["server_cpu_pct"],
                r["client_cpu_pct"],
                r["machine_cpu_pct"],
            ]
            for n, r in results.items()
        ],
    )
    if "nbio" in results:
        _targets(results["nbio"])
    C.emit_json(BENCH, results)
    if failed_any:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""idle_conns: server memory per idle TCP connection, nbio engine vs peers.

    python bench/idle_conns.py [--servers a,b] [--conns 10000] [--idle 2] [--batch 500]

For each server of ``servers_tcp.py`` (one at a time, same client for all):

1. start the server (pinned to one core) and let a separate client process (pinned to the other)
   open one warm-up connection and exchange one 1 KB echo on it (the connection stays open);
2. read the server's ``VmRSS`` (baseline) and open-fd count;
3. the client opens ``--conns`` more connections in batches of ``--batch`` (non-blocking
   connects, completed with epoll; the next batch waits until the server has accepted all but
   ``--backlog-slack`` of the previous ones, so the listen backlog never overflows);
4. once the server holds every connection (its fd count) and they sat idle for ``--idle``
   seconds, read ``VmRSS`` again.

``bytes_per_conn`` = (RSS after - RSS baseline) / connections the server accepted. Failed
connects are counted and reported. No data is sent on the idle connections.

The last line is ``{"bench": "idle_conns", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import socket
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

BENCH = "idle_conns"
FD_LIMIT = 20_000
FD_HEADROOM = 100  # fds a process needs besides the connections (stdio, epoll, modules...)


# --------------------------------------------------------------------------------------------
# Client (runs in its own process: ``idle_conns.py --role client ...``)
# --------------------------------------------------------------------------------------------


def _warmup_conn(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    msg = bytes(range(256)) * 4
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the warm-up connection")
        got += chunk
    if got != msg:
        raise RuntimeError("bad echo on the warm-up connection")
    return s


def _open_batch(port: int, n: int, timeout: float) -> tuple[list[socket.socket], int]:
    """Open ``n`` connections concurrently; return (connected sockets, failures)."""
    ep = select.epoll(sizehint=n)
    pending: dict[int, socket.socket] = {}
    ok: list[socket.socket] = []
    failed = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        if err == 0:
            ok.append(s)
        elif err == errno.EINPROGRESS:
            pending[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLOUT)
        else:
            print(f"connect failed: {os.strerror(err)}", file=sys.stderr)
            failed += 1
            s.close()
    deadline = time.monotonic() + timeout
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ev in ep.poll(left):
            s = pending.pop(fd)
            ep.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                print(f"connect failed: {os.strerror(err)}", file=sys.stderr)
                failed += 1
                s.close()
            else:
                ok.append(s)
    if pending:
        print(f"{len(pending)} connects timed out", file=sys.stderr)
    for s in pending.values():
        failed += 1
        s.close()
    ep.close()
    return ok, failed


def client_main(args: argparse.Namespace) -> None:
    warm = _warmup_conn(args.port)
    print("WARM", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return
    fds0 = C.fd_count(args.server_pid)
    conns: list[socket.socket] = []
    failed = 0
    t0 = time.monotonic()
    while len(conns) + failed < args.conns:
        # Pace on the server: do not run ahead of its accept() by more than the slack.
        deadline = time.monotonic() + 30
        while C.fd_count(args.server_pid) - fds0 < len(conns) - args.backlog_slack:
            if time.monotonic() > deadline:
                raise TimeoutError("server stopped accepting connections")
            time.sleep(0.005)
        n = min(args.batch, args.conns - len(conns) - failed)
        ok, bad = _open_batch(args.port, n, timeout=20)
        conns += ok
        failed += bad
    print(f"OPEN {len(conns)} {failed} {time.monotonic() - t0:.3f}", flush=True)
    sys.stdin.readline()  # "CLOSE" or EOF
    for s in conns:
        s.close()
    warm.close()


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _wait_fds(pid: int, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = C.fd_count(pid)
        if n >= target or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def run_one(
    name: str, args: argparse.Namespace, cpus: tuple[int | None, int | None]
) -> dict[str, float]:
    server, port = C.start_tcp_server(name, cpus[0])
    try:
        argv = [
            sys.executable, os.path.abspath(__file__), "--role", "client",
            "--port", str(port), "--server-pid", str(server.pid), "--conns", str(args.conns),
            "--batch", str(args.batch), "--backlog-slack", str(args.backlog_slack),
        ]  # fmt: skip
        with C.Child(argv, cpu=cpus[1], env=C.python_env(), name=f"client({name})") as client:
            client.expect("WARM", 30)
            time.sleep(0.5)
            rss0, fds0 = C.rss_bytes(server.pid), C.fd_count(server.pid)
            client.send("GO")
            ok_s, failed_s, open_s = client.expect("OPEN", 60 + args.conns / 100).split()
            ok, failed = int(ok_s), int(failed_s)
            fds1 = _wait_fds(server.pid, fds0 + ok, timeout=30)
            time.sleep(args.idle)
            rss1, fds1 = C.rss_bytes(server.pid), C.fd_count(server.pid)
            if not server.alive():
                raise RuntimeError(f"{name} died during the run")
            client.send("CLOSE")
    finally:
        server.stop()
    accepted = fds1 - fds0
    if accepted <= 0:
        raise RuntimeError(f"{name}: the server holds no new connection")
    if accepted != ok:
        C.warn(f"{name}: client connected {ok}, server holds {accepted} new fds")
    return {
        "bytes_per_conn": (rss1 - rss0) / accepted,
        "rss_base_bytes": rss0,
        "rss_loaded_bytes": rss1,
        "conns": accepted,
        "failures": failed,
        "open_s": float(open_s),
    }


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    rows = [
        [
            name,
            round(r["bytes_per_conn"]),
            r.get("bytes_per_conn_ratio"),
            f"{r['rss_base_bytes'] / 2**20:.1f}",
            f"{r['rss_loaded_bytes'] / 2**20:.1f}",
            int(r["conns"]),
            int(r["failures"]),
            f"{r['open_s']:.2f}",
        ]
        for name, r in results.items()
    ]
    print()
    print(f"idle_conns: {args.conns} idle connections, RSS read after {args.idle:g} s idle")
    print(f"ratios (x) are vs {C.BASELINE}; lower is better")
    C.print_table(
        [
            "server",
            "bytes/conn",
            "x",
            "RSS base MiB",
            "RSS loaded MiB",
            "conns",
            "failed",
            "open s",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Idle connections: server bytes per connection")
    ap.add_argument(
        "--servers",
        default=",".join(C.TCP_SERVERS),
        help="comma-separated subset of: " + ", ".join(C.TCP_SERVERS),
    )
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--idle", type=float, default=2.0, help="idle seconds before reading RSS")
    ap.add_argument("--batch", type=int, default=500, help="connects in flight at once")
    ap.add_argument(
        "--backlog-slack",
        type=int,
        default=1000,
        help="max connections opened but not yet accepted by the server",
    )
    C.add_role_args(ap, ("driver", "client"))
    args = ap.parse_args(argv)

    if args.role == "client":
        client_main(args)
        return 0

    names = C.pick_servers(ap, args.servers, C.TCP_SERVERS)
    if args.conns < 1 or args.conns > FD_LIMIT - FD_HEADROOM:
        ap.error(f"--conns must be in 1..{FD_LIMIT - FD_HEADROOM} (per-process fd limit)")
    if args.batch + args.backlog_slack > 2048:
        C.warn("--batch + --backlog-slack > 2048 may overflow the listen/SYN backlog")
    C.install_cleanup()
    cpus = C.cpu_layout()
    print(C.machine_info())

    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name in names:
        print(f"{name} ...", flush=True)
        try:
            r = run_one(name, args, cpus)
        except Exception as exc:  # one broken server must not sink the others
            failed[name] = f"{type(exc).__name__}: {exc}"
            C.warn(f"{name} failed: {failed[name]}")
            continue
        results[name] = r
        print(
            f"    {r['bytes_per_conn']:,.0f} bytes/conn over {int(r['conns']):,} conns "
            f"({int(r['failures'])} failed), opened in {r['open_s']:.2f} s",
            flush=True,
        )
        if r["failures"]:
            C.warn(f"{name}: {int(r['failures'])} connection(s) failed to open")
    results = C.summarize_rounds([results], ("bytes_per_conn",))
    report(results, args)
    C.emit_json(BENCH, results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

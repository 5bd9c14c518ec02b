"""tls: CPU per wss message / https request and bytes per idle TLS connection, nbio vs peers.

nbio's TLS (``ssl.SSLObject`` over memory BIOs on its engine) against uvloop's implementation
of asyncio's TLS transport (picows, uvicorn, a raw httptools Protocol, an echo Protocol).

    python bench/tls.py [--phases wss,https,idle] [--servers a,b] [--seconds 5] [--warmup 1]
                        [--conns 64] [--size 1024] [--idle-conns 5000] [--idle 2]
                        [--batch 250] [--rounds 1]

A self-signed CA and a server certificate for ``127.0.0.1`` (trustme, ECDSA P-256) are made
in a temporary directory at start; every server loads them into
``ssl.create_default_context(CLIENT_AUTH)`` and every client trusts the CA with
``create_default_context(cafile=...)``: TLS 1.3, OpenSSL's default cipher (the negotiated
version and cipher of each server are printed). Servers are ``servers_tls.py`` (and
``servers_tcp.py`` for the plain twins), one at a time, pinned to one core; the load generator
is a separate process pinned to the other, the same for every server of a phase.

Phases (``--phases``; server names in the results are prefixed with the phase):

1. ``wss`` -- ``ws_echo.py`` over TLS: ``--conns`` connections each play ping-pong with a
   ``--size``-byte binary message; the generator is ``ws_echo.py``'s picows client on uvloop
   with a ``wss://`` URL. Servers ``nbio-callback``, ``nbio-async``, ``picows`` (with an ssl
   context, on uvloop's TLS transport), ``websockets``. Figures ``msgs_per_s``,
   ``user_us_per_msg``, ``total_us_per_msg`` (server ``utime``/``stime`` over the steady phase
   / messages) and ``FIGURE_ratio`` vs ``wss:picows``.
2. ``https`` -- ``http_hello.py`` over TLS: ``wrk -t1 -c64 https://...`` (keep-alive: the 64
   handshakes happen at the start of each wrk run; after a ``--warmup`` run, the server's CPU
   is read around a ``--seconds`` run). Servers ``nbio-native``, ``nbio-asgi``, ``uvicorn``
   (httptools, uvloop, ssl cert/key files), ``raw-httptools-tls`` (uvloop ``create_server(ssl=)``
   + httptools). Figures ``req_per_s``, ``user_us_per_req``, ``total_us_per_req``,
   ``cpu_vs_raw_httptools_tls`` and ``cpu_vs_uvicorn`` (total CPU per request ratios).
3. ``idle`` -- memory per idle connection: the client opens one warm-up connection, then the
   server's ``VmRSS`` is read; the client opens ``--idle-conns`` more in concurrent batches of
   ``--batch``, each completing its TLS handshake and one 4-byte echo (WebSocket servers: the
   opening handshake instead), so the server has finished its side too; after ``--idle`` s
   ``VmRSS`` is read again. ``bytes_per_conn`` = growth / connections the server holds (fd
   count). Servers ``nbio-tls`` (``Engine.listen(echo, ssl=ctx)``), ``nbio-plain``
   (``servers_tcp.py nbio-native``), ``uvloop-tls`` (an echo ``asyncio.Protocol`` on
   ``loop.create_server(ssl=ctx)``), ``uvloop-plain`` (``uvloop-protocol``),
   ``nbio-wss-callback`` and ``picows-wss``. Extra figures ``tls_bytes_per_conn`` (TLS minus
   its plain twin), ``bytes_per_conn_vs_plain`` and ``bytes_per_conn_vs_uvloop_tls``.

With ``--rounds N`` every phase runs N times and medians (of figures, and of ratios taken
within each round) are reported. A warning says when a load generator saturated its core
(throughput then measures the client; compare CPU per message), and when the server used
under 50 % of its core while the client was not saturated (other load starved both: rerun).

The last line is ``{"bench": "tls", "results": {"PHASE:SERVER": {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
from servers_tls import CA, HTTPS_SERVERS, WSS_SERVERS, client_context, start_tls_server

BENCH = "tls"
PHASES = ("wss", "https", "idle")
IDLE_SERVERS = (
    "nbio-tls", "nbio-plain", "uvloop-tls", "uvloop-plain", "nbio-wss-callback", "picows-wss",
)  # fmt: skip
#: idle server -> (how to start it, the client kind that talks to it)
IDLE_STARTS = {
    "nbio-tls": ("tcp:nbio-tls", "tls"),
    "nbio-plain": ("nbio-native", "tcp"),
    "uvloop-tls": ("tcp:uvloop-tls", "tls"),
    "uvloop-plain": ("uvloop-protocol", "tcp"),
    "nbio-wss-callback": ("wss:nbio-callback", "wss"),
    "picows-wss": ("wss:picows", "wss"),
}
PLAIN_TWIN = {"nbio-tls": "nbio-plain", "uvloop-tls": "uvloop-plain"}
WSS_BASELINE = "wss:picows"
WSS_RATIO_FIGURES = ("msgs_per_s", "user_us_per_msg", "total_us_per_msg")
HTTPS_RATIOS = {"cpu_vs_raw_httptools_tls": "https:raw-httptools-tls",
                "cpu_vs_uvicorn": "https:uvicorn"}  # fmt: skip
#: Below this, a ping-pong or wrk server was starved by other load on its core (or the client).
SERVER_STARVED_PCT = 50.0
FD_LIMIT = 20_000
PING = b"ping"


def make_certs(certdir: str) -> None:
    """A CA and a server certificate for 127.0.0.1/localhost, as PEM files in ``certdir``."""
    import trustme
    from servers_tls import CERT, KEY

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(os.path.join(certdir, CA))
    cert.private_key_pem.write_to_path(os.path.join(certdir, KEY))
    cert.cert_chain_pems[0].write_to_path(os.path.join(certdir, CERT))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(os.path.join(certdir, CERT), append=True)


# -- load generators (``tls.py --role ...``) ---------------------------------------------------


def _picows_over_tls(certdir: str) -> None:
    """Make ``picows.ws_connect`` (as ``ws_echo``/``ws_idle`` call it) dial wss:// with our CA."""
    import picows

    ctx = client_context(certdir)
    connect = picows.ws_connect

    async def ws_connect(factory: Any, url: str, **kw: Any) -> Any:
        url = url.replace("ws://", "wss://", 1)
        return await connect(factory, url, ssl_context=ctx, **kw)

    picows.ws_connect = ws_connect  # type: ignore[assignment]


def wss_client_main(args: argparse.Namespace) -> None:
    """``ws_echo.py``'s client over TLS; prints ``RESULT {json}``."""
    import uvloop
    import ws_echo

    _picows_over_tls(args.certdir)
    uvloop.install()
    run = ws_echo._client(
        args.port, args.server_pid, args.conns, args.size, args.warmup, args.seconds
    )
    print("RESULT " + json.dumps(asyncio.run(run)), flush=True)


async def _stream_idle_client(
    port: int, conns: int, batch: int, ctx: Optional[ssl.SSLContext]
) -> None:
    """Warm-up connection, then ``conns`` connections that each finish the TLS handshake (if
    ``ctx``) and one 4-byte echo; prints ``WARM`` and ``OPEN <opened> <failed>``."""
    loop = asyncio.get_running_loop()

    class Ping(asyncio.Protocol):
        def __init__(self) -> None:
            self.echoed: asyncio.Future[None] = loop.create_future()
            self.got = b""

        def connection_made(self, transport: Any) -> None:
            transport.write(PING)

        def data_received(self, data: bytes) -> None:
            self.got += data
            if len(self.got) >= len(PING) and not self.echoed.done():
                self.echoed.set_result(None)

        def connection_lost(self, exc: Optional[BaseException]) -> None:
            if not self.echoed.done():
                self.echoed.set_exception(exc or ConnectionError("closed before the echo"))

    async def one() -> Any:
        transport, proto = await loop.create_connection(
            Ping, "127.0.0.1", port, ssl=ctx, ssl_handshake_timeout=60 if ctx else None
        )
        try:
            await asyncio.wait_for(proto.echoed, 60)
        except BaseException:
            transport.abort()
            raise
        return transport

    keep = [await one()]
    print("WARM", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    failed = 0
    for start in range(0, conns, batch):
        done = await asyncio.gather(
            *[one() for _ in range(min(batch, conns - start))], return_exceptions=True
        )
        for r in done:
            if isinstance(r, BaseException):
                failed += 1
                print(f"connection failed: {r!r}", file=sys.stderr)
            else:
                keep.append(r)
    print(f"OPEN {len(keep) - 1} {failed}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    for transport in keep:
        transport.abort()


def idle_client_main(args: argparse.Namespace) -> None:
    import resource

    import uvloop

    if args.kind == "wss":
        import ws_idle

        _picows_over_tls(args.certdir)
        ws_idle.client_main(args)  # WARM / OPEN protocol, same as below
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    ctx = client_context(args.certdir) if args.kind == "tls" else None
    uvloop.run(_stream_idle_client(args.port, args.conns, args.batch, ctx))


# -- phases ------------------------------------------------------------------------------------


def _client_argv(role: str, port: int, args: argparse.Namespace, *extra: str) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), "--role", role, "--port", str(port),
            "--certdir", args.certdir, *extra]  # fmt: skip


def run_wss(name: str, args: argparse.Namespace, cpus: Tuple[Any, Any]) -> Dict[str, float]:
    server, port, probe = start_tls_server(f"wss:{name}", args.certdir, cpus[0])
    print(f"  wss:{name}: {probe}", flush=True)
    try:
        argv = _client_argv(
            "wss-client", port, args, "--server-pid", str(server.pid), "--conns", str(args.conns),
            "--size", str(args.size), "--warmup", str(args.warmup), "--seconds", str(args.seconds),
        )  # fmt: skip
        with C.Child(argv, cpu=cpus[1], env=C.python_env(), name=f"client-{name}") as client:
            res = dict(json.loads(client.expect("RESULT", args.warmup + args.seconds + 120)))
        if not server.alive():
            raise RuntimeError(f"wss:{name} died during the run")
    finally:
        server.stop()
    _check_load(f"wss:{name}", res)
    if res["client_cpu_pct"] > C.GENERATOR_SATURATED_PCT:
        C.warn(f"wss:{name}: the load generator used {res['client_cpu_pct']:.0f}% of its core: "
               "msgs/s measures the client; compare us/msg")  # fmt: skip
    return res


def _check_load(name: str, res: Dict[str, float]) -> None:
    if res["server_cpu_pct"] < SERVER_STARVED_PCT and res["client_cpu_pct"] < C.GENERATOR_SATURATED_PCT:
        C.warn(f"{name}: server used {res['server_cpu_pct']:.0f}% and client "
               f"{res['client_cpu_pct']:.0f}% of their cores: other load disturbed the run; "
               "rerun on a quiet machine or with --rounds")  # fmt: skip


def run_https(name: str, args: argparse.Namespace, cpus: Tuple[Any, Any]) -> Dict[str, float]:
    server, port, probe = start_tls_server(f"https:{name}", args.certdir, cpus[0])
    print(f"  https:{name}: {probe}", flush=True)
    url = f"https://127.0.0.1:{port}/"
    try:
        res = C.measure_requests(
            server, f"https:{name}", lambda t: C.run_wrk(url, t, args.conns, cpus[1]),
            args.warmup, args.seconds, "wrk")
    finally:
        server.stop()
    _check_load(f"https:{name}", res)
    return res


def _start_idle_server(name: str, args: argparse.Namespace, cpu: Any) -> Tuple[C.Child, int]:
    start = IDLE_STARTS[name][0]
    if ":" in start:
        server, port, probe = start_tls_server(start, args.certdir, cpu)
        print(f"  idle:{name}: {probe}", flush=True)
        return server, port
    return C.start_tcp_server(start, cpu)


def _wait_fds(pid: int, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while C.fd_count(pid) < target and time.monotonic() < deadline:
        time.sleep(0.05)
    return C.fd_count(pid)


def run_idle(name: str, args: argparse.Namespace, cpus: Tuple[Any, Any]) -> Dict[str, float]:
    server, port = _start_idle_server(name, args, cpus[0])
    kind = IDLE_STARTS[name][1]
    try:
        argv = _client_argv("idle-client", port, args, "--kind", kind,
                            "--conns", str(args.idle_conns), "--batch", str(args.batch))  # fmt: skip
        with C.Child(argv, cpu=cpus[1], env=C.python_env(), name=f"client-{name}") as client:
            client.expect("WARM", 60)
            time.sleep(0.5)
            rss0, fds0 = C.rss_bytes(server.pid), C.fd_count(server.pid)
            client.send("go")
            opened, failed = (
                int(x) for x in client.expect("OPEN", 120 + args.idle_conns / 50).split()
            )
            _wait_fds(server.pid, fds0 + opened, 30)
            time.sleep(args.idle)
            rss1, fds1 = C.rss_bytes(server.pid), C.fd_count(server.pid)
            if not server.alive():
                raise RuntimeError(f"idle:{name} died during the run")
            client.send("done")
    finally:
        server.stop()
    accepted = fds1 - fds0
    if accepted <= 0:
        raise RuntimeError(f"idle:{name}: the server holds no new connection")
    if accepted != opened:
        C.warn(f"idle:{name}: client opened {opened}, server holds {accepted} new fds")
    if failed:
        C.warn(f"idle:{name}: {failed} connections failed")
    return {
        "bytes_per_conn": (rss1 - rss0) / accepted,
        "conns": accepted,
        "failed": failed,
        "rss_base_mb": rss0 / 2**20,
        "rss_after_mb": rss1 / 2**20,
    }


RUNNERS = {"wss": run_wss, "https": run_https, "idle": run_idle}
PHASE_SERVERS = {"wss": WSS_SERVERS, "https": HTTPS_SERVERS, "idle": IDLE_SERVERS}


# -- summary -----------------------------------------------------------------------------------


def _ratios(
    rounds: List[Dict[str, Dict[str, float]]], figure: str, baseline: str, key: str,
    out: Dict[str, Dict[str, float]],
) -> None:  # fmt: skip
    """``out[server][key]`` = median over rounds of figure / baseline's figure in that round."""
    med = (
        C.summarize_rounds(rounds, [figure], baseline) if any(baseline in r for r in rounds) else {}
    )
    for name, r in med.items():
        if f"{figure}_ratio" in r:
            out[name][key] = r[f"{figure}_ratio"]


def summarize(phase: str, rounds: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    if phase == "wss":
        base = WSS_BASELINE if any(WSS_BASELINE in r for r in rounds) else next(iter(rounds[0]))
        return C.summarize_rounds(rounds, WSS_RATIO_FIGURES, base)
    out = C.summarize_rounds(rounds, [], next(iter(rounds[0])))
    if phase == "https":
        for key, baseline in HTTPS_RATIOS.items():
            _ratios(rounds, "total_us_per_req", baseline, key, out)
    else:
        _ratios(rounds, "bytes_per_conn", "idle:uvloop-tls", "bytes_per_conn_vs_uvloop_tls", out)
        for tls, plain in PLAIN_TWIN.items():
            t, p = out.get(f"idle:{tls}"), out.get(f"idle:{plain}")
            if t is not None and p is not None:
                t["tls_bytes_per_conn"] = t["bytes_per_conn"] - p["bytes_per_conn"]
                if p["bytes_per_conn"] > 0:
                    t["bytes_per_conn_vs_plain"] = t["bytes_per_conn"] / p["bytes_per_conn"]
    return out


def report(phase: str, results: Dict[str, Dict[str, float]]) -> None:
    print(f"\n## {phase}")
    if phase == "wss":
        heads = ["server", "msgs/s", "user us/msg", "total us/msg", "user vs picows",
                 "total vs picows", "server cpu%", "client cpu%"]  # fmt: skip
        keys = ["msgs_per_s", "user_us_per_msg", "total_us_per_msg", "user_us_per_msg_ratio",
                "total_us_per_msg_ratio", "server_cpu_pct", "client_cpu_pct"]  # fmt: skip
    elif phase == "https":
        heads = ["server", "req/s", "user us/req", "total us/req", "cpu vs raw-tls",
                 "cpu vs uvicorn", "server cpu%", "wrk cpu%"]  # fmt: skip
        keys = ["req_per_s", "user_us_per_req", "total_us_per_req", "cpu_vs_raw_httptools_tls",
                "cpu_vs_uvicorn", "server_cpu_pct", "client_cpu_pct"]  # fmt: skip
    else:
        heads = ["server", "bytes/conn", "TLS bytes/conn", "vs plain", "vs uvloop-tls", "conns",
                 "failed", "RSS base MB", "RSS after MB"]  # fmt: skip
        keys = ["bytes_per_conn", "tls_bytes_per_conn", "bytes_per_conn_vs_plain",
                "bytes_per_conn_vs_uvloop_tls", "conns", "failed", "rss_base_mb",
                "rss_after_mb"]  # fmt: skip
    whole = ("bytes_per_conn", "tls_bytes_per_conn", "conns", "failed")  # no decimals

    def cell(r: Dict[str, float], k: str) -> Any:
        v = r.get(k)
        return round(v) if v is not None and k in whole else v

    rows = [[n.split(":", 1)[1]] + [cell(r, k) for k in keys] for n, r in results.items()]
    C.print_table(heads, rows)


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--role", default="bench", choices=["bench", "wss-client", "idle-client"])
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument(
        "--servers",
        default="",
        help="comma-separated names (bare or PHASE:NAME); default: all of each phase",
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--conns", type=int, default=64, help="wss and https connections")
    p.add_argument("--size", type=int, default=1024, help="wss message size")
    p.add_argument("--idle-conns", type=int, default=5000)
    p.add_argument("--idle", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--rounds", type=int, default=1)
    # client roles
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--certdir", default="", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="tls", choices=["tls", "tcp", "wss"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "wss-client":
        wss_client_main(args)
        return
    if args.role == "idle-client":
        idle_client_main(args)
        return
    phases = [ph for ph in args.phases.split(",") if ph]
    bad = [ph for ph in phases if ph not in PHASES]
    if bad:
        p.error(f"unknown phase(s) {bad}; have {PHASES}")
    if args.idle_conns > FD_LIMIT - 200:
        p.error(f"--idle-conns must stay under the {FD_LIMIT} fd limit of one process")
    if "https" in phases and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the https phase: apt-get install -y wrk")
    wanted = [s for s in args.servers.split(",") if s]

    def chosen(phase: str) -> List[str]:
        names = list(PHASE_SERVERS[phase])
        if not wanted:
            return names
        return [n for n in names if n in wanted or f"{phase}:{n}" in wanted]

    C.install_cleanup()
    cpus = C.cpu_layout()
    print(f"# {BENCH}: {C.machine_info()}; {ssl.OPENSSL_VERSION}")
    print(f"# wss/https: {args.conns} connections, {args.seconds:g} s after {args.warmup:g} s "
          f"warm-up; idle: {args.idle_conns} connections, {args.idle:g} s idle")  # fmt: skip
    results: Dict[str, Dict[str, float]] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="nbio-tls-bench-") as certdir:
        args.certdir = certdir
        make_certs(certdir)
        for phase in phases:
            rounds: List[Dict[str, Dict[str, float]]] = []
            for _ in range(args.rounds):
                rnd: Dict[str, Dict[str, float]] = {}
                for name in chosen(phase):
                    try:
                        rnd[f"{phase}:{name}"] = RUNNERS[phase](name, args, cpus)
                    except Exception as exc:
                        failed = True
                        C.warn(f"{phase}:{name} failed: {type(exc).__name__}: {exc}")
                if rnd:
                    rounds.append(rnd)
            if rounds:
                phase_results = summarize(phase, rounds)
                report(phase, phase_results)
                results.update(phase_results)
    print()
    C.emit_json(BENCH, results)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

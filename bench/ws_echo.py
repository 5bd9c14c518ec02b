"""ws_echo: server CPU per 1 KB WebSocket echo and throughput, nbio vs peers.

    python bench/ws_echo.py [--servers a,b] [--seconds 5] [--warmup 1] [--conns 64]
                            [--size 1024] [--rounds 1]

For each server of ``servers_ws.py`` (one at a time, same load generator for all): the
server runs pinned to one core; the generator -- a picows client on uvloop, in its own
process pinned to the other core -- opens ``--conns`` connections, each playing ping-pong
with a ``--size``-byte binary message. After ``--warmup`` s it samples the server's
``utime``/``stime`` (``/proc/PID/stat``) and its message count, and again after
``--seconds`` s.

Figures: ``msgs_per_s``, ``user_us_per_msg``, ``total_us_per_msg`` and the ratio of each to
picows. Target (issue 5): nbio-callback ``user_us_per_msg`` <= 0.5x picows's. A warning
says when the generator saturated its core (msgs/s then measures the client).

The last line is ``{"bench": "ws_echo", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
from servers_ws import WS_SERVERS, start_ws_server

BENCH = "ws_echo"
BASELINE = "picows"
RATIO_FIGURES = ("msgs_per_s", "user_us_per_msg", "total_us_per_msg")
CLIENT_SATURATED_PCT = 90.0


# -- load generator (``ws_echo.py --role client``) -------------------------------------------


async def _client(
    port: int, server_pid: int, conns: int, size: int, warmup: float, seconds: float
) -> Dict[str, float]:
    from picows import WSListener, WSMsgType, ws_connect

    count = 0
    payload = bytes(i & 0xFF for i in range(size))

    class PingPong(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            transport.send(WSMsgType.BINARY, payload)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            nonlocal count
            if frame.msg_type == WSMsgType.BINARY:
                if frame.payload_size != size:
                    raise RuntimeError("bad echo size")
                count += 1
                transport.send(WSMsgType.BINARY, payload)

    url = f"ws://127.0.0.1:{port}/"
    transports = [
        (await ws_connect(PingPong, url, max_frame_size=1 << 24))[0] for _ in range(conns)
    ]
    await asyncio.sleep(warmup)

    sampler = C.CpuSampler(server_pid)
    sampler.take(count)
    await asyncio.sleep(seconds)
    sampler.take(count)
    for tr in transports:
        tr.send_close()
        tr.disconnect()
    return sampler.per_unit("msg")


def client_main(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.install()
    result = asyncio.run(
        _client(args.port, args.server_pid, args.conns, args.size, args.warmup, args.seconds)
    )
    print("RESULT " + json.dumps(result), flush=True)


# -- orchestration -----------------------------------------------------------------------------


def run_one(
    name: str, args: argparse.Namespace, server_cpu: Any, client_cpu: Any
) -> Dict[str, float]:
    server, port = start_ws_server(name, server_cpu)
    try:
        client = C.Child(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--role",
                "client",
                "--port",
                str(port),
                "--server-pid",
                str(server.pid),
                "--conns",
                str(args.conns),
                "--size",
                str(args.size),
                "--warmup",
                str(args.warmup),
                "--seconds",
                str(args.seconds),
            ],
            cpu=client_cpu,
            env=C.python_env(),
            name=f"client-{name}",
        )
        with client:
            line = client.expect("RESULT", args.warmup + args.seconds + 60)
        return dict(json.loads(line))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_role_args(parser)
    parser.add_argument("--servers", default=",".join(WS_SERVERS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.role == "client":
        client_main(args)
        return
    C.install_cleanup()
    server_cpu, client_cpu = C.cpu_layout()
    names = C.pick_servers(parser, args.servers, WS_SERVERS)
    print(
        f"# {BENCH}: {args.conns} connections, {args.size}-byte binary echo, "
        f"{args.seconds:g} s steady phase; {C.machine_info()}"
    )
    rounds: List[Dict[str, Dict[str, float]]] = []
    for _ in range(args.rounds):
        rnd: Dict[str, Dict[str, float]] = {}
        for name in names:
            res = run_one(name, args, server_cpu, client_cpu)
            if res["client_cpu_pct"] > CLIENT_SATURATED_PCT:
                C.warn(
                    f"{name}: the load generator used {res['client_cpu_pct']:.0f}% of its "
                    "core: msgs/s measures the client"
                )
            rnd[name] = res
        rounds.append(rnd)
    baseline = BASELINE if BASELINE in names else names[0]
    results = C.summarize_rounds(rounds, RATIO_FIGURES, baseline)
    rows = []
    for name in names:
        r = results[name]
        rows.append(
            [
                name,
                r["msgs_per_s"],
                r["user_us_per_msg"],
                r["total_us_per_msg"],
                r.get("user_us_per_msg_ratio"),
                r.get("total_us_per_msg_ratio"),
                r["server_cpu_pct"],
                r["client_cpu_pct"],
            ]
        )
    C.print_table(
        [
            "server",
            "msgs/s",
            "user us/msg",
            "total us/msg",
            f"user vs {baseline}",
            f"total vs {baseline}",
            "server cpu%",
            "client cpu%",
        ],
        rows,
    )
    C.emit_json(BENCH, results)


if __name__ == "__main__":
    main()

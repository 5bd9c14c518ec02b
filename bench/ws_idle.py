"""ws_idle: server memory per idle WebSocket connection (after the handshake), nbio vs peers.

    python bench/ws_idle.py [--servers a,b] [--conns 10000] [--idle 2] [--batch 250]

For each server of ``servers_ws.py`` (one at a time, same client for all): the client (a
separate process, picows on uvloop) opens one warm-up WebSocket and echoes one message;
the server's ``VmRSS`` is read (baseline); the client opens ``--conns`` more WebSockets in
concurrent batches of ``--batch``, each completing its opening handshake; once they sat idle
for ``--idle`` s, ``VmRSS`` is read again. ``bytes_per_conn`` = growth / connections.
Target (issue 5): nbio-callback <= 400 bytes.

The last line is ``{"bench": "ws_idle", "results": {SERVER: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
from servers_ws import WS_SERVERS, start_ws_server

BENCH = "ws_idle"
FD_LIMIT = 20_000


async def _client(port: int, conns: int, batch: int) -> None:
    from picows import WSListener, WSMsgType, ws_connect

    url = f"ws://127.0.0.1:{port}/"
    got = asyncio.get_running_loop().create_future()

    class Warm(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            transport.send(WSMsgType.TEXT, b"warm-up")

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if not got.done():
                got.set_result(frame.get_payload_as_bytes())

    keep: List[Any] = [await ws_connect(Warm, url)]
    assert await asyncio.wait_for(got, 10) == b"warm-up"
    print("WARM", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    failed = 0
    for start in range(0, conns, batch):
        n = min(batch, conns - start)
        results = await asyncio.gather(
            *[ws_connect(WSListener, url, websocket_handshake_timeout=30) for _ in range(n)],
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                failed += 1
            else:
                keep.append(r)
    print(f"OPEN {len(keep) - 1} {failed}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for transport, _ in keep:
        transport.disconnect()


def client_main(args: argparse.Namespace) -> None:
    import resource

    import uvloop

    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    uvloop.install()
    asyncio.run(_client(args.port, args.conns, args.batch))


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
                "--conns",
                str(args.conns),
                "--batch",
                str(args.batch),
            ],
            cpu=client_cpu,
            env=C.python_env(),
            name=f"client-{name}",
        )
        with client:
            client.expect("WARM", 30)
            time.sleep(0.5)
            base = C.rss_bytes(server.pid)
            base_fds = C.fd_count(server.pid)
            client.send("go")
            opened, failed = (int(x) for x in client.expect("OPEN", 300).split())
            deadline = time.monotonic() + 30
            while C.fd_count(server.pid) < base_fds + opened and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(args.idle)
            after = C.rss_bytes(server.pid)
            client.send("done")
        return {
            "bytes_per_conn": (after - base) / max(1, opened),
            "conns": opened,
            "failed": failed,
            "rss_base_mb": base / 2**20,
            "rss_after_mb": after / 2**20,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_role_args(parser)
    parser.add_argument("--servers", default=",".join(WS_SERVERS))
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    if args.role == "client":
        client_main(args)
        return
    if args.conns > FD_LIMIT - 200:
        parser.error(f"--conns must stay under the {FD_LIMIT} fd limit of one process")
    C.install_cleanup()
    server_cpu, client_cpu = C.cpu_layout()
    names = C.pick_servers(parser, args.servers, WS_SERVERS)
    print(f"# {BENCH}: {args.conns} idle WebSocket connections; {C.machine_info()}")
    results = {name: run_one(name, args, server_cpu, client_cpu) for name in names}
    C.print_table(
        ["server", "bytes/conn", "conns", "failed", "RSS base MB", "RSS after MB"],
        [
            [
                n,
                r["bytes_per_conn"],
                int(r["conns"]),
                int(r["failed"]),
                r["rss_base_mb"],
                r["rss_after_mb"],
            ]
            for n, r in results.items()
        ],
    )
    C.emit_json(BENCH, results)


if __name__ == "__main__":
    main()

"""The ``nbio`` command line.

* ``nbio demo`` starts the chat demo (HTTP page + WebSocket RPC) on 127.0.0.1.
* ``nbio serve MODULE:APP`` serves an ASGI 3 application (or a native
  :class:`~nbio.http.server.HttpServer` handler) over HTTP/1.1, optionally with several
  worker processes sharing the port (SO_REUSEPORT).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Any, List, Optional

from .engine import Engine

DEMO_PORT = 8765


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
    else:
        uvloop.run(coro) if hasattr(uvloop, "run") else asyncio.run(coro)


# ---------------------------------------------------------------------------------------------
# nbio serve
# ---------------------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> Optional[int]:
    """A byte count: ``65536``, ``512K``, ``64M``, ``1G``, ``1.5G`` (binary units; ``KB``,
    ``KiB`` and lowercase are accepted too). ``0`` means no limit (None)."""
    s = text.strip().upper()
    if s.endswith("IB") and s[-3:-2] in _SIZE_UNITS:
        s = s[:-2]
    elif s.endswith("B"):
        s = s[:-1]
    unit = s[-1:] if s[-1:] in _SIZE_UNITS else ""
    number = s[: len(s) - len(unit)].strip()
    try:
        value = float(number) if "." in number else int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (e.g. 65536, 512K, 64M, 1G)"
        ) from None
    size = int(value * _SIZE_UNITS[unit])
    if size < 0:
        raise argparse.ArgumentTypeError(f"size must not be negative: {text!r}")
    return size or None


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", help="MODULE:ATTRIBUTE, e.g. myproject.main:app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--uds", default=None, help="listen on this Unix socket instead")
    p.add_argument("--workers", type=int, default=1, help="worker processes (SO_REUSEPORT)")
    p.add_argument("--interface", choices=("auto", "asgi", "native"), default="auto",
                   help="ASGI 3 app, or native handler(request) -> response (auto: guess)")
    p.add_argument("--backend", choices=("native", "asyncio"), default=None,
                   help="engine backend (default: native where available)")
    p.add_argument("--lifespan", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds to let in-flight requests finish on SIGTERM/SIGINT")
    p.add_argument("--keep-alive", type=float, default=5.0, help="idle keep-alive timeout")
    p.add_argument("--memory-limit", type=parse_size, default=None, metavar="BYTES",
                   help="per worker: when the bytes queued for slow clients exceed this "
                        "(e.g. 64M, 1G), stop reading requests until half has drained")
    p.add_argument("--ssl-certfile", default=None, help="serve https: certificate chain (PEM)")
    p.add_argument("--ssl-keyfile", default=None, help="its private key (PEM)")
    p.add_argument("--app-dir", default=".", help="put this directory on sys.path")
    # internal: set by the master for its workers
    p.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)


def import_app(spec: str, app_dir: str = ".") -> Any:
    """Import ``MODULE:ATTRIBUTE`` (dots in ATTRIBUTE walk attributes)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"nbio serve: expected MODULE:APP, got {spec!r}")
    if app_dir and os.path.abspath(app_dir) not in sys.path:
        sys.path.insert(0, os.path.abspath(app_dir))
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _is_asgi(app: Any, interface: str) -> bool:
    if interface != "auto":
        return interface == "asgi"
    try:
        params = [p for p in inspect.signature(app).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return True
    return len(params) >= 3


async def serve_worker(args: argparse.Namespace, announce: bool) -> None:
    """One server process: listen, serve until SIGTERM/SIGINT, drain, stop."""
    from .http.asgi import AsgiServer
    from .http.server import HttpServer

    ssl = server_ssl_context(args)
    app = import_app(args.app, args.app_dir)
    server: HttpServer
    if _is_asgi(app, args.interface):
        server = AsgiServer(app, lifespan=args.lifespan, keep_alive_timeout=args.keep_alive)
        await server.startup()
    else:
        server = HttpServer(app, keep_alive_timeout=args.keep_alive)
    engine = Engine(backend=args.backend, memory_limit=args.memory_limit)
    if args.worker_fd is not None:  # a socket inherited from the master (Unix socket)
        sock = socket.socket(fileno=args.worker_fd)
        listener = engine.listen(server, sock=sock, ssl=ssl)
    elif args.uds:
        listener = engine.listen(server, path=args.uds, ssl=ssl)
    else:
        listener = engine.listen(server, args.host, args.port, reuse_port=True, ssl=ssl)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if announce:
        print(f"nbio serve: listening on {_where(args, listener.address)} "
              f"(1 worker, engine {engine.backend})", flush=True)
    if args.ready_fd is not None:
        _die_with_master()
        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
    await stop.wait()
    listener.close()
    await server.drain(args.graceful_timeout)
    await engine.close()
    if isinstance(server, AsgiServer):
        await server.shutdown()


def server_ssl_context(args: argparse.Namespace) -> Optional[ssl.SSLContext]:
    """The TLS context of ``--ssl-certfile``/``--ssl-keyfile`` (ALPN ``http/1.1``), or None."""
    if not args.ssl_certfile:
        if args.ssl_keyfile:
            raise SystemExit("nbio serve: --ssl-keyfile needs --ssl-certfile")
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _die_with_master() -> None:
    """A worker gets SIGTERM when its master dies (Linux), so none is left behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() == 1:  # the master is already gone
        os.kill(os.getpid(), signal.SIGTERM)


def _where(args: argparse.Namespace, address: Any) -> str:
    if args.uds:
        return f"unix:{args.uds}"
    host, port = address[:2]
    scheme = "https" if args.ssl_certfile else "http"
    return f"{scheme}://{host}:{port}"


def run_serve(args: argparse.Namespace) -> int:
    """``nbio serve``: one process, or a master supervising ``--workers`` processes."""
    if args.workers <= 1 or args.worker_fd is not None or args.ready_fd is not None:
        _run(serve_worker(args, announce=args.ready_fd is None))
        return 0
    return Master(args).run()


class Master:
    """Starts the workers, restarts dead ones, forwards SIGTERM/SIGINT and waits for the
    workers to drain."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.workers: List[subprocess.Popen[bytes]] = []
        self.sock: Optional[socket.socket] = None

    def _worker_argv(self) -> List[str]:
        a = self.args
        argv = [sys.executable, "-m", "nbio", "serve", a.app, "--interface", a.interface,
                "--lifespan", a.lifespan, "--graceful-timeout", str(a.graceful_timeout),
                "--keep-alive", str(a.keep_alive), "--app-dir", os.path.abspath(a.app_dir)]
        if a.backend:
            argv += ["--backend", a.backend]
        if a.memory_limit:
            argv += ["--memory-limit", str(a.memory_limit)]
        if a.ssl_certfile:
            argv += ["--ssl-certfile", os.path.abspath(a.ssl_certfile)]
            if a.ssl_keyfile:
                argv += ["--ssl-keyfile", os.path.abspath(a.ssl_keyfile)]
        if a.uds:
            argv += ["--uds", a.uds, "--worker-fd", str(self.sock.fileno())]  # type: ignore
        else:
            argv += ["--host", a.host, "--port", str(a.port)]
        return argv

    def spawn(self, slot: int) -> None:
        """Start a worker in ``workers[slot]`` and wait until it listens (or dies)."""
        r, w = os.pipe()
        fds = [w] + ([self.sock.fileno()] if self.args.uds and self.sock is not None else [])
        proc = subprocess.Popen([*self._worker_argv(), "--ready-fd", str(w)], pass_fds=fds)
        os.close(w)
        if slot < len(self.workers):
            self.workers[slot] = proc
        else:
            self.workers.append(proc)
        try:
            os.read(r, 1)  # blocks until the worker listens (or dies: EOF)
        finally:
            os.close(r)
        if self.stopping and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the stop came while it was starting

    def _reserve(self) -> None:
        a = self.args
        if a.uds:
            from .engine import _sockets

            self.sock = _sockets.listen_socket(None, 0, a.uds, 1024, False)
            return
        if a.port == 0:  # pick the port once, for every worker; keep it reserved
            infos = socket.getaddrinfo(a.host, 0, type=socket.SOCK_STREAM)
            s = socket.socket(infos[0][0], socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(infos[0][4])
            a.port = s.getsockname()[1]
            self.sock = s

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            for p in self.workers:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)

    def run(self) -> int:
        a = self.args
        server_ssl_context(a)  # bad certificate files fail here, not in every worker
        self._reserve()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        for i in range(a.workers):
            if not self.stopping:
                self.spawn(i)
        scheme = "https" if a.ssl_certfile else "http"
        where = f"unix:{a.uds}" if a.uds else f"{scheme}://{a.host}:{a.port}"
        pids = ", ".join(str(p.pid) for p in self.workers)
        print(f"nbio serve: listening on {where} ({a.workers} workers: {pids})", flush=True)
        if self.sock is not None and a.uds is None:
            self.sock.close()  # the workers hold the port now
            self.sock = None
        while not self.stopping:
            for i, p in enumerate(self.workers):
                if p.poll() is not None and not self.stopping:
                    print(f"nbio serve: worker {p.pid} exited ({p.returncode}); restarting",
                          flush=True)
                    self.spawn(i)
            time.sleep(0.1)
        deadline = time.monotonic() + a.graceful_timeout + 5
        code = 0
        for p in self.workers:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                code = 1
        if self.sock is not None:
            self.sock.close()
        print("nbio serve: stopped", flush=True)
        return code


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``nbio`` command."""
    parser = argparse.ArgumentParser(prog="nbio", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="start the chat demo on 127.0.0.1")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=DEMO_PORT)
    demo.add_argument("--seconds", type=float, default=None, help="stop after this long")
    add_serve_arguments(sub.add_parser("serve", help="serve an ASGI app (or native handler) over HTTP"))
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        _run(run_demo(args.host, args.port, args.seconds))
    elif args.command == "serve":
        return run_serve(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Shared helpers for every nbio bench script.

Everything a bench needs around the measurement itself:

* spawning children that can never outlive the bench (``PR_SET_PDEATHSIG`` + a registry that is
  killed on exit, on error and on SIGINT/SIGTERM), reading their stdout lines with a deadline;
* CPU placement (``os.sched_setaffinity``): the server on one core, the load generator on another;
* process figures from ``/proc``: ``utime``/``stime`` of all threads (``/proc/PID/stat`` fields 14
  and 15), ``VmRSS``, the number of open fds;
* waiting for a TCP port, printing a table, and the final JSON line
  ``{"bench": NAME, "results": {SERVER: {FIGURE: number}}}`` (see shared/BENCHMARKS.md).

Only the standard library is used here, so load generators can import this module cheaply.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import json
import math
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SRC_DIR = REPO_DIR / "src"

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

#: The four TCP servers of ``servers_tcp.py``, in the order the benches run them.
TCP_SERVERS = ("nbio-native", "nbio-portable", "uvloop-protocol", "asyncio-protocol")
#: The peer every ratio is taken against.
BASELINE = "uvloop-protocol"


# --------------------------------------------------------------------------------------------
# CPU placement
# --------------------------------------------------------------------------------------------


def cpu_layout() -> tuple[int | None, int | None]:
    """Return ``(server_cpu, client_cpu)``: two distinct CPUs, or ``(None, None)`` if < 2."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pin(pid: int, cpu: int | None) -> None:
    """Pin process ``pid`` (0 = this process) to one CPU; no-op when ``cpu`` is None.

    Only the main thread is pinned by ``sched_setaffinity``; threads created later inherit it.
    """
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


# --------------------------------------------------------------------------------------------
# /proc readings
# --------------------------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """``(utime, stime)`` in seconds of process ``pid``, summed over all its threads.

    ``/proc/PID/stat`` of a thread-group leader already aggregates every thread (live and
    exited) of the process; fields 14 and 15, in clock ticks (usually 10 ms).
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state), so field N is fields[N - 3].
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _cpu_ticks(cpus: Iterable[int]) -> list[int]:
    """``/proc/stat`` ticks of the given CPUs, summed: user nice system idle iowait irq softirq
    steal."""
    wanted = {f"cpu{c}" for c in cpus}
    total = [0] * 8
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in wanted:
                total = [t + int(v) for t, v in zip(total, parts[1:9])]
    return total


def cpus_busy(cpus: Iterable[int]) -> float:
    """Seconds the given CPUs spent busy, from ``/proc/stat``: everything but idle and iowait.

    Includes irq/softirq (loopback TCP runs in softirq, which processes' stime also absorbs)
    and steal. Compared with the CPU time of the bench's own processes on those CPUs, this shows
    how much other load (other processes, the hypervisor) disturbed a measurement.
    """
    vals = _cpu_ticks(cpus)
    return (sum(vals) - vals[3] - vals[4]) / CLK_TCK


def cpus_steal(cpus: Iterable[int]) -> float:
    """Seconds the hypervisor ran something else on the given CPUs (``/proc/stat`` steal)."""
    return _cpu_ticks(cpus)[7] / CLK_TCK


def rss_bytes(pid: int) -> int:
    """``VmRSS`` of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    """Number of open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class CpuSampler:
    """CPU readings of a server process (and of this process) at the two ends of a steady
    phase, taken together with the load generator's message count so that the CPU window and
    the message window are the same.

    ``take(count)`` once at the start and once at the end, then :meth:`window` gives the
    deltas: ``dt``, ``count``, ``server_user``, ``server_sys``, ``client_user``,
    ``client_sys`` and, when ``watch_cpus`` (default: the cores of this process and of the
    server), ``cores_busy`` (busy seconds of those cores, which reveals foreign load) and
    ``cores``.
    """

    def __init__(self, server_pid: int, watch_cpus: bool = False) -> None:
        self.server_pid = server_pid
        self.samples: list[dict[str, float]] = []
        self.cpus = (
            os.sched_getaffinity(0) | os.sched_getaffinity(server_pid) if watch_cpus else None
        )

    def take(self, count: int) -> None:
        """Record the server's and this process's CPU times with the current ``count``."""
        su, ss = cpu_times(self.server_pid)
        t = os.times()
        sample = {
            "t": time.monotonic(),
            "count": count,
            "su": su,
            "ss": ss,
            "cu": t.user,
            "cs": t.system,
        }
        if self.cpus is not None:
            sample["busy"] = cpus_busy(self.cpus)
        self.samples.append(sample)

    def window(self) -> dict[str, float]:
        """Deltas between the first and the last sample."""
        a, b = self.samples[0], self.samples[-1]
        out = {
            "dt": b["t"] - a["t"],
            "count": b["count"] - a["count"],
            "server_user": b["su"] - a["su"],
            "server_sys": b["ss"] - a["ss"],
            "client_user": b["cu"] - a["cu"],
            "client_sys": b["cs"] - a["cs"],
        }
        if self.cpus is not None:
            out["cores_busy"] = b["busy"] - a["busy"]
            out["cores"] = len(self.cpus)
        return out

    def per_unit(self, unit: str) -> dict[str, float]:
        """The usual figures of a steady phase, per ``unit`` (e.g. "msg"): ``UNITs_per_s``,
        ``user_us_per_UNIT``, ``total_us_per_UNIT``, ``server_cpu_pct``, ``client_cpu_pct``."""
        w = self.window()
        n, dt = w["count"], w["dt"]
        if n <= 0:
            raise RuntimeError(f"no {unit} completed in the steady phase")
        return {
            f"{unit}s_per_s": n / dt,
            f"user_us_per_{unit}": w["server_user"] / n * 1e6,
            f"total_us_per_{unit}": (w["server_user"] + w["server_sys"]) / n * 1e6,
            "server_cpu_pct": (w["server_user"] + w["server_sys"]) / dt * 100,
            "client_cpu_pct": (w["client_user"] + w["client_sys"]) / dt * 100,
        }


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------

_children: list[Child] = []
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort; the registry still kills children
        pass


class Child:
    """A subprocess with line-oriented stdout, a deadline on every read, and a sure death.

    The child is killed (SIGKILL) when this process dies for any reason, and by
    :meth:`stop`, :func:`kill_all` (atexit) or the context manager exit.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cpu: int | None = None,
        env: dict[str, str] | None = None,
        name: str = "",
    ) -> None:
        self.name = name or Path(argv[1] if len(argv) > 1 else argv[0]).name
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # inherited: tracebacks of children show up in the bench output
            env=env,
            preexec_fn=_die_with_parent,
            cwd=str(REPO_DIR),
        )
        _children.append(self)
        self.pid = self.proc.pid
        self._buf = b""
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        pin(self.pid, cpu)

    def readline(self, timeout: float) -> str:
        """Next stdout line (without newline); raise ``TimeoutError`` / ``EOFError``."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"{self.name}: no output line within {timeout:.0f} s")
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    rc = self.proc.wait(timeout=5)
                    raise EOFError(f"{self.name} exited (rc={rc}) before printing a line")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def expect(self, prefix: str, timeout: float) -> str:
        """Read lines until one starts with ``prefix``; return the rest of that line."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            print(f"  [{self.name}] {line}", file=sys.stderr)

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self in _children:
            _children.remove(self)
        return self.proc.returncode

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_all() -> None:
    """Kill every child still registered (called at exit), the most recent (clients) first."""
    for child in reversed(list(_children)):
        try:
            child.proc.kill()
            child.proc.wait(timeout=5)
        except Exception:
            pass
        _children.remove(child)


def _on_signal(signum: int, frame: object) -> None:
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """Kill children at exit and on SIGINT/SIGTERM/SIGHUP (even if SIGINT was inherited ignored)."""
    atexit.register(kill_all)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def python_env() -> dict[str, str]:
    """Environment for children: unbuffered, with ``src/`` reachable if nbio is not installed.

    ``src/`` is appended (not prepended) to ``PYTHONPATH`` so an installed nbio wins.
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(SRC_DIR) not in paths:
        paths.append(str(SRC_DIR))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def start_server(
    argv: Sequence[str],
    cpu: int | None,
    name: str,
    timeout: float = 20.0,
    probe: Callable[[int], Any] | None = None,
) -> tuple[Child, int, Any]:
    """Start a server child (``argv``, pinned to ``cpu``) that prints ``READY <port>``; wait
    until it accepts connections: ``probe(port)`` if given (its result is returned), else a
    bare TCP connect. Returns (child, port, probe result or None); stops the child on failure.
    """
    child = Child(list(argv), cpu=cpu, env=python_env(), name=name)
    try:
        port = int(child.expect("READY", timeout).split()[0])
        probed = None
        if probe is not None:
            probed = probe(port)
        else:
            wait_port("127.0.0.1", port, timeout)
    except BaseException:
        child.stop()
        raise
    return child, port, probed


def start_tcp_server(name: str, cpu: int | None, timeout: float = 20.0) -> tuple[Child, int]:
    """Start ``servers_tcp.py --server NAME --port 0`` pinned to ``cpu``; return (child, port)."""
    argv = [sys.executable, str(BENCH_DIR / "servers_tcp.py"), "--server", name, "--port", "0"]
    child, port, _ = start_server(argv, cpu, name, timeout)
    return child, port


async def until_stopped() -> None:
    """In a server child: return on SIGTERM or SIGINT, or when stdin closes (the bench died)."""
    import asyncio

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_stdin() -> None:
        try:
            if os.read(0, 4096):
                return
        except OSError:
            pass
        loop.remove_reader(0)
        stop.set()

    if not os.isatty(0):
        loop.add_reader(0, on_stdin)
    await stop.wait()


def ready(port: int) -> None:
    """What every server child prints once it listens: ``READY <port>``."""
    print(f"READY {port}", flush=True)


def free_port() -> int:
    """A port free on 127.0.0.1 now (for servers that must be given a concrete one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until a TCP connect to ``(host, port)`` succeeds, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """Format a table cell: thousands separators for big numbers, 3 significant digits else."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) >= 1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a plain, right-aligned text table (first column left-aligned)."""
    cells = [list(headers)] + [[fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
        )

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))


# --------------------------------------------------------------------------------------------
# HTTP load (wrk, h2load): one request-rate phase against a server process
# --------------------------------------------------------------------------------------------

#: A load generator above this share of its core measures itself, not the server.
GENERATOR_SATURATED_PCT = 90.0


def run_wrk(url: str, seconds: float, conns: int, cpu: int | None) -> tuple[float, int]:
    """Run ``wrk -t1`` against ``url`` on CPU ``cpu``; return (requests/s, requests done)."""
    import re

    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", url],
        capture_output=True, text=True, preexec_fn=lambda: pin(0, cpu), timeout=seconds + 60,
    ).stdout  # fmt: skip
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        warn(f"wrk reported errors:\n{out}")
    return float(rps.group(1)), int(total.group(1))


def measure_requests(
    server: Child, name: str, load: Any, warmup: float, seconds: float, generator: str
) -> dict[str, float]:
    """``load(duration)`` (a generator run in a child process of this one, returning
    ``(requests/s, requests done)``) once for ``warmup`` s, then for ``seconds`` s with the
    server's CPU read around it. Figures: ``req_per_s``, ``user_us_per_req``,
    ``total_us_per_req``, ``server_cpu_pct``, ``client_cpu_pct`` (the generator's); warns when
    the generator saturated its core."""
    load(warmup)
    su0, ss0 = cpu_times(server.pid)
    c0 = os.times()
    rps, total = load(seconds)
    c1 = os.times()
    su1, ss1 = cpu_times(server.pid)
    if not server.alive():
        raise RuntimeError(f"{name} died during the run")
    if total <= 0:
        raise RuntimeError(f"{name}: no request completed")
    gen_cpu = c1.children_user + c1.children_system - c0.children_user - c0.children_system
    secs = max(1, round(seconds))
    if gen_cpu > GENERATOR_SATURATED_PCT / 100 * secs:
        warn(f"{name}: {generator} used {100 * gen_cpu / secs:.0f}% of its core: "
             "req/s may measure the client")  # fmt: skip
    return {
        "req_per_s": rps,
        "user_us_per_req": (su1 - su0) / total * 1e6,
        "total_us_per_req": (su1 - su0 + ss1 - ss0) / total * 1e6,
        "server_cpu_pct": 100 * (su1 - su0 + ss1 - ss0) / secs,
        "client_cpu_pct": 100 * gen_cpu / secs,
    }


def add_role_args(parser: Any, roles: Sequence[str] = ("bench", "client")) -> None:
    """The hidden options every bench passes to its own child processes: ``--role`` (the first
    of ``roles`` is the default: the driver), ``--port`` and ``--server-pid``."""
    parser.add_argument("--role", choices=tuple(roles), default=roles[0], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)


def pick_servers(parser: Any, spec: str, known: Sequence[str]) -> list[str]:
    """The comma-separated server names of ``spec``, in order; unknown names are a usage
    error of ``parser``."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown server(s): {', '.join(unknown)}; known: {', '.join(known)}")
    if not names:
        parser.error("no server selected")
    return names


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base`` or None when either is missing or the base is zero."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def summarize_rounds(
    rounds: Sequence[dict[str, dict[str, float]]],
    ratio_figures: Sequence[str],
    baseline: str = BASELINE,
) -> dict[str, dict[str, float]]:
    """Median of every figure over rounds, plus per-round ratios vs ``baseline``.

    ``rounds`` holds one ``{SERVER: {FIGURE: value}}`` dict per round. For each figure in
    ``ratio_figures`` the result gets ``FIGURE_ratio``: the median over rounds of
    ``value / baseline's value in the same round`` -- ratios taken within one round are what
    stays stable on a noisy machine, more than a ratio of medians.
    """
    names: list[str] = []
    for rnd in rounds:
        names += [n for n in rnd if n not in names]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        runs = [rnd[name] for rnd in rounds if name in rnd]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for fig in ratio_figures:
            ratios = [
                rnd[name][fig] / rnd[baseline][fig]
                for rnd in rounds
                if name in rnd and baseline in rnd and rnd[baseline][fig]
            ]
            if ratios:
                med[f"{fig}_ratio"] = statistics.median(ratios)
        out[name] = med
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, nearest rank) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(0, math.ceil(q / 100 * len(sorted_values)) - 1)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def emit_json(bench: str, results: dict[str, dict[str, float]], **extra: Any) -> None:
    """Print the final line: ``{"bench": NAME, "results": {...}}`` (plus optional extra keys)."""
    doc: dict[str, Any] = {"bench": bench, "results": results}
    doc.update(extra)
    print(json.dumps(doc, separators=(", ", ": ")), flush=True)


def warn(msg: str) -> None:
    """Print a warning to stdout (it belongs to the human-readable report)."""
    print(f"WARNING: {msg}", flush=True)


def machine_info() -> str:
    """One line describing the machine and interpreter, for the report header."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPU {model}  "
        f"Python {sys.version.split()[0]}  {os.uname().sysname} {os.uname().release}"
    )

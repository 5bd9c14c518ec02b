"""Autobahn|Testsuite against nbio's WebSocket server (callback and async API) and client.

The suite (Python 2.7 only) is installed on first use into a cache directory
(``$NBIO_AUTOBAHN_DIR`` or ``~/.cache/nbio/autobahn``) with the Python 2.7 found in
``$NBIO_PYTHON2``, ``python2.7`` on PATH or pyenv. Every case must end OK, NON-STRICT or
INFORMATIONAL in the suite's reports, and every selected case must have a report.

Cases: by default every case of 1.x-7.x, 9.x and 10.x and, of each 12.x/13.x
(permessage-deflate) group, the 16-byte and 1 KB message cases (24 of 216): about a minute
per target. ``NBIO_AUTOBAHN_CASES=all`` runs every case (all 216 compression cases too),
``NBIO_AUTOBAHN_CASES="12.*,13.*"`` any list of case ids or prefixes ending in ``*``.

Time goes to compressing: a 12.x/13.x case echoes 1000 messages of up to 128 KB, each
deflated at level 6 by both peers (about 10 ms for 128 KB of German text), and per message
the suite's Python 2 peer also SHA-1 hashes twice and, for text data, re-decodes its whole
test file. The suite takes about 55% of the CPU time, nbio's side 45% (nearly all zlib).
A full run is about 800 CPU seconds per target, so the cases are sharded over
``$NBIO_AUTOBAHN_JOBS`` (default: the number of CPUs) suite processes run in parallel against
one nbio server (fuzzingclient) or driven by one nbio client process (fuzzingserver), each
shard with its own spec and report directory; cases are balanced by their expected duration.
``bench/ws_autobahn.py`` runs the same harness and prints timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import pytest

from nbio.engine import Engine

CACHE = Path(os.environ.get("NBIO_AUTOBAHN_DIR", Path.home() / ".cache" / "nbio" / "autobahn"))
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# (the suite's patterns only take a trailing "*": list the 12.x/13.x cases one by one)
DEFAULT_CASES = [f"{n}.*" for n in (1, 2, 3, 4, 5, 6, 7, 9, 10)] + [
    f"{group}.{sub}.{size}"
    for group, subs in ((12, 5), (13, 7))
    for sub in range(1, subs + 1)
    for size in (1, 4)
]
EXCLUDE: List[str] = []
#: seconds one 12.x/13.x case takes, by its last number (message size / fragmenting), as
#: measured against nbio's server; only used to balance the shards
_DEFLATE_CASE_S = [1.0, 1.1, 1.1, 1.4, 1.5, 1.4, 1.5, 2.6, 5.0, 9.2, 1.2, 1.7, 2.2, 5.0, 9.8]
_DEFLATE_CASE_S += [7.7, 7.9, 5.7]
#: cases that wait about a second whatever the peer does (5.19, 5.20, 6.4.x)
_SLOW_CASES = re.compile(r"^(?:5\.19|5\.20|6\.4\.\d+)$")


def selected_cases() -> List[str]:
    """The case patterns ``$NBIO_AUTOBAHN_CASES`` asks for (see the module docstring)."""
    value = os.environ.get("NBIO_AUTOBAHN_CASES", "")
    if not value:
        return list(DEFAULT_CASES)
    if value == "all":
        return ["*"]
    return [c.strip() for c in value.split(",") if c.strip()]


def jobs() -> int:
    """How many suite processes run in parallel (``$NBIO_AUTOBAHN_JOBS``, default #CPUs)."""
    value = os.environ.get("NBIO_AUTOBAHN_JOBS", "")
    return max(1, int(value) if value else os.cpu_count() or 1)


# ------------------------------------------------------------------------ the suite itself


def python2() -> Optional[str]:
    candidates = [os.environ.get("NBIO_PYTHON2"), shutil.which("python2.7")]
    candidates.append(str(Path.home() / ".pyenv" / "versions" / "2.7.18" / "bin" / "python"))
    for c in candidates:
        if c and Path(c).exists():
            try:
                subprocess.run([c, "-c", "import sys"], check=True, capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                continue
            return c
    return None


# Python 2 without ``_hashlib`` (pyenv's 2.7 built against OpenSSL 3) falls back to a slow
# built-in SHA-1, and every 12.x/13.x message is hashed twice by the suite (about a quarter
# of its CPU time). This prelude points ``hashlib.sha1`` at OpenSSL's through ctypes, the same
# digest about 7x faster; it leaves hashlib alone if ``_hashlib`` exists, libcrypto cannot be
# loaded or the self-check fails.
_SUITE_PRELUDE = """
def _nbio_fast_sha1():
    import hashlib
    try:
        import _hashlib
        return
    except ImportError:
        pass
    import binascii, ctypes, ctypes.util
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("crypto"))
        vp = ctypes.c_void_p
        lib.EVP_MD_CTX_new.restype = vp
        lib.EVP_sha1.restype = vp
        lib.EVP_DigestInit_ex.argtypes = [vp, vp, vp]
        lib.EVP_DigestUpdate.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
        lib.EVP_DigestFinal_ex.argtypes = [vp, ctypes.c_char_p, vp]
        lib.EVP_MD_CTX_copy_ex.argtypes = [vp, vp]
        lib.EVP_MD_CTX_free.argtypes = [vp]
        md = lib.EVP_sha1()
    except (OSError, AttributeError, TypeError):
        return

    class sha1(object):
        digest_size = 20
        block_size = 64
        name = "sha1"

        def __init__(self, data=b""):
            self._ctx = lib.EVP_MD_CTX_new()
            lib.EVP_DigestInit_ex(self._ctx, md, None)
            if data:
                self.update(data)

        def __del__(self, free=lib.EVP_MD_CTX_free):
            free(self._ctx)

        def update(self, data):
            data = bytes(data)
            lib.EVP_DigestUpdate(self._ctx, data, len(data))

        def copy(self):
            other = sha1()
            lib.EVP_MD_CTX_copy_ex(other._ctx, self._ctx)
            return other

        def digest(self):
            out = ctypes.create_string_buffer(20)
            final = self.copy()  # (kept alive until its context is finalized)
            lib.EVP_DigestFinal_ex(final._ctx, out, None)
            return out.raw

        def hexdigest(self):
            return binascii.hexlify(self.digest())

    h = sha1(b"ab")
    h.update(b"c" * 100000)
    if h.digest() == hashlib.sha1(b"ab" + b"c" * 100000).digest():
        hashlib.sha1 = sha1

_nbio_fast_sha1()
"""


def suite_python(code: str) -> List[str]:
    """A Python 2 command line running ``code`` with the suite importable (installing the
    suite on first use)."""
    py = python2()
    if py is None:
        pytest.skip("Autobahn|Testsuite needs Python 2.7 (set NBIO_PYTHON2)")
    site = CACHE / "site"
    if not (site / "autobahntestsuite").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [py, "-m", "pip", "install", "--quiet", "--target", str(site), "autobahntestsuite"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            pytest.fail(f"installing autobahntestsuite failed:\n{proc.stderr[-3000:]}")
    return [py, "-c", f"import site, sys; site.addsitedir({str(site)!r})\n{code}"]


def wstest_argv() -> List[str]:
    """The command line of the suite's ``wstest``."""
    run = "from autobahntestsuite.wstest import run; sys.argv[0] = 'wstest'; run()"
    return suite_python(_SUITE_PRELUDE + run)


def all_case_ids() -> List[str]:
    """Every case id the installed suite has, in its order."""
    code = (
        "from autobahntestsuite.case import Cases; "
        "print(' '.join(c.__name__[4:].replace('_', '.') for c in Cases))"
    )
    out = subprocess.run(suite_python(code), check=True, capture_output=True, text=True)
    return out.stdout.split()


def resolve_cases(patterns: Sequence[str], ids: Sequence[str]) -> List[str]:
    """The case ids that ``patterns`` select, as the suite resolves a spec's "cases"
    (a pattern with ``*`` is a regular expression matched at the start of the id)."""
    chosen: Set[str] = set()
    for pattern in patterns:
        if "*" in pattern:
            rx = re.compile(pattern.replace(".", r"\.").replace("*", ".*"))
            chosen.update(i for i in ids if rx.match(i))
        elif pattern in ids:
            chosen.add(pattern)
        else:
            raise ValueError(f"no Autobahn case {pattern!r}")
    return [i for i in ids if i in chosen]


def case_weight(case: str) -> float:
    """Rough seconds the case takes (for balancing shards)."""
    parts = case.split(".")
    if parts[0] in ("12", "13") and len(parts) == 3:
        return _DEFLATE_CASE_S[min(int(parts[2]), len(_DEFLATE_CASE_S)) - 1]
    if parts[0] == "9":
        return 0.5
    return 1.0 if _SLOW_CASES.match(case) else 0.02


def shard_cases(cases: Sequence[str], n: int) -> List[List[str]]:
    """Split ``cases`` into at most ``n`` lists of about equal expected duration
    (longest first onto the least loaded shard); each list keeps the suite's order."""
    order = {c: i for i, c in enumerate(cases)}
    shards: List[Tuple[float, List[str]]] = [(0.0, []) for _ in range(max(1, n))]
    for case in sorted(cases, key=case_weight, reverse=True):
        k = min(range(len(shards)), key=lambda j: shards[j][0])
        load, members = shards[k]
        members.append(case)
        shards[k] = (load + case_weight(case), members)
    return [sorted(m, key=order.__getitem__) for _, m in shards if m]


def planned_shards() -> List[List[str]]:
    """The selected cases, resolved to ids and sharded over :func:`jobs` processes."""
    cases = resolve_cases(selected_cases(), all_case_ids())
    excluded = set(resolve_cases(EXCLUDE, cases)) if EXCLUDE else set()
    return shard_cases([c for c in cases if c not in excluded], jobs())


def read_reports(outdirs: Sequence[Path], agent: str) -> Dict[str, Any]:
    """Every case entry of ``agent`` in the shards' ``index.json`` files (case id -> entry)."""
    results: Dict[str, Any] = {}
    for outdir in outdirs:
        index = outdir / "index.json"
        if index.exists():
            results.update(json.loads(index.read_text()).get(agent, {}))
    return results


def passed(entry: Dict[str, Any]) -> bool:
    return entry["behavior"] in PASSING and entry.get("behaviorClose") in PASSING


def check_reports(outdirs: Sequence[Path], agent: str, expected: Sequence[str]) -> Dict[str, Any]:
    """Read every shard's ``index.json``; fail listing each case that did not pass or has no
    report. Returns the entries read (case id -> entry)."""
    results = read_reports(outdirs, agent)
    missing = sorted(set(expected) - set(results), key=_case_key)
    bad = [
        f"{case}: {r['behavior']}/{r.get('behaviorClose')} {_result(outdirs, r)}"
        for case, r in sorted(results.items(), key=lambda kv: _case_key(kv[0]))
        if not passed(r)
    ]
    problems = [f"{len(bad)} of {len(results)} cases failed:", *bad] if bad else []
    if missing:
        problems.append(f"{len(missing)} cases have no report: {' '.join(missing)}")
    assert not problems, "\n".join(problems)
    return results


def _case_key(case: str) -> List[int]:
    return [int(x) for x in case.split(".")]


def _result(outdirs: Sequence[Path], entry: Dict[str, Any]) -> str:
    """The suite's explanation of one case outcome, from its per-case report."""
    name = entry.get("reportfile")
    for outdir in outdirs:
        if name and (outdir / name).exists():
            try:
                return str(json.loads((outdir / name).read_text()).get("result", ""))[:200]
            except ValueError:
                break
    return ""


def _wait_all(procs: Sequence[subprocess.Popen], timeout: float) -> None:
    """Wait for every process, at most ``timeout`` seconds in all (TimeoutExpired)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.wait(max(1.0, deadline - time.monotonic()))


def _kill_all(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _timeout(shards: Sequence[Sequence[str]]) -> float:
    """A generous bound for the run: 4x the expected duration of the longest shard + 2 min."""
    return 120.0 + 4 * max(sum(case_weight(c) for c in s) for s in shards)


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# ------------------------------------------------------------------------ nbio's side


class LoopThread:
    """An event loop (with an nbio engine) running in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine: Engine = self.call(self._make_engine)

    async def _make_engine(self) -> Engine:
        # 9.x echoes messages of up to 16 MiB: let the write queue hold one
        return Engine(max_write_buffer=64 << 20)

    def call(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self.loop).result(60)

    def close(self) -> None:
        self.call(self.engine.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EchoCallbacks:
    def on_message(self, ws: Any, data: Any, is_text: bool) -> None:
        ws.send(data)


async def echo_async(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def _start_server(lt: LoopThread, api: str) -> int:
    from nbio.http.server import HttpServer
    from nbio.ws import WebSocketUpgrader

    handler = EchoCallbacks() if api == "callback" else echo_async
    upgrader = WebSocketUpgrader(
        handler, max_size=32 << 20, max_write_buffer=64 << 20, ping_interval=None
    )

    async def start() -> int:
        server = HttpServer(None, upgrades={"*": upgrader})
        return int(lt.engine.listen(server, "127.0.0.1", 0).address[1])

    return int(lt.call(start))


# ------------------------------------------------------------------------ the runs


def run_fuzzingclient(api: str, workdir: Path) -> Dict[str, Any]:
    """The suite's fuzzing client against nbio's echo server (``api``: "callback" or
    "async"), sharded; fails on any case that did not pass. Returns the case entries."""
    argv = wstest_argv()
    shards = planned_shards()
    agent = f"nbio-{api}"
    lt = LoopThread()
    procs: List[subprocess.Popen] = []
    dirs = [workdir / f"shard{i}" for i in range(len(shards))]
    try:
        port = _start_server(lt, api)
        for d, cases in zip(dirs, shards):
            d.mkdir(parents=True)
            spec = {
                "outdir": str(d / "reports"),
                "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}],
                "cases": cases,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            }
            (d / "spec.json").write_text(json.dumps(spec))
            with open(d / "wstest.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*argv, "-m", "fuzzingclient", "-s", "spec.json"],
                        cwd=d,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        _wait_all(procs, _timeout(shards))
    finally:
        _kill_all(procs)
        lt.close()
    for d, p in zip(dirs, procs):
        assert p.returncode == 0, (
            f"wstest exited with {p.returncode}:\n{_log_tail(d / 'wstest.log')}"
        )
    return check_reports([d / "reports" for d in dirs], agent, [c for s in shards for c in s])


def run_fuzzingserver(workdir: Path) -> Dict[str, Any]:
    """nbio's client against the suite's fuzzing servers (one per shard, driven
    concurrently); fails on any case that did not pass. Returns the case entries."""
    argv = wstest_argv()
    shards = planned_shards()
    dirs = [workdir / f"shard{i}" for i in range(len(shards))]
    urls: List[str] = []
    procs: List[subprocess.Popen] = []
    try:
        for d, cases in zip(dirs, shards):
            d.mkdir(parents=True)
            url = f"ws://127.0.0.1:{free_port()}"
            spec = {
                "url": url,
                "outdir": str(d / "reports"),
                "cases": cases,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            }
            (d / "spec.json").write_text(json.dumps(spec))
            with open(d / "fuzzingserver.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*argv, "-m", "fuzzingserver", "-s", "spec.json", "--webport", "0"],
                        cwd=d,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls.append(url)
        for url, p in zip(urls, procs):
            wait_listening(int(url.rsplit(":", 1)[1]), p)
        asyncio.run(asyncio.wait_for(_run_client_shards(urls), _timeout(shards)))
    finally:
        for p in procs:
            p.terminate()
        try:
            _wait_all(procs, 10)
        finally:
            _kill_all(procs)
    return check_reports([d / "reports" for d in dirs], "nbio", [c for s in shards for c in s])


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until the fuzzing server accepts connections (it prints no readiness signal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fuzzingserver exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("fuzzingserver did not start")


async def _run_client_shards(urls: Sequence[str]) -> None:
    engine = Engine(max_write_buffer=64 << 20)  # 9.x echoes messages of up to 16 MiB
    try:
        await asyncio.gather(*(_run_client_cases(url, engine) for url in urls))
    finally:
        await engine.close()


async def _run_client_cases(url: str, engine: Engine) -> None:
    """Play every case of one fuzzing server: echo each message until the server closes."""
    from nbio.ws import connect

    opts: Dict[str, Any] = dict(ping_interval=None, engine=engine)
    ws = await connect(url + "/getCaseCount", **opts)
    count = int(await ws.recv())
    await ws.wait_closed()
    for case in range(1, count + 1):
        ws = await connect(
            f"{url}/runCase?case={case}&agent=nbio",
            max_size=32 << 20,
            max_write_buffer=64 << 20,
            **opts,
        )
        try:
            async for message in ws:
                await ws.send(message)
        except Exception:
            pass  # protocol violations are the point of many cases; the report judges
        await ws.wait_closed()
    ws = await connect(f"{url}/updateReports?agent=nbio", **opts)
    await ws.wait_closed()


# ------------------------------------------------------------------------ the tests


def test_shards_balance_and_keep_every_case() -> None:
    cases = [f"1.1.{i}" for i in range(1, 9)] + [f"12.1.{i}" for i in range(1, 19)]
    shards = shard_cases(cases, 3)
    assert sorted(c for s in shards for c in s) == sorted(cases)
    loads = [sum(case_weight(c) for c in s) for s in shards]
    assert max(loads) - min(loads) <= max(_DEFLATE_CASE_S)
    assert all(s == sorted(s, key=cases.index) for s in shards)
    assert shard_cases(cases[:2], 4) == [["1.1.1"], ["1.1.2"]]


def test_check_reports_lists_failed_and_missing_cases(tmp_path: Path) -> None:
    entry = {"behavior": "OK", "behaviorClose": "OK", "reportfile": "a.json"}
    index = {"nbio": {"1.1.1": entry, "1.1.2": {**entry, "behavior": "NON-STRICT"}}}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert len(check_reports([tmp_path], "nbio", ["1.1.1", "1.1.2"])) == 2
    index["nbio"]["1.1.2"] = {**entry, "behavior": "FAILED"}
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / "a.json").write_text(json.dumps({"result": "why it failed"}))
    with pytest.raises(AssertionError) as info:
        check_reports([tmp_path], "nbio", ["1.1.1", "1.1.2", "1.1.3", "1.2.1"])
    message = str(info.value)
    assert "1 of 2 cases failed" in message and "1.1.2: FAILED/OK why it failed" in message
    assert "2 cases have no report: 1.1.3 1.2.1" in message
    assert "1.1.1:" not in message


def test_suite_prelude_sha1_gives_the_same_digests() -> None:
    import hashlib

    data = bytes(range(256)) * 1000
    code = (
        "import hashlib, sys; h = hashlib.sha1(); h.update(sys.stdin.read()); "
        "c = h.copy(); c.update(b'x'); "
        "print(h.hexdigest() + ' ' + c.hexdigest() + ' ' + hashlib.sha1(b'').hexdigest())"
    )
    out = subprocess.run(
        suite_python(_SUITE_PRELUDE + code), input=data, check=True, capture_output=True
    ).stdout.split()
    expected = [hashlib.sha1(data).hexdigest(), hashlib.sha1(data + b"x").hexdigest()]
    assert [x.decode() for x in out] == [*expected, hashlib.sha1(b"").hexdigest()]


def test_resolve_cases_like_the_suite() -> None:
    ids = ["1.1.1", "1.2.1", "10.1.1", "12.1.1", "12.1.10", "12.1.2"]
    assert resolve_cases(["1.*"], ids) == ["1.1.1", "1.2.1"]
    assert resolve_cases(["12.1.1"], ids) == ["12.1.1"]
    assert resolve_cases(["12.1.1*"], ids) == ["12.1.1", "12.1.10"]
    assert resolve_cases(["*"], ids) == ids
    with pytest.raises(ValueError):
        resolve_cases(["99.1"], ids)


@pytest.mark.parametrize("api", ["callback", "async"])
def test_fuzzingclient_against_server(api: str, tmp_path: Path) -> None:
    assert run_fuzzingclient(api, tmp_path)


def test_fuzzingserver_against_client(tmp_path: Path) -> None:
    assert run_fuzzingserver(tmp_path)

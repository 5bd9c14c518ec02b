"""ws_autobahn: the whole Autobahn|Testsuite (all 12.x/13.x compression cases) against nbio.

    python bench/ws_autobahn.py [--targets callback,async,client] [--cases "12.*,13.*"]

Runs the fuzzing client against nbio's server (callback and async API, permessage-deflate
offered by the suite) and the fuzzing server against nbio's client, with the harness of
``tests/interop/test_autobahn.py`` (which runs a sample of 12.x/13.x in CI). Prints, per
target, how many cases ended in each outcome and the suite's total case time; fails (exit 1)
if any case ended other than OK / NON-STRICT / INFORMATIONAL.

The last line is ``{"bench": "ws_autobahn", "results": {TARGET: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent / "tests" / "interop"))
sys.path.insert(0, str(BENCH_DIR.parent / "src"))

import _common as C  # noqa: E402
import test_autobahn as T  # noqa: E402


def summarize(index: Dict[str, Any]) -> Dict[str, float]:
    outcomes: collections.Counter = collections.Counter()
    duration = 0
    for r in index.values():
        ok = r["behavior"] in T.PASSING and r.get("behaviorClose") in T.PASSING
        outcomes["passed" if ok else "failed"] += 1
        outcomes[r["behavior"]] += 1
        duration += r.get("duration", 0)
    out: Dict[str, float] = dict(outcomes)
    out["cases"] = len(index)
    out["case_ms"] = duration
    return out


def run_server(api: str, cases: list, workdir: Path) -> Dict[str, Any]:
    lt = T.LoopThread()
    try:
        port = T._start_server(lt, api)
        spec = {
            "outdir": str(workdir / "reports"),
            "servers": [{"agent": api, "url": f"ws://127.0.0.1:{port}"}],
            "cases": cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (workdir / "spec.json").write_text(json.dumps(spec))
        subprocess.run(
            [*T.wstest_argv(), "-m", "fuzzingclient", "-s", "spec.json"],
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        return dict(json.loads((workdir / "reports" / "index.json").read_text())[api])
    finally:
        lt.close()


def run_client(cases: list, workdir: Path) -> Dict[str, Any]:
    port = T.free_port()
    url = f"ws://127.0.0.1:{port}"
    spec = {
        "url": url,
        "outdir": str(workdir / "reports"),
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    server = subprocess.Popen(
        [*T.wstest_argv(), "-m", "fuzzingserver", "-s", "spec.json", "--webport", "0"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        T.wait_listening(port, server)
        asyncio.run(T._run_client_cases(url))
    finally:
        server.terminate()
        server.wait(10)
    return dict(json.loads((workdir / "reports" / "index.json").read_text())["nbio"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="callback,async,client")
    parser.add_argument(
        "--cases", default="*", help='comma-separated case ids or prefixes ending in "*"'
    )
    args = parser.parse_args()
    os.environ.setdefault("NBIO_AUTOBAHN_CASES", args.cases)
    cases = args.cases.split(",")
    print(f"# ws_autobahn: cases {args.cases}; {C.machine_info()}")
    results: Dict[str, Dict[str, float]] = {}
    failed = False
    for target in [t for t in args.targets.split(",") if t]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            if target == "client":
                index = run_client(cases, Path(tmp))
            else:
                index = run_server(target, cases, Path(tmp))
            res = summarize(index)
            res["wall_s"] = time.monotonic() - t0
            results[target] = res
            bad = sorted(
                k
                for k, r in index.items()
                if r["behavior"] not in T.PASSING or r.get("behaviorClose") not in T.PASSING
            )
            if bad:
                failed = True
                print(f"{target}: failed cases {bad[:30]}")
    C.print_table(
        ["target", "cases", "passed", "failed", "OK", "NON-STRICT", "INFORMATIONAL", "wall s"],
        [
            [
                t,
                int(r["cases"]),
                int(r.get("passed", 0)),
                int(r.get("failed", 0)),
                int(r.get("OK", 0)),
                int(r.get("NON-STRICT", 0)),
                int(r.get("INFORMATIONAL", 0)),
                r["wall_s"],
            ]
            for t, r in results.items()
        ],
    )
    C.emit_json("ws_autobahn", results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""ws_autobahn: the whole Autobahn|Testsuite (all 12.x/13.x compression cases) against nbio.

    python bench/ws_autobahn.py [--targets callback,async,client] [--cases "12.*,13.*"] [--jobs N]

Runs the fuzzing client against nbio's server (callback and async API, permessage-deflate
offered by the suite) and the fuzzing server against nbio's client, with the sharded harness
of ``tests/interop/test_autobahn.py`` (``--jobs`` suite processes per target, default: one
per CPU). Prints, per target, how many cases ended in each outcome, the wall time and the
CPU seconds of nbio's side plus the suite's; fails (exit 1) if any case ended other than
OK / NON-STRICT / INFORMATIONAL or has no report. CI runs the same cases through pytest:
``NBIO_AUTOBAHN_CASES=all python -m pytest tests/interop/test_autobahn.py``.

The last line is ``{"bench": "ws_autobahn", "results": {TARGET: {FIGURE: number}}}``.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Tuple

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
        outcomes["passed" if T.passed(r) else "failed"] += 1
        outcomes[r["behavior"]] += 1
        duration += r.get("duration", 0)
    out: Dict[str, float] = dict(outcomes)
    out["cases"] = len(index)
    out["case_ms"] = duration
    return out


def run_target(target: str, workdir: Path) -> Tuple[Dict[str, Any], str]:
    """Run one target with the test harness; returns its case entries and the failure text."""
    try:
        if target == "client":
            T.run_fuzzingserver(workdir)
        else:
            T.run_fuzzingclient(target, workdir)
        error = ""
    except AssertionError as exc:
        error = str(exc)
    agent = "nbio" if target == "client" else f"nbio-{target}"
    return T.read_reports(sorted(workdir.glob("shard*/reports")), agent), error


def _cpu_s() -> float:
    """CPU seconds used so far by this process (nbio's side) and its reaped children (the suite)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default="callback,async,client")
    parser.add_argument(
        "--cases", default="*", help='comma-separated case ids or prefixes ending in "*"'
    )
    parser.add_argument("--jobs", type=int, default=0, help="suite processes per target")
    args = parser.parse_args()
    os.environ["NBIO_AUTOBAHN_CASES"] = "all" if args.cases == "*" else args.cases
    if args.jobs:
        os.environ["NBIO_AUTOBAHN_JOBS"] = str(args.jobs)
    print(f"# ws_autobahn: cases {args.cases}, {T.jobs()} jobs; {C.machine_info()}")
    results: Dict[str, Dict[str, float]] = {}
    failed = False
    for target in [t for t in args.targets.split(",") if t]:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            cpu0 = _cpu_s()
            index, error = run_target(target, Path(tmp))
            res = summarize(index)
            res["wall_s"] = time.monotonic() - t0
            res["cpu_s"] = _cpu_s() - cpu0
            results[target] = res
            if error or not index:
                failed = True
                print(f"{target}: {error or 'no report'}"[:5000])
    C.print_table(
        [
            "target",
            "cases",
            "passed",
            "failed",
            "OK",
            "NON-STRICT",
            "INFORMATIONAL",
            "wall s",
            "cpu s",
        ],
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
                r["cpu_s"],
            ]
            for t, r in results.items()
        ],
    )
    C.emit_json("ws_autobahn", results)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

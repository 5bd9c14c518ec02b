"""The test side of the multi-process backplane tests: start a worker script as a process
(``python SCRIPT REDIS_URL``), read the port it prints, stop it by closing its stdin."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Type, TypeVar

import nbio

#: Where the nbio under test lives (the workers import the same one).
SRC = Path(nbio.__file__).resolve().parents[1]

W = TypeVar("W", bound="WorkerProcess")


class WorkerProcess:
    """One worker process; ``port`` once :meth:`wait_port` returned."""

    script: Path  # set by subclasses: the worker's own file

    def __init__(self, url: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.port = 0

    def wait_port(self, deadline: float) -> None:
        assert self.proc.stdout is not None
        while not select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[
            0
        ]:
            if time.monotonic() > deadline:
                raise AssertionError("worker did not report its port in time")
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.wait()}"
        self.port = int(line)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def running_workers(cls: Type[W], url: str, count: int = 2) -> Iterator[List[W]]:
    """Fixture body: ``count`` workers with their ports known; stopped after, and each must
    have shut down cleanly."""
    procs = [cls(url) for _ in range(count)]
    try:
        deadline = time.monotonic() + 20
        for w in procs:
            w.wait_port(deadline)
        yield procs
    finally:
        for w in procs:
            w.stop()
    assert [w.proc.returncode for w in procs] == [0] * count  # clean shutdown

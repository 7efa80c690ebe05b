"""Small real jobs for the queue and worker tests, passed to worker processes with `--job test_worker_jobs:NAME`
(tests/ on PYTHONPATH). Each has the signature of pc.backtest.run_request and records every run it starts in
<home>/runs/<id>.<pid>.<n> so a test can count how often a request really ran.

Why a `--job` option instead of a test switch in production code: the worker is a generic queue runner whose
job is a callable; choosing it is an operator's command-line decision (requests never choose it), and it is
how the tests and the benchmark run the real worker process with a job that takes milliseconds.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import atomic, schemas
from common.home import Home

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

_counter = itertools.count()


def _mark(request: dict, home: Home) -> None:
    runs = home.root / "runs"
    runs.mkdir(exist_ok=True)
    (runs / f"{request['id']}.{os.getpid()}.{next(_counter)}").touch()


def runs(home_root: Path, request_id: str | None = None) -> int:
    """How many runs of `request_id` (or of any request) were started."""
    folder = home_root / "runs"
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if request_id is None or p.name.rsplit(".", 2)[0] == request_id)


def _result(request: dict, **extra) -> dict:
    return {"schema": "test_result/1", "id": request["id"], "status": "ok", "pid": os.getpid(),
            "correlation_id": request.get("correlation_id"), **extra}


def write_result(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    """Writes result.json itself, like the backtest."""
    _mark(request, home)
    result = _result(request)
    atomic.write_json(out_dir / "result.json", result)
    return result


def return_result(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    """Only returns its result: the worker writes result.json."""
    _mark(request, home)
    (out_dir / "extra.txt").write_text("x")
    return _result(request)


def jittery(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    """The chaos job: a few files and 0-30 ms of work, so kills land in every phase."""
    _mark(request, home)
    for name in ("equity.csv", "trades.csv"):
        (out_dir / name).write_text("date,value\n2024-01-02,1\n")
        time.sleep(random.uniform(0, 0.015))
        if progress:
            progress()
    result = _result(request)
    atomic.write_json(out_dir / "result.json", result)
    return result


def _working(request: dict, out_dir: Path, home: Home, progress, seconds: float, report: bool) -> dict:
    """`seconds` of work in 50 ms steps, calling progress() like the backtest does when `report`."""
    _mark(request, home)
    for _ in range(round(seconds / 0.05)):
        time.sleep(0.05)
        if report and progress:
            progress()
    result = _result(request)
    atomic.write_json(out_dir / "result.json", result)
    return result


def slow(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    """3 seconds of work, calling progress()."""
    return _working(request, out_dir, home, progress, 3, True)


def long_slow(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    """30 seconds of work: still running whenever a test stops its worker, however slow the machine."""
    return _working(request, out_dir, home, progress, 30, True)


def silent_slow(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    """6 seconds of work that never calls progress(): only the heartbeat thread keeps its claim alive."""
    return _working(request, out_dir, home, progress, 6, False)


def failing(request: dict, out_dir: Path, home: Home, progress=None) -> dict:
    _mark(request, home)
    (out_dir / "partial.csv").write_text("half")
    raise ValueError(f"no data for {request['universe']} between {request['start']} and {request['end']}")


def nothing(request: dict, out_dir: Path, home: Home, progress=None) -> None:
    """Writes nothing and returns nothing: a broken job."""
    _mark(request, home)


# --- helpers for the worker tests: real worker processes on a temporary home ---------------------------------------


def make_request(home: Home, n: int, **changes) -> dict:
    request = schemas.new_request("momentum_topN_v1", "2023-01-02", "2023-12-28", params={"top_n": 1 + n % 50},
                                  requested_by="test", correlation_id=f"corr-{n}", id=f"req-{n:04d}", home=home)
    request.update(changes)
    return request


class Workers:
    """Worker processes started by one test: `python -m faces.cli worker --job test_worker_jobs:<job> ...`,
    stderr to <home>/<name>.err; all of them are killed at the end of the test."""

    def __init__(self, home: Home):
        self.home = home
        self.procs: list[subprocess.Popen] = []
        self.count = 0

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRX__")}
        env.update(KRX_HOME=str(self.home.root), PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]),
                   PYTHONUNBUFFERED="1", **extra)
        return env

    def start(self, *args: str, job: str | None = "write_result", name: str | None = None,
              env: dict | None = None) -> subprocess.Popen:
        self.count += 1
        name = name or f"w{self.count}"
        cmd = [sys.executable, "-m", "faces.cli", "worker", *args]
        if job:
            cmd += ["--job", f"test_worker_jobs:{job}"]
        err = open(self.home.root / f"{name}.err", "ab")  # the child writes to it; our copy closes below
        proc = subprocess.Popen(cmd, cwd=self.home.root, env=self.env(**(env or {})), stdout=err, stderr=err)
        err.close()
        proc.log_name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log(self, proc_or_name: subprocess.Popen | str) -> str:
        name = proc_or_name if isinstance(proc_or_name, str) else proc_or_name.log_name  # type: ignore[attr-defined]
        path = self.home.root / f"{name}.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_started(self, proc: subprocess.Popen, timeout: float = 20) -> str:
        wait_for(lambda: "[WORKER_START]" in self.log(proc) or proc.poll() is not None, timeout, "worker start")
        assert proc.poll() is None, self.log(proc)
        return self.log(proc)

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def wait_for(predicate: Callable[[], object], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_jobs_write_a_result(tmp_path: Path) -> None:
    home = Home(tmp_path)
    request = {"id": "r1", "universe": "ALL", "start": "2024-01-02", "end": "2024-01-05"}
    for job in (write_result, jittery):
        out = tmp_path / job.__name__
        out.mkdir()
        assert job(request, out, home)["id"] == "r1"
        assert (out / "result.json").is_file()
    assert runs(tmp_path, "r1") == 2

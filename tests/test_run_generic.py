"""The cron wrapper, run as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO

WRAPPER = REPO / "scripts" / "linux" / "jobs" / "_run_generic.sh"
LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[(INFO|WARNING|ERROR)\] \[JOB_[A-Z0-9_]+\] "
                  r"rc=(\d+) details=.* elapsed=\d+ms$")


def run(tmp_path: Path, *args: str, script: str = "exit 0", timeout: float = 30) -> subprocess.CompletedProcess:
    env = {**os.environ, "KRX_HOME": str(tmp_path)}
    return subprocess.run([str(WRAPPER), *args, "--", "bash", "-c", script], capture_output=True, text=True,
                          env=env, timeout=timeout)


def counting(tmp_path: Path, rcs: list[int]) -> str:
    """A command that appends one line per run and exits with the next rc of `rcs` (the last one repeats)."""
    counter = tmp_path / "runs"
    seq = " ".join(map(str, rcs))
    return (f'echo run >> {counter}; n=$(wc -l < {counter}); set -- {seq}; '
            f'i=$(( n <= $# ? n : $# )); eval "exit \\${{$i}}"')


def runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize(("rcs", "retry", "attempts", "final"), [
    ([3], 3, 3, 3),          # a failure is retried up to N attempts in all
    ([7], 2, 2, 7),          # any unexpected rc counts as a failure, and comes back as it was
    ([0], 5, 1, 0),          # success is never retried
    ([2], 5, 1, 2),          # blocked by a safety check is a normal outcome: never retried
    ([3, 3, 0], 5, 3, 0),    # fails twice, then succeeds
    ([3, 2], 5, 2, 2),       # a failure, then blocked: stops there
])
def test_retry_counts_and_rc(tmp_path: Path, rcs: list[int], retry: int, attempts: int, final: int) -> None:
    out = run(tmp_path, "--retry", str(retry), "--retry-sleep", "0", "--lock", "t1", script=counting(tmp_path, rcs))
    assert out.returncode == final
    assert runs(tmp_path) == attempts
    lines = out.stderr.strip().splitlines()
    assert len(lines) == attempts and all(LINE.match(line) for line in lines), out.stderr
    assert [int(LINE.match(line).group(2)) for line in lines][-1] == final


def test_log_file_gets_the_same_lines(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    out = run(tmp_path, "--retry", "2", "--retry-sleep", "0", "--log", str(log), script="exit 3")
    assert out.returncode == 3
    assert log.read_text().splitlines() == out.stderr.strip().splitlines()
    assert "[ERROR]" in log.read_text().splitlines()[-1] and "no attempts left" in log.read_text()


def test_lock_contention(tmp_path: Path) -> None:
    env = {**os.environ, "KRX_HOME": str(tmp_path)}
    holder = subprocess.Popen([str(WRAPPER), "--lock", "busy", "--", "bash", "-c", f"touch {tmp_path}/held; sleep 300"],
                              env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "held").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = run(tmp_path, "--lock", "busy", script=f"touch {tmp_path}/second_ran")
        assert second.returncode == 75
        assert "lock busy is held" in second.stderr and LINE.match(second.stderr.strip())
        assert not (tmp_path / "second_ran").exists()
        other = run(tmp_path, "--lock", "other", script="exit 0")  # a different job is not blocked
        assert other.returncode == 0
    finally:  # the holder never ends by itself (it would free the lock mid-test on a slow machine); the job
        # holds the lock too (it inherits it), so end the whole process group
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert run(tmp_path, "--lock", "busy", script="exit 0").returncode == 0  # released when the holder ends


def test_usage_errors(tmp_path: Path) -> None:
    for args in (["--retry", "0"], ["--retry", "x"], ["--lock", "../x"], ["--bogus"]):
        out = run(tmp_path, *args)
        assert out.returncode == 64 and "usage" in out.stderr

"""Finding 11: the smaller points, each against the real CLI or the real worker process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import krx

from common import atomic, schemas
from common.home import Home
from common.log import now
from common.queue import Queue


def test_a_backtest_that_cannot_succeed_is_failed_at_once(home: Home) -> None:
    req = schemas.new_request("momentum_topN_v1", "2010-01-04", "2010-06-30", id="nodata", home=home)
    Queue.of_home(home).submit(req)  # the store is empty: no retry can give it data
    proc = krx("worker", "--once", home=home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((home.queue("failed") / "nodata.error.json").read_text(encoding="utf-8"))
    assert record["error_code"] == "JOB_FAILED" and record["attempts"] == 1
    assert "JOB_RETRY" not in proc.stderr


def test_calendar_outside_its_range_or_reversed_is_an_error(home: Home) -> None:
    reversed_ = krx("calendar", "2026-06-05", "2026-06-01", home=home)
    assert reversed_.returncode == 3 and "FROM 2026-06-05 is after TO 2026-06-01" in reversed_.stderr
    beyond = krx("calendar", "2026-06-01", "2199-01-01", home=home)
    assert beyond.returncode == 3 and "reaches outside the calendar" in beyond.stderr and not beyond.stdout


SLOW_IMPORT = '''
import importlib.abc, os, sys, time
class _Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pc.worker":
            open(os.environ["KRX_TEST_MARK"], "w").close()  # the worker module starts loading now
            time.sleep(3)
        return None
sys.meta_path.insert(0, _Slow())
'''


def test_sigterm_while_the_worker_is_still_importing_exits_0(home: Home, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_IMPORT, encoding="utf-8")
    mark = tmp_path / "mark"
    env = {**os.environ, "KRX_HOME": str(home.root), "KRX_TEST_MARK": str(mark),
           "PYTHONPATH": f"{hook}{os.pathsep}{Path(__file__).resolve().parent.parent}"}
    proc = subprocess.Popen([sys.executable, "-m", "faces.cli", "worker", "--once"], env=env, cwd=home.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not mark.exists() and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_a_full_disk_under_the_log_file_prints_no_traceback(home: Home) -> None:
    home.logs.mkdir(exist_ok=True)
    os.symlink("/dev/full", home.logs / f"worker_{now():%Y%m%d}.log")  # every write: ENOSPC
    (home.queue("pending") / "bad name.json").write_text("{}")  # something to log
    proc = krx("worker", "--once", home=home, timeout=120)
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    assert proc.stderr.count("[LOG] cannot write") == 1


def test_atomic_files_are_readable_by_the_other_machine(tmp_path: Path) -> None:
    path = atomic.write_json(tmp_path / "r.json", {"a": 1})
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask


def test_a_result_published_by_a_killed_worker_gets_its_job_done(home: Home) -> None:
    q = Queue.of_home(home)
    (q.out / "r9").mkdir(parents=True)  # published ...
    (q.out / "r9" / "result.json").write_text("{}")
    claim = q.processing / "r9@1@host-1-abcdef.json"  # ... and killed before the claim went
    claim.write_text("{}")
    os.utime(claim, (time.time() - 3600, time.time() - 3600))
    proc = krx("worker", "--once", "--lease", "5", home=home, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[JOB_DONE]" in proc.stderr and "recovered" in proc.stderr
    lines = (home.state / "events.jsonl").read_text(encoding="utf-8").splitlines()
    done = [json.loads(ln) for ln in lines if '"backtest_done"' in ln]
    assert len(done) == 1 and done[0]["id"] == "r9" and done[0]["recovered"] is True
    assert not claim.exists()


def test_a_damaged_portfolio_blocks_the_cycle_with_state_unreadable(home: Home) -> None:
    (home.state / "portfolio.json").write_text("{broken", encoding="utf-8")
    proc = krx("ops", "cycle", "--date", "2026-06-01", home=home, timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "BLOCKED (STATE_UNREADABLE)" in proc.stdout


def test_a_failed_preflight_says_which_file_and_key(home: Home) -> None:
    proc = krx("ops", "cycle", "--date", "2026-06-01", home=home, env={"KRX__APP__WORKER__LEASE_S": "soon"},
               timeout=180)
    assert proc.returncode == 2  # DESIGN section 10: a failed preflight is BLOCKED
    assert "BLOCKED (PREFLIGHT_FAIL)" in proc.stdout
    assert ("preflight configs: environment variable KRX__APP__WORKER__LEASE_S: worker.lease_s: expected a number, "
            "got 'soon'") in proc.stdout

"""Review findings on the worker and its one-shot: real queue folders, real worker loop, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_worker_jobs import make_request

from common import schemas
from common.home import Home, init_home
from common.queue import Queue
from pc import worker as worker_mod


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return init_home(tmp_path / "home")[0]


def _job(request, out_dir, home, progress=None):
    return {"id": request["id"]}


def test_a_file_name_too_long_for_its_error_record_is_failed_and_does_not_stall_the_queue(home: Home) -> None:
    """A 245-character file name is legal, but `.<stem>.<owner>.error.tmp` beside it in failed/ is not
    (ENAMETOOLONG): the hostile file must still end in failed/ and the requests behind it must run."""
    q = Queue.of_home(home).ensure()
    long_name = "a" * 240 + ".json"  # not a valid id (over 128 characters)
    (q.inbox / long_name).write_text("{}")
    os.utime(q.inbox / long_name, (1, 1))  # the oldest: first in line
    q.submit(make_request(home, 1))
    w = worker_mod.build(q.inbox, q.out, home=home, job=_job, interval_s=0.05, settle_s=0.05, max_attempts=1)
    assert w.run(once=True, install_signals=False) == 0
    assert (q.out / "req-0001" / "result.json").is_file()
    assert os.listdir(q.inbox) == []
    records = [json.loads((q.failed / n).read_text()) for n in os.listdir(q.failed) if n.endswith(".error.json")]
    assert [r["file"] for r in records] == [long_name] and records[0]["error_code"] == "INVALID_REQUEST"


@pytest.mark.parametrize("argv", [["run", "--concurrency", "0"], ["run", "--max-attempts", "-1"], ["run", "--bogus"],
                                  ["--bogus"]])
def test_the_one_shot_refuses_bad_arguments_with_exit_3(home: Home, argv: list[str]) -> None:
    """A usage error is a failure (3; argparse's 2 means "blocked" here), and `--concurrency 0` must not start a
    worker that can never claim anything and so never exits."""
    q = Queue.of_home(home).ensure()
    q.submit(make_request(home, 1))
    env = {**os.environ, "KRX_HOME": str(home.root)}
    proc = subprocess.run([sys.executable, "-m", "pc.backtest", *argv], cwd=home.root, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "error:" in proc.stderr


@pytest.mark.parametrize("bad", [".hidden", "...", ".x.y.tmp", "x.error"])
def test_an_id_starting_with_a_dot_is_refused_since_hidden_files_are_never_read(home: Home, bad: str) -> None:
    """pending/.<id>.json is a hidden file the worker never reads: submitting it queued a request that could
    never run nor fail. The queue and the schema refuse such an id instead; and an id ending in .error, whose
    failed/<id>.json would be taken for the error record of another request."""
    q = Queue.of_home(home).ensure()
    with pytest.raises(ValueError, match="request id"):
        q.submit({**make_request(home, 1), "id": bad})
    assert os.listdir(q.inbox) == []
    with pytest.raises(schemas.RequestError, match="id"):
        schemas.validate({**make_request(home, 1), "id": bad}, home=home)


def test_a_file_the_worker_cannot_claim_does_not_hold_up_the_others(home: Home, caplog) -> None:
    """An immutable (or foreign-owned) request cannot be renamed: it is skipped with one WARNING, and the
    requests behind it still run; --once still ends."""
    q = Queue.of_home(home).ensure()
    q.submit(make_request(home, 1))
    stuck = next(q.inbox.glob("*.json"))
    os.utime(stuck, (1, 1))  # the oldest: first in line
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        q.submit(make_request(home, 2))
        w = worker_mod.build(q.inbox, q.out, home=home, job=_job, interval_s=0.05, settle_s=0.05, max_attempts=1)
        with caplog.at_level("WARNING", logger="krx"):
            assert w.run(once=True, install_signals=False) == 0
        assert (q.out / "req-0002" / "result.json").is_file()
        assert stuck.exists() and not (q.out / "req-0001").exists()
        stuck_lines = [r for r in caplog.records if getattr(r, "event", "") == "REQUEST_STUCK"]
        assert len(stuck_lines) == 1 and stuck.name in stuck_lines[0].getMessage()
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], capture_output=True)

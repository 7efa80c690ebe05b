"""Review findings on the worker and its one-shot: real queue folders, real worker loop, no mocks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_worker_jobs import make_request

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

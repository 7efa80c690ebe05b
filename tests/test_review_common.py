"""Review findings in common/: damaged state files give a clear answer, never a traceback."""

from __future__ import annotations

import json

import pytest

from common import events
from common.home import Home


@pytest.mark.parametrize("head", [{"seq": -1, "hash": "x"}, {"seq": -7, "hash": "x"}, {"seq": 0, "hash": "x"}])
def test_verify_reports_a_damaged_head_record(home: Home, head: dict) -> None:
    for i in range(3):
        events.append(home, "TEST", i=i)
    (home.state / events.HEAD_NAME).write_text(json.dumps(head), encoding="utf-8")
    ok, line, message = events.verify(home)
    assert not ok and events.HEAD_NAME in message
    assert line is not None and 1 <= line <= 4


def test_an_unexpected_error_exits_3_with_one_line(home: Home) -> None:
    """Exit codes are 0, 2 or 3 (the cycle and cron read them): an exception a job did not expect is a failure,
    exit 3 with one line naming it, not Python's traceback and exit 1."""
    from conftest import krx

    (home.reports / "ops").write_text("a file where a folder belongs", encoding="utf-8")
    out = krx("ops", "summary", home=home)
    assert out.returncode == 3, out.stderr
    assert "Traceback" not in out.stderr
    assert "krx ops: failed:" in out.stderr and "reports/ops" in out.stderr

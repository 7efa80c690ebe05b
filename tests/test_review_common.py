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

"""The tamper-evident event log: appends chain, verify() names the first bad line."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
from pathlib import Path

import pytest

from common import events
from common.home import Home


def _write(home: Home, n: int) -> list[bytes]:
    for i in range(n):
        events.append(home, "test", correlation_id="20240105-x", i=i)
    return events.log_path(home).read_bytes().splitlines(keepends=True)


def _put(home: Home, lines: list[bytes]) -> None:
    events.log_path(home).write_bytes(b"".join(lines))


def test_append_chains_and_verifies(home: Home) -> None:
    assert events.verify(home) == (True, None, "event log intact: 0 events")
    rec = events.append(home, "run_start", correlation_id="c1", step="scan", when=dt.date(2024, 1, 5))
    assert rec["seq"] == 1 and rec["prev_hash"] == events.GENESIS and rec["when"] == "2024-01-05"
    assert "@" in rec["by"] and rec["correlation_id"] == "c1"
    rec2 = events.append(home, "run_end")
    assert rec2["prev_hash"] == rec["hash"] and rec2["seq"] == 2
    ok, bad, msg = events.verify(home)
    assert ok and bad is None and "2 events" in msg
    assert [r["event"] for r in events.read(home)] == ["run_start", "run_end"]


def test_reserved_field_names_refused(home: Home) -> None:
    with pytest.raises(ValueError, match="reserved"):
        events.append(home, "x", hash="forged")


def test_correlation_id() -> None:
    assert events.correlation_id(dt.date(2024, 1, 5), "momentum_topN_v1") == "20240105-momentum_topN_v1"
    assert events.correlation_id("2024-01-05", "s") == events.correlation_id("20240105", "s") == "20240105-s"


def test_edited_line_detected(home: Home) -> None:
    lines = _write(home, 5)
    rec = json.loads(lines[2])
    rec["i"] = 99
    lines[2] = events.canonical(rec) + b"\n"
    _put(home, lines)
    ok, bad, msg = events.verify(home)
    assert (ok, bad) == (False, 3) and "edited" in msg


def test_edited_line_with_recomputed_hash_detected(home: Home) -> None:
    lines = _write(home, 5)
    rec = json.loads(lines[1])
    rec["i"] = 42
    rec["hash"] = events.line_hash(rec)  # a careful forger: without the key its signature no longer matches
    lines[1] = events.canonical(rec) + b"\n"
    _put(home, lines)
    assert events.verify(home)[:2] == (False, 2)


def test_deleted_line_detected(home: Home) -> None:
    lines = _write(home, 5)
    del lines[1]
    _put(home, lines)
    ok, bad, msg = events.verify(home)
    assert (ok, bad) == (False, 2) and "deleted" in msg


def test_deleted_newest_line_detected(home: Home) -> None:
    lines = _write(home, 4)
    _put(home, lines[:-1])
    ok, bad, msg = events.verify(home)
    assert (ok, bad) == (False, 4) and "newest lines deleted" in msg


def test_inserted_line_detected(home: Home) -> None:
    lines = _write(home, 4)
    forged = json.loads(lines[1])
    forged.update(event="forged", prev_hash=json.loads(lines[1])["hash"], seq=3)
    forged["hash"] = events.line_hash(forged)
    lines.insert(2, events.canonical(forged) + b"\n")
    _put(home, lines)
    ok, bad, _ = events.verify(home)
    assert (ok, bad) == (False, 3)  # the forged line chains, but it cannot be signed without the key


def test_swapped_lines_detected(home: Home) -> None:
    lines = _write(home, 5)
    lines[1], lines[2] = lines[2], lines[1]
    _put(home, lines)
    ok, bad, msg = events.verify(home)
    assert (ok, bad) == (False, 2) and "reordered" in msg


def test_torn_last_line_is_reported_and_appends_continue(home: Home) -> None:
    lines = _write(home, 3)
    _put(home, lines + [b'{"seq": 4, "ev'])
    events.append(home, "after_crash")
    ok, bad, msg = events.verify(home)
    assert (ok, bad) == (False, 4) and "JSON" in msg
    assert events.read(home)[-1]["event"] == "after_crash"


def _appender(root: str, n: int) -> None:
    home = Home(Path(root))
    for i in range(n):
        events.append(home, "par", i=i)


def test_concurrent_appenders_keep_one_chain(home: Home) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(home.root), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    ok, bad, msg = events.verify(home)
    assert ok, msg
    assert len(events.read(home)) == 100


@pytest.mark.parametrize("head", [{"seq": -1, "hash": "x"}, {"seq": -7, "hash": "x"}, {"seq": 0, "hash": "x"}])
def test_verify_reports_a_damaged_head_record(home: Home, head: dict) -> None:
    for i in range(3):
        events.append(home, "test", i=i)
    (home.state / events.HEAD_NAME).write_text(json.dumps(head), encoding="utf-8")
    ok, line, message = events.verify(home)
    assert not ok and events.HEAD_NAME in message
    assert line is not None and 1 <= line <= 4


def test_event_names_are_lower_snake_case(home):
    for bad in ("ALERT_SENT", "Alert", "alert-sent", "", "x" * 65):
        with pytest.raises(ValueError, match="lower snake_case"):
            events.append(home, bad)
    assert not (home.state / events.LOG_NAME).exists()
    assert events.append(home, "alert_sent")["event"] == "alert_sent"

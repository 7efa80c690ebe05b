"""nas.status.snapshot: the keys it promises, what it reads from each part, and a damaged part that says so alone."""

from __future__ import annotations

import datetime as dt

from common import atomic, operators, switches, window
from common.home import Home
from common.log import TZ
from nas import cycle, status, summary

NOW = dt.datetime(2024, 6, 28, 18, 30, tzinfo=TZ)
KEYS = {"schema", "generated_at", "version", "home", "emergency_stop", "gate", "sender", "window", "approval",
        "last_cycle", "summary", "store", "queue", "alert", "backtests", "event_log"}


def test_fresh_home(home: Home) -> None:
    snap = status.snapshot(home, NOW)
    assert set(snap) == KEYS
    assert snap["emergency_stop"]["enabled"] is False and snap["gate"] == {**snap["gate"], "set": "DRY_RUN",
                                                                          "effective": "DRY_RUN"}
    assert snap["window"] is None and snap["approval"] is None and snap["last_cycle"] is None
    assert snap["summary"] is None and snap["alert"] is None and snap["backtests"] == []
    assert snap["queue"] == {"pending": 0, "processing": 0, "done": 0, "failed": 0}
    assert snap["store"]["last_day"] is None and snap["event_log"]["ok"] is True


def test_reads_every_part(home: Home) -> None:
    switches.set_emergency_stop(home, True, "drill", operator="alice")
    switches.set_sender(home, True, "weekly", channel="SLACK")
    operators.add(home, "alice")
    view = window.request(home, 30, "live fire", "alice", now=NOW)
    window.approve(home, view["id"], "1", "alice", now=NOW)
    atomic.write_json(cycle.latest_receipt_path(home), {
        "run_id": "20240628-183000", "result": "BLOCKED", "reason": "STOPPED", "snapshot": "reports/x.json",
        "steps": [{"name": "emergency_stop", "status": "BLOCKED"}]})
    summary.write(home, {"overall_status": "STOPPED", "top_risks": [{"code": "EMERGENCY_STOP"}]})
    atomic.write_json(home.reports / "outbox" / "20240628.json", {
        "date": "2024-06-28", "sent": False, "reason": "printed only", "payloads": [{"text": "KRX 06-28\nmore"}]})
    (home.queue("done") / "r1").mkdir()
    (home.queue("done") / "r1" / "report.html").write_text("<html></html>")
    (home.queue("pending") / "r2.json").write_text("{}")

    snap = status.snapshot(home, NOW)
    assert snap["emergency_stop"]["enabled"] and snap["emergency_stop"]["by"] == "alice"
    assert snap["sender"]["enabled"] and snap["sender"]["channel"] == "SLACK"
    assert snap["window"]["state"] == window.PENDING_APPROVAL
    assert snap["approval"]["keys"]["1"]["operator"] == "alice" and snap["approval"]["keys"]["2"] is None
    assert snap["last_cycle"]["result"] == "BLOCKED" and snap["last_cycle"]["snapshot_ref"] == "reports/x.json"
    assert snap["summary"]["overall_status"] == "STOPPED" and snap["summary"]["top_risks"][0]["code"] == \
        "EMERGENCY_STOP"
    assert snap["alert"]["headline"] == "KRX 06-28" and snap["alert"]["ref"] == "reports/outbox/20240628.json"
    assert snap["backtests"] == [{"id": "r1", "result_ref": None, "report_ref": "reports/done/r1/report.html"}]
    assert snap["queue"]["pending"] == 1 and snap["queue"]["done"] == 1


def test_a_damaged_part_says_so_alone(home: Home) -> None:
    (home.state / "windows.json").write_text("{not json")
    cycle.latest_receipt_path(home).parent.mkdir(parents=True)
    cycle.latest_receipt_path(home).write_text("[1")
    snap = status.snapshot(home, NOW)
    assert "error" in snap["window"] and "error" in snap["last_cycle"]
    assert snap["emergency_stop"]["enabled"] is False  # the rest is still read

"""`krx ops summary|status|self-test|verify-log` and the switch commands: each risk code appears when its condition
is made true; the self-test never shows a secret."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from conftest import krx

from common import atomic, calendar, events, switches
from common.home import Home
from common.log import TZ
from faces import KRX
from nas import cycle, summary

NOW = dt.datetime(2024, 6, 28, 18, 30, tzinfo=TZ)  # after the close of Friday 2024-06-28
DAY = dt.date(2024, 6, 28)
KRX_PW = "hunter2-very-SECRET-pw"
TOKEN = "xoxb-1234567890-0987654321-summarySECRETtoken"


@pytest.fixture()
def env(home: Home) -> dict[str, str]:
    """What a config load sees: no operator overrides or secrets from the developer's shell."""
    base = {k: v for k, v in os.environ.items() if (not k.startswith("KRX") or k == "KRX_EVENT_LOG_KEY_FILE")
            and not k.startswith("SLACK")}
    base["KRX_HOME"] = str(home.root)
    return base


def _codes(home: Home, env: dict[str, str]) -> dict[str, dict]:
    data = summary.build(home, NOW, env=env)
    for r in data["top_risks"]:
        assert set(r) == {"code", "severity", "message", "evidence_refs"} and isinstance(r["evidence_refs"], list)
    return {r["code"]: r for r in data["top_risks"]}


def _fill_store(home: Home, start: dt.date, end: dt.date) -> None:
    from nas.ingest import ingest
    from nas.sources.sample import SampleSource

    cal = calendar.load(home)
    src = SampleSource(cal, seed=1, tickers=12, first_date=dt.date(2024, 6, 1))
    ingest(home, src, cal.sessions(start, end))


def _krx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faces.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=env["KRX_HOME"])


def test_fresh_home_has_no_run_history(home: Home, env: dict[str, str]) -> None:
    data = summary.build(home, NOW, env=env)
    assert data["overall_status"] == "NO_RUN_HISTORY" and data["schema"] == "ops_summary/1"
    assert "DATA_STALE" in {r["code"] for r in data["top_risks"]}  # an empty store is behind by definition
    assert summary.write(home, data) == home.reports / "ops" / "summary" / "ops_summary_latest.json"


def test_data_stale_when_the_store_is_behind(home: Home, env: dict[str, str]) -> None:
    _fill_store(home, dt.date(2024, 6, 24), dt.date(2024, 6, 27))
    risk = _codes(home, env)["DATA_STALE"]
    assert "2024-06-27" in risk["message"] and "1 trading day" in risk["message"]
    _fill_store(home, DAY, DAY)
    assert "DATA_STALE" not in _codes(home, env)


def test_emergency_stop_and_unreadable_state(home: Home, env: dict[str, str]) -> None:
    switches.set_emergency_stop(home, True, "maintenance window")
    data = summary.build(home, NOW, env=env)
    assert data["overall_status"] == "STOPPED"
    risk = data["top_risks"][0]
    assert risk["code"] == "EMERGENCY_STOP" and risk["severity"] == "CRITICAL"
    assert "maintenance window" in risk["message"] and risk["evidence_refs"] == ["state/emergency_stop.json"]
    switches.set_emergency_stop(home, False, "done")
    (home.state / switches.GATE_FILE).write_text("garbage", encoding="utf-8")
    data = summary.build(home, NOW, env=env)
    assert data["overall_status"] == "BLOCKED" and data["top_risks"][0]["code"] == "STATE_UNREADABLE"


def test_last_run_failed_and_blocked(home: Home, env: dict[str, str]) -> None:
    # no KRX_ID: the preflight fails
    rc, _ = cycle.run_cycle(home, DAY, command=KRX, base_env={**env, "KRX__APP__SOURCE": "pykrx"})
    assert rc == 2  # the runbook: a failed preflight is BLOCKED (PREFLIGHT_FAIL)
    risk = _codes(home, env)["LAST_RUN_BLOCKED"]
    assert "PREFLIGHT_FAIL" in risk["message"] and risk["evidence_refs"][0].startswith("reports/ops/daily/snapshots/")
    (home.data / "eod").mkdir(parents=True, exist_ok=True)
    (home.data / "eod" / "manifest.json").write_text("{broken", encoding="utf-8")  # ingest cannot read its store
    assert cycle.run_cycle(home, DAY, command=KRX, base_env=env)[0] == 3
    risk = _codes(home, env)["LAST_RUN_FAILED"]
    assert "STEP_FAILED:ingest" in risk["message"] and risk["evidence_refs"][0].startswith("reports/ops/daily/")
    assert summary.build(home, NOW, env=env)["overall_status"] == "WARN"
    (home.data / "eod" / "manifest.json").unlink()
    switches.set_emergency_stop(home, True, "x")
    assert cycle.run_cycle(home, DAY, command=KRX, base_env=env)[0] == 2
    switches.set_emergency_stop(home, False, "y")
    codes = _codes(home, env)
    assert "LAST_RUN_BLOCKED" in codes and "LAST_RUN_FAILED" not in codes
    assert summary.build(home, NOW, env=env)["overall_status"] == "BLOCKED"


def test_queue_backlog_and_failed_requests(home: Home, env: dict[str, str]) -> None:
    pending = home.queue("pending")
    atomic.write_json(pending / "fresh.json", {"id": "fresh", "created_at": (NOW - dt.timedelta(hours=1)).isoformat()})
    assert "QUEUE_BACKLOG" not in _codes(home, env)
    atomic.write_json(pending / "old.json", {"id": "old", "created_at": (NOW - dt.timedelta(hours=30)).isoformat()})
    (pending / ".hidden.json.tmp").write_text("{}", encoding="utf-8")
    risk = _codes(home, env)["QUEUE_BACKLOG"]
    assert risk["evidence_refs"] == ["reports/pending/old.json"] and "30.0 h" in risk["message"]

    assert "FAILED_REQUESTS" not in _codes(home, env)
    atomic.write_json(home.queue("failed") / "bad.json", {"id": "bad"})
    atomic.write_json(home.queue("failed") / "bad.error.json", {"error_code": "INVALID"})
    risk = _codes(home, env)["FAILED_REQUESTS"]
    assert risk["evidence_refs"] == ["reports/failed/bad.json"]


def test_secrets_missing_disk_low_config_invalid(home: Home, env: dict[str, str]) -> None:
    assert "SECRETS_MISSING" not in _codes(home, env)
    env.update(KRX__APP__SOURCE="pykrx", KRX_ID="me")
    risk = _codes(home, env)["SECRETS_MISSING"]
    assert "source:pykrx" in risk["message"] and "me" not in risk["message"].split()
    env.update(KRX_PW=KRX_PW)
    assert "SECRETS_MISSING" not in _codes(home, env)

    env["KRX__APP__OPS__MIN_FREE_DISK_MB"] = str(10**12)
    assert _codes(home, env)["DISK_LOW"]["severity"] == "HIGH"
    del env["KRX__APP__OPS__MIN_FREE_DISK_MB"]

    (home.configs / "strategies.yaml").write_text("allowlist: 7\n", encoding="utf-8")
    risk = _codes(home, env)["CONFIG_INVALID"]
    assert "allowlist" in risk["message"] and risk["evidence_refs"][0].endswith("strategies.yaml")


def test_event_log_tampered(home: Home, env: dict[str, str]) -> None:
    for i in range(4):
        events.append(home, "x", i=i)
    assert "EVENT_LOG_TAMPERED" not in _codes(home, env)
    lines = events.log_path(home).read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace('"i":2', '"i":3')
    events.log_path(home).write_text("".join(lines), encoding="utf-8")
    risk = _codes(home, env)["EVENT_LOG_TAMPERED"]
    assert risk["evidence_refs"] == ["state/events.jsonl:3"] and risk["severity"] == "CRITICAL"


def test_cli_switches_verify_log_summary_and_status(home: Home, env: dict[str, str]) -> None:
    assert _krx(env, "ops", "estop", "on").returncode == 3  # no reason: refused, nothing changed
    assert not switches.emergency_stop(home).on
    proc = _krx(env, "ops", "estop", "on", "--reason", "broker outage")
    assert proc.returncode == 0 and "ON" in proc.stdout
    shown = _krx(env, "ops", "estop")
    assert shown.returncode == 0 and "broker outage" in shown.stdout and "set by:" in shown.stdout
    assert _krx(env, "ops", "sender", "on", "--reason", "go").returncode == 0 and switches.sender(home).on
    refused = _krx(env, "ops", "gate", "REAL_ENABLED", "--reason", "please")
    assert refused.returncode == 2 and "two-key approval" in refused.stdout
    assert _krx(env, "ops", "gate", "mock_only", "--reason", "demo").returncode == 0
    assert switches.gate(home) == "MOCK_ONLY"

    ok = _krx(env, "ops", "verify-log")
    assert ok.returncode == 0 and "intact" in ok.stdout
    lines = events.log_path(home).read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    events.log_path(home).write_text("".join(lines), encoding="utf-8")
    bad = _krx(env, "ops", "verify-log")
    assert bad.returncode == 1 and "line 1" in bad.stdout

    out = _krx(env, "ops", "summary")
    assert out.returncode == 0 and "STOPPED" in out.stdout
    data = json.loads(summary.summary_path(home).read_text(encoding="utf-8"))
    assert data["overall_status"] == "STOPPED"
    assert {"EMERGENCY_STOP", "EVENT_LOG_TAMPERED"} <= {r["code"] for r in data["top_risks"]}
    status = _krx(env | {"COLUMNS": "160"}, "ops", "status")
    assert status.returncode == 0
    for text in ("STOPPED", "EMERGENCY_STOP", "EVENT_LOG_TAMPERED", "broker outage", "MOCK_ONLY", "Top risks"):
        assert text in status.stdout


def test_self_test_reports_presence_never_values(home: Home, env: dict[str, str]) -> None:
    env.update(KRX__APP__SOURCE="pykrx", KRX__NOTIFY__DELIVERY_POLICY="SLACK", KRX_ID="investor01", KRX_PW=KRX_PW)
    proc = _krx(env, "ops", "self-test")
    assert proc.returncode == 1 and "alert:slack" in proc.stdout and "MISSING" in proc.stdout
    env["SLACK_BOT_TOKEN"] = TOKEN
    proc = _krx(env, "ops", "self-test")
    assert proc.returncode == 0, proc.stdout
    assert "KRX_PW=present" in proc.stdout and "SLACK_BOT_TOKEN=present" in proc.stdout
    out = proc.stdout + proc.stderr
    for secret in (KRX_PW, TOKEN, "investor01"):
        assert secret not in out and secret[:5] not in out
    assert "xoxb" not in out


@pytest.mark.parametrize("receipt", ["[]", '"x"', '{"result": "FAILED", "steps": [1, {"status": "FAILED"}]}',
                                     '{"result": "FAILED", "steps": "preflight"}'])
def test_ops_status_survives_a_damaged_receipt(home: Home, receipt: str) -> None:
    from nas import cycle, summary

    path = cycle.latest_receipt_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(receipt, encoding="utf-8")
    codes = {r["code"] for r in summary.build(home)["top_risks"]}
    assert "LAST_RUN_FAILED" in codes
    for cmd, shown in (("status", "LAST_RUN_FAILED"), ("summary", "WARN")):
        out = krx("ops", cmd, home=home, env={"COLUMNS": "160"})
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
        assert shown in out.stdout, out.stdout  # the damaged receipt is reported, not passed over
        if cmd == "status":  # and the run section does not claim the cycle never ran
            assert "none yet" not in out.stdout and "receipt unreadable" in out.stdout

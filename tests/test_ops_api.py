"""The ops API of `krx serve` through a real uvicorn on 127.0.0.1: the answers' shapes, the auth rules (no token,
an unknown one, a removed one, a viewer's), `confirm`, and that what the API changes is what `krx ops` reads, and
the reverse."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import krx
from ops_api_server import Api, start

from common import events, operators, switches
from common.home import Home
from nas import cycle, live_cycle, status, summary

ESTOP_ON = {"enabled": True, "reason": "drill"}


@pytest.fixture()
def api(home: Home) -> Iterator[Api]:
    a = start(home)
    yield a
    a.close()


def test_reads_on_a_fresh_home(api: Api) -> None:
    c = api.client
    snap = c.get("/api/status").json()
    assert set(snap) == set(status.snapshot(api.home)) and snap["schema"] == status.SCHEMA
    health = c.get("/api/ops/health")
    assert health.status_code == 200 and health.json()["ok"] is True
    assert set(health.json()) >= {"version", "home", "emergency_stop", "effective_gate", "last_cycle",
                                  "store_last_day", "queue"}
    assert c.get("/api/emergency_stop").json() == {"enabled": False, "readable": True, "updated_at": None,
                                                   "updated_by": "default", "reason": "never set"}
    assert c.get("/api/execution_gate").json()["effective"] == "DRY_RUN"
    assert c.get("/api/real_sender_enable").json()["channel"] is None
    for path, code in (("/api/real_enable_window/latest", "NO_WINDOW"), ("/api/approvals/real_enable/latest",
                       "NO_APPROVAL"), ("/api/ops/daily", "NO_RECEIPT"), ("/api/ops/push/postmortem/latest",
                                                                          "NO_POSTMORTEM")):
        r = c.get(path)
        assert (r.status_code, r.json()["code"]) == (404, code)
    for path in ("/api/ops/scheduler/latest", "/api/ops/summary/latest", "/api/ops/push/live_fire/latest",
                 "/api/live/cycle/latest", "/api/backtests"):
        assert c.get(path).json()["rows"] == []
    assert c.get("/api/events/verify").json()["ok"] is True
    assert [e["event"] for e in c.get("/api/events").json()["rows"]] == ["OPERATOR_ADDED"] * 3
    assert c.get("/docs").status_code == 200


def test_self_test_shows_presence_never_a_value(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "xoxb-1111-2222-selftestSECRETvalue"
    monkeypatch.setenv("SLACK_BOT_TOKEN", secret)
    monkeypatch.setenv("KRX__NOTIFY__DELIVERY_POLICY", "SLACK")
    r = api.client.get("/api/secrets/self_test")
    assert r.json()["complete"] is True and secret not in r.text
    slack = next(x for x in r.json()["requirements"] if x["channel"] == "alert:slack")
    assert slack["secrets"]["SLACK_BOT_TOKEN"] is True
    assert secret not in api.client.get("/api/status").text


@pytest.mark.parametrize("who", ["none", "unknown", "removed", "viewer"])
def test_a_post_without_a_current_operator_changes_nothing(api: Api, who: str) -> None:
    headers = {"none": {}, "unknown": {"Authorization": "Bearer not-a-token"}, "viewer": api.auth("carol"),
               "removed": api.auth("bob")}[who]
    if who == "removed":
        operators.remove(api.home, "bob")  # no restart: the next request looks the token up again
    r = api.client.post("/api/emergency_stop", json=ESTOP_ON, headers=headers)
    expected = {"none": (401, "OPERATOR_REQUIRED"), "unknown": (401, "UNKNOWN_OPERATOR"),
                "removed": (401, "UNKNOWN_OPERATOR"), "viewer": (403, "ACTION_NOT_ALLOWED")}[who]
    assert (r.status_code, r.json()["code"]) == expected
    assert switches.emergency_stop(api.home).on is False
    assert events.read(api.home)[-1]["event"] == "OPERATOR_REFUSED"
    assert api.tokens["bob"] not in r.text and api.tokens["carol"] not in r.text


def test_bad_bodies_are_422_naming_the_field(api: Api) -> None:
    r = api.client.post("/api/emergency_stop", json={"enabled": "yes", "reason": "x"}, headers=api.auth("alice"))
    assert (r.status_code, r.json()["code"]) == (422, "BAD_REQUEST") and "enabled" in r.json()["message"]
    r = api.client.post("/api/emergency_stop", json={"enabled": True, "reason": " "}, headers=api.auth("alice"))
    assert (r.status_code, r.json()["code"]) == (422, "REASON_REQUIRED")
    r = api.client.post("/api/real_enable_window/request", json={"duration_minutes": 500, "reason": "x"},
                        headers=api.auth("alice"))
    assert r.json()["code"] == "WINDOW_TOO_LONG"
    assert switches.emergency_stop(api.home).on is False


def test_switches_through_the_api_are_what_the_cli_reads_and_the_reverse(api: Api) -> None:
    c, home = api.client, api.home
    r = c.post("/api/emergency_stop", json=ESTOP_ON, headers=api.auth("alice"))
    assert r.status_code == 200 and r.json()["updated_by"] == "alice"
    shown = krx("ops", "estop", home=home)
    assert "emergency_stop: ON" in shown.stdout and "alice" in shown.stdout and "drill" in shown.stdout
    assert c.get("/api/status").json()["emergency_stop"]["enabled"] is True

    off = krx("ops", "estop", "off", "--reason", "drill over", home=home,
              env={operators.TOKEN_ENV: api.tokens["bob"]})
    assert off.returncode == 0, off.stdout
    assert c.get("/api/emergency_stop").json() == {"enabled": False, "readable": True, "updated_by": "bob",
                                                   "reason": "drill over",
                                                   "updated_at": switches.emergency_stop(home).at}
    assert c.get("/api/status").json()["emergency_stop"]["by"] == "bob"  # the cached snapshot saw the change

    r = c.post("/api/real_sender_enable", json={"enabled": True, "reason": "weekly", "channel": "slack"},
               headers=api.auth("alice"))
    assert r.json()["channel"] == "SLACK" and "SLACK" in krx("ops", "sender", home=home).stdout
    r = c.post("/api/execution_gate", json={"mode": "REAL_ENABLED", "reason": "go"}, headers=api.auth("alice"))
    assert (r.status_code, r.json()["code"]) == (403, "WINDOW_NOT_ACTIVE")
    r = c.post("/api/execution_gate", json={"mode": "MOCK_ONLY", "reason": "quiet"}, headers=api.auth("alice"))
    assert r.json()["effective"] == "MOCK_ONLY" and "gate: MOCK_ONLY" in krx("ops", "gate", home=home).stdout


def test_the_two_key_window_through_the_api_and_the_cli(api: Api) -> None:
    c, home = api.client, api.home
    view = c.post("/api/real_enable_window/request", json={"duration_minutes": 30, "reason": "live fire"},
                  headers=api.auth("alice")).json()
    assert view["state"] == "PENDING_APPROVAL"
    appr = c.get("/api/approvals/real_enable/latest").json()
    assert appr["id"] == view["approval"]["id"] and appr["keys"] == {"1": None, "2": None}
    r = c.post(f"/api/approvals/real_enable/{appr['id']}/approve", json={"key": 1}, headers=api.auth("alice"))
    assert r.status_code == 200
    r = c.post(f"/api/approvals/real_enable/{appr['id']}/approve", json={"key": "2"}, headers=api.auth("alice"))
    assert (r.status_code, r.json()["code"]) == (403, "SAME_OPERATOR")  # the wrong operator for the second key
    r = c.post("/api/approvals/real_enable/A-nope/approve", json={"key": "2"}, headers=api.auth("bob"))
    assert (r.status_code, r.json()["code"]) == (404, "UNKNOWN_APPROVAL")
    second = krx("ops", "approve", appr["id"], "--key", "2", home=home, env={operators.TOKEN_ENV: api.tokens["bob"]})
    assert second.returncode == 0, second.stdout
    latest = c.get("/api/real_enable_window/latest").json()
    assert latest["state"] == "ACTIVE" and latest["ttl_left_s"] > 0
    assert c.get("/api/status").json()["approval"]["keys"]["2"]["operator"] == "bob"
    r = c.post("/api/execution_gate", json={"mode": "REAL_ENABLED", "reason": "live fire"}, headers=api.auth("bob"))
    assert r.status_code == 200 and r.json()["effective"] == "REAL_ENABLED"
    assert "REAL_ENABLED" in krx("ops", "gate", home=home).stdout


@pytest.mark.parametrize("path", ["/api/ops/cycle/run", "/api/ops/summary/regenerate", "/api/live/cycle/run",
                                  "/api/ops/cycle/run?confirm=false"])
def test_without_confirm_nothing_runs(api: Api, path: str) -> None:
    before = len(events.read(api.home))
    r = api.client.post(path, headers=api.auth("alice"))
    assert (r.status_code, r.json()["code"]) == (400, "CONFIRM_REQUIRED")
    assert not cycle.latest_receipt_path(api.home).exists() and not summary.summary_path(api.home).exists()
    assert not live_cycle.latest_path(api.home).exists()
    assert len(events.read(api.home)) == before


def test_cycle_summary_live_fire_and_postmortem_runs(api: Api) -> None:
    c, home, alice = api.client, api.home, api.auth("alice")
    c.post("/api/emergency_stop", json=ESTOP_ON, headers=alice)
    run = c.post("/api/ops/cycle/run?confirm=true", headers=alice).json()
    assert (run["result"], run["reason"], run["exit_code"]) == ("BLOCKED", "STOPPED", 2)
    daily = c.get("/api/ops/daily").json()
    assert daily["run_id"] == run["run_id"] and daily["snapshot_ref"] == run["snapshot_ref"]
    row = c.get("/api/ops/scheduler/latest").json()["rows"][0]
    assert row["observed_modes"]["emergency_stop"] == "ON" and row["live_fire_step"]["ran"] is False
    snap = c.get("/api/ops/resolve", params={"ref": run["snapshot_ref"]})
    assert snap.status_code == 200 and snap.json()["run_id"] == run["run_id"]

    regen = c.post("/api/ops/summary/regenerate?confirm=true", headers=alice).json()
    latest = c.get("/api/ops/summary/latest").json()
    assert latest["rows"][0]["overall_status"] == "STOPPED" == regen["rows"][0]["overall_status"]
    assert latest["rows"][0]["top_risks"][0]["code"] == "EMERGENCY_STOP"
    assert "STOPPED" in krx("ops", "status", home=home).stdout  # the CLI judges the same home alike

    fire = c.post("/api/ops/push/live_fire/run", headers=alice).json()
    assert fire["result"] == "BLOCKED" and fire["operator"] == "alice" and fire["trigger"] == "api"
    assert c.get("/api/ops/push/live_fire/latest").json()["rows"][0]["run_id"] == fire["run_id"]
    pm = c.post("/api/ops/push/postmortem/regenerate", headers=alice).json()
    assert pm["rows"][0]["run_id"] == fire["run_id"]
    md = c.get("/api/ops/resolve", params={"ref": pm["ref"]})
    assert md.status_code == 200 and fire["run_id"] in md.text
    assert c.get("/api/ops/push/postmortem/latest").json()["rows"][0]["run_id"] == fire["run_id"]

    stopped = c.post("/api/live/cycle/run?confirm=true", headers=alice).json()
    assert (stopped["result"], stopped["push"]["delivery_actual"]) == ("BLOCKED", "NOT_SENT")
    row = c.get("/api/live/cycle/latest").json()["rows"][0]
    assert set(row) >= {"result", "decision", "snapshot_ref", "push"} and row["run_id"] == stopped["run_id"]
    cid = events.read(home)[-1]
    assert cid["event"] == "LIVE_CYCLE_END" and cid["operator"] == "alice"


def test_health_is_503_when_the_state_is_not_sane(api: Api) -> None:
    (api.home.state / switches.GATE_FILE).write_text("{broken", encoding="utf-8")
    r = api.client.get("/api/ops/health")
    assert r.status_code == 503 and r.json()["ok"] is False
    assert r.json()["checks"]["switches_readable"] is False and r.json()["effective_gate"] == "MOCK_ONLY"
    assert api.client.get("/api/status").json()["gate"]["readable"] is False


def test_events_by_correlation_id(api: Api) -> None:
    events.append(api.home, "OPS_STEP", correlation_id="20240628-momentum_topN_v1", step="scan")
    events.append(api.home, "OPS_STEP", correlation_id="20240627-momentum_topN_v1", step="scan")
    rows = api.client.get("/api/events", params={"correlation_id": "20240628-momentum_topN_v1"}).json()["rows"]
    assert [(e["event"], e["correlation_id"]) for e in rows] == [("OPS_STEP", "20240628-momentum_topN_v1")]
    assert len(api.client.get("/api/events", params={"limit": 2}).json()["rows"]) == 2
    assert api.client.get("/api/events", params={"limit": 0}).status_code == 422

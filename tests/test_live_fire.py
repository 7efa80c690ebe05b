"""The weekly live fire: preconditions one by one, delivery through the real slack-sdk client to a local Slack server,
the lockdown after success, failure and a kill, the postmortem, the cycle's live_fire_step, and the runbook through
the real CLI under libfaketime. Time rules use an injected clock (`now=`) in-process."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import krx
from slack_server import SlackServer, unused_port

from common import atomic, config, events, operators, switches, window
from common import log as krxlog
from common.errors import OpsError
from common.home import Home, init_home
from common.log import TZ
from nas import alert, live_fire, postmortem

TOKEN = "xoxb-1111111111-2222222222222-LIVEfireSECRETvalue"
FRI = dt.datetime(2026, 12, 4, 10, 0, tzinfo=TZ)
DAY = dt.date(2026, 12, 3)
ROWS = [{"ticker": "005930", "name": "삼성전자", "state": "BUY", "score": 0.25, "rank": 1, "reason": "rank 1",
         "close": 71200.0},
        {"ticker": "069500", "name": "KODEX 200", "state": "HOLD_CORE", "score": None, "rank": None,
         "reason": "core holding", "close": 35500.0}]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: SlackServer) -> Iterator[Home]:
    h, _ = init_home(tmp_path / "home")
    for var in [v for v in os.environ if v.startswith(("KRX__", "SLACK_")) or v == operators.TOKEN_ENV]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("KRX_HOME", str(h.root))
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_URL", server.api_url)
    monkeypatch.setenv("KRX__NOTIFY__ERROR_LOG_TO_SLACK", "false")  # the server counts the live fire's posts only
    yield h
    for sink in krxlog.error_sinks():
        sink.close()


def make_outbox(home: Home, day: dt.date = DAY) -> Path:
    """The day's alert through the real `krx alert` code under CONSOLE_ONLY: an undelivered outbox day."""
    atomic.write_json(home.reports / "signals" / f"signals_{day:%Y%m%d}.json", {
        "schema": "scan_result/1", "strategy": "momentum_topN_v1", "asof": day.isoformat(),
        "next_trading_day": (day + dt.timedelta(days=1)).isoformat(), "regime": "ON", "universe_size": 2,
        "after_filters": 2, "rows": ROWS, "excluded": []})
    assert alert.deliver(home, day, notify=config.load("notify", home)) == 0
    return alert.outbox_path(home, f"{day:%Y%m%d}")


def ready(home: Home, now: dt.datetime = FRI, minutes: int = 30) -> dict:
    """Everything a live fire needs, set up the way the runbook says; returns the ACTIVE window."""
    for name in ("alice", "bob"):
        operators.add(home, name)
    aid = window.request(home, minutes, "weekly live fire", "alice", now=now)["approval"]["id"]
    window.approve(home, aid, 1, "alice", now=now)
    view = window.approve(home, aid, 2, "bob", now=now)
    switches.set_gate(home, "REAL_ENABLED", "weekly live fire", operator="alice", now=now)
    switches.set_sender(home, True, "weekly live fire", operator="bob", channel="SLACK")
    make_outbox(home)
    return view


def locked_down(home: Home, window_id: str) -> bool:
    return (not switches.sender(home).on and switches.gate_state(home).mode == "DRY_RUN"
            and window.status(home, window_id, now=FRI)["state"] == window.CONSUMED)


def test_fires_once_then_locks_down(home: Home, server: SlackServer) -> None:
    view = ready(home)
    box = json.loads(alert.outbox_path(home, "20261203").read_text())
    r = live_fire.run(home, operator="bob", now=FRI + dt.timedelta(minutes=1))
    assert (r["result"], r["exit_code"], r["failing"]) == ("COMPLETED", 0, [])
    assert all(c["ok"] for c in r["preconditions"]) and len(r["preconditions"]) == 9
    # what went out is exactly the outbox's payloads, once, and the receipt holds Slack's message ids
    assert [q.body for q in server.delivered] == box["payloads"]
    assert r["deliveries"][0]["message_ids"] == ["1700000000.000001"]  # the server's ts of the one post
    assert r["lockdown"]["state"] == "DONE" and locked_down(home, view["id"])
    sent = json.loads(alert.outbox_path(home, "20261203").read_text())
    assert sent["sent"] is True and sent["sends"][0]["state"] == "SENT" and sent["sends"][0]["live_fire"] == r["run_id"]
    assert live_fire.undelivered(home) == []
    latest = json.loads(live_fire.latest_path(home).read_text())
    assert latest == r and (home.root / r["snapshot"]).is_file()
    assert set(r["timings_ms"]) == {"preconditions", "send", "lockdown", "total"}
    # the event log: the lockdown recorded before anything was sent, every step with the operator
    names = [e["event"] for e in events.read(home) if e.get("correlation_id") == f"live_fire-{r['run_id']}"]
    assert names.index("live_fire_lockdown_recorded") < names.index("live_fire_sending") < names.index(
        "live_fire_lockdown_done") < names.index("live_fire_end")
    assert {e["operator"] for e in events.read(home) if e.get("correlation_id") == f"live_fire-{r['run_id']}"} == \
        {"bob"}
    assert events.verify(home)[0]
    # a second live fire in the same window: refused, the window is CONSUMED, nothing more is sent
    again = live_fire.run(home, operator="bob", now=FRI + dt.timedelta(minutes=2))
    assert (again["result"], again["exit_code"]) == ("BLOCKED", 2) and "WINDOW_NOT_ACTIVE" in again["failing"]
    assert "CONSUMED" in next(c["observed"] for c in again["preconditions"] if c["check"] == "window_active")
    assert len(server.requests) == 1
    files = "\n".join(p.read_text(errors="replace") for p in home.root.rglob("*") if p.is_file())
    assert TOKEN not in files


CASES = {
    "gate": (lambda h, mp: switches.set_gate(h, "DRY_RUN", "t"), ["GATE_NOT_REAL_ENABLED"], "PREFLIGHT_FAIL"),
    "self_test": (lambda h, mp: mp.delenv("SLACK_BOT_TOKEN"), ["SELF_TEST_FAIL"], "PREFLIGHT_FAIL"),
    "estop": (lambda h, mp: switches.set_emergency_stop(h, True, "t"), ["EMERGENCY_STOP_ON"], "STOPPED"),
    "outbox": (lambda h, mp: alert.outbox_path(h, "20261203").unlink(), ["OUTBOX_EMPTY"], "PREFLIGHT_FAIL"),
    "sender": (lambda h, mp: switches.set_sender(h, True, "no channel"), ["SENDER_OFF"], "PREFLIGHT_FAIL"),
    "allowlist": (lambda h, mp: (h.configs / "execution_allowlist.yaml").write_text("allowed: [alert_push]\n"),
                  ["ALLOWLIST_VIOLATION"], "ALLOWLIST_VIOLATION"),
    # the window over: the gate reads DRY_RUN with it, so both name themselves
    "window": (lambda h, mp: FRI + dt.timedelta(minutes=30), ["GATE_NOT_REAL_ENABLED", "WINDOW_NOT_ACTIVE"],
               "WINDOW_NOT_ACTIVE"),
    "state": (lambda h, mp: (h.state / "windows.json").write_text("{"), ["GATE_NOT_REAL_ENABLED",
                                                                      "STATE_UNREADABLE"], "STATE_UNREADABLE"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_precondition_blocks_alone(home: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                        case: str) -> None:
    view = ready(home)
    change, failing, reason = CASES[case]
    now = change(home, monkeypatch)
    now = now if isinstance(now, dt.datetime) else FRI + dt.timedelta(minutes=1)
    r = live_fire.run(home, operator="bob", now=now)
    assert (r["result"], r["exit_code"], r["reason"], r["failing"]) == ("BLOCKED", 2, reason, failing)
    assert server.requests == [] and r["lockdown"]["state"] == "NOT_NEEDED"
    if case not in ("window", "state"):  # nothing was used up: the window still has its execution
        assert window.status(home, view["id"], now=now)["executions_left"] == 1


@pytest.mark.parametrize(("when", "failing"), [
    (dt.datetime(2026, 12, 5, 10, 0, tzinfo=TZ), ["NOT_A_WEEKDAY"]),   # Saturday
    (dt.datetime(2026, 12, 6, 12, 0, tzinfo=TZ), ["NOT_A_WEEKDAY"]),   # Sunday
    (dt.datetime(2026, 12, 4, 18, 1, tzinfo=TZ), ["OUTSIDE_HOURS"]),   # Friday 18:01
    (dt.datetime(2026, 12, 4, 18, 0, tzinfo=TZ), ["OUTSIDE_HOURS"]),   # 18:00 itself is outside
    (dt.datetime(2026, 12, 4, 8, 59, tzinfo=TZ), ["OUTSIDE_HOURS"]),
    (dt.datetime(2026, 12, 7, 9, 0, tzinfo=TZ), []),                   # Monday 09:00
    (dt.datetime(2026, 12, 4, 17, 59, tzinfo=TZ), []),
])
def test_weekdays_and_hours(home: Home, server: SlackServer, when: dt.datetime, failing: list[str]) -> None:
    ready(home, when - dt.timedelta(minutes=5))
    r = live_fire.run(home, operator="bob", now=when)
    assert (r["result"], r["failing"]) == ("BLOCKED" if failing else "COMPLETED", failing)
    assert len(server.requests) == (0 if failing else 1)


def test_slack_down_still_locks_down(home: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    view = ready(home)
    before = json.loads(alert.outbox_path(home, "20261203").read_text())
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{unused_port()}/api/")
    r = live_fire.run(home, operator="bob", now=FRI + dt.timedelta(minutes=1))
    assert (r["result"], r["exit_code"], r["reason"]) == ("FAILED", 3, "SEND_FAILED")
    assert r["deliveries"][0]["status"] == "FAILED" and r["errors"][0].startswith("SEND_FAILED: Slack web post")
    assert r["lockdown"]["state"] == "DONE" and locked_down(home, view["id"])
    # nothing left the machine, so the day is still undelivered (for next week's window)
    assert json.loads(alert.outbox_path(home, "20261203").read_text()) == before
    pm, md = postmortem.regenerate(home)
    assert pm["result"] == "FAILED" and any(s.startswith("SEND_FAILED:") for s in pm["next_steps"])
    assert "## Lockdown" in md.read_text() and TOKEN not in md.read_text() + json.dumps(pm)


class HangingServer(SlackServer):
    """Holds every request until released: the live fire sits in its post, where the test kills it."""

    def __post_init__(self) -> None:
        self.arrived, self.release = threading.Event(), threading.Event()
        super().__post_init__()

    def _answer(self, path: str, body: dict) -> tuple[int, dict[str, str], str]:
        self.arrived.set()
        self.release.wait(60)
        return super()._answer(path, body)


def test_killed_mid_fire_the_next_command_completes_the_lockdown(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    view = ready(home)
    hang = HangingServer()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRX__")}
        env.update(SLACK_API_URL=hang.api_url, KRX__NOTIFY__ERROR_LOG_TO_SLACK="false")
        code = ("import datetime as dt\nfrom common.home import Home\nfrom common.log import TZ\n"
                "from nas import live_fire\n"
                "live_fire.run(Home.from_env(), operator='bob', now=dt.datetime(2026, 12, 4, 10, 1, tzinfo=TZ))\n")
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=home.root)
        assert hang.arrived.wait(60), "the live fire never reached Slack"
        # between "lockdown recorded" and "lockdown done": still open
        journal = json.loads((home.state / live_fire.JOURNAL).read_text())
        assert journal["phase"] == "LOCKDOWN_PENDING" and switches.sender(home).on
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        hang.release.set()
        hang.close()
    r = krx("ops", "window", "status", view["id"], home=home)
    assert r.returncode == 0 and "lockdown completed at start" in r.stderr
    assert json.loads(r.stdout)["state"] == window.CONSUMED and locked_down(home, view["id"])
    receipt = json.loads(live_fire.latest_path(home).read_text())
    assert (receipt["result"], receipt["reason"], receipt["exit_code"]) == ("FAILED", "INTERRUPTED", 3)
    assert receipt["lockdown"]["state"] == "DONE" and receipt["lockdown"]["completed_by"] == "recovery"
    # the day that was being posted counts as possibly sent: it is never posted twice
    box = json.loads(alert.outbox_path(home, "20261203").read_text())
    assert box["sends"][0]["state"] == "SENDING" and live_fire.undelivered(home) == []
    assert live_fire.recover(home) is None  # done once; the next command has nothing to do
    assert "live_fire_lockdown_done" in [e["event"] for e in events.read(home)] and events.verify(home)[0]
    pm, _ = postmortem.regenerate(home)
    assert any("stopped mid-way" in s for s in pm["next_steps"])


def test_cycle_step_runs_on_its_weekday_only(home: Home, server: SlackServer) -> None:
    thursday = FRI - dt.timedelta(days=1)
    assert live_fire.cycle_step(home, "COMPLETED", now=thursday)["reason"].startswith("NOT_LIVE_FIRE_DAY: THU")
    assert live_fire.cycle_step(home, "BLOCKED", now=FRI) == {"ran": False, "reason": "CYCLE_BLOCKED"}
    step = live_fire.cycle_step(home, "COMPLETED", now=FRI)
    assert step["ran"] is False and step["reason"] == "WINDOW_NOT_ACTIVE" and "OUTBOX_EMPTY" in step["failing"]
    ready(home)
    step = live_fire.cycle_step(home, "WARN", now=FRI + dt.timedelta(minutes=1))
    assert (step["ran"], step["result"]) == (True, "COMPLETED") and len(server.delivered) == 1
    assert json.loads((home.root / step["receipt"]).read_text())["trigger"] == "cycle"


def test_postmortem_of_a_fired_run(home: Home, server: SlackServer) -> None:
    with pytest.raises(OpsError, match="no live fire has run yet"):
        postmortem.regenerate(home)
    view = ready(home)
    r = live_fire.run(home, operator="bob", now=FRI + dt.timedelta(minutes=1))
    pm, md = postmortem.regenerate(home)
    assert pm["run_id"] == r["run_id"] and pm["event_log"]["intact"]
    timeline = [(e["event"], e["operator"]) for e in pm["timeline"]]
    for item in [("window_requested", "alice"), ("approval_key", "bob"), ("window_active", "bob"),
                 ("gate_set", "alice"), ("live_fire_sent", "bob"), ("sender_off", "bob"), ("window_consumed", "bob")]:
        assert item in timeline, item
    assert pm["deliveries"][0]["message_ids"] == ["1700000000.000001"] and len(server.delivered) == 1
    assert pm["next_steps"][-1].startswith("nothing to fix") and view["id"] in md.read_text()
    out = krx("ops", "postmortem", "latest", home=home)
    assert out.returncode == 0 and out.stdout.startswith(f"# Live fire {r['run_id']}: COMPLETED")
    assert json.loads(krx("ops", "postmortem", "latest", "--json", home=home).stdout) == pm


FAKETIME = shutil.which("faketime")


@pytest.mark.skipif(FAKETIME is None, reason="libfaketime is not installed (apt-get install faketime)")
def test_runbook_through_the_cli_under_faketime(home: Home, server: SlackServer) -> None:
    """docs/ops.md from "add operators" to "postmortem" with the real `krx`, the clock set by libfaketime."""
    make_outbox(home)

    step = iter(range(60))

    def run(stamp: str | None, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
        # each command a minute after the one before (Friday 10:00 Seoul = 01:00 UTC): every fake clock starts
        # anew at its stamp, so equal stamps could put a later command before an earlier one's records
        stamp = stamp or f"2026-12-04 01:{next(step):02d}:00"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KRX__")}
        env.update(TZ="UTC", KRX_HOME=str(home.root), KRX__NOTIFY__ERROR_LOG_TO_SLACK="false")
        env.pop(operators.TOKEN_ENV, None)
        if token:
            env[operators.TOKEN_ENV] = token
        return subprocess.run([FAKETIME, stamp, sys.executable, "-m", "faces.cli", "ops", *args], env=env,
                              cwd=home.root, capture_output=True, text=True, timeout=120)

    fri = None  # the next minute of Friday morning in Seoul
    alice = run(fri, "operator", "add", "alice").stdout.strip().splitlines()[-1]
    bob = run(fri, "operator", "add", "bob").stdout.strip().splitlines()[-1]
    req = run(fri, "window", "request", "--minutes", "30", "--reason", "weekly live fire", token=alice)
    assert req.returncode == 0, req.stdout + req.stderr
    aid = next(ln.split()[1].rstrip(":") for ln in req.stdout.splitlines() if ln.startswith("approval "))
    assert run(fri, "approve", aid, "--key", "1", token=alice).returncode == 0
    assert run(fri, "approve", aid, "--key", "2", token=alice).returncode == 2  # SAME_OPERATOR
    two = run(fri, "approve", aid, "--key", "2", token=bob)
    assert two.returncode == 0 and "ACTIVE until 2026-12-04T10:3" in two.stdout
    assert run(fri, "gate", "REAL_ENABLED", "--reason", "weekly live fire", token=alice).returncode == 0
    assert run(fri, "sender", "on", "--reason", "weekly live fire", "--channel", "SLACK", token=bob).returncode == 0
    sat = run("2026-12-05 01:00:00", "live-fire", "run", token=bob)  # Saturday: refused, nothing used up
    assert sat.returncode == 2 and "[NOT_A_WEEKDAY]" in sat.stdout and server.requests == []
    fire = run(fri, "live-fire", "run", token=bob)
    assert fire.returncode == 0 and "COMPLETED (OK); lockdown DONE" in fire.stdout, fire.stdout + fire.stderr
    assert len(server.delivered) == 1
    assert run(fri, "live-fire", "run", token=bob).returncode == 2  # the window is CONSUMED
    assert run(fri, "postmortem", "regenerate").returncode == 0
    assert "BLOCKED" in run(fri, "postmortem", "latest").stdout.splitlines()[0]
    everything = "\n".join(p.read_text(errors="replace") for p in home.root.rglob("*") if p.is_file())
    assert alice not in everything and bob not in everything

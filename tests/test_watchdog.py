"""`krx ops watchdog`: each dead-man condition made true on a temporary home, with an injected clock, against the
real slack-sdk client and the local Slack server: one ERROR message per incident however often cron runs the
watchdog, one recovery message when it clears; the health check against a real uvicorn server that goes down; the
switches hold messages back without losing the incident; the real CLI once, as cron runs it."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import krx
from fastapi import FastAPI, Response
from slack_server import SlackServer, unused_port

from common import atomic, calendar, events, heartbeat, switches
from common.home import Home
from common.log import TZ
from nas import watchdog
from nas.cycle import latest_receipt_path

TOKEN = "xoxb-watchdog-test-token"
MONDAY = dt.date(2026, 11, 30)        # a trading day; the Friday before is 2026-11-27
FRIDAY = dt.date(2026, 11, 27)


def at(day: dt.date, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), TZ)


def receipt(home: Home, day: dt.date) -> None:
    """What a finished daily cycle leaves: its latest receipt, dated the trading day it ran."""
    atomic.write_json(latest_receipt_path(home), {"schema": "ops_run_receipt/1", "run_id": f"{day:%Y%m%d}-161000",
                                                  "date": day.isoformat(), "result": "COMPLETED"})


def store_until(home: Home, day: dt.date) -> None:
    """The EOD store's manifest (written last by every ingest) holding the days up to `day`."""
    atomic.write_json(home.data / "eod" / "manifest.json",
                      {"dates": [(day - dt.timedelta(days=i)).isoformat() for i in range(3)], "closed": []})


def posts(server: SlackServer) -> list[str]:
    return [r.body.get("text", "") for r in server.requests if r.path.endswith("chat.postMessage")]


@pytest.fixture
def wd(home: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A home the watchdog finds all clear at MONDAY 20:00: the cycle ran, the store is current, nothing waits,
    no service to check; Slack configured and the sender on."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SLACK_API_URL", server.api_url)
    monkeypatch.setenv("KRX__APP__WATCHDOG__HEALTH__SERVE", "")
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", "0")
    switches.set_sender(home, True, "the watchdog's tests post to the local Slack server")
    receipt(home, MONDAY)
    store_until(home, MONDAY)
    return home


def state(home: Home) -> dict:
    return json.loads(watchdog.state_path(home).read_text())["incidents"]


def logged(home: Home, name: str) -> list[dict]:
    return [e for e in events.read(home) if e["event"] == name]


# condition -> (make it true, make it false); each flips one fact of the home
Flip = Callable[[Home, pytest.MonkeyPatch], None]


def _request(home: Home) -> None:
    atomic.write_json(home.queue("pending") / "bt-1.json", {"schema": "backtest_request/1", "id": "bt-1"})


CONDITIONS: dict[str, tuple[Flip, Flip]] = {
    "CYCLE_LATE": (lambda h, m: receipt(h, FRIDAY), lambda h, m: receipt(h, MONDAY)),
    "STORE_BEHIND": (lambda h, m: store_until(h, FRIDAY), lambda h, m: store_until(h, MONDAY)),
    "WORKER_SILENT": (lambda h, m: (_request(h), heartbeat.write(h.reports, at=at(MONDAY, "19:00"))),
                      lambda h, m: heartbeat.write(h.reports, at=at(MONDAY, "21:00"))),
    "DISK_LOW": (lambda h, m: m.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", str(10**12)),
                 lambda h, m: m.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", "0")),
}


@pytest.mark.parametrize("code", list(CONDITIONS))
def test_one_error_per_incident_and_one_recovery(wd: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                                 code: str, capsys: pytest.CaptureFixture) -> None:
    make_true, make_false = CONDITIONS[code]
    assert watchdog.run(wd, now=at(MONDAY, "20:00")) == 0 and posts(server) == []

    make_true(wd, monkeypatch)
    for minute in ("20:15", "20:30", "20:45"):  # cron every 15 minutes: the incident is said once
        assert watchdog.run(wd, now=at(MONDAY, minute)) == 3
    sent = posts(server)
    assert len(sent) == 1 and f"ERROR* `WATCHDOG_{code}`" in sent[0] and "since 2026-11-30T20:15:00" in sent[0]
    assert list(state(wd)) == [code] and state(wd)[code]["notified_at"] == "2026-11-30T20:15:00+09:00"
    assert f"OPEN  {code}:" in capsys.readouterr().out

    make_false(wd, monkeypatch)
    for minute in ("21:00", "21:15"):
        assert watchdog.run(wd, now=at(MONDAY, minute)) == 0
    sent = posts(server)
    assert len(sent) == 2 and f"RECOVERED* `WATCHDOG_{code}`" in sent[1] and "after 45 min" in sent[1]
    assert state(wd) == {}
    assert [e["code"] for e in logged(wd, "watchdog_incident_opened")] == [code]
    assert [e["recovery_sent"] for e in logged(wd, "watchdog_incident_cleared")] == [True]


def test_the_cycle_deadline_follows_the_krx_calendar(wd: Home, server: SlackServer) -> None:
    receipt(wd, FRIDAY)  # Monday's cycle has not run (yet)
    store_until(wd, FRIDAY)
    assert watchdog.run(wd, now=at(MONDAY, "18:29")) == 0  # before the deadline: Friday is the day that is due
    assert watchdog.run(wd, now=at(MONDAY, "18:30")) == 3
    assert sorted(state(wd)) == ["CYCLE_LATE", "STORE_BEHIND"]
    assert "trading day 2026-11-30 by 18:30" in state(wd)["CYCLE_LATE"]["message"]
    receipt(wd, MONDAY)
    store_until(wd, MONDAY)
    assert watchdog.run(wd, now=at(MONDAY, "18:45")) == 0
    # a weekend and a holiday owe no cycle: Saturday evening, and 2026-06-03 (local election, a weekday)
    receipt(wd, FRIDAY)
    store_until(wd, FRIDAY)
    assert watchdog.run(wd, now=at(dt.date(2026, 11, 28), "23:00")) == 0
    receipt(wd, dt.date(2026, 6, 2))
    store_until(wd, dt.date(2026, 6, 2))
    assert watchdog.run(wd, now=at(dt.date(2026, 6, 3), "23:00")) == 0
    # Monday's two incidents and their two recoveries, nothing for the days that owe no cycle
    assert [p.split("*")[1] + " " + p.split("`")[1] for p in posts(server)] == [
        "ERROR WATCHDOG_CYCLE_LATE", "ERROR WATCHDOG_STORE_BEHIND",
        "RECOVERED WATCHDOG_CYCLE_LATE", "RECOVERED WATCHDOG_STORE_BEHIND"]


def test_worker_heartbeat_only_matters_while_requests_wait(wd: Home) -> None:
    heartbeat.write(wd.reports, at=at(MONDAY, "08:00"))  # the PC went off in the morning
    assert watchdog.run(wd, now=at(MONDAY, "20:00")) == 0  # nothing waits: nobody needs it
    _request(wd)
    (heartbeat.folder(wd.reports) / "broken.json").write_text("{not json")
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    message = state(wd)["WORKER_SILENT"]["message"]
    assert "1 request(s) wait" in message and "735 min old (limit 45 min)" in message and "broken.json" in message
    for beat in heartbeat.folder(wd.reports).glob("*.json"):
        beat.unlink()
    assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 3
    assert "no worker heartbeat is in" in state(wd)["WORKER_SILENT"]["message"]


def test_the_emergency_stop_holds_the_message_back_but_records_the_incident(
        wd: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    switches.set_emergency_stop(wd, True, "nothing leaves the machine")
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", str(10**12))
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 3
    assert posts(server) == []
    inc = state(wd)["DISK_LOW"]
    assert inc["notified_at"] is None and "emergency stop is on" in inc["not_sent"]
    opened = logged(wd, "watchdog_incident_opened")
    assert len(opened) == 1 and opened[0]["notified"] is False and "emergency stop" in opened[0]["not_sent"]

    # the stop is lifted while the disk is still full: the owed message goes out, once
    switches.set_emergency_stop(wd, False, "all clear")
    assert watchdog.run(wd, now=at(MONDAY, "20:45")) == 3
    assert watchdog.run(wd, now=at(MONDAY, "21:00")) == 3
    assert len(posts(server)) == 1 and "since 2026-11-30T20:15:00" in posts(server)[0]


def test_an_incident_that_clears_before_it_could_be_said_is_closed_silently(
        wd: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    switches.set_sender(wd, False, "quiet")
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", str(10**12))
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", "0")
    switches.set_sender(wd, True, "loud")
    assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 0
    assert posts(server) == [] and state(wd) == {}
    assert [e["recovery_sent"] for e in logged(wd, "watchdog_incident_cleared")] == [False]


def test_a_recovery_slack_refused_is_sent_at_the_next_run(wd: Home, server: SlackServer,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", str(10**12))
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", "0")
    server.script.append((200, {}, json.dumps({"ok": False, "error": "channel_not_found"})))
    assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 0
    assert "channel_not_found" in state(wd)["DISK_LOW"]["not_sent"]  # owed, not lost
    assert watchdog.run(wd, now=at(MONDAY, "20:45")) == 0
    assert state(wd) == {}
    assert [p.split("*")[1] for p in posts(server)] == ["ERROR", "RECOVERED", "RECOVERED"]  # refused, then sent


def test_an_unreadable_state_is_said_and_moved_aside(wd: Home, server: SlackServer, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("KRX__APP__OPS__MIN_FREE_DISK_MB", str(10**12))
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    watchdog.state_path(wd).write_text('{"schema": "watchdog_state/1", "incidents": {"DISK_LOW": 1}}')
    with caplog.at_level(logging.ERROR, logger="krx"):
        assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 3
    line = next(r for r in caplog.records if getattr(r, "event", "") == "WATCHDOG_STATE_UNREADABLE")
    assert "watchdog.json" in line.getMessage() and "moved aside" in line.getMessage()
    assert len(list(wd.state.glob(".watchdog.json.damaged-*"))) == 1
    # safe side: the open condition is told again (a repeat), and the new state file is whole
    assert len(posts(server)) == 2 and list(state(wd)) == ["DISK_LOW"]


# --- the health check against a real HTTP server ------------------------------------------------------------------


class Service:
    """A real uvicorn server with the health endpoint on a loopback port, started and stopped at will."""

    def __init__(self, port: int):
        self.port, self.status, self._server, self._thread = port, 200, None, None
        app = FastAPI()

        @app.get("/api/ops/health")
        def health(response: Response) -> dict:
            response.status_code = self.status
            return {"ok": self.status == 200}

        self.app = app

    def start(self) -> None:
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def service() -> Iterator[Service]:
    svc = Service(unused_port())
    yield svc
    if svc._thread and svc._thread.is_alive():
        svc.stop()


def test_serve_health_up_then_down_then_up(wd: Home, server: SlackServer, service: Service,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX__APP__WATCHDOG__HEALTH__SERVE", f"http://127.0.0.1:{service.port}/api/ops/health")
    service.start()
    assert watchdog.run(wd, now=at(MONDAY, "20:00")) == 0
    service.status = 503  # it answers, but not healthy
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    assert "HTTP 503" in state(wd)["SERVE_DOWN"]["message"]
    service.stop()  # and now nothing listens
    assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 3
    assert "ConnectError" in state(wd)["SERVE_DOWN"]["message"]
    assert len(posts(server)) == 1 and "WATCHDOG_SERVE_DOWN" in posts(server)[0]
    service.status = 200
    service.start()
    assert watchdog.run(wd, now=at(MONDAY, "20:45")) == 0
    assert len(posts(server)) == 2 and "RECOVERED* `WATCHDOG_SERVE_DOWN`" in posts(server)[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_configured_restart_command_brings_the_service_back(wd: Home, server: SlackServer,
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port, pidfile = unused_port(), tmp_path / "server.pid"
    # a start script as a user writes one: it starts the server in the background, sharing its output, and exits
    start = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'http.server', '{port}', "
             f"'--bind', '127.0.0.1'], cwd={str(tmp_path)!r}); open({str(pidfile)!r}, 'w').write(str(p.pid))")
    monkeypatch.setenv("KRX__APP__WATCHDOG__HEALTH__SERVE", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("KRX__APP__WATCHDOG__RESTART__SERVE", json.dumps([sys.executable, "-c", start]))
    try:
        assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3  # returns although the server it started runs on
        assert "restart command exited 0" in posts(server)[0]
        while not _listening(port):
            time.sleep(0.05)
        assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 0
        assert len(posts(server)) == 2 and "RECOVERED" in posts(server)[1]
        assert [e["service"] for e in logged(wd, "watchdog_restart")] == ["serve"]
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def test_a_restart_command_that_hangs_is_killed(wd: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRX__APP__WATCHDOG__HEALTH__SERVE", f"http://127.0.0.1:{unused_port()}/")
    monkeypatch.setenv("KRX__APP__WATCHDOG__RESTART__SERVE",
                       json.dumps([sys.executable, "-c", "import time; time.sleep(600)"]))
    monkeypatch.setenv("KRX__APP__WATCHDOG__RESTART_TIMEOUT_S", "1")
    assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
    assert "still running after 1s: killed" in state(wd)["SERVE_DOWN"]["last_restart"]


# --- the real CLI, as cron runs it -------------------------------------------------------------------------------


def test_the_cli_exit_codes_and_one_message_across_cron_runs(home: Home, server: SlackServer,
                                                             cal: calendar.TradingCalendar) -> None:
    switches.set_sender(home, True, "the local Slack server")
    today = watchdog.due_day(cal, dt.datetime.now(TZ), "00:00")
    receipt(home, today)
    store_until(home, today)
    env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_URL": server.api_url, "KRX__APP__WATCHDOG__CYCLE_DEADLINE": "00:00",
           "KRX__APP__WATCHDOG__HEALTH__SERVE": f"http://127.0.0.1:{unused_port()}/api/ops/health"}
    for _ in range(2):
        r = krx("ops", "watchdog", home=home, env=env)
        assert r.returncode == 3, r.stderr
        assert "OPEN  SERVE_DOWN" in r.stdout
    lines = "".join(p.read_text() for p in home.logs.glob("watchdog_*.log"))
    assert lines.count("[ERROR] [WATCHDOG_SERVE_DOWN]") == 1  # the ERROR line too: once, at the opening
    # the Slack ERROR log is attached in the CLI too: the incident's ERROR line still goes out only once
    assert len(posts(server)) == 1 and TOKEN not in r.stdout + r.stderr
    r = krx("ops", "watchdog", home=home, env={**env, "KRX__APP__WATCHDOG__HEALTH__SERVE": ""})
    assert r.returncode == 0 and "watchdog: all clear" in r.stdout
    assert len(posts(server)) == 2
    bad = krx("ops", "watchdog", home=home, env={**env, "KRX__APP__WATCHDOG__RESTART__SERVE": "sh -c reboot"})
    assert bad.returncode == 3 and "watchdog.restart.serve: expected a list" in bad.stderr


def test_the_real_worker_beats_and_a_stopped_one_is_noticed(home: Home) -> None:
    from test_worker_jobs import Workers, wait_for

    workers = Workers(home)
    try:
        proc = workers.start("--interval", "0.2")
        wait_for(lambda: heartbeat.latest(home.reports)[0] is not None, 30, "the worker's heartbeat")
        beat, problems = heartbeat.latest(home.reports)
        assert problems == [] and beat is not None and beat.pid == proc.pid
        assert beat.path.parent == home.reports / "ops" / "heartbeat"  # where the NAS looks (and sync brings it)
        assert workers.stop(proc) == 0
    finally:
        workers.kill_all()
    _request(home)  # work arrives after the worker stopped
    limit = 2700.0
    assert watchdog.check_worker(home, limit, beat.at + dt.timedelta(seconds=limit)) is None
    late = watchdog.check_worker(home, limit, beat.at + dt.timedelta(seconds=limit + 60))
    assert late is not None and late.code == "WORKER_SILENT" and f"pid {proc.pid}" in late.message


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a detached child nobody reaps, e.g. under a container's init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_start_service_sh_restarts_krx_serve_for_the_watchdog(wd: Home, server: SlackServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Synology without systemd: the watchdog's restart command is scripts/linux/jobs/start_service.sh serve."""
    import subprocess

    from conftest import REPO

    port, script = unused_port(), str(REPO / "scripts/linux/jobs/start_service.sh")
    monkeypatch.setenv("KRX_BIN", str(Path(sys.executable).parent / "krx"))
    monkeypatch.setenv("KRX__TRADING__APPROVAL__PORT", str(port))
    monkeypatch.setenv("KRX__APP__WATCHDOG__HEALTH__SERVE", f"http://127.0.0.1:{port}/docs")  # any 2xx counts
    monkeypatch.setenv("KRX__APP__WATCHDOG__RESTART__SERVE", json.dumps([script, "serve"]))
    pidfile = wd.state / "serve.pid"
    assert krx("trade", "init-db", home=wd).returncode == 0  # what krx serve needs to start
    try:
        assert watchdog.run(wd, now=at(MONDAY, "20:15")) == 3
        assert "restart command exited 0" in posts(server)[0]
        first = int(pidfile.read_text())
        deadline = time.monotonic() + 60
        while not _listening(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 0
        assert [p.split("*")[1] for p in posts(server)] == ["ERROR", "RECOVERED"]
        # run again (as for a hung server): the old process is stopped first, a new one takes the port
        r = subprocess.run([script, "serve"], capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr + (wd.logs / "serve.out").read_text()
        second = int(pidfile.read_text())
        assert second != first and not _running(first)
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.mark.parametrize("unit", ["krx-serve", "krx-execution-server", "krx-worker"])
def test_systemd_units_restart_on_failure_and_run_a_real_command(unit: str, tmp_path: Path) -> None:
    import configparser
    import shlex
    import shutil
    import subprocess

    from conftest import REPO

    from faces.cli import build_parser

    text = (REPO / "scripts/linux/systemd" / f"{unit}.service").read_text()
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read_string(text)
    assert parsed["Service"]["Restart"] == "on-failure"
    argv = shlex.split(parsed["Service"]["ExecStart"])
    assert argv[0] == "%h/krx-alertor/.venv/bin/krx"
    build_parser(argv[1]).parse_args(argv[1:])  # a subcommand and options the CLI knows (exits 2 otherwise)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    local = tmp_path / f"{unit}.service"  # with this machine's paths, so systemd can check the command too
    local.write_text(text.replace("%h/krx-alertor/.venv/bin/krx", str(Path(sys.executable).parent / "krx"))
                     .replace("%h/", f"{tmp_path}/"))
    r = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and unit not in r.stderr, r.stderr


def test_open_incidents_are_risks_of_the_ops_summary(wd: Home, server: SlackServer) -> None:
    from nas import summary

    def watchdog_risks() -> list[str]:
        return [r["code"] for r in summary.build(wd, now=at(MONDAY, "20:40"))["top_risks"]
                if r["code"].startswith("WATCHDOG_")]

    store_until(wd, FRIDAY)
    assert watchdog.run(wd, now=at(MONDAY, "20:30")) == 3
    assert watchdog_risks() == ["WATCHDOG_STORE_BEHIND"]
    store_until(wd, MONDAY)
    assert watchdog.run(wd, now=at(MONDAY, "20:45")) == 0
    assert watchdog_risks() == []
    watchdog.state_path(wd).write_text("{not json")
    assert watchdog_risks() == ["WATCHDOG_STATE_UNREADABLE"]
    assert watchdog.state_path(wd).exists()  # reading it for the summary moves nothing

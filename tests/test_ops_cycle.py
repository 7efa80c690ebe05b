"""`krx ops cycle`: safety checks first, real subprocess steps, receipts, and no external socket under MOCK_ONLY.

Sockets are watched for real across every process of a cycle: a sitecustomize.py on PYTHONPATH installs an audit
hook (PEP 578) that records each `socket.connect` and `socket.getaddrinfo` into a file.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMALL_DAY, krx

from common import events, switches
from common.home import Home
from faces import KRX
from nas import cycle

REPO = Path(__file__).resolve().parent.parent
TRADING_DAY = dt.date(2024, 6, 28)   # a Friday, a KRX session
HOLIDAY = dt.date(2024, 1, 6)        # a Saturday
SLACK_TOKEN = "xoxb-9999999999-8888888888888-cycleTESTsecretVALUE"
STEPS_READY = all(importlib.util.find_spec(f"nas.{m}") for m in ("ingest", "scan", "alert", "request"))

SITECUSTOMIZE = '''
import json, os, sys
_LOG = os.environ.get("KRX_TEST_SOCKET_LOG")
if _LOG:
    def _host(h):
        return h.decode("ascii", "replace") if isinstance(h, (bytes, bytearray)) else h
    def _hook(event, args):
        if event == "socket.connect":
            addr = args[1]
            rec = {"event": event, "family": int(args[0].family),
                   "host": _host(addr[0]) if isinstance(addr, tuple) else None, "addr": str(addr)}
        elif event == "socket.getaddrinfo":
            rec = {"event": event, "host": _host(args[0])}
        else:
            return
        rec["pid"] = os.getpid()
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, default=str) + "\\n")
    sys.addaudithook(_hook)
'''



@pytest.fixture()
def env(home: Home, tmp_path: Path) -> dict[str, str]:
    """A clean environment: no operator secrets or overrides leak in; the socket recorder on PYTHONPATH."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    base = {k: v for k, v in os.environ.items()
            if (not k.startswith("KRX") or k == "KRX_EVENT_LOG_KEY_FILE") and not k.startswith("SLACK")
            and k != "PYTHONPATH"}
    base.update(SMALL_DAY)
    base.update(KRX_HOME=str(home.root), PYTHONPATH=f"{hook_dir}{os.pathsep}{REPO}",
                KRX_TEST_SOCKET_LOG=str(tmp_path / "sockets.jsonl"))
    return base


def _cycle(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faces.cli", "ops", "cycle", *args], env=env, cwd=env["KRX_HOME"],
                          capture_output=True, text=True, timeout=120)


def _receipt(home: Home) -> dict:
    receipt = json.loads(cycle.latest_receipt_path(home).read_text(encoding="utf-8"))
    assert receipt["schema"] == "ops_run_receipt/1"
    for key in ("run_id", "started_at", "finished_at", "result", "reason", "steps", "observed_modes"):
        assert key in receipt
    assert set(receipt["observed_modes"]) == {"emergency_stop", "gate", "effective_gate", "delivery_policy",
                                              "sender", "window"}
    assert set(receipt["live_fire_step"]) >= {"ran", "reason"}
    snap = home.root / receipt["snapshot"]
    assert snap.parent == home.reports / "ops" / "daily" / "snapshots" and snap.name.startswith("ops_run_")
    assert json.loads(snap.read_text(encoding="utf-8")) == receipt
    for step in receipt["steps"]:
        assert set(step) == {"name", "status", "rc", "elapsed_ms", "details"}
    return receipt


def _sockets(env: dict[str, str]) -> list[dict]:
    path = Path(env["KRX_TEST_SOCKET_LOG"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _is_local(rec: dict) -> bool:
    if rec["event"] == "socket.connect" and rec["host"] is None:  # AF_UNIX: a socket file on this machine
        return True
    host = rec["host"]
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: would need DNS, so it is external
        return False


def _slack_on(env: dict[str, str]) -> None:
    """Configure Slack delivery with a token and an API URL that no test may ever reach (TEST-NET-3)."""
    env.update(KRX__NOTIFY__DELIVERY_POLICY="SLACK", SLACK_BOT_TOKEN=SLACK_TOKEN,
               SLACK_API_URL="http://203.0.113.9/api/", KRX__NOTIFY__ERROR_LOG_TO_SLACK="true")


def test_emergency_stop_blocks_and_nothing_external(home: Home, env: dict[str, str]) -> None:
    _slack_on(env)
    switches.set_sender(home, True, "would send if allowed")
    switches.set_emergency_stop(home, True, "KRX feed looks wrong")
    proc = _cycle(env, "--date", TRADING_DAY.isoformat())
    assert proc.returncode == 2, proc.stderr
    r = _receipt(home)
    assert (r["result"], r["reason"]) == ("BLOCKED", "STOPPED")
    assert [s["name"] for s in r["steps"]] == ["preflight", "emergency_stop"]
    assert "KRX feed looks wrong" in r["steps"][-1]["details"]
    assert r["observed_modes"]["emergency_stop"] == "ON"
    assert _sockets(env) == []                      # not even a DNS lookup
    assert not (home.data / "eod").exists() and not (home.reports / "outbox").exists()
    assert SLACK_TOKEN not in proc.stdout + proc.stderr + cycle.latest_receipt_path(home).read_text()
    cids = {e["correlation_id"] for e in events.read(home) if e["event"].startswith("ops_cycle")}
    assert cids == {events.correlation_id(TRADING_DAY, "momentum_topN_v1")}


@pytest.mark.parametrize("filename", [switches.ESTOP_FILE, switches.SENDER_FILE, switches.GATE_FILE])
def test_corrupt_state_file_blocks(home: Home, env: dict[str, str], filename: str) -> None:
    (home.state / filename).write_text('{"on": tru', encoding="utf-8")
    rc, r = cycle.run_cycle(home, TRADING_DAY, command=KRX, base_env=env)
    assert rc == 2 and (r["result"], r["reason"]) == ("BLOCKED", "STATE_UNREADABLE")
    assert not any(s["name"] in cycle.DATA_STEPS for s in r["steps"])
    assert "UNREADABLE" in r["observed_modes"].values()
    assert _receipt(home) == r


def test_preflight_missing_credentials_fails_before_anything_runs(home: Home, env: dict[str, str]) -> None:
    env["KRX__APP__SOURCE"] = "pykrx"  # needs KRX_ID / KRX_PW, which the clean environment does not have
    rc, r = cycle.run_cycle(home, TRADING_DAY, command=KRX, base_env=env)
    assert rc == 2 and (r["result"], r["reason"]) == ("BLOCKED", "PREFLIGHT_FAIL")
    assert [s["name"] for s in r["steps"]] == ["preflight"]
    assert "credentials" in r["steps"][0]["details"] and "source:pykrx" in r["steps"][0]["details"]
    ticket = json.loads((home.reports / "tickets" / "preflight" / f"{r['run_id']}.json").read_text())
    assert [c["check"] for c in ticket["failing"]] == ["credentials"] and not ticket["failing"][0]["ok"]
    assert r["live_fire_step"] == {"ran": False, "reason": "CYCLE_BLOCKED"}


def test_preflight_low_disk_and_bad_config(home: Home, env: dict[str, str]) -> None:
    env["KRX__APP__OPS__MIN_FREE_DISK_MB"] = str(10**12)
    rc, r = cycle.run_cycle(home, TRADING_DAY, command=KRX, base_env=env)
    assert rc == 2 and r["reason"] == "PREFLIGHT_FAIL" and "free_disk" in r["steps"][0]["details"]
    del env["KRX__APP__OPS__MIN_FREE_DISK_MB"]
    (home.configs / "notify.yaml").write_text("delivery_policy: CARRIER_PIGEON\n", encoding="utf-8")
    rc, r = cycle.run_cycle(home, TRADING_DAY, command=KRX, base_env=env)
    assert rc == 2 and "delivery_policy" in r["steps"][0]["details"]


def test_non_trading_day_completes_with_data_steps_skipped(home: Home, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "pc").mkdir()
    env["KRX__APP__SYNC__REMOTE"] = str(tmp_path / "pc")  # sync is configured: it still runs on a holiday
    rc, r = cycle.run_cycle(home, HOLIDAY, command=KRX, base_env=env)
    assert rc == 0 and (r["result"], r["reason"]) == ("COMPLETED", "NON_TRADING_DAY")
    skipped = {s["name"]: s for s in r["steps"] if s["status"] == "SKIPPED"}
    assert set(skipped) == set(cycle.DATA_STEPS)
    assert r["steps"][-1]["name"] == "sync" and r["steps"][-1]["rc"] == 0, r["steps"][-1]
    assert "not a KRX trading day" in skipped["ingest"]["details"] and "2024-01-08" in skipped["ingest"]["details"]
    assert all(s["rc"] is None for s in skipped.values())


def test_a_failing_step_fails_the_cycle_and_skips_the_rest(home: Home, env: dict[str, str]) -> None:
    (home.data / "eod").mkdir(parents=True)
    (home.data / "eod" / "manifest.json").write_text("{broken", encoding="utf-8")  # ingest cannot read its store
    rc, r = cycle.run_cycle(home, TRADING_DAY, command=KRX, base_env=env)
    assert rc == 3 and (r["result"], r["reason"]) == ("FAILED", "STEP_FAILED:ingest")
    steps = {s["name"]: s for s in r["steps"]}
    assert steps["ingest"]["status"] == "FAILED" and steps["ingest"]["rc"] == 3
    assert steps["ingest"]["elapsed_ms"] > 0 and "manifest" in steps["ingest"]["details"]
    assert all(steps[n]["status"] == "SKIPPED" for n in ("scan", "alert", "request"))
    logged = [e for e in events.read(home) if e["event"] == "ops_step"]
    assert logged and logged[0]["step"] == "ingest" and logged[0]["status"] == "FAILED"
    assert events.verify(home)[0]


def test_tampered_event_log_blocks_the_run(home: Home, env: dict[str, str]) -> None:
    for i in range(3):
        events.append(home, "x", i=i)
    lines = events.log_path(home).read_text(encoding="utf-8").splitlines(keepends=True)
    events.log_path(home).write_text(lines[0] + lines[2], encoding="utf-8")
    rc, r = cycle.run_cycle(home, HOLIDAY, command=KRX, base_env=env)
    # a CRITICAL risk never ends in exit 0: the steps ran, the result is BLOCKED (issue 11, finding 8)
    assert rc == 2 and (r["result"], r["reason"]) == ("BLOCKED", "EVENT_LOG_TAMPERED")


def test_mock_only_opens_no_external_socket(home: Home, env: dict[str, str]) -> None:
    # Everything configured to go out: the real KRX source, Slack alerts and error log, a sync remote.
    _slack_on(env)
    env.update(KRX__APP__SOURCE="pykrx", KRX_ID="someone", KRX_PW="pw-never-used-123",
               KRX__APP__SYNC__REMOTE="nas.example.invalid:/volume1/krx")
    switches.set_sender(home, True, "sender on: only the gate holds it back")
    switches.set_gate(home, "MOCK_ONLY", "test: no external call")
    proc = _cycle(env, "--date", TRADING_DAY.isoformat())
    r = _receipt(home)
    steps = {s["name"]: s for s in r["steps"]}
    assert steps["ingest"]["rc"] == 0, proc.stderr        # it ran, on the forced sample source
    assert r["observed_modes"]["gate"] == "MOCK_ONLY"
    assert r["observed_modes"]["delivery_policy"] == "CONSOLE_ONLY"
    assert steps["sync"]["status"] == "SKIPPED"
    external = [s for s in _sockets(env) if not _is_local(s)]
    assert external == [], external
    out = proc.stdout + proc.stderr + cycle.latest_receipt_path(home).read_text()
    assert SLACK_TOKEN not in out and "pw-never-used-123" not in out
    if STEPS_READY:
        assert proc.returncode == 0 and (r["result"], r["reason"]) == ("COMPLETED", "GATE_MOCK_ONLY"), out[-3000:]
        assert steps["alert"]["status"] == "OK" and steps["request"]["status"] == "OK"


@pytest.mark.skipif(not STEPS_READY, reason="krx scan/alert/request are not in the repository yet")
def test_full_cycle_completes(home: Home, env: dict[str, str]) -> None:
    proc = _cycle(env, "--date", TRADING_DAY.isoformat())
    r = _receipt(home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (r["result"], r["reason"]) == ("COMPLETED", "OK")
    assert [s["name"] for s in r["steps"]] == ["preflight", "emergency_stop", "gate", *cycle.DATA_STEPS]
    assert all(s["status"] == "OK" for s in r["steps"])
    assert all(s["rc"] == 0 and s["elapsed_ms"] > 0 for s in r["steps"] if s["name"] in cycle.DATA_STEPS)
    assert r["correlation_id"] == events.correlation_id(TRADING_DAY, "momentum_topN_v1")
    assert list(home.queue("pending").glob("*.json"))
    assert [s for s in _sockets(env) if not _is_local(s)] == []
    assert events.verify(home)[0]


def test_a_damaged_portfolio_blocks_the_cycle_with_state_unreadable(home: Home) -> None:
    (home.state / "portfolio.json").write_text("{broken", encoding="utf-8")
    proc = krx("ops", "cycle", "--date", "2026-06-01", home=home, timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "BLOCKED (STATE_UNREADABLE)" in proc.stdout


def test_a_failed_preflight_says_which_file_and_key(home: Home) -> None:
    proc = krx("ops", "cycle", "--date", "2026-06-01", home=home, env={"KRX__APP__WORKER__LEASE_S": "soon"},
               timeout=180)
    assert proc.returncode == 2  # DESIGN section 10: a failed preflight is BLOCKED
    assert "BLOCKED (PREFLIGHT_FAIL)" in proc.stdout
    assert ("preflight configs: environment variable KRX__APP__WORKER__LEASE_S: worker.lease_s: expected a number, "
            "got 'soon'") in proc.stdout

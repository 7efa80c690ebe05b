"""Findings 2-4: hostile names, file types and damaged contents in the queue and state folders. Each case runs the
real `krx` CLI in a subprocess; a hang shows up as the subprocess timeout, a crash as rc 1/3 or a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import krx

from common import switches
from common.home import Home

KINDS = ("fifo", "folder", "devzero")


def _plant(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.symlink("/dev/zero", path)


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace("config error:", ""), proc.stderr


def test_a_name_that_is_not_utf8_goes_to_failed_and_never_crashes(home: Home) -> None:
    pending, failed = home.queue("pending"), home.queue("failed")
    bad = os.fsdecode(b"bad\xff\xfe.json")
    (pending / bad).write_bytes(b"{}")
    proc = krx("worker", "--once", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not list(pending.iterdir())
    records = [json.loads(p.read_text(encoding="utf-8")) for p in failed.glob("*.error.json")]
    assert len(records) == 1 and records[0]["error_code"] == "INVALID_REQUEST"
    assert records[0]["file"] == "bad\\xff\\xfe.json"  # escaped, readable, valid UTF-8
    # the same name left in failed/ itself must not break the status commands
    (failed / bad).write_bytes(b"{}")
    for cmd in (("ops", "status"), ("ops", "summary")):
        proc = krx(*cmd, home=home, timeout=60)
        assert proc.returncode == 0, proc.stderr
        _no_traceback(proc)
    summary = json.loads((home.reports / "ops/summary/ops_summary_latest.json").read_text(encoding="utf-8"))
    refs = [r for risk in summary["top_risks"] for r in risk["evidence_refs"]]
    assert "reports/failed/bad\\xff\\xfe.json" in refs


@pytest.mark.parametrize("kind", KINDS)
def test_a_fifo_folder_or_device_link_in_the_queue_never_hangs(home: Home, kind: str) -> None:
    for folder in ("pending", "failed"):
        _plant(home.queue(folder) / f"x_{folder}.json", kind)
    for cmd in (("ops", "status"), ("ops", "summary")):
        proc = krx(*cmd, home=home, timeout=60)
        assert proc.returncode == 0, proc.stderr
        _no_traceback(proc)
    proc = krx("worker", "--once", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.lexists(home.queue("pending") / "x_pending.json")  # not skipped: failed
    record = json.loads((home.queue("failed") / "x_pending.error.json").read_text(encoding="utf-8"))
    assert record["error_code"] == "INVALID_REQUEST"
    assert "not a regular file" in record["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_state_file_blocks_and_the_switch_commands_replace_it(home: Home, kind: str) -> None:
    for name in (switches.ESTOP_FILE, switches.SENDER_FILE, switches.GATE_FILE, ".events.lock"):
        _plant(home.state / name, kind)
    proc = krx("ops", "status", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "UNREADABLE" in proc.stdout
    proc = krx("ops", "cycle", home=home, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "STATE_UNREADABLE" in proc.stdout
    for cmd in (("estop", "on"), ("sender", "off"), ("gate", "DRY_RUN")):
        proc = krx("ops", *cmd, "--reason", "replace the damaged file", home=home, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert switches.emergency_stop(home).on and switches.emergency_stop(home).readable
    assert switches.sender(home).readable and switches.gate(home) == switches.DRY_RUN
    replaced = [e for e in _events(home) if "replaced_damaged" in e]
    assert len(replaced) == 3


def _events(home: Home) -> list[dict]:
    return [json.loads(line) for line in (home.state / "events.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]


def test_a_deeply_nested_state_file_is_unreadable_not_a_crash(home: Home) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    (home.state / switches.GATE_FILE).write_bytes(b'{"mode": ' + deep + b"}")
    (home.state / switches.ESTOP_FILE).write_bytes(deep)
    proc = krx("ops", "cycle", home=home, timeout=120)
    assert proc.returncode == 2 and "STATE_UNREADABLE" in proc.stdout, proc.stdout + proc.stderr
    proc = krx("ops", "gate", "DRY_RUN", "--reason", "repair", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = krx("ops", "estop", "off", "--reason", "repair", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert switches.gate(home) == switches.DRY_RUN and not switches.emergency_stop(home).on


def test_an_env_file_that_is_not_utf8_never_locks_out_the_emergency_stop(home: Home) -> None:
    (home.root / ".env").write_bytes(b"SLACK_BOT_TOKEN=abc\nKRX_PW=\xff\n")
    proc = krx("ops", "estop", "on", "--reason", "incident", home=home, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert switches.emergency_stop(home).on
    proc = krx("ops", "status", home=home, timeout=60)
    assert proc.returncode == 3
    assert f"{home.root / '.env'}: line 2: expected UTF-8 text" in proc.stderr
    _no_traceback(proc)


def test_a_binary_config_file_names_the_file(home: Home) -> None:
    (home.configs / "app.yaml").write_bytes(b"source: \xff\xfe\n")
    proc = krx("calendar", "--next", "2026-06-01", home=home, timeout=60)
    assert proc.returncode == 3
    assert f"{home.configs / 'app.yaml'}: <file>: expected UTF-8 text" in proc.stderr
    _no_traceback(proc)

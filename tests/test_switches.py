"""Safety switches: defaults, fail-closed reads, audit events, the REAL_ENABLED refusal."""

from __future__ import annotations

import pytest

from common import events, switches
from common.home import Home


def test_fresh_home_defaults(home: Home) -> None:
    assert switches.emergency_stop(home).on is False
    assert switches.sender(home).on is False
    assert switches.gate(home) == "DRY_RUN"
    ok, why = switches.external_send_allowed(home)
    assert not ok and "sender" in why


def test_set_and_show_who_when_why(home: Home) -> None:
    s = switches.set_emergency_stop(home, True, "bad data from KRX")
    assert s.on and "@" in s.by and s.at and s.reason == "bad data from KRX"
    again = switches.emergency_stop(home)
    assert (again.on, again.by, again.reason, again.readable) == (True, s.by, "bad data from KRX", True)
    switches.set_sender(home, True, "go live")
    ok, why = switches.external_send_allowed(home)
    assert not ok and "emergency stop is on" in why and "bad data from KRX" in why
    switches.set_emergency_stop(home, False, "fixed")
    assert switches.external_send_allowed(home) == (True, "")
    log = events.read(home)
    assert [e["event"] for e in log] == ["emergency_stop_on", "sender_on", "emergency_stop_off"]
    assert all("@" in e["by"] and e["ts"] and e["reason"] for e in log)
    assert events.verify(home)[0]


def test_reason_required(home: Home) -> None:
    with pytest.raises(switches.SwitchError, match="reason"):
        switches.set_sender(home, True, "  ")
    assert not switches.sender(home).on


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"on": "yes"}', b"\xff\xfe"])
def test_corrupt_files_fail_closed(home: Home, content: bytes) -> None:
    switches.set_sender(home, True, "on")
    (home.state / switches.ESTOP_FILE).write_bytes(content)
    stop = switches.emergency_stop(home)
    assert stop.on and not stop.readable
    ok, why = switches.external_send_allowed(home)
    assert not ok and "unreadable" in why

    (home.state / switches.ESTOP_FILE).unlink()
    (home.state / switches.SENDER_FILE).write_bytes(content)
    assert not switches.sender(home).on and not switches.sender(home).readable
    assert not switches.external_send_allowed(home)[0]

    switches.set_sender(home, True, "repaired")
    (home.state / switches.GATE_FILE).write_bytes(content)
    g = switches.gate_state(home)
    assert g.mode == "MOCK_ONLY" and not g.readable
    assert not switches.external_send_allowed(home)[0]


def test_gate_modes(home: Home) -> None:
    switches.set_sender(home, True, "on")
    switches.set_gate(home, "MOCK_ONLY", "demo")
    assert switches.gate(home) == "MOCK_ONLY"
    ok, why = switches.external_send_allowed(home)
    assert not ok and "MOCK_ONLY" in why
    switches.set_gate(home, "dry_run", "back")
    assert switches.gate(home) == "DRY_RUN" and switches.external_send_allowed(home)[0]
    with pytest.raises(switches.SwitchError, match="two-key approval"):
        switches.set_gate(home, "REAL_ENABLED", "yolo")
    assert switches.gate(home) == "DRY_RUN"
    with pytest.raises(switches.SwitchError, match="one of"):
        switches.set_gate(home, "FAST", "x")
    assert [e["event"] for e in events.read(home)][-1] == "gate_change_refused"


def test_hand_written_real_enabled_is_not_trusted(home: Home) -> None:
    (home.state / switches.GATE_FILE).write_text('{"mode": "REAL_ENABLED"}')
    g = switches.gate_state(home)
    assert g.mode == "MOCK_ONLY" and not g.readable


def test_enforce_mock_only(home: Home) -> None:
    env: dict[str, str] = {"KRX__APP__SOURCE": "pykrx"}
    assert not switches.enforce_mock_only(home, env) and env == {"KRX__APP__SOURCE": "pykrx"}
    switches.set_gate(home, "MOCK_ONLY", "test")
    assert switches.enforce_mock_only(home, env)
    assert env == switches.MOCK_ONLY_ENV
    from common import config

    assert config.load("app", home, env=env)["source"] == "sample"
    assert config.load("notify", home, env=env)["error_log_to_slack"] is False

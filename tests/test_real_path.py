"""The REAL path's rules: operators and their tokens, the two-key approval, the window's life, the effective gate and
the execution allowlist. Time rules run on an injected clock (`now=`); the CLI runs as a real subprocess."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import krx

from common import config, events, operators, switches, window
from common.errors import OpsError
from common.home import Home
from common.log import TZ

T0 = dt.datetime(2026, 12, 4, 10, 0, tzinfo=TZ)  # a Friday morning in Seoul


def _minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


@pytest.fixture()
def ops(home: Home) -> dict[str, str]:
    """Two operators; name -> token."""
    return {name: operators.add(home, name)[1] for name in ("alice", "bob")}


def _request(home: Home, minutes: int = 30, now: dt.datetime = T0) -> dict:
    return window.request(home, minutes, "weekly live fire", "alice", now=now)


def _activate(home: Home, minutes: int = 30, now: dt.datetime = T0) -> dict:
    aid = _request(home, minutes, now)["approval"]["id"]
    window.approve(home, aid, 1, "alice", now=now)
    return window.approve(home, aid, "2", "bob", now=now)


def _refused(code: str, fn, *args, **kwargs) -> OpsError:
    with pytest.raises(OpsError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


def test_operator_tokens_are_stored_only_as_hashes(home: Home) -> None:
    r = krx("ops", "operator", "add", "alice", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert len(token) >= 40 and token not in r.stderr
    assert krx("ops", "operator", "add", "alice", home=home).returncode == 2  # OPERATOR_EXISTS
    assert operators.identify(home, token, action="test") == "alice"
    stored = json.loads((home.state / "operators.json").read_text())
    assert set(stored["operators"]) == {"alice"} and "token_sha256" in stored["operators"]["alice"]
    listing = krx("ops", "operator", "list", home=home)
    assert listing.stdout.startswith("alice\t") and token not in listing.stdout
    # unknown and missing tokens: exit 2, logged with the action and the code, never the token
    bad = krx("ops", "window", "request", "--minutes", "30", "--reason", "x", home=home,
              env={"KRX_OPERATOR_TOKEN": token[:-4] + "AAAA"})
    none = krx("ops", "window", "request", "--minutes", "30", "--reason", "x", home=home,
               env={"KRX_OPERATOR_TOKEN": ""})
    assert (bad.returncode, none.returncode) == (2, 2)
    assert "UNKNOWN_OPERATOR" in bad.stdout and "OPERATOR_REQUIRED" in none.stdout
    refused = [e for e in events.read(home) if e["event"] == "operator_refused"]
    assert [e["code"] for e in refused] == ["UNKNOWN_OPERATOR", "OPERATOR_REQUIRED"]
    everything = "\n".join(p.read_text(errors="replace") for p in home.root.rglob("*") if p.is_file())
    assert token not in everything and token[:-4] not in everything
    # a token file works like the variable; removing the operator kills the token
    tf = home.root / "alice.token"
    tf.write_text(token + "\n")
    ok = krx("ops", "window", "request", "--minutes", "30", "--reason", "x", "--token-file", str(tf), home=home)
    assert ok.returncode == 0 and "PENDING_APPROVAL" in ok.stdout
    assert krx("ops", "operator", "remove", "alice", home=home).returncode == 0
    _refused("UNKNOWN_OPERATOR", operators.identify, home, token, action="test")


def test_one_operator_cannot_give_both_keys(home: Home, ops: dict) -> None:
    aid = _request(home)["approval"]["id"]
    assert window.approve(home, aid, 1, "alice", now=T0)["state"] == window.PENDING_APPROVAL
    _refused("SAME_OPERATOR", window.approve, home, aid, 2, "alice", now=T0)
    _refused("KEY_ALREADY_GIVEN", window.approve, home, aid, 1, "bob", now=T0)
    assert window.status(home, now=T0)["state"] == window.PENDING_APPROVAL
    assert [e["code"] for e in events.read(home) if e["event"] == "approval_refused"] == \
        ["SAME_OPERATOR", "KEY_ALREADY_GIVEN"]
    view = window.approve(home, aid, 2, "bob", now=T0 + _minutes(5))
    assert view["state"] == window.ACTIVE and view["activated_at"] == (T0 + _minutes(5)).isoformat()
    assert view["approval"]["keys"]["1"]["operator"] == "alice" and view["approval"]["keys"]["2"]["operator"] == "bob"
    # used once: no further key, not even on a new request's behalf
    _refused("APPROVAL_USED", window.approve, home, aid, 2, "bob", now=T0 + _minutes(6))


def test_an_approval_expires_after_24_hours(home: Home, ops: dict) -> None:
    view = _request(home)
    aid = view["approval"]["id"]
    window.approve(home, aid, 1, "alice", now=T0 + dt.timedelta(hours=23, minutes=59))
    late = T0 + dt.timedelta(hours=24)
    _refused("APPROVAL_EXPIRED", window.approve, home, aid, 2, "bob", now=late)
    assert window.status(home, now=late)["state"] == window.EXPIRED
    assert window.approval_status(home, aid, now=late)["state"] == "EXPIRED"
    assert window.approval_status(home, aid, now=T0)["ttl_left_s"] == 24 * 3600


def test_a_window_past_its_ttl_reads_dry_run(home: Home, ops: dict) -> None:
    _refused("WINDOW_NOT_ACTIVE", switches.set_gate, home, "REAL_ENABLED", "go", operator="alice", now=T0)
    view = _activate(home, minutes=30)
    _refused("OPERATOR_REQUIRED", switches.set_gate, home, "REAL_ENABLED", "go", now=T0)
    g = switches.set_gate(home, "REAL_ENABLED", "go", operator="alice", now=T0 + _minutes(1))
    assert g.window_id == view["id"] and g.by == "alice"
    assert switches.effective_gate(home, now=T0 + _minutes(29)) == "REAL_ENABLED"
    assert window.status(home, now=T0 + _minutes(29))["ttl_left_s"] == 60
    # the minutes are over: no clean-up needed, every reader sees DRY_RUN
    assert switches.effective_gate(home, now=T0 + _minutes(30)) == "DRY_RUN"
    assert switches.gate_state(home).mode == "REAL_ENABLED"
    assert window.status(home, now=T0 + _minutes(30))["state"] == window.EXPIRED
    assert switches.gate(home) == "DRY_RUN"  # the real clock is days before the window
    gate_set = [e for e in events.read(home) if e["event"] == "gate_set"][-1]
    assert (gate_set["operator"], gate_set["window_id"]) == ("alice", view["id"])


def test_hand_edited_state_never_reads_real(home: Home, ops: dict) -> None:
    (home.state / switches.GATE_FILE).write_text('{"mode": "REAL_ENABLED"}')
    assert switches.effective_gate(home, now=T0) == "MOCK_ONLY" and not switches.gate_state(home).readable
    (home.state / switches.GATE_FILE).write_text('{"mode": "REAL_ENABLED", "window_id": "W-made-up"}')
    assert switches.effective_gate(home, now=T0) == "DRY_RUN"
    # a window file claiming a one-person approval is not ACTIVE: the state is derived, not read
    view = _request(home)
    (home.state / switches.GATE_FILE).write_text(json.dumps({"mode": "REAL_ENABLED", "window_id": view["id"]}))
    data = json.loads((home.state / "approvals.json").read_text())
    rec = data["approvals"][view["approval"]["id"]]
    rec["keys"] = {"1": {"operator": "alice", "at": T0.isoformat()}, "2": {"operator": "alice", "at": T0.isoformat()}}
    rec["used_at"] = T0.isoformat()
    (home.state / "approvals.json").write_text(json.dumps(data))
    assert window.status(home, now=T0)["state"] != window.ACTIVE
    assert switches.effective_gate(home, now=T0) == "DRY_RUN"
    # ... nor with a made-up operator as the second key
    rec["keys"]["2"]["operator"] = "mallory"
    (home.state / "approvals.json").write_text(json.dumps(data))
    assert window.status(home, now=T0)["note"] == "approver removed: mallory"
    assert switches.effective_gate(home, now=T0) == "DRY_RUN"
    # a damaged window file: refused with STATE_UNREADABLE, and the gate reads DRY_RUN
    (home.state / "windows.json").write_text("{garbage")
    _refused("STATE_UNREADABLE", window.status, home, now=T0)
    assert switches.effective_gate(home, now=T0) == "DRY_RUN"


def test_removing_an_approver_ends_the_window(home: Home, ops: dict) -> None:
    _activate(home)
    assert window.active(home, now=T0) is not None
    operators.remove(home, "bob")
    assert window.active(home, now=T0) is None and "bob" in window.status(home, now=T0)["note"]


def test_executions_allowlist_and_consumption(home: Home, ops: dict) -> None:
    _refused("WINDOW_NOT_ACTIVE", window.use_execution, home, "live_fire", "alice", now=T0)
    _activate(home)
    _refused("ALLOWLIST_VIOLATION", window.use_execution, home, "place_order", "alice", now=T0)
    view = window.use_execution(home, "alert_push", "alice", now=T0 + _minutes(1))
    assert (view["state"], view["executions_used"], view["executions_left"]) == (window.CONSUMED, 1, 0)
    _refused("WINDOW_NOT_ACTIVE", window.use_execution, home, "live_fire", "alice", now=T0 + _minutes(2))
    codes = [e["code"] for e in events.read(home) if e["event"] == "execution_refused"]
    assert codes == ["WINDOW_NOT_ACTIVE", "ALLOWLIST_VIOLATION", "WINDOW_NOT_ACTIVE"]


def test_window_limits(home: Home, ops: dict) -> None:
    _refused("WINDOW_TOO_LONG", window.request, home, 121, "x", "alice", now=T0)
    _refused("BAD_MINUTES", window.request, home, 0, "x", "alice", now=T0)
    _refused("REASON_REQUIRED", window.request, home, 10, "  ", "alice", now=T0)
    _activate(home)
    second = _request(home, now=T0 + _minutes(1))["approval"]["id"]
    window.approve(home, second, 1, "bob", now=T0 + _minutes(1))
    _refused("WINDOW_ALREADY_ACTIVE", window.approve, home, second, 2, "alice", now=T0 + _minutes(2))
    # once the first one is over, the second may open
    assert window.approve(home, second, 2, "alice", now=T0 + _minutes(31))["state"] == window.ACTIVE


def test_allowlist_and_real_path_settings_are_validated(home: Home) -> None:
    (home.configs / "execution_allowlist.yaml").write_text("allowed: [live_fire, Place-Order]\n")
    with pytest.raises(config.ConfigError, match=r"execution_allowlist.yaml: allowed: expected a list of distinct"):
        window.allowed_actions(home)
    (home.configs / "execution_allowlist.yaml").write_text("allowed: [live_fire]\nextra: 1\n")
    with pytest.raises(config.ConfigError, match="extra: expected a known key"):
        window.allowed_actions(home)
    with pytest.raises(config.ConfigError, match="window_max_minutes: expected a number between 1 and 120"):
        config.load("app", home, env={"KRX__APP__REAL_PATH__WINDOW_MAX_MINUTES": "600"})
    with pytest.raises(config.ConfigError, match="live_fire.end: expected a time HH:MM"):
        config.load("app", home, env={"KRX__APP__LIVE_FIRE__END": "6pm"})


def test_cli_status_commands_print_json(home: Home, ops: dict) -> None:
    assert krx("ops", "window", "status", home=home).stdout.strip() == "no window yet"
    view = _request(home)
    w = krx("ops", "window", "status", home=home)
    a = krx("ops", "approval", "status", home=home)
    assert w.returncode == a.returncode == 0
    assert json.loads(w.stdout)["id"] == view["id"] and json.loads(a.stdout)["id"] == view["approval"]["id"]
    r = krx("ops", "approve", view["approval"]["id"], "--key", "1", home=home, env={"KRX_OPERATOR_TOKEN": ops["bob"]})
    assert r.returncode == 0 and "key 1 by bob" in r.stdout
    keys = json.loads(krx("ops", "approval", "status", home=home).stdout)["keys"]
    assert keys["1"]["operator"] == "bob" and keys["2"] is None
    r = krx("ops", "approve", view["approval"]["id"], "--key", "2", home=home, env={"KRX_OPERATOR_TOKEN": ops["bob"]})
    assert r.returncode == 2 and "SAME_OPERATOR" in r.stdout
    assert krx("ops", "window", "status", "W-nope", home=home).returncode == 2


def test_switch_changes_name_the_operator(home: Home, ops: dict) -> None:
    assert krx("ops", "estop", "on", "--reason", "drill", home=home,
               env={"KRX_OPERATOR_TOKEN": ops["alice"]}).returncode == 0
    assert krx("ops", "estop", "off", "--reason", "drill over", home=home).returncode == 0
    bad = krx("ops", "sender", "on", "--reason", "x", home=home, env={"KRX_OPERATOR_TOKEN": "wrong"})
    assert bad.returncode == 2 and "UNKNOWN_OPERATOR" in bad.stdout and not switches.sender(home).on
    on, off = [e for e in events.read(home) if e["event"].startswith("emergency_stop_")]
    assert (on["operator"], off["operator"]) == ("alice", None) and "@" in off["by"]
    assert switches.emergency_stop(home).by != "alice"  # the last change was made without a token
    for bad_file in (home.root, home.root / "missing.token"):
        r = krx("ops", "window", "request", "--minutes", "5", "--reason", "x", "--token-file", str(bad_file),
                home=home)
        assert r.returncode == 2 and "TOKEN_FILE_INVALID" in r.stdout

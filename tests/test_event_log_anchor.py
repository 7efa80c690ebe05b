"""Finding 8: the event log's tail is anchored by a key outside the log's folder. Each tampering an attacker with
write access to state/ (but not to the key) can do, against the real log and the real `krx ops verify-log`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from conftest import krx

from common import anchor, events
from common.home import Home
from nas import summary


def _log(home: Home) -> Path:
    return events.log_path(home)


def _records(home: Home) -> list[dict]:
    return [json.loads(ln) for ln in _log(home).read_text(encoding="utf-8").splitlines() if ln.strip()]


def _rewrite(home: Home, records: list[dict], *, sign_with: bytes | None = None) -> None:
    """What a forger without the key does: recompute the sha256 chain (signed with a key of his own, or not at
    all) and the head from scratch."""
    prev = events.GENESIS
    lines = []
    for n, rec in enumerate(records, start=1):
        rec = {**rec, "seq": n, "prev_hash": prev}
        rec.pop("mac", None)
        rec.pop("hash", None)
        if sign_with:
            rec["mac"] = anchor.mac(sign_with, rec)
        rec["hash"] = events.line_hash(rec)
        prev = rec["hash"]
        lines.append(events.canonical(rec) + b"\n")
    _log(home).write_bytes(b"".join(lines))
    head = {"seq": len(records), "hash": prev}
    if sign_with:
        head = anchor.checkpoint(sign_with, home, len(records), prev)
    (home.state / events.HEAD_NAME).write_text(json.dumps(head))


def _fill(home: Home, n: int = 5) -> None:
    events.append(home, "emergency_stop_on", switch="emergency_stop", on=True, reason="incident")
    for i in range(n - 1):
        events.append(home, "x", i=i)


def _verify_cli(home: Home) -> tuple[int, str]:
    proc = krx("ops", "verify-log", home=home, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_intact_log_names_its_anchor_and_trailing_blank_lines_are_fine(home: Home) -> None:
    _fill(home)
    with open(_log(home), "ab") as fh:
        fh.write(b"\n\n")
    rc, out = _verify_cli(home)
    assert rc == 0, out
    assert "event log intact: 5 events; anchor: " in out and "(seq 5, signed" in out


def test_appended_forged_line_is_detected(home: Home) -> None:
    _fill(home)
    recs = _records(home)
    forged = {**recs[-1], "event": "emergency_stop_off", "on": False, "seq": 6, "prev_hash": recs[-1]["hash"]}
    forged.pop("mac")
    forged["hash"] = events.line_hash(forged)
    with open(_log(home), "ab") as fh:
        fh.write(events.canonical(forged) + b"\n")
    (home.state / events.HEAD_NAME).write_text(json.dumps({"seq": 6, "hash": forged["hash"]}))
    rc, out = _verify_cli(home)
    assert rc == 1 and "line 6: " in out, out


def test_dropped_tail_with_a_rewritten_or_replayed_head_is_detected(home: Home) -> None:
    _fill(home)
    old_head = (home.state / events.HEAD_NAME).read_bytes()  # a genuine, signed, older checkpoint
    events.append(home, "emergency_stop_on", reason="second incident")
    events.append(home, "y")
    raw = _log(home).read_bytes().splitlines(keepends=True)
    _log(home).write_bytes(b"".join(raw[:5]))
    (home.state / events.HEAD_NAME).write_bytes(old_head)  # replayed: its signature is genuine
    ok, line, message = events.verify(home)
    assert not ok and line == 6 and "records 7 events but the log has 5" in message
    recs = _records(home)
    (home.state / events.HEAD_NAME).write_text(json.dumps({"seq": 5, "hash": recs[-1]["hash"]}))  # rewritten
    assert not events.verify(home)[0]


def test_deleting_the_log_and_its_head_is_detected(home: Home) -> None:
    _fill(home)
    _log(home).unlink()
    (home.state / events.HEAD_NAME).unlink()
    rc, out = _verify_cli(home)
    assert rc == 1 and "records 5 events but the log has 0" in out, out


def test_the_whole_chain_rewritten_without_the_key_is_detected(home: Home) -> None:
    _fill(home)
    recs = _records(home)
    recs[0]["reason"] = "nothing happened"
    _rewrite(home, recs)
    ok, line, message = events.verify(home)  # unsigned now: the checkpoint beside the key gives it away
    assert (ok, line) == (False, 5) and "does not match the hash recorded by checkpoint" in message
    _rewrite(home, recs, sign_with=b"a key of his own")
    ok, line, message = events.verify(home)
    assert (ok, line) == (False, 1) and "signature does not match" in message


def test_the_key_is_created_once_with_mode_0600_outside_the_home(home: Home) -> None:
    _fill(home, 1)
    key = anchor.key_file()
    assert key.exists() and not key.is_relative_to(home.root)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert anchor.external_path(home).exists()


def test_tampering_makes_the_summary_blocked_and_reanchor_recovers(home: Home) -> None:
    _fill(home)
    raw = _log(home).read_bytes().splitlines(keepends=True)
    _log(home).write_bytes(b"".join(raw[:3]))
    data = summary.build(home)
    assert data["overall_status"] == "BLOCKED"
    assert data["top_risks"][0]["code"] == "EVENT_LOG_TAMPERED" and data["top_risks"][0]["severity"] == "CRITICAL"
    proc = krx("ops", "verify-log", "--reanchor", "--reason", "looked into it: test", home=home, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = list(home.state.glob("events.*.tampered.jsonl"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"".join(raw[:3])
    first = _records(home)[0]
    assert first["event"] == "event_log_reanchored" and "records 5 events" in first["previous_verify"]
    assert events.verify(home)[0]


def test_the_daily_export_and_the_summary_hook(home: Home) -> None:
    _fill(home)
    events.export_checkpoint(home)
    exported = json.loads(anchor.export_path(home).read_text(encoding="utf-8"))
    key, _ = anchor.load_key(create=False)
    assert exported["seq"] == 5 and anchor.signed(key, exported)
    assert anchor.checkpoint_line(home).startswith("event log checkpoint: seq 5 hash ")
    assert events.verify(home)[0]

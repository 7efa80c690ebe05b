"""The weekly live fire (DESIGN section 10): prove the real sender works, once, then lock everything down.

`run` checks every precondition and names each failing one by code; when all hold it counts one real execution
against the ACTIVE window, records the lockdown in state/live_fire.json *before* anything leaves, delivers the
outbox's undelivered messages once through the real Slack sender (common.slack), and locks down: sender off,
window consumed, gate DRY_RUN. A send that fails still locks down (FAILED, exit 3). A process killed in between
leaves the journal at LOCKDOWN_PENDING, and `recover` (called first by every `krx ops` command) completes it.

Each outbox file gets a SENDING mark before its post: a kill mid-post leaves the mark, so the message counts as
possibly sent and is never posted twice. Receipts: reports/ops/push/live_fire/live_fire_latest.json and
snapshots/live_fire_<run_id>.json. Events carry the operator and the correlation id `live_fire-<run_id>`.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import atomic, config, events, formats, slack, statefile, switches, window
from common.errors import FAILED, REFUSED, OpsError
from common.home import Home
from common.log import TZ
from common.log import now as clock_now
from common.redact import redact
from nas import alert, selftest

SCHEMA = formats.LIVE_FIRE_RECEIPT
JOURNAL = "live_fire.json"
JOURNAL_SCHEMA = formats.LIVE_FIRE_JOURNAL
LOCK = "live_fire"
ACTION = "live_fire"
COMPLETED, BLOCKED = "COMPLETED", "BLOCKED"
EXIT = {COMPLETED: 0, BLOCKED: REFUSED, "FAILED": FAILED}
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
OUTBOX_RE = re.compile(r"^\d{8}\.json$")

# What each refusal means for a person, and how to clear it (docs/ops.md has the same table).
REMEDY = {
    "STATE_UNREADABLE": "a file under state/ is damaged: `krx ops status` names it; restore it or remove it",
    "GATE_NOT_REAL_ENABLED": "`krx ops gate REAL_ENABLED --reason ...` (only while a window is ACTIVE)",
    "SELF_TEST_FAIL": "set SLACK_BOT_TOKEN (or SLACK_WEBHOOK_URL) in the environment or .env; `krx ops self-test`",
    "EMERGENCY_STOP_ON": "find out why it was pulled, then `krx ops estop off --reason ...`",
    "OUTBOX_EMPTY": "nothing to deliver: run `krx alert` under CONSOLE_ONLY so the outbox holds an undelivered day",
    "SENDER_OFF": "`krx ops sender on --reason ... --channel SLACK`",
    "WINDOW_NOT_ACTIVE": "`krx ops window request --minutes M --reason ...`, then two operators "
                         "`krx ops approve ID --key 1` and `--key 2`",
    "NOT_A_WEEKDAY": "a live fire runs Monday to Friday (Asia/Seoul)",
    "OUTSIDE_HOURS": "a live fire runs within app.yaml live_fire.start-end (Asia/Seoul)",
    "ALLOWLIST_VIOLATION": "add live_fire to configs/execution_allowlist.yaml",
    "SEND_FAILED": "check Slack (token, channel, status) and the error; deliver next week in a new window",
    "LOCKDOWN_INCOMPLETE": "run any `krx ops` command to complete the lockdown; check `krx ops status`",
}
# The receipt's `reason` for a blocked run: the most basic failing rule wins (runbook vocabulary).
_REASON_ORDER = ("STATE_UNREADABLE", "EMERGENCY_STOP_ON", "ALLOWLIST_VIOLATION", "WINDOW_NOT_ACTIVE")
_REASON_NAME = {"EMERGENCY_STOP_ON": "STOPPED"}


def receipts_dir(home: Home) -> Path:
    return home.reports / "ops" / "push" / "live_fire"


def latest_path(home: Home) -> Path:
    return receipts_dir(home) / "live_fire_latest.json"


def _journal_path(home: Home) -> Path:
    return home.state / JOURNAL


# --- preconditions -------------------------------------------------------------------------------------------


def undelivered(home: Home) -> list[Path]:
    """Outbox days with payloads and no send of any kind (a damaged outbox may hide a send: it never counts)."""
    folder = home.reports / "outbox"
    found = sorted(p for p in folder.glob("*.json") if OUTBOX_RE.match(p.name)) if folder.is_dir() else []
    out = []
    for path in found:
        box = alert.read_outbox(path)
        if box and box.get("schema") == alert.OUTBOX_SCHEMA and not box.get("sends") and isinstance(
                box.get("payloads"), list) and box["payloads"]:
            out.append(path)
    return out


def _hours(home: Home) -> tuple[dt.time, dt.time, str]:
    cfg = config.load("app", home)["live_fire"]
    return (dt.datetime.strptime(cfg["start"], "%H:%M").time(), dt.datetime.strptime(cfg["end"], "%H:%M").time(),
            cfg["weekday"])


def preconditions(home: Home, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Every precondition as {check, ok, code (when failing), observed}, in the runbook's order."""
    now = (now or clock_now()).astimezone(TZ)
    checks: list[dict[str, Any]] = []

    def add(check: str, ok: bool, code: str, observed: str) -> None:
        checks.append({"check": check, "ok": bool(ok), "code": None if ok else code, "observed": observed})

    g = switches.gate_state(home)
    eff = switches.effective_gate(home, now=now)
    add("gate_real_enabled", eff == switches.REAL_ENABLED, "GATE_NOT_REAL_ENABLED" if g.readable
        else "STATE_UNREADABLE", f"effective {eff} (stored {g.mode})" if g.readable else f"unreadable: {g.error}")
    try:
        missing = [r.channel for r in selftest.missing(selftest.home_requirements(home))]
    except config.ConfigError as exc:
        missing = [f"config error: {exc}"]
    if not slack.configured():
        missing.append(f"live fire: {slack.TOKEN_ENV} or {slack.WEBHOOK_ENV}")
    add("self_test_pass", not missing, "SELF_TEST_FAIL",
        "SELF_TEST_PASS" if not missing else "SELF_TEST_FAIL: " + ", ".join(missing))
    stop = switches.emergency_stop(home)
    add("emergency_stop_off", stop.readable and not stop.on, "EMERGENCY_STOP_ON" if stop.readable
        else "STATE_UNREADABLE", ("ON" if stop.on else "OFF") if stop.readable else f"unreadable: {stop.error}")
    boxes = undelivered(home)
    add("outbox_undelivered", bool(boxes), "OUTBOX_EMPTY",
        f"{len(boxes)} undelivered: {', '.join(p.name for p in boxes)}" if boxes else "no undelivered message")
    snd = switches.sender(home)
    add("sender_on", snd.readable and snd.on and snd.channel == "SLACK", "SENDER_OFF" if snd.readable
        else "STATE_UNREADABLE", (f"{'ON' if snd.on else 'OFF'} channel {snd.channel or '-'}") if snd.readable
        else f"unreadable: {snd.error}")
    try:  # the ACTIVE window, else the newest one to say what it is instead
        view = window.active(home, now=now) or window.status(home, now=now)
        w_code = "WINDOW_NOT_ACTIVE"
        w_seen = (f"{view['id']} {view['state']}, {view['ttl_left_s']}s and {view['executions_left']} execution(s) "
                  f"left" if view["state"] == window.ACTIVE else f"{view['id']} {view['state']} {view['note']}"
                  ).strip() if view else "no window"
    except OpsError as exc:
        view, w_code, w_seen = None, exc.code, exc.message
    add("window_active", bool(view and view["state"] == window.ACTIVE), w_code, w_seen)
    start, end, _ = _hours(home)
    add("weekday", now.weekday() < 5, "NOT_A_WEEKDAY", f"{DAYS[now.weekday()]} {now:%Y-%m-%d}")
    add("business_hours", start <= now.time() < end, "OUTSIDE_HOURS",
        f"{now:%H:%M} Asia/Seoul (allowed {start:%H:%M}-{end:%H:%M})")
    try:
        allowed = ACTION in window.allowed_actions(home)
        seen = "live_fire allowed" if allowed else "live_fire is not in configs/execution_allowlist.yaml"
    except config.ConfigError as exc:
        allowed, seen = False, str(exc)
    add("allowlist", allowed, "ALLOWLIST_VIOLATION", seen)
    return checks


def blocked_reason(codes: list[str]) -> str:
    for code in _REASON_ORDER:
        if code in codes:
            return _REASON_NAME.get(code, code)
    return "PREFLIGHT_FAIL"


# --- receipts and the journal --------------------------------------------------------------------------------


def _write_receipt(home: Home, receipt: dict) -> None:
    snap = receipts_dir(home) / "snapshots" / f"live_fire_{receipt['run_id']}.json"
    receipt["snapshot"] = str(snap.relative_to(home.root))
    atomic.write_json(snap, receipt)
    atomic.write_json(latest_path(home), receipt)


def _run_id(home: Home, now: dt.datetime) -> str:
    base = f"{now:%Y%m%d-%H%M%S}"
    run_id, n = base, 2
    while (receipts_dir(home) / "snapshots" / f"live_fire_{run_id}.json").exists():
        run_id, n = f"{base}_{n}", n + 1
    return run_id


def latest(home: Home) -> dict | None:
    """The newest receipt, None when no live fire ran; raises OpsError STATE_UNREADABLE when it is damaged."""
    return statefile.load(latest_path(home), SCHEMA)


# --- delivery and lockdown -----------------------------------------------------------------------------------


def _deliver(home: Home, boxes: list[Path], run_id: str, cid: str, operator: str | None) -> tuple[list[dict], str]:
    """Post each undelivered outbox day once; returns (deliveries, error or "")."""
    channel = config.load("notify", home)["slack"]["channel"]
    sender = slack.sender(channel)
    if sender is None:
        return [], f"no Slack credentials ({slack.TOKEN_ENV} or {slack.WEBHOOK_ENV})"
    out: list[dict] = []
    for path in boxes:
        box = alert.read_outbox(path) or {}
        messages = [slack.Message(str(p.get("text") or " "), list(p.get("blocks") or [])) for p in box["payloads"]]
        mark = {"live_fire": run_id, "state": "SENDING", "sent_at": "unknown", "channel": channel, "via": sender.via}
        atomic.write_json(path, {**box, "sent": True, "sends": [mark]})  # a kill from here on: possibly sent
        item = {"outbox": path.name, "date": box.get("date"), "parts": len(messages)}
        events.append(home, "live_fire_sending", correlation_id=cid, operator=operator, outbox=path.name,
                      parts=len(messages))
        try:
            receipt = sender.send(messages)
        except slack.SlackSendError as exc:
            item.update(status="PARTIAL" if exc.sent_ts else "FAILED", message_ids=exc.sent_ts, error=str(exc))
            if exc.sent_ts:  # what went out stays recorded so it is never posted again
                atomic.write_json(path, {**box, "sent": True, "sends": [{**mark, "state": "PARTIAL",
                                                                        "ts": exc.sent_ts}]})
            else:  # nothing left the machine: the day is still undelivered
                atomic.write_json(path, box)
            events.append(home, "live_fire_send_failed", correlation_id=cid, operator=operator, outbox=path.name,
                          error=str(exc), status=exc.status, parts_sent=len(exc.sent_ts))
            out.append(item)
            return out, str(exc)
        sent = {**receipt.to_dict(), "live_fire": run_id, "state": "SENT"}
        atomic.write_json(path, {**box, "sent": True, "reason": f"delivered by live fire {run_id}", "sends": [sent]})
        item.update(status="SENT", message_ids=receipt.ts, via=receipt.via, channel=receipt.channel,
                    sent_at=receipt.sent_at)
        events.append(home, "live_fire_sent", correlation_id=cid, operator=operator, outbox=path.name,
                      message_ts=receipt.ts, channel=receipt.channel, via=receipt.via)
        out.append(item)
    return out, ""


def _gate_down(home: Home, reason: str, operator: str | None) -> None:
    """The gate back to DRY_RUN, unless someone closed it further to MOCK_ONLY meanwhile."""
    g = switches.gate_state(home)
    if not (g.readable and g.mode == switches.MOCK_ONLY):
        switches.set_gate(home, switches.DRY_RUN, reason, operator=operator)


def _lockdown(home: Home, journal: dict, operator: str | None, by: str) -> dict[str, Any]:
    """Sender off, window consumed, gate DRY_RUN: each step tried even when another fails; idempotent."""
    cid, reason = f"live_fire-{journal.get('run_id')}", f"live fire {journal.get('run_id')} lockdown"
    steps: dict[str, str] = {}
    for name, step in (
            ("sender_off", lambda: switches.set_sender(home, False, reason, operator=operator)),
            ("window_consumed", lambda: window.consume(home, journal.get("window_id"), reason, operator)),
            ("gate_dry_run", lambda: _gate_down(home, reason, operator))):
        try:
            step()
            steps[name] = "DONE"
        except Exception as exc:  # one broken step must not stop the others
            steps[name] = f"FAILED: {type(exc).__name__}: {exc}"
    done = all(v == "DONE" for v in steps.values())
    at = clock_now().isoformat(timespec="seconds")
    if done:
        statefile.save(_journal_path(home), {**journal, "phase": "DONE", "done_at": at, "done_by": by})
    events.append(home, "live_fire_lockdown_done" if done else "live_fire_lockdown_incomplete", correlation_id=cid,
                  operator=operator, steps=steps, completed_by=by)
    return {"state": "DONE" if done else "PENDING", "steps": steps, "completed_at": at if done else None,
            "completed_by": by}


def _recover_locked(home: Home) -> dict | None:
    try:
        journal = statefile.load(_journal_path(home), JOURNAL_SCHEMA)
    except OpsError:  # the record is damaged: lock down what is there (the ACTIVE window, if any)
        journal = {"schema": JOURNAL_SCHEMA, "run_id": "unknown", "phase": "LOCKDOWN_PENDING", "window_id": None}
    if not journal or journal.get("phase") != "LOCKDOWN_PENDING":
        return None
    lock = _lockdown(home, journal, journal.get("operator"), "recovery")
    try:
        receipt = statefile.load(home.root / journal.get("snapshot", "-"), SCHEMA) if journal.get("snapshot") else None
    except OpsError:
        receipt = None
    if receipt is not None:
        receipt["lockdown"] = lock
        if receipt["result"] == "RUNNING":  # killed before it finished: whatever was SENDING may have gone out
            receipt.update(result="FAILED", reason="INTERRUPTED", exit_code=FAILED,
                           finished_at=clock_now().isoformat(timespec="seconds"))
            receipt["errors"].append("the process stopped before the live fire finished; lockdown completed at the "
                                     "next start")
        _write_receipt(home, receipt)
    return {"run_id": journal.get("run_id"), **lock}


def recover(home: Home) -> dict | None:
    """Complete a recorded lockdown left by a killed live fire; None when there is none (or a live fire is running
    right now and holds the lock). Called first by every `krx ops` command."""
    if not _journal_path(home).exists() and not _journal_path(home).is_symlink():
        return None
    with statefile.locked(home, LOCK, wait=False) as got:
        return _recover_locked(home) if got else None


# --- the run -------------------------------------------------------------------------------------------------


def run(home: Home, *, operator: str | None, now: dt.datetime | None = None, trigger: str = "cli") -> dict:
    """One live fire; returns its receipt (`result` COMPLETED / BLOCKED / FAILED, `exit_code` 0 / 2 / 3).
    Raises OpsError LIVE_FIRE_RUNNING when another one holds the lock."""
    now = (now or clock_now()).astimezone(TZ)
    t0 = time.monotonic()
    with statefile.locked(home, LOCK, wait=False) as got:
        if not got:
            raise OpsError("LIVE_FIRE_RUNNING", "another live fire is running right now")
        _recover_locked(home)  # a previous fire's lockdown comes first
        run_id = _run_id(home, now)
        cid = f"live_fire-{run_id}"
        receipt: dict[str, Any] = {
            "schema": SCHEMA, "run_id": run_id, "trigger": trigger, "operator": operator,
            "started_at": now.isoformat(timespec="seconds"), "finished_at": None, "result": "RUNNING",
            "reason": "", "exit_code": None, "preconditions": [], "failing": [], "window_id": None,
            "deliveries": [], "lockdown": {"state": "NOT_NEEDED", "steps": {}}, "errors": [], "timings_ms": {},
        }

        def finish(result: str, reason: str) -> dict:
            receipt.update(result=result, reason=reason, exit_code=EXIT[result],
                           finished_at=clock_now().isoformat(timespec="seconds"))
            receipt["timings_ms"]["total"] = int((time.monotonic() - t0) * 1000)
            _write_receipt(home, receipt)
            events.append(home, "live_fire_end", correlation_id=cid, operator=operator, result=result,
                          reason=reason, snapshot=receipt["snapshot"])
            return receipt

        events.append(home, "live_fire_start", correlation_id=cid, operator=operator, trigger=trigger)
        checks = preconditions(home, now=now)
        receipt["preconditions"] = checks
        receipt["failing"] = [c["code"] for c in checks if not c["ok"]]
        receipt["timings_ms"]["preconditions"] = int((time.monotonic() - t0) * 1000)
        events.append(home, "live_fire_preconditions", correlation_id=cid, operator=operator,
                      failing=receipt["failing"])
        if receipt["failing"]:
            return finish(BLOCKED, blocked_reason(receipt["failing"]))
        try:
            view = window.use_execution(home, ACTION, operator, now=now)
        except OpsError as exc:  # the window ended or the allowlist changed between the check and now
            receipt["failing"] = [exc.code]
            return finish(BLOCKED, blocked_reason([exc.code]))
        receipt["window_id"] = view["id"]
        journal = {"schema": JOURNAL_SCHEMA, "run_id": run_id, "phase": "LOCKDOWN_PENDING", "window_id": view["id"],
                   "operator": operator, "recorded_at": clock_now().isoformat(timespec="seconds"),
                   "snapshot": str((receipts_dir(home) / "snapshots" / f"live_fire_{run_id}.json")
                                   .relative_to(home.root))}
        statefile.save(_journal_path(home), journal)
        events.append(home, "live_fire_lockdown_recorded", correlation_id=cid, operator=operator,
                      window_id=view["id"])
        receipt["lockdown"] = {"state": "PENDING", "steps": {}}
        _write_receipt(home, receipt)  # a kill from here on is completed by recover() from this receipt
        t1 = time.monotonic()
        try:
            receipt["deliveries"], error = _deliver(home, undelivered(home), run_id, cid, operator)
        except Exception as exc:  # whatever broke, the lockdown below still happens
            error = f"{type(exc).__name__}: {redact(exc)}"
        receipt["timings_ms"]["send"] = int((time.monotonic() - t1) * 1000)
        t2 = time.monotonic()
        receipt["lockdown"] = _lockdown(home, journal, operator, "run")
        receipt["timings_ms"]["lockdown"] = int((time.monotonic() - t2) * 1000)
        if error:
            receipt["errors"].append(f"SEND_FAILED: {error}")
        if receipt["lockdown"]["state"] != "DONE":
            receipt["errors"].append("LOCKDOWN_INCOMPLETE: " + ", ".join(
                f"{k} {v}" for k, v in receipt["lockdown"]["steps"].items() if v != "DONE"))
        if receipt["errors"]:
            return finish("FAILED", receipt["errors"][0].split(":", 1)[0])
        return finish(COMPLETED, "OK")


def cycle_step(home: Home, cycle_result: str, *, now: dt.datetime | None = None,
               env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The daily cycle's live_fire_step: on app.yaml live_fire.weekday, when the cycle went well and every
    precondition holds, run the live fire on behalf of the window's approvers; otherwise say why not."""
    now = (now or clock_now()).astimezone(TZ)
    weekday = config.load("app", home, env=env)["live_fire"]["weekday"]
    today = DAYS[now.weekday()]
    if cycle_result not in (COMPLETED, "WARN"):
        return {"ran": False, "reason": f"CYCLE_{cycle_result}"}
    if today != weekday:
        return {"ran": False, "reason": f"NOT_LIVE_FIRE_DAY: {today}, the live fire runs on {weekday}"}
    failing = [c["code"] for c in preconditions(home, now=now) if not c["ok"]]
    if failing:
        return {"ran": False, "reason": blocked_reason(failing), "failing": failing}
    receipt = run(home, operator=None, now=now, trigger="cycle")
    events.append(home, "ops_live_fire", correlation_id=f"live_fire-{receipt['run_id']}", result=receipt["result"],
                  reason=receipt["reason"])
    return {"ran": True, "result": receipt["result"], "reason": receipt["reason"], "failing": receipt["failing"],
            "receipt": receipt["snapshot"]}

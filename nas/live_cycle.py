"""The live cycle: the day's scan and alert push, now (`krx ops live-cycle`, `POST /api/live/cycle/run?confirm=true`).

Between two daily cycles a person may want the day's decision and its alert at once (after a late ingest, after the
emergency stop was lifted): this runs the two steps of the daily cycle that produce them, `krx scan` (with
`--apply` when app.yaml ops.apply_scan says so, as the cycle does) and `krx alert`, as child processes
(nas.cycle.run_step), under the daily cycle's lock so the two never run at once. The alert step sends only what
`switches.external_send_allowed` and the outbox's once-a-day rule allow, exactly as in the cycle.

Every run writes a receipt (schema live_cycle_receipt/1) to reports/ops/live/live_cycle_latest.json and
reports/ops/live/snapshots/live_cycle_<run_id>.json:

  result        COMPLETED | BLOCKED (the emergency stop, or a step blocked) | FAILED (a step failed)
  decision      {asof, correlation_id, next_trading_day, regime, rebalance_day, states: {state: count},
                signals_ref} of the scan
  snapshot_ref  the receipt's snapshot (home-relative)
  push          {delivery_actual: SENT | NOT_SENT | CONSOLE_ONLY | FAILED, reason, policy, outbox_ref}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import atomic, config, events, locks, log, safeio, statefile, switches
from common.errors import OpsError
from common.home import Home
from nas import cycle

SCHEMA = "live_cycle_receipt/1"


def live_dir(home: Home) -> Path:
    return home.reports / "ops" / "live"


def latest_path(home: Home) -> Path:
    return live_dir(home) / "live_cycle_latest.json"


def latest(home: Home) -> dict | None:
    """The newest receipt, None when no live cycle ran; raises OpsError STATE_UNREADABLE when it is damaged."""
    return statefile.load(latest_path(home), SCHEMA)


def _decision(home: Home) -> dict[str, Any] | None:
    from nas import alert

    try:
        path = alert.find_scan(home)
        scan = alert.load_scan(path)
    except alert.ScanFileError:
        return None
    states: dict[str, int] = {}
    for row in scan["rows"]:
        states[row["state"]] = states.get(row["state"], 0) + 1
    return {"asof": scan["asof"], "correlation_id": scan.get("correlation_id"),
            "next_trading_day": scan.get("next_trading_day"), "regime": scan.get("regime"),
            "rebalance_day": scan.get("rebalance_day"), "states": states,
            "signals_ref": str(path.relative_to(home.root))}


def _push(home: Home, decision: dict | None, alert_step: cycle.Step | None) -> dict[str, Any]:
    from nas import alert

    if alert_step is None or decision is None:
        return {"delivery_actual": "NOT_SENT", "reason": "the alert step did not run", "policy": None,
                "outbox_ref": None}
    box_path = alert.outbox_path(home, decision["asof"].replace("-", ""))  # named YYYYMMDD like the alert's day
    try:
        box = safeio.read_json(box_path)
    except (OSError, ValueError):
        box = {}
    box = box if isinstance(box, dict) else {}
    reason = str(box.get("reason") or alert_step.details)
    if alert_step.status == cycle.FAILED:
        actual = "FAILED"
    elif box.get("policy") not in (None, "SLACK"):
        actual = "CONSOLE_ONLY"
    else:
        actual = "SENT" if reason == "sent" else "NOT_SENT"
    return {"delivery_actual": actual, "reason": reason, "policy": box.get("policy"),
            "outbox_ref": str(box_path.relative_to(home.root)) if box else None}


def _write(home: Home, receipt: dict) -> None:
    snap = live_dir(home) / "snapshots" / f"live_cycle_{receipt['run_id']}.json"
    n = 2
    while snap.exists():  # two runs in one second keep both receipts
        snap = snap.with_name(f"live_cycle_{receipt['run_id']}_{n}.json")
        n += 1
    receipt["snapshot_ref"] = str(snap.relative_to(home.root))
    atomic.write_json(snap, receipt)
    atomic.write_json(latest_path(home), receipt)


def run(home: Home, *, command: Sequence[str], operator: str | None) -> dict:
    """Scan and alert now; returns the receipt (with `exit_code` 0 / 2 / 3). Raises OpsError CYCLE_RUNNING when
    the daily cycle (or another live cycle) is running: then nothing ran."""
    try:
        with locks.job_lock(home, "daily", wait_s=0):
            return _run(home, command, operator)
    except locks.LockBusy:
        raise OpsError("CYCLE_RUNNING", f"an ops cycle is running ({locks.job_lock_path(home, 'daily')}); the live "
                       "cycle did nothing") from None


def _run(home: Home, command: Sequence[str], operator: str | None) -> dict:
    started = log.now()
    run_id = f"{started:%Y%m%d-%H%M%S}"
    g = switches.gate_state(home)
    env = cycle.child_env(home, g.mode == switches.MOCK_ONLY)
    app = config.load("app", home, env=env)
    steps: list[cycle.Step] = []
    result, reason = cycle.COMPLETED, "OK"
    stop = switches.emergency_stop(home)
    events.append(home, "LIVE_CYCLE_START", operator=operator, run_id=run_id)
    if stop.on:
        what = f"on since {stop.at} by {stop.by}: {stop.reason}" if stop.readable else f"unreadable: {stop.error}"
        steps.append(cycle.Step("emergency_stop", cycle.BLOCKED, None, 0, what))
        result, reason = cycle.BLOCKED, "STOPPED" if stop.readable else "STATE_UNREADABLE"
    else:
        plan = [("scan", ["scan", *(["--apply"] if app["ops"]["apply_scan"] else [])]), ("alert", ["alert"])]
        for name, argv in plan:
            step = cycle.run_step(name, command, argv, env, home.root, float(app["ops"]["step_timeout_s"]))
            steps.append(step)
            if step.status in (cycle.FAILED, cycle.BLOCKED):
                result, reason = step.status, f"STEP_{step.status}:{name}"
                break
    alert_step = next((s for s in steps if s.name == "alert"), None)
    decision = _decision(home) if any(s.name == "scan" and s.status == cycle.OK for s in steps) else None
    receipt = {
        "schema": SCHEMA, "run_id": run_id, "operator": operator, "started_at": started.isoformat(timespec="seconds"),
        "finished_at": log.now().isoformat(timespec="seconds"), "result": result, "reason": reason,
        "exit_code": cycle.EXIT_OF[result], "gate": g.mode, "decision": decision,
        "push": _push(home, decision, alert_step), "steps": [asdict(s) for s in steps], "snapshot_ref": None,
    }
    _write(home, receipt)
    events.append(home, "LIVE_CYCLE_END", operator=operator, run_id=run_id, result=result, reason=reason,
                  delivery_actual=receipt["push"]["delivery_actual"], snapshot=receipt["snapshot_ref"],
                  correlation_id=decision["correlation_id"] if decision else None)
    return receipt

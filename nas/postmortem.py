"""`krx ops postmortem regenerate | latest`: what the last live fire did, for a person.

Built from the last live fire's receipt (reports/ops/push/live_fire/live_fire_latest.json) and the event log (the
run's own events, its window's request, keys and activation, and the lockdown's switch changes): a timeline with
operators, the preconditions observed, the deliveries with Slack's message ids, the lockdown, the errors and what
to do next. Written as reports/ops/push/postmortem/postmortem_latest.json and a readable .md beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import atomic, events, formats, statefile
from common.errors import REFUSED, OpsError
from common.home import Home
from common.log import now as clock_now
from nas import live_fire

SCHEMA = formats.LIVE_FIRE_POSTMORTEM
_SKIP = ("seq", "ts", "event", "by", "correlation_id", "prev_hash", "hash", "operator")


def postmortem_dir(home: Home) -> Path:
    return home.reports / "ops" / "push" / "postmortem"


def _timeline(home: Home, receipt: dict) -> list[dict[str, Any]]:
    run_id, wid = receipt["run_id"], receipt.get("window_id")
    cid, lockdown_reason = f"live_fire-{run_id}", f"live fire {run_id} lockdown"
    out = []
    for ev in events.read(home):
        if ev.get("correlation_id") == cid or (wid and ev.get("window_id") == wid) or ev.get(
                "reason") == lockdown_reason:
            out.append({"ts": ev.get("ts"), "event": ev.get("event"), "operator": ev.get("operator"),
                        "by": ev.get("by"), "details": {k: v for k, v in ev.items() if k not in _SKIP}})
    return out


def _next_steps(receipt: dict, log_ok: bool) -> list[str]:
    steps: list[str] = []
    if receipt["lockdown"].get("state") == "PENDING":
        steps.append(live_fire.REMEDY["LOCKDOWN_INCOMPLETE"])
    if receipt["result"] == live_fire.BLOCKED:
        steps += [f"{code}: {live_fire.REMEDY.get(code, 'see docs/ops.md')}" for code in receipt["failing"]]
    for err in receipt["errors"]:
        code = err.split(":", 1)[0]
        if code in live_fire.REMEDY:
            steps.append(f"{code}: {live_fire.REMEDY[code]}")
    if receipt.get("reason") == "INTERRUPTED":
        maybe = [d["outbox"] for d in receipt["deliveries"] if d.get("status") != "SENT"]
        steps.append("the process stopped mid-way: check #invest_ops for the day(s) that were being sent"
                     + (f" ({', '.join(maybe)})" if maybe else "") + "; they are marked possibly sent and are "
                     "never posted again")
    if not log_ok:
        steps.append("`krx ops verify-log` fails: find out who changed state/events.jsonl before trusting this")
    if receipt["result"] == live_fire.COMPLETED:
        sent = sum(len(d.get("message_ids") or []) for d in receipt["deliveries"])
        steps.append(f"nothing to fix: the real sender delivered {sent} message(s) and everything is locked down; "
                     "the next live fire is next week in a new window")
    return steps


def build(home: Home, receipt: dict) -> dict[str, Any]:
    log_ok, _line, log_msg = events.verify(home)
    return {
        "schema": SCHEMA, "generated_at": clock_now().isoformat(timespec="seconds"), "run_id": receipt["run_id"],
        "receipt": receipt.get("snapshot"), "result": receipt["result"], "reason": receipt["reason"],
        "operator": receipt.get("operator"), "trigger": receipt.get("trigger"), "window_id": receipt.get("window_id"),
        "started_at": receipt["started_at"], "finished_at": receipt.get("finished_at"),
        "timings_ms": receipt.get("timings_ms", {}), "preconditions": receipt["preconditions"],
        "deliveries": receipt["deliveries"], "lockdown": receipt["lockdown"],
        "errors": [*receipt["errors"], *(f"precondition {c}" for c in receipt["failing"])],
        "event_log": {"intact": log_ok, "message": log_msg}, "timeline": _timeline(home, receipt),
        "next_steps": _next_steps(receipt, log_ok),
    }


def render(pm: dict) -> str:
    lines = [f"# Live fire {pm['run_id']}: {pm['result']} ({pm['reason']})", "",
             f"- operator: {pm['operator'] or '-'} (trigger {pm['trigger']}), window {pm['window_id'] or '-'}",
             f"- started {pm['started_at']}, finished {pm['finished_at'] or '-'}; timings (ms) "
             + (", ".join(f"{k} {v}" for k, v in pm["timings_ms"].items()) or "-"),
             f"- receipt: {pm['receipt']}; event log: {pm['event_log']['message']}", "", "## Timeline", ""]
    for ev in pm["timeline"]:
        details = ", ".join(f"{k}={v}" for k, v in ev["details"].items() if v not in (None, "", [], {}))
        lines.append(f"- {ev['ts']} **{ev['event']}** by {ev['operator'] or ev['by']}" + (f": {details}"
                                                                                          if details else ""))
    lines += ["", "## Preconditions", "", "| check | ok | observed | code |", "|---|---|---|---|"]
    lines += [f"| {c['check']} | {'yes' if c['ok'] else 'NO'} | {c['observed']} | {c['code'] or ''} |"
              for c in pm["preconditions"]]
    lines += ["", "## Deliveries", ""]
    lines += [f"- {d['outbox']}: {d['status']}, message ids {', '.join(d.get('message_ids') or []) or '-'}"
              + (f", error: {d['error']}" if d.get("error") else "") for d in pm["deliveries"]] or ["- none"]
    lines += ["", "## Lockdown", "", f"- state: {pm['lockdown'].get('state')}"
              + (f", completed by {pm['lockdown'].get('completed_by')} at {pm['lockdown'].get('completed_at')}"
                 if pm["lockdown"].get("completed_at") else "")]
    lines += [f"- {k}: {v}" for k, v in pm["lockdown"].get("steps", {}).items()]
    lines += ["", "## Errors", ""] + ([f"- {e}" for e in pm["errors"]] or ["- none"])
    lines += ["", "## Next steps", ""] + [f"- {s}" for s in pm["next_steps"]]
    return "\n".join(lines) + "\n"


def regenerate(home: Home) -> tuple[dict[str, Any], Path]:
    """Write postmortem_latest.json and .md from the last live fire; returns (postmortem, path of the .md)."""
    receipt = live_fire.latest(home)
    if receipt is None:
        raise OpsError("NO_LIVE_FIRE", "no live fire has run yet (reports/ops/push/live_fire/ is empty)", REFUSED)
    pm = build(home, receipt)
    folder = postmortem_dir(home)
    atomic.write_json(folder / "postmortem_latest.json", pm)
    md = atomic.write_text(folder / "postmortem_latest.md", render(pm))
    events.append(home, "postmortem_written", correlation_id=f"live_fire-{pm['run_id']}", result=pm["result"])
    return pm, md


def latest(home: Home) -> tuple[dict[str, Any], str]:
    """The latest postmortem (JSON) and its Markdown; refuses NO_POSTMORTEM when none was written."""
    folder = postmortem_dir(home)
    pm = statefile.load(folder / "postmortem_latest.json", SCHEMA)
    if pm is None:
        raise OpsError("NO_POSTMORTEM", "no postmortem yet: run `krx ops postmortem regenerate`", REFUSED)
    try:
        text = (folder / "postmortem_latest.md").read_text(encoding="utf-8")
    except OSError:
        text = render(pm)
    return pm, text


"""Real-enable windows (DESIGN section 10), state/windows.json.

A window is requested with a duration and a reason, together with its approval (kind `real_enable`, see
common.approvals). Its state is derived on every read, never trusted from the file:

  PENDING_APPROVAL  its approval lacks a key and has not expired
  ACTIVE            both keys given by two different, still existing operators; for `minutes` from the second key
                    and until `max_real_executions` real executions were used
  EXPIRED           its approval expired, its minutes are over, or an approver was removed
  CONSUMED          its executions are used up, or the live fire's lockdown consumed it

So a hand-edited file cannot make a window ACTIVE without two keys, and an expired window needs no clean-up.
At most one window is ACTIVE at a time. Every function takes `now` (an injected clock in tests; the real Seoul
time otherwise) and raises OpsError; every refusal is appended to the event log with the operator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import approvals, config, events, formats, operators, statefile
from common.errors import FAILED, OpsError
from common.home import Home
from common.log import now as clock_now

FILE = "windows.json"
SCHEMA = formats.WINDOWS
PENDING_APPROVAL, ACTIVE, EXPIRED, CONSUMED = "PENDING_APPROVAL", "ACTIVE", "EXPIRED", "CONSUMED"
LOCK = "windows"


def _path(home: Home) -> Path:
    return home.state / FILE


def settings(home: Home) -> dict[str, Any]:
    return config.load("app", home)["real_path"]


def allowed_actions(home: Home) -> list[str]:
    """What may run under REAL: configs/execution_allowlist.yaml, validated at load."""
    return list(config.load("execution_allowlist", home)["allowed"])


def _load(home: Home) -> dict[str, dict]:
    return statefile.load_records(_path(home), SCHEMA, "windows", _valid,
                                  "{id: {minutes, approval_id, executions, ...}}")


def _valid(rec: Any) -> bool:
    try:
        return (isinstance(rec["minutes"], int) and not isinstance(rec["minutes"], bool)
                and isinstance(rec["max_real_executions"], int) and isinstance(rec["approval_id"], str)
                and isinstance(rec["executions"], list))
    except (KeyError, TypeError):
        return False


def _save(home: Home, recs: dict[str, dict]) -> None:
    statefile.save(_path(home), {"schema": SCHEMA, "windows": recs})


def _derive(w: dict, appr: dict | None, known: set[str], now: dt.datetime) -> dict[str, Any]:
    """The window's view: state, activation and expiry times, TTL and executions left."""
    used = len(w["executions"])
    out: dict[str, Any] = {"activated_at": None, "expires_at": None, "ttl_left_s": 0,
                           "executions_used": used, "executions_left": 0, "note": ""}
    if appr is None:
        return {**out, "state": EXPIRED, "note": f"approval {w['approval_id']} is missing"}
    a_state = approvals.state(appr, now)
    if a_state != approvals.USED:
        state = CONSUMED if w.get("consumed_at") else (PENDING_APPROVAL if a_state == approvals.PENDING
                                                       else EXPIRED)
        note = f"approval {appr['id']} expired at {appr['expires_at']}" if state == EXPIRED else ""
        return {**out, "state": state, "note": note}
    start = dt.datetime.fromisoformat(appr["used_at"])
    end = start + dt.timedelta(minutes=w["minutes"])
    out.update(activated_at=start.isoformat(timespec="seconds"), expires_at=end.isoformat(timespec="seconds"))
    left = max(0, w["max_real_executions"] - used)
    gone = sorted({k["operator"] for k in appr["keys"].values()} - known)
    if w.get("consumed_at") or not left:
        return {**out, "state": CONSUMED}
    if now >= end:
        return {**out, "state": EXPIRED, "note": f"its {w['minutes']} minutes ended at {out['expires_at']}"}
    if now < start:
        return {**out, "state": EXPIRED, "note": "the clock is before the window's activation (fail closed)"}
    if gone:
        return {**out, "state": EXPIRED, "note": f"approver removed: {', '.join(gone)}"}
    return {**out, "state": ACTIVE, "ttl_left_s": int((end - now).total_seconds()), "executions_left": left}


def _view(w: dict, appr: dict | None, known: set[str], now: dt.datetime) -> dict[str, Any]:
    derived = _derive(w, appr, known, now)
    return {"id": w["id"], "state": derived.pop("state"), "minutes": w["minutes"], "reason": w.get("reason"),
            "requested_by": w.get("requested_by"), "requested_at": w.get("requested_at"),
            "max_real_executions": w["max_real_executions"], **derived, "executions": w["executions"],
            "consumed_at": w.get("consumed_at"), "consumed_reason": w.get("consumed_reason"),
            "approval": approvals.view(appr, now) if appr else None}


def _everything(home: Home) -> tuple[dict[str, dict], dict[str, dict], set[str]]:
    return _load(home), approvals.load_all(home), operators.names(home)


@contextlib.contextmanager
def _refusing(home: Home, event: str, operator: str | None, **fields: Any) -> Iterator[None]:
    """An OpsError raised inside is appended to the event log (code, message, operator), then re-raised."""
    try:
        yield
    except OpsError as exc:
        events.append(home, event, operator=operator, code=exc.code, why=exc.message, **fields)
        raise


def request(home: Home, minutes: int, reason: str, operator: str, *, now: dt.datetime | None = None) -> dict:
    """A new window (PENDING_APPROVAL) and its approval request; returns the window's view."""
    now = now or clock_now()
    with _refusing(home, "window_refused", operator, minutes=minutes):
        cfg = settings(home)
        reason = " ".join(str(reason or "").split())
        if not reason:
            raise OpsError("REASON_REQUIRED", "a window needs --reason (it goes into the event log)", FAILED)
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1:
            raise OpsError("BAD_MINUTES", f"--minutes: expected a whole number of minutes >= 1, got {minutes!r}",
                           FAILED)
        if minutes > cfg["window_max_minutes"]:
            raise OpsError("WINDOW_TOO_LONG", f"--minutes {minutes}: a window lasts at most "
                           f"{cfg['window_max_minutes']} minutes (app.yaml real_path.window_max_minutes)")
        suffix = f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        wid, aid = f"W{suffix}", f"A{suffix}"
        with statefile.locked(home, LOCK):
            wins, apprs, known = _everything(home)
            apprs[aid] = approvals.new(aid, approvals.REAL_ENABLE, wid, operator, now, cfg["approval_ttl_hours"])
            wins[wid] = {"id": wid, "minutes": minutes, "reason": reason, "requested_by": operator,
                         "requested_at": now.isoformat(timespec="seconds"), "approval_id": aid,
                         "max_real_executions": cfg["max_real_executions"], "executions": [],
                         "consumed_at": None, "consumed_reason": None}
            approvals.save_all(home, apprs)
            _save(home, wins)
    events.append(home, "window_requested", operator=operator, window_id=wid, approval_id=aid, minutes=minutes,
                  reason=reason, approval_expires_at=apprs[aid]["expires_at"])
    return _view(wins[wid], apprs[aid], known, now)


def _find_approval(apprs: dict[str, dict], wins: dict[str, dict], ident: str) -> dict:
    if ident in apprs:
        return apprs[ident]
    if ident in wins and wins[ident]["approval_id"] in apprs:
        return apprs[wins[ident]["approval_id"]]
    raise OpsError("UNKNOWN_APPROVAL", f"no approval or window with id {ident!r} (see krx ops approval status)")


def approve(home: Home, ident: str, key: str | int, operator: str, *, now: dt.datetime | None = None) -> dict:
    """Give key 1 or 2 of an approval (by its id or its window's id); the second key makes the window ACTIVE."""
    now = now or clock_now()
    key = str(key)
    with _refusing(home, "approval_refused", operator, approval=ident, key=key), statefile.locked(home, LOCK):
        wins, apprs, known = _everything(home)
        appr = _find_approval(apprs, wins, ident)
        if appr["kind"] != approvals.REAL_ENABLE or appr["subject"] not in wins:
            raise OpsError("APPROVAL_UNBOUND", f"approval {appr['id']} is not bound to a real-enable window")
        w = wins[appr["subject"]]
        probe = {**appr, "keys": dict(appr["keys"])}
        completes = approvals.add_key(probe, key, operator, now)  # the approval's own rules name the refusal first
        state = _view(w, appr, known, now)["state"]
        if state != PENDING_APPROVAL:
            raise OpsError("WINDOW_NOT_PENDING", f"window {w['id']} is {state}: it takes no more keys")
        if completes:
            busy = [o["id"] for o in wins.values()
                    if o["id"] != w["id"] and _view(o, apprs.get(o["approval_id"]), known, now)["state"] == ACTIVE]
            if busy:
                raise OpsError("WINDOW_ALREADY_ACTIVE", f"window {busy[0]} is ACTIVE: one window at a time")
        apprs[appr["id"]] = probe
        approvals.save_all(home, apprs)
        view = _view(w, probe, known, now)
    events.append(home, "approval_key", operator=operator, approval_id=probe["id"], window_id=w["id"], key=key)
    if view["state"] == ACTIVE:
        events.append(home, "window_active", operator=operator, window_id=w["id"], approval_id=probe["id"],
                      approvers=[probe["keys"][k]["operator"] for k in approvals.KEYS],
                      expires_at=view["expires_at"], max_real_executions=w["max_real_executions"])
    return view


def _newest(recs: dict[str, dict]) -> str | None:
    return max(recs, key=lambda i: (recs[i].get("requested_at") or "", i)) if recs else None


def status(home: Home, window_id: str | None = None, *, now: dt.datetime | None = None) -> dict | None:
    """The view of `window_id` (default: the newest window); None when there is none. Raises on damaged state."""
    now = now or clock_now()
    wins, apprs, known = _everything(home)
    wid = window_id or _newest(wins)
    if wid is None:
        return None
    if wid not in wins:
        raise OpsError("UNKNOWN_WINDOW", f"no window with id {wid!r}")
    return _view(wins[wid], apprs.get(wins[wid]["approval_id"]), known, now)


def approval_status(home: Home, approval_id: str | None = None, *, now: dt.datetime | None = None) -> dict | None:
    now = now or clock_now()
    apprs = approvals.load_all(home)
    aid = approval_id or _newest(apprs)
    if aid is None:
        return None
    if aid not in apprs:
        raise OpsError("UNKNOWN_APPROVAL", f"no approval with id {aid!r}")
    return approvals.view(apprs[aid], now)


def active(home: Home, *, now: dt.datetime | None = None) -> dict | None:
    """The ACTIVE window's view, or None, also when any state file is damaged (fail closed). Never raises."""
    now = now or clock_now()
    try:
        wins, apprs, known = _everything(home)
    except OpsError:
        return None
    for w in wins.values():
        view = _view(w, apprs.get(w["approval_id"]), known, now)
        if view["state"] == ACTIVE:
            return view
    return None


def describe(home: Home, *, now: dt.datetime | None = None) -> str:
    """One word for receipts: `ACTIVE <id>` (or the newest window's state and id), NONE, or UNREADABLE."""
    try:
        view = active(home, now=now) or status(home, now=now)
    except OpsError:
        return "UNREADABLE"
    return f"{view['state']} {view['id']}" if view else "NONE"


def use_execution(home: Home, action: str, operator: str | None, *, now: dt.datetime | None = None) -> dict:
    """Count one real execution of `action` against the ACTIVE window; refuses ALLOWLIST_VIOLATION and
    WINDOW_NOT_ACTIVE. Returns the window's view after the count."""
    now = now or clock_now()
    with _refusing(home, "execution_refused", operator, action=action):
        allowed = allowed_actions(home)
        if action not in allowed:
            raise OpsError("ALLOWLIST_VIOLATION", f"{action!r} may not run under REAL (configs/"
                           f"execution_allowlist.yaml allows: {', '.join(allowed) or 'nothing'})")
        with statefile.locked(home, LOCK):
            current = active(home, now=now)
            if current is None:
                raise OpsError("WINDOW_NOT_ACTIVE", "no real-enable window is ACTIVE (request one and have two "
                               "operators approve it)")
            wins = _load(home)
            w = wins[current["id"]]
            w["executions"].append({"action": action, "at": now.isoformat(timespec="seconds"),
                                    "operator": operator})
            _save(home, wins)
            view = status(home, w["id"], now=now)
    events.append(home, "real_execution", operator=operator, window_id=w["id"], action=action,
                  executions_used=view["executions_used"], state=view["state"])
    return view


def consume(home: Home, window_id: str | None, reason: str, operator: str | None, *,
            now: dt.datetime | None = None) -> dict | None:
    """Mark `window_id` (default: the ACTIVE one) CONSUMED; idempotent; None when there is nothing to consume."""
    now = now or clock_now()
    with statefile.locked(home, LOCK):
        wins = _load(home)
        if window_id is None:
            current = active(home, now=now)
            window_id = current["id"] if current else None
        if window_id is None or window_id not in wins:
            return None
        w = wins[window_id]
        if not w.get("consumed_at"):
            w.update(consumed_at=now.isoformat(timespec="seconds"), consumed_reason=reason)
            _save(home, wins)
            events.append(home, "window_consumed", operator=operator, window_id=window_id, reason=reason)
    return status(home, window_id, now=now)


"""The home at a glance, for `GET /api/status`, `GET /api/ops/health` and the dashboard: one read-only dict.

`snapshot(home, now=None)` reads what other modules write (never writes, never runs a step) and answers with these
keys, which stay stable (schema ops_status/1); a part that cannot be read says so in its own `error` field and
never fails the whole answer. Every `*_ref` is a home-relative path that `GET /api/ops/resolve?ref=...` reads.

  schema            "ops_status/1"
  generated_at      ISO time of the snapshot (Asia/Seoul)
  version           the installed krx-alertor version
  home              the home folder (absolute path)
  emergency_stop    {enabled, readable, by, at, reason, error}        unreadable reads enabled (fail closed)
  gate              {set, effective, readable, by, at, reason, window_id, error}
                    `set` is the file's mode, `effective` what every reader acts on (common.switches)
  sender            {enabled, channel, readable, by, at, reason, error}
  window            {id, state, minutes, expires_at, ttl_left_s, executions_left, note} of the ACTIVE window, else
                    the newest one; null when none was ever requested; {error} when state/windows.json is damaged
  approval          {id, kind, state, subject, expires_at, ttl_left_s, keys: {"1": {operator, at} | null,
                    "2": ...}} of the newest approval (kind real_enable); null when none; {error} when damaged
  last_cycle        {run_id, result, reason, date, started_at, finished_at, steps: [{name, status, rc,
                    elapsed_ms, details}], live_fire_step, snapshot_ref} of the latest ops cycle receipt; null
                    when no cycle ran; {error} when the receipt is unreadable
  summary           {overall_status, top_risks: [{code, severity, message, evidence_refs}], generated_at, ref} of
                    the written risk summary (`krx ops summary`); null when none was written; {error} when damaged
  store             {last_day: YYYY-MM-DD | null, error}
  queue             {pending, processing, done, failed}: request files (and result folders in done)
  alert             {date, headline, sent, reason, policy, ref} of the newest outbox day; null when none
  backtests         [{id, result_ref, report_ref}] of the newest results in reports/done (at most RECENT)
  event_log         {ok, first_bad_line, message}: `krx ops verify-log`
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from common import events, log, safeio, switches, window
from common.errors import AlertorError
from common.home import QUEUE_DIRS, Home

SCHEMA = "ops_status/1"
RECENT = 10


def ref(home: Home, path) -> str:
    """A home-relative path, as every `*_ref` gives it."""
    return str(path.relative_to(home.root))


def _version() -> str:
    try:
        return metadata.version("krx-alertor")
    except metadata.PackageNotFoundError:
        return "unknown"


def _switch(item: switches.Switch) -> dict[str, Any]:
    return {"enabled": item.on, "readable": item.readable, "by": item.by, "at": item.at, "reason": item.reason,
            "error": item.error}


def _gate(home: Home, now: dt.datetime) -> dict[str, Any]:
    g = switches.gate_state(home)
    return {"set": g.mode, "effective": switches.effective_gate(home, now=now), "readable": g.readable, "by": g.by,
            "at": g.at, "reason": g.reason, "window_id": g.window_id, "error": g.error}


def _window(home: Home, now: dt.datetime) -> dict[str, Any] | None:
    try:
        view = window.active(home, now=now) or window.status(home, now=now)
    except AlertorError as exc:
        return {"error": exc.message}
    if view is None:
        return None
    return {k: view[k] for k in ("id", "state", "minutes", "expires_at", "ttl_left_s", "executions_left", "note")}


def _approval(home: Home, now: dt.datetime) -> dict[str, Any] | None:
    try:
        view = window.approval_status(home, now=now)
    except AlertorError as exc:
        return {"error": exc.message}
    if view is None:
        return None
    return {k: view[k] for k in ("id", "kind", "state", "subject", "expires_at", "ttl_left_s", "keys")}


def _json(path) -> tuple[Any, str | None]:
    """(data, None), (None, None) when absent, (None, why) when unreadable."""
    try:
        return safeio.read_json(path), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable: {exc}"


def _last_cycle(home: Home) -> dict[str, Any] | None:
    from nas.cycle import latest_receipt_path

    receipt, error = _json(latest_receipt_path(home))
    if error or (receipt is not None and not isinstance(receipt, dict)):
        return {"error": error or "the latest receipt is not a JSON object"}
    if receipt is None:
        return None
    out = {k: receipt.get(k) for k in ("run_id", "result", "reason", "date", "started_at", "finished_at",
                                       "steps", "live_fire_step")}
    out["snapshot_ref"] = receipt.get("snapshot")
    return out


def _summary(home: Home) -> dict[str, Any] | None:
    from nas.summary import summary_path

    data, error = _json(summary_path(home))
    if error or (data is not None and not isinstance(data, dict)):
        return {"error": error or "the summary is not a JSON object"}
    if data is None:
        return None
    return {"overall_status": data.get("overall_status"), "top_risks": data.get("top_risks") or [],
            "generated_at": data.get("generated_at"), "ref": ref(home, summary_path(home))}


def _store(home: Home) -> dict[str, Any]:
    from common.store import EodStore

    try:
        last = EodStore.for_home(home).last_date()
    except (AlertorError, OSError, ValueError) as exc:
        return {"last_day": None, "error": str(exc)}
    return {"last_day": last.isoformat() if last else None, "error": None}


def queue_counts(home: Home) -> dict[str, int]:
    """Request files per queue folder (result folders in done/); hidden files (a write in progress) do not count."""
    out = {}
    for name in QUEUE_DIRS:
        folder = home.queue(name)
        try:
            out[name] = sum(1 for p in folder.iterdir() if not p.name.startswith(".")
                            and (p.is_dir() if name == "done" else p.name.endswith(".json")
                                 and not p.name.endswith(".error.json")))
        except OSError:
            out[name] = 0
    return out


def _alert(home: Home) -> dict[str, Any] | None:
    folder = home.reports / "outbox"
    boxes = sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []  # YYYYMMDD.json
    if not boxes:
        return None
    box, error = _json(boxes[-1])
    if error or not isinstance(box, dict):
        return {"ref": ref(home, boxes[-1]), "error": error or "not a JSON object"}
    payloads = box.get("payloads") if isinstance(box.get("payloads"), list) else []
    text = payloads[0].get("text") if payloads and isinstance(payloads[0], dict) else None
    return {"date": box.get("date"), "headline": str(text or "").strip().split("\n", 1)[0][:200],
            "sent": bool(box.get("sent")), "reason": box.get("reason"), "policy": box.get("policy"),
            "ref": ref(home, boxes[-1])}


def recent_backtests(home: Home, limit: int = RECENT) -> list[dict[str, Any]]:
    """The newest result folders in reports/done (newest first) with refs to their result.json and report.html."""
    done = home.queue("done")
    try:
        folders = [p for p in done.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
    except OSError:
        return []
    folders.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    return [{"id": p.name,
             "result_ref": ref(home, p / "result.json") if (p / "result.json").is_file() else None,
             "report_ref": ref(home, p / "report.html") if (p / "report.html").is_file() else None}
            for p in folders[:limit]]


def snapshot(home: Home, now: dt.datetime | None = None) -> dict[str, Any]:
    """The home at a glance (keys in the module docstring); reads only, never raises for a damaged part."""
    now = now or log.now()
    ok, bad_line, message = events.verify(home)
    snd = switches.sender(home)
    return {
        "schema": SCHEMA,
        "generated_at": now.isoformat(timespec="seconds"),
        "version": _version(),
        "home": str(home.root),
        "emergency_stop": _switch(switches.emergency_stop(home)),
        "gate": _gate(home, now),
        "sender": {**_switch(snd), "channel": snd.channel},
        "window": _window(home, now),
        "approval": _approval(home, now),
        "last_cycle": _last_cycle(home),
        "summary": _summary(home),
        "store": _store(home),
        "queue": queue_counts(home),
        "alert": _alert(home),
        "backtests": recent_backtests(home),
        "event_log": {"ok": ok, "first_bad_line": bad_line, "message": message},
    }


_cache: dict[Path, tuple[tuple, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


_watched: dict[Path, tuple[str, list[str]]] = {}


def _watch_list(home: Home) -> tuple[str, list[str]]:
    """The state folder and the other files and folders the snapshot reads, as strings (built once per home)."""
    if home.root not in _watched:
        from common.store import EodStore
        from nas.cycle import latest_receipt_path
        from nas.summary import summary_path

        paths = [latest_receipt_path(home), summary_path(home), EodStore.for_home(home).manifest_path,
                 home.reports / "outbox", *(home.queue(q) for q in QUEUE_DIRS)]
        _watched[home.root] = (str(home.state), [str(p) for p in paths])
    return _watched[home.root]


def _fingerprint(home: Home) -> tuple:
    """What the snapshot reads, as (mtime_ns, size) of its files and folders, and the current second (the window's
    TTL and anything not listed here are then at most one second old)."""
    state, paths = _watch_list(home)
    out: list[Any] = [int(time.time())]
    try:
        with os.scandir(state) as entries:
            for e in entries:
                st = e.stat(follow_symlinks=False)
                out.append((e.name, st.st_mtime_ns, st.st_size))
    except OSError:
        out.append(None)
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def cached_snapshot(home: Home) -> dict[str, Any]:
    """`snapshot(home)`, computed again only when one of the files it reads changed or a second passed: what the
    HTTP face answers under load (GET /api/status at hundreds of requests per second)."""
    key = _fingerprint(home)
    with _cache_lock:
        hit = _cache.get(home.root)
    if hit and hit[0] == key:
        return hit[1]
    snap = snapshot(home)
    with _cache_lock:
        _cache[home.root] = (key, snap)
    return snap

"""`krx ops summary` and `krx ops status`: the risks of the day, for cron (JSON) and for a person (a table).

reports/ops/summary/ops_summary_latest.json (schema ops_summary/1): `overall_status` and `top_risks` of
{code, severity, message, evidence_refs}, most severe first. Risk codes:

  EMERGENCY_STOP      CRITICAL  the emergency stop is on (or its file is unreadable)
  STATE_UNREADABLE    CRITICAL  a switch file (sender, gate) is damaged: treated as stopped
  EVENT_LOG_TAMPERED  CRITICAL  `verify-log` fails: a line was edited, deleted, inserted or reordered
  LAST_RUN_FAILED     HIGH      the newest ops cycle receipt says FAILED
  LAST_RUN_BLOCKED    MEDIUM    the newest ops cycle receipt says BLOCKED
  DATA_STALE          HIGH      the EOD store's last date is behind the last complete trading day
  FAILED_REQUESTS     HIGH      backtest requests sit in reports/failed
  QUEUE_BACKLOG       MEDIUM    a request waits in reports/pending longer than ops.queue_backlog_hours
  SECRETS_MISSING     HIGH      a required secret of an enabled channel or source is absent (self-test)
  CONFIG_INVALID      HIGH      a config file does not validate
  DISK_LOW            HIGH      free space in the home under ops.min_free_disk_mb
  CALENDAR_DISAGREEMENT MEDIUM  exchange_calendars and holidays disagree about a day in the next 12 months that
                                app.yaml's calendar section has not settled (common.calendar)

overall_status: STOPPED (emergency stop) > BLOCKED (any CRITICAL risk, or the last run was blocked) >
NO_RUN_HISTORY (no cycle has run yet) > WARN (any other risk) > OK.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import atomic, config, events, formats, log, safeio, switches, window
from common.errors import OpsError
from common.home import DEFAULT_CONFIGS, Home

SCHEMA = formats.OPS_SUMMARY
SEVERITY_ORDER = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2, "LOW": 3}


def summary_path(home: Home) -> Path:
    return home.reports / "ops" / "summary" / "ops_summary_latest.json"


def _rel(home: Home, path: Path) -> str:
    """The path as shown and stored: relative to the home, and printable even when a name is not UTF-8."""
    try:
        return safeio.show_name(str(path.relative_to(home.root)))
    except ValueError:
        return safeio.show_name(str(path))


def _risk(code: str, severity: str, message: str, refs: list[str] | None = None) -> dict:
    return {"code": code, "severity": severity, "message": message, "evidence_refs": refs or []}


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=log.TZ)


def _last_run(home: Home) -> tuple[dict | None, str | None]:
    from nas.cycle import SCHEMA as RECEIPT_SCHEMA
    from nas.cycle import latest_receipt_path

    path = latest_receipt_path(home)
    try:
        receipt = safeio.read_json(path)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{_rel(home, path)} unreadable: {exc}"
    steps = receipt.get("steps", []) if isinstance(receipt, dict) else None
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return None, (f"{_rel(home, path)} unreadable: expected an {RECEIPT_SCHEMA} object whose steps are a list "
                      "of objects")
    return receipt, None


def _data_stale(home: Home, now: dt.datetime, cal_cfg: dict | None) -> dict | None:
    from common import calendar
    from common.store import EodStore

    store = EodStore.for_home(home)
    ref = _rel(home, store.manifest_path)
    try:
        cal = calendar.load(home, cal_cfg)
        expected = cal.latest_complete_day(now)
        last = store.last_date()
    except Exception as exc:  # a store or calendar that cannot be read is stale data for the user
        return _risk("DATA_STALE", "HIGH", f"cannot tell how fresh the EOD store is: {type(exc).__name__}: {exc}",
                     [ref])
    if last is None:
        return _risk("DATA_STALE", "HIGH", f"the EOD store is empty; the last complete trading day is {expected}",
                     [ref])
    if last < expected:
        behind = len(cal.sessions(last + dt.timedelta(days=1), expected))
        return _risk("DATA_STALE", "HIGH", f"the EOD store ends {last}, {behind} trading day(s) behind {expected}",
                     [ref])
    return None


def _calendar_disagreement(home: Home, now: dt.datetime, cal_cfg: dict | None) -> dict | None:
    from common import calendar

    ref = _rel(home, home.configs / "app.yaml")
    try:
        days = calendar.load(home, cal_cfg).disagreements(now.date())
    except Exception as exc:  # a calendar that cannot be compared is reported, never a crash of the summary
        return _risk("CALENDAR_DISAGREEMENT", "MEDIUM", f"cannot compare the calendars: {type(exc).__name__}: {exc}",
                     [ref])
    if not days:
        return None
    listed = "; ".join(f"{day}: {said}" for day, said in days)
    return _risk("CALENDAR_DISAGREEMENT", "MEDIUM", f"the KRX calendars disagree about {len(days)} day(s) in the "
                 f"next 12 months ({listed}); a closure from either library wins. Check KRX's holiday notice and "
                 "settle each day in configs/app.yaml: calendar.extra_closures (closed) or calendar.confirmed_open "
                 "(KRX trades)", [ref])


def _queue_backlog(home: Home, hours: float, now: dt.datetime) -> dict | None:
    old: list[tuple[float, Path]] = []
    for path in sorted(home.queue("pending").glob("*.json")):
        if path.name.startswith("."):
            continue
        created = None
        try:
            created = _parse_time(safeio.read_json(path).get("created_at"))  # never a FIFO, never /dev/zero
        except (OSError, ValueError, AttributeError):
            pass
        if created is None:  # unparseable: the file's own age is the best evidence there is
            try:
                created = dt.datetime.fromtimestamp(path.lstat().st_mtime, log.TZ)
            except OSError:
                continue
        age_h = (now - created).total_seconds() / 3600
        if age_h > hours:
            old.append((age_h, path))
    if not old:
        return None
    oldest = max(a for a, _ in old)
    return _risk("QUEUE_BACKLOG", "MEDIUM", f"{len(old)} request(s) pending longer than {hours:g} h (oldest "
                 f"{oldest:.1f} h): is the PC worker running and the share reachable?",
                 [_rel(home, p) for _, p in old[:10]])


def _failed_requests(home: Home) -> dict | None:
    failed = sorted(p for p in home.queue("failed").glob("*.json")
                    if not p.name.startswith(".") and not p.name.endswith(".error.json"))
    if not failed:
        return None
    return _risk("FAILED_REQUESTS", "HIGH", f"{len(failed)} backtest request(s) failed; see the .error.json beside "
                 "each", [_rel(home, p) for p in failed[:10]])


def _switch_risks(home: Home, stop: switches.Switch, snd: switches.Switch, g: switches.Gate) -> list[dict]:
    risks = []
    state_ref = _rel(home, home.state)
    if stop.on:
        what = f"on since {stop.at} by {stop.by}: {stop.reason}" if stop.readable else f"unreadable ({stop.error})"
        risks.append(_risk("EMERGENCY_STOP", "CRITICAL", f"emergency stop {what}; nothing runs or sends",
                           [f"{state_ref}/{switches.ESTOP_FILE}"]))
    for name, item, filename in (("sender", snd, switches.SENDER_FILE), ("gate", g, switches.GATE_FILE)):
        if not item.readable:
            risks.append(_risk("STATE_UNREADABLE", "CRITICAL", f"{name} state unreadable ({item.error}): treated as "
                               "stopped; set it again with krx ops", [f"{state_ref}/{filename}"]))
    return risks


def _last_run_risk(home: Home, receipt: dict | None, receipt_error: str | None) -> dict | None:
    from nas.cycle import latest_receipt_path

    receipt_ref = _rel(home, latest_receipt_path(home))
    if receipt_error:
        return _risk("LAST_RUN_FAILED", "HIGH", receipt_error, [receipt_ref])
    if receipt is None:
        return None
    refs = [receipt.get("snapshot") or receipt_ref]
    if receipt.get("result") == "FAILED":
        failed = [str(s.get("name")) for s in receipt.get("steps", []) if s.get("status") == "FAILED"]
        return _risk("LAST_RUN_FAILED", "HIGH", f"ops run {receipt.get('run_id')} failed "
                     f"({receipt.get('reason')}; steps: {', '.join(failed) or '-'})", refs)
    if receipt.get("result") == "BLOCKED":
        return _risk("LAST_RUN_BLOCKED", "MEDIUM", f"ops run {receipt.get('run_id')} was blocked "
                     f"({receipt.get('reason')})", refs)
    return None


def _configs(home: Home, env: Mapping[str, str] | None) -> tuple[dict | None, dict | None]:
    """({app, notify, strategies} validated, or None when one is invalid; the CONFIG_INVALID risk or None)."""
    try:
        return {name: config.load(name, home, env=env) for name in ("app", "notify", "strategies")}, None
    except config.ConfigError as exc:
        return None, _risk("CONFIG_INVALID", "HIGH", str(exc), [_rel(home, Path(exc.file))])


def _secrets_risk(app: dict, notify: dict, env: Mapping[str, str] | None) -> dict | None:
    from nas import selftest

    gone = selftest.missing(selftest.requirements(app, notify, env))
    if not gone:
        return None
    return _risk("SECRETS_MISSING", "HIGH", "required secrets absent for: " + ", ".join(
        r.channel + " (" + (" or " if r.any_of else " and ").join(r.secrets) + ")" for r in gone),
        ["krx ops self-test"])


def _watchdog_risks(home: Home) -> list[dict]:
    """The dead-man checks' open incidents (krx ops watchdog), each a HIGH risk; a damaged state file is one."""
    from nas import watchdog

    ref = _rel(home, watchdog.state_path(home))
    try:
        return [_risk(f"WATCHDOG_{inc['code']}", "HIGH", f"since {inc.get('opened_at')}: {inc.get('message', '')}",
                      [ref]) for inc in watchdog.open_incidents(home)]
    except OpsError as exc:
        return [_risk("WATCHDOG_STATE_UNREADABLE", "HIGH", f"{exc.message} (the next watchdog run sets it aside)",
                      [ref])]


def _disk_risk(home: Home, min_free_mb: float) -> dict | None:
    try:
        free_mb = shutil.disk_usage(home.root).free // (1024 * 1024)
    except OSError:
        free_mb = -1
    if free_mb >= min_free_mb:
        return None
    return _risk("DISK_LOW", "HIGH", f"{free_mb} MB free in {home.root} (minimum {min_free_mb} MB)", [str(home.root)])


def _overall(risks: list[dict], has_history: bool) -> str:
    codes = {r["code"] for r in risks}
    if "EMERGENCY_STOP" in codes:
        return "STOPPED"
    if codes & {"STATE_UNREADABLE", "LAST_RUN_BLOCKED"} or any(r["severity"] == "CRITICAL" for r in risks):
        return "BLOCKED"  # never better than the worst risk: a CRITICAL one (a tampered log) blocks
    if not has_history:
        return "NO_RUN_HISTORY"
    return "WARN" if risks else "OK"


def build(home: Home, now: dt.datetime | None = None, env: Mapping[str, str] | None = None) -> dict:
    """Assess the home and return the summary (not written): every risk, worst first, and the overall status."""
    now = now or log.now()
    stop, snd, g = switches.emergency_stop(home), switches.sender(home), switches.gate_state(home)
    ok, bad_line, msg = events.verify(home)
    receipt, receipt_error = _last_run(home)
    configs, config_risk = _configs(home, env)
    cal_cfg = configs["app"]["calendar"] if configs else None  # None: calendar.load reports the broken app.yaml
    # a broken app.yaml still gets its risks judged, by the shipped defaults' thresholds
    ops_cfg = (configs["app"] if configs else config.load("app", Home(DEFAULT_CONFIGS.parent), env={}))["ops"]
    log_risk = None if ok else _risk("EVENT_LOG_TAMPERED", "CRITICAL", msg, [
        _rel(home, events.log_path(home)) + (f":{bad_line}" if bad_line else "")])
    candidates = [
        *_switch_risks(home, stop, snd, g), log_risk, _last_run_risk(home, receipt, receipt_error), config_risk,
        _data_stale(home, now, cal_cfg), _calendar_disagreement(home, now, cal_cfg),
        _queue_backlog(home, float(ops_cfg["queue_backlog_hours"]), now), _failed_requests(home),
        _secrets_risk(configs["app"], configs["notify"], env) if configs else None,
        _disk_risk(home, ops_cfg["min_free_disk_mb"]), *_watchdog_risks(home),
    ]
    risks = sorted((r for r in candidates if r), key=lambda r: SEVERITY_ORDER.get(r["severity"], 9))
    return {
        "schema": SCHEMA,
        "generated_at": now.isoformat(timespec="seconds"),
        "home": str(home.root),
        "overall_status": _overall(risks, receipt is not None or receipt_error is not None),
        "top_risks": risks,
        "modes": {
            "emergency_stop": stop.to_dict(),
            "sender": snd.to_dict(),
            "gate": g.to_dict(),
            # what every reader acts on: REAL_ENABLED only inside its ACTIVE window (common.window)
            "effective_gate": {"mode": switches.effective_gate(home, now=now), "reason": "the gate as read"},
            "window": {"mode": window.describe(home, now=now), "reason": "the ACTIVE or newest real-enable window"},
        },
        "last_run": None if receipt is None else {
            k: receipt.get(k) for k in ("run_id", "started_at", "finished_at", "result", "reason", "date",
                                        "correlation_id", "steps", "observed_modes", "live_fire_step", "snapshot")
        },
        "last_run_error": receipt_error,
        "event_log": {"ok": ok, "first_bad_line": bad_line, "message": msg},
    }


def write(home: Home, summary: dict) -> Path:
    return atomic.write_json(summary_path(home), summary)


def regenerate(home: Home) -> tuple[dict, Path]:
    """Build the summary and write it: what `krx ops summary|status` and `POST /api/ops/summary/regenerate` do."""
    data = build(home)
    return data, write(home, data)


STATUS_STYLE = {"OK": "bold green", "WARN": "bold yellow", "BLOCKED": "bold red", "STOPPED": "bold white on red",
                "NO_RUN_HISTORY": "bold cyan", "COMPLETED": "green", "FAILED": "bold red", "SKIPPED": "dim",
                "CRITICAL": "bold red", "HIGH": "red", "MEDIUM": "yellow", "LOW": "cyan"}


def render(summary: dict, console: Any = None) -> None:
    """Print the summary for a person: modes, the last run step by step, and the risks."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def styled(value: Any) -> str:
        text = "-" if value is None else str(value)
        style = STATUS_STYLE.get(text)
        return f"[{style}]{text}[/]" if style else text

    overall = summary["overall_status"]
    console.print(f"krx ops status  {styled(overall)}  (generated {summary['generated_at']}, home {summary['home']})",
                  highlight=False)

    modes = Table(title="Switches", box=box.SIMPLE_HEAVY, title_justify="left")
    for col in ("switch", "value", "set by", "at", "reason"):
        modes.add_column(col)
    for name, m in summary["modes"].items():
        value = m.get("mode") or ("ON" if m.get("on") else "OFF")
        if not m.get("readable", True):
            value = f"UNREADABLE (-> {value})"
        modes.add_row(name, value, m.get("by") or "-", m.get("at") or "-", m.get("reason") or "-")
    console.print(modes)

    run = summary.get("last_run")
    if run:
        steps = Table(title=f"Last run {run.get('run_id')}: {run.get('result')} ({run.get('reason')})",
                      box=box.SIMPLE_HEAVY, title_justify="left")
        for col in ("step", "status", "rc", "elapsed", "details"):
            steps.add_column(col, overflow="fold")
        for s in run.get("steps") or []:
            rc = "-" if s.get("rc") is None else str(s.get("rc"))
            steps.add_row(s.get("name", "?"), styled(s.get("status")), rc, f"{s.get('elapsed_ms', 0)} ms",
                          str(s.get("details", ""))[:200])
        console.print(steps)
    elif summary.get("last_run_error"):
        console.print(f"Last run: receipt unreadable ({summary['last_run_error']})")
    else:
        console.print("Last run: none yet (krx ops cycle has never run in this home)")

    risks = Table(title="Top risks", box=box.SIMPLE_HEAVY, title_justify="left")
    for col in ("severity", "code", "message", "evidence"):
        risks.add_column(col, overflow="fold")
    for r in summary["top_risks"]:
        risks.add_row(styled(r["severity"]), r["code"], r["message"], "\n".join(r["evidence_refs"]))
    if not summary["top_risks"]:
        risks.add_row("-", "-", "no risk found", "-")
    console.print(risks)

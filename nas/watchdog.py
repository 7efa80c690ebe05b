"""`krx ops watchdog`: dead-man checks for the NAS, run by cron every 15 minutes (docs/ops.md "Dead-man checks").

Each run asks five questions at `now` (Asia/Seoul; the tests inject it):

  CYCLE_LATE      no daily cycle finished for the last trading day whose `watchdog.cycle_deadline` has passed
                  (a receipt of any result counts: a failed or blocked cycle says so itself)
  STORE_BEHIND    the EOD store's last day is before that trading day
  WORKER_SILENT   requests wait in reports/pending and the newest worker heartbeat (common.heartbeat) is older than
                  `watchdog.heartbeat_max_age_s` (0: not checked)
  SERVE_DOWN      `krx serve` does not answer GET `watchdog.health.serve` with a 2xx in `health_timeout_s`
  EXECUTION_DOWN  the same for the execution server (`watchdog.health.execution`; "" = not checked)
  DISK_LOW        free space in the home under `ops.min_free_disk_mb` (the threshold `krx ops status` uses)

A condition that becomes true opens an incident in state/watchdog.json: one ERROR line, one event, and one Slack
message; while it stays true nothing more is said. When it clears, one recovery message, and the incident is
closed. Slack goes through common.slack under the switches of every external send (emergency stop off, sender on,
gate not MOCK_ONLY) and notify.yaml's `error_log_to_slack`; a message those switches hold back (or Slack refuses)
stays owed and goes out at the first run that may send it, so nobody misses an incident and nobody hears it twice.
An incident that clears before its message could go out is closed without one.

Restarts: `watchdog.restart.<service>` (serve, execution, worker) may name a program and its arguments, run without
a shell, in its own session, output appended to logs/watchdog_restart_<service>.log, killed after
`restart_timeout_s`; it runs at every watchdog run that finds its service down.

Exit codes: 0 all clear, 3 an incident is open, 2 another watchdog run holds state/.watchdog.lock.
An unreadable state file is moved aside (`.watchdog.json.damaged-<time>`) with one ERROR line, and every open
condition is treated as new: a repeated message is possible, a missed one is not.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import calendar, config, events, formats, heartbeat, safeio, slack, statefile, switches
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK, OpsError
from common.home import Home
from common.log import TZ, event, get
from common.log import now as seoul_now
from common.store import EodStore
from nas.cycle import daily_dir, latest_receipt_path

_log = get("watchdog")
STATE_FILE = "watchdog.json"
SCHEMA = formats.WATCHDOG_STATE
SERVICES = {"serve": "krx serve", "execution": "the execution server (krx trade execution-server)",
            "worker": "the PC worker (krx worker)"}


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    service: str | None = None  # what a configured restart command may bring back


# --- the checks ------------------------------------------------------------------------------------------------


def due_day(cal: calendar.TradingCalendar, now: dt.datetime, deadline: str) -> dt.date:
    """The last trading day whose cycle deadline has passed at `now`."""
    now = now.astimezone(TZ)
    if cal.is_trading_day(now.date()) and now.time() >= dt.datetime.strptime(deadline, "%H:%M").time():
        return now.date()
    return cal.previous_trading_day(now.date() - dt.timedelta(days=1))


def _receipts_for(home: Home, day: dt.date) -> list[dict]:
    """The cycle receipts that may be `day`'s: the latest and every snapshot started on or after it."""
    paths = [latest_receipt_path(home)]
    snapshots = daily_dir(home) / "snapshots"
    if snapshots.is_dir():
        first = f"ops_run_{day:%Y%m%d}"
        paths += sorted(p for p in snapshots.glob("ops_run_*.json") if p.name >= first)
    out = []
    for path in paths:
        try:
            data = safeio.read_json(path)
        except (OSError, ValueError):  # a damaged receipt proves nothing
            continue
        if isinstance(data, dict):
            out.append(data)
    return out


def check_cycle(home: Home, day: dt.date, deadline: str) -> Finding | None:
    receipts = _receipts_for(home, day)
    if any(r.get("date") == day.isoformat() for r in receipts):
        return None
    newest = receipts[0] if receipts and receipts[0].get("run_id") else None
    last = (f"the newest receipt is run {newest.get('run_id')} for {newest.get('date')} ({newest.get('result')})"
            if newest else "no cycle receipt at all")
    return Finding("CYCLE_LATE", f"no daily cycle finished for trading day {day} by {deadline} Asia/Seoul ({last}); "
                   "is cron running scripts/linux/jobs/run_daily.sh? Run `krx ops cycle --date "
                   f"{day}` to catch up")


def check_store(home: Home, day: dt.date) -> Finding | None:
    store = EodStore.for_home(home)
    try:
        last = store.last_date()
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read is as behind as an empty one
        return Finding("STORE_BEHIND", f"cannot tell the EOD store's last day: {type(exc).__name__}: {exc}")
    if last is not None and last >= day:
        return None
    held = f"ends {last}" if last else "is empty"
    return Finding("STORE_BEHIND", f"the EOD store {held}, behind trading day {day} ({store.manifest_path}); "
                   "`krx ingest` fetches the missing days")


def pending_requests(home: Home) -> list[Path]:
    try:
        return sorted(p for p in home.queue("pending").glob("*.json") if not p.name.startswith("."))
    except OSError:
        return []


def check_worker(home: Home, max_age_s: float, now: dt.datetime) -> Finding | None:
    waiting = pending_requests(home)
    if not max_age_s or not waiting:
        return None
    beat, problems = heartbeat.latest(home.reports)
    where = heartbeat.folder(home.reports)
    wait = f"{len(waiting)} request(s) wait in {home.queue('pending')}"
    damaged = f" (unreadable: {'; '.join(problems[:3])})" if problems else ""
    if beat is None:
        return Finding("WORKER_SILENT", f"{wait} and no worker heartbeat is in {where}{damaged}: is `krx worker` "
                       "running on the PC, and does reports/ reach the NAS (share or `krx sync`)?", "worker")
    age = (now - beat.at).total_seconds()
    if age <= max_age_s:
        return None
    return Finding("WORKER_SILENT", f"{wait} and the newest worker heartbeat ({beat.host}, pid {beat.pid}, at "
                   f"{beat.at.isoformat()}) is {age / 60:.0f} min old (limit {max_age_s / 60:g} min){damaged}: is "
                   "`krx worker` running on the PC, and does reports/ reach the NAS (share or `krx sync`)?", "worker")


def check_health(service: str, url: str, timeout_s: float) -> Finding | None:
    import httpx

    try:
        # trust_env=False: a proxy from the environment must not answer for a loopback service
        with httpx.Client(timeout=timeout_s, trust_env=False, follow_redirects=False) as client:
            status = client.get(url).status_code
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        if 200 <= status < 300:
            return None
        why = f"HTTP {status}"
    return Finding(f"{service.upper()}_DOWN", f"{SERVICES[service]} does not answer its health endpoint GET {url} "
                   f"within {timeout_s:g}s: {why}", service)


def check_disk(home: Home, min_free_mb: float) -> Finding | None:
    try:
        free_mb = shutil.disk_usage(home.root).free / (1024 * 1024)
    except OSError as exc:
        return Finding("DISK_LOW", f"cannot read the free space of {home.root}: {exc.strerror or exc}")
    if free_mb >= min_free_mb:
        return None
    return Finding("DISK_LOW", f"{free_mb:.0f} MB free in {home.root} (minimum ops.min_free_disk_mb "
                   f"{min_free_mb:g} MB): retention (`krx retention pack`) or a bigger volume")


def findings(home: Home, app: Mapping[str, Any], now: dt.datetime) -> list[Finding]:
    """Every condition true at `now`."""
    cfg = app["watchdog"]
    out: list[Finding | None] = []
    try:
        day = due_day(calendar.load(home), now, cfg["cycle_deadline"])
    except ValueError as exc:  # a date outside the calendar: the two date checks cannot be made, and say so
        out.append(Finding("CYCLE_LATE", f"cannot tell which trading day is due: {exc}"))
    else:
        out += [check_cycle(home, day, cfg["cycle_deadline"]), check_store(home, day)]
    out.append(check_worker(home, cfg["heartbeat_max_age_s"], now))
    out += [check_health(name, url, cfg["health_timeout_s"]) for name, url in cfg["health"].items() if url]
    out.append(check_disk(home, app["ops"]["min_free_disk_mb"]))
    return [f for f in out if f is not None]


# --- incidents --------------------------------------------------------------------------------------------------


def state_path(home: Home) -> Path:
    return home.state / STATE_FILE


def open_incidents(home: Home) -> list[dict]:
    """The incidents open (not yet cleared) as the last run left them, read only (for `krx ops status`).
    Raises OpsError STATE_UNREADABLE for a damaged file; the next watchdog run moves that aside."""
    incidents = _records(home)
    return [{"code": code, **inc} for code, inc in sorted(incidents.items()) if not inc.get("cleared_at")]


def _records(home: Home) -> dict[str, dict]:
    return statefile.load_records(state_path(home), SCHEMA, "incidents", lambda v: (
        isinstance(v, dict) and isinstance(v.get("opened_at"), str) and "notified_at" in v
        and isinstance(v["notified_at"], str | None)), "an object of {opened_at, notified_at, ...} records")


def _load(home: Home) -> tuple[dict[str, dict], str | None]:
    """(the open incidents, None), or ({}, what was wrong) after moving an untrustworthy file aside."""
    path = state_path(home)
    try:
        incidents = _records(home)
        for code, inc in incidents.items():
            inc.update(code=code, restarts=inc.get("restarts") if isinstance(inc.get("restarts"), int) else 0,
                       not_sent=inc.get("not_sent"))
        return incidents, None
    except OpsError as exc:
        aside = path.with_name(f".{STATE_FILE}.damaged-{seoul_now():%Y%m%d%H%M%S}-{os.getpid()}")
        try:
            os.replace(path, aside)
            moved = f"moved aside to {aside.name}"
        except OSError as err:
            moved = f"could not be moved aside ({err.strerror or err})"
        return {}, f"{exc.message}; {moved}"


def _deliver(home: Home, notify: Mapping[str, Any], text: str) -> str | None:
    """Post `text` to Slack under the switches of every external send; None when delivered, else why not."""
    if not notify["error_log_to_slack"]:
        return "notify.yaml error_log_to_slack is false"
    allowed, why = switches.external_send_allowed(home)
    if not allowed:
        return why
    sender = slack.sender(notify["slack"]["channel"], timeout_s=int(notify["error_log"]["timeout_s"]),
                         rate_limit_retries=1)
    if sender is None:
        return f"no {slack.TOKEN_ENV} or {slack.WEBHOOK_ENV}"
    try:
        sender.post([slack.section(text)], text)
    except slack.SlackSendError as exc:
        return str(exc)
    return None


def _restart(home: Home, service: str, argv: list[str], timeout_s: float) -> str:
    """Run the configured restart command; what happened, in a few words. No pipes: a service the command starts
    in the background would hold them open, and the watchdog would wait for it forever."""
    out = home.logs / f"watchdog_restart_{service}.log"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "ab") as fh:
            fh.write(f"--- {seoul_now().isoformat(timespec='seconds')} {argv}\n".encode("utf-8", "replace"))
            fh.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
            try:
                rc = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                outcome = f"restart command still running after {timeout_s:g}s: killed (see {out})"
            else:
                outcome = f"restart command exited {rc} (output in {out})"
    except OSError as exc:
        outcome = f"restart command could not run: {exc.strerror or exc} ({argv[0]})"
    event(_log, "WATCHDOG_RESTART", f"{service}: {outcome}", level=logging.INFO if " exited 0 " in outcome
          else logging.WARNING)
    events.append_quietly(home, "watchdog_restart", service=service, outcome=outcome)
    return outcome


def _error_line(code: str, message: str) -> None:
    # the watchdog posts this line's message itself, once per incident: the Slack ERROR log must not post it again
    _log.error("%s", message, extra={"event": f"WATCHDOG_{code}", "rc": EXIT_FAILED, "own_slack_message": True})


def _when(text: str | None) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return when if when and when.tzinfo else None


def run(home: Home, *, now: dt.datetime | None = None) -> int:
    """One watchdog run at `now` (default: the clock; the tests inject it); the exit code (0 all clear, 3 an
    incident open, 2 another run holds the lock)."""
    app, notify = config.load("app", home), config.load("notify", home)
    host = socket.gethostname() or "nas"
    with statefile.locked(home, "watchdog", wait=False) as got:
        if not got:
            event(_log, "WATCHDOG_LOCKED", "another watchdog run holds state/.watchdog.lock; this one did nothing",
                  rc=EXIT_BLOCKED, level=logging.WARNING)
            return EXIT_BLOCKED
        now = (now or seoul_now()).astimezone(TZ)
        stamp = now.isoformat(timespec="seconds")
        incidents, problem = _load(home)
        if problem:
            event(_log, "WATCHDOG_STATE_UNREADABLE", f"{problem}: every open condition is treated as new (a repeated "
                  "Slack message is possible, a missed one is not)", rc=EXIT_FAILED, level=logging.ERROR)
        found = {f.code: f for f in findings(home, app, now)}

        def notify_once(inc: dict, text: str, key: str) -> bool:
            why = _deliver(home, notify, text)
            if why is None:
                inc[key], inc["not_sent"] = stamp, None
                return True
            if why != inc.get("not_sent"):  # said when the reason changes, not every 15 minutes
                event(_log, "WATCHDOG_NOT_SENT", f"{inc['code']}: {why} (tried again at the next run)",
                      level=logging.WARNING)
            inc["not_sent"] = why
            return False

        for code, f in found.items():
            inc = incidents.get(code)
            new = inc is None
            if new:
                inc = incidents[code] = {"code": code, "opened_at": stamp, "notified_at": None, "not_sent": None,
                                         "restarts": 0}
            inc.update(message=f.message, last_seen_at=stamp, cleared_at=None)
            argv = app["watchdog"]["restart"].get(f.service or "", [])
            outcome = _restart(home, f.service, argv, app["watchdog"]["restart_timeout_s"]) if argv else None
            if outcome:
                inc["restarts"] += 1
                inc["last_restart"] = outcome
            if new:
                _error_line(code, f.message + (f"; {outcome}" if outcome else ""))
            if inc["notified_at"] is None:
                text = (f":rotating_light: *ERROR* `WATCHDOG_{code}` on {slack.escape(host)} since {inc['opened_at']}"
                        f"\n{slack.escape(f.message)}" + (f"\n{slack.escape(outcome)}" if outcome else "")
                        + "\n_one message per incident; another when it clears_")
                notify_once(inc, text, "notified_at")
            if new:
                events.append_quietly(home, "watchdog_incident_opened", code=code, message=f.message,
                                      notified=inc["notified_at"] is not None, not_sent=inc["not_sent"])

        for code, inc in list(incidents.items()):
            if code in found:
                continue
            inc["cleared_at"] = inc.get("cleared_at") or stamp
            if inc["notified_at"] is not None:
                opened = _when(inc["opened_at"])
                lasted = f" after {(now - opened).total_seconds() / 60:.0f} min" if opened else ""
                text = (f":white_check_mark: *RECOVERED* `WATCHDOG_{code}` on {slack.escape(host)}{lasted} "
                        f"(opened {inc['opened_at']}): {slack.escape(str(inc.get('message', '')))}")
                if not notify_once(inc, text, "recovered_at"):
                    continue  # the recovery is owed: the incident stays until it goes out
            del incidents[code]
            event(_log, "WATCHDOG_CLEARED", f"{code}: clear since {inc['cleared_at']}" + (
                "" if inc["notified_at"] else " (it cleared before its message could go out: none sent)"), rc=EXIT_OK)
            events.append_quietly(home, "watchdog_incident_cleared", code=code, opened_at=inc["opened_at"],
                                  recovery_sent=inc["notified_at"] is not None)

        try:
            statefile.save(state_path(home), {"schema": SCHEMA, "updated_at": stamp, "incidents": incidents})
        except OSError as exc:  # a full disk (DISK_LOW) must not hide the findings: the next run may repeat them
            event(_log, "WATCHDOG_STATE_UNWRITABLE", f"{state_path(home)}: {type(exc).__name__}: {exc}; the next run "
                  "may repeat this run's messages", rc=EXIT_FAILED, level=logging.ERROR)
    for code, f in found.items():
        print(f"OPEN  {code}: {f.message}")
    print(f"watchdog: {len(found)} incident(s) open" if found else "watchdog: all clear")
    return EXIT_FAILED if found else EXIT_OK

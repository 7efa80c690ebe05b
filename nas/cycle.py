"""`krx ops cycle [--date D]`: the NAS's daily run, in the order the runbook asks for.

preflight (dependencies, configs, home writable, credentials, free disk) -> emergency stop -> gate ->
ingest -> scan -> alert -> request (-> sync push when app.yaml sync.remote is set) -> live_fire_step (on
app.yaml live_fire.weekday, when every live fire precondition holds; otherwise the receipt says why not).

Each step runs as its own process (the `command` the face passes in, e.g. `krx <step> ...`): its exit code is
real (0 ok, 2 blocked, 3 failed) and a crash of one cannot take the cycle down. Under MOCK_ONLY the children get
the sample source and no Slack through the environment, on top of `switches.external_send_allowed` saying no.

Every run writes a receipt (schema ops_run_receipt/1) to reports/ops/daily/ops_report_latest.json and
reports/ops/daily/snapshots/ops_run_<YYYYMMDD-HHMMSS>.json, appends its events with the day's correlation id, and
exits 0 (COMPLETED or WARN), 2 (BLOCKED by a safety check, a failed preflight included: it also writes
reports/tickets/preflight/<run_id>.json) or 3 (FAILED).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import atomic, config, events, log, switches, window
from common.errors import EXIT_BLOCKED, EXIT_FAILED, EXIT_OK
from common.home import Home
from common.redact import redact

SCHEMA = "ops_run_receipt/1"
COMPLETED, WARN, BLOCKED, FAILED = "COMPLETED", "WARN", "BLOCKED", "FAILED"
OK, SKIPPED = "OK", "SKIPPED"
EXIT_OF = {COMPLETED: EXIT_OK, WARN: EXIT_OK, BLOCKED: EXIT_BLOCKED, FAILED: EXIT_FAILED}

BASE_DEPENDENCIES = ("pandas", "numpy", "pyarrow", "yaml", "tenacity", "exchange_calendars", "rich", "dotenv")
DATA_STEPS = ("ingest", "scan", "alert", "request")
# A step whose output the next ones read: when it is blocked, the rest would work on stale data.
STOP_WHEN_BLOCKED = ("ingest", "scan")

_log = log.get("ops")


@dataclass
class Step:
    name: str
    status: str            # OK | WARN | BLOCKED | FAILED | SKIPPED
    rc: int | None
    elapsed_ms: int
    details: str


def daily_dir(home: Home) -> Path:
    return home.reports / "ops" / "daily"


def latest_receipt_path(home: Home) -> Path:
    return daily_dir(home) / "ops_report_latest.json"


def _redact(text: str, env: Mapping[str, str]) -> str:
    """The children's output without the secrets of their environment (which may differ from ours)."""
    return redact(text, (str(env.get(name, "")).strip() for name in config.SECRET_NAMES))


def child_env(home: Home, mock_only: bool, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["KRX_HOME"] = str(home.root)
    if mock_only:
        env.update(switches.MOCK_ONLY_ENV)
    return env


# --- preflight ------------------------------------------------------------------------------------------------


def _check_dependencies(source: str, slack: bool) -> tuple[bool, str]:
    wanted = list(BASE_DEPENDENCIES) + (["slack_sdk"] if slack else []) + (["pykrx"] if source == "pykrx" else [])
    # find_spec, not import: importing pykrx logs in to KRX, which a preflight must never do
    gone = [m for m in wanted if importlib.util.find_spec(m) is None]
    return (not gone), ("missing: " + ", ".join(gone)) if gone else f"{len(wanted)} modules importable"


def _check_writable(home: Home) -> tuple[bool, str]:
    bad = []
    for folder in (home.state, daily_dir(home), home.logs, home.data):
        try:
            probe = atomic.write_text(folder / f".krx_probe_{os.getpid()}", "probe")
            probe.unlink()
        except OSError as exc:
            bad.append(f"{folder.relative_to(home.root)} ({exc.strerror})")
    return (not bad), ("not writable: " + ", ".join(bad)) if bad else "state, reports, logs, data writable"


def preflight(home: Home, env: Mapping[str, str], day: dt.date | None) -> list[dict]:
    """Every check as {check, ok, details}; `ok` False on any means the cycle must not run."""
    from nas import selftest

    checks: list[dict] = []

    def add(name: str, ok: bool, details: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "details": details})

    try:
        app = config.load("app", home, env=env)
        notify = config.load("notify", home, env=env)
        config.load("strategies", home, env=env)
        config.load("execution_allowlist", home, env=env)
        add("configs", True, "app, notify, strategies, execution_allowlist valid")
    except config.ConfigError as exc:
        add("configs", False, str(exc))
        return checks
    slack_used = notify["delivery_policy"] == "SLACK" or notify["error_log_to_slack"]
    add("dependencies", *_check_dependencies(app["source"], slack_used))
    add("home_writable", *_check_writable(home))
    reqs = selftest.requirements(home, env)
    bad = selftest.missing(reqs)
    add("credentials", not bad, ("missing secrets for: " + ", ".join(r.channel for r in bad)) if bad
        else f"source {app['source']}, delivery {notify['delivery_policy']}: required secrets present")
    try:
        free_mb = shutil.disk_usage(home.root).free // (1024 * 1024)
        floor = app["ops"]["min_free_disk_mb"]
        add("free_disk", free_mb >= floor, f"{free_mb} MB free (minimum {floor} MB)")
    except OSError as exc:
        add("free_disk", False, f"cannot read free space: {exc.strerror}")
    try:
        from common import calendar

        cal = calendar.load(home)
        if day is not None:
            cal.is_trading_day(day)  # raises outside the calendar's range
        add("calendar", True, f"XKRX {cal.first}..{cal.last}")
    except Exception as exc:  # a broken calendar is a preflight failure, whatever the cause
        add("calendar", False, f"{type(exc).__name__}: {exc}")
    return checks


# --- steps ----------------------------------------------------------------------------------------------------


def run_step(name: str, command: Sequence[str], argv: list[str], env: Mapping[str, str], cwd: Path,
             timeout_s: float) -> Step:
    """Run `krx <argv>` as a child process; its exit code is the step's status (the cycle's, the live cycle's)."""
    cmd = [*command, *argv]
    started = time.monotonic()
    log.event(_log, "OPS_STEP_START", f"step={name} cmd=krx {' '.join(argv)}")
    try:
        proc = subprocess.run(cmd, env=dict(env), cwd=cwd, capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=timeout_s)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = None, _text(exc.stdout), _text(exc.stderr) + f"\ntimed out after {timeout_s:.0f}s"
    except OSError as exc:
        rc, out, err = None, "", f"cannot start: {exc.strerror}"
    elapsed = int((time.monotonic() - started) * 1000)
    out, err = _redact(out, env), _redact(err, env)
    # the children's own lines go to the cycle's output, so a cron log holds the whole day
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    if err:
        sys.stderr.write(err if err.endswith("\n") else err + "\n")
    sys.stdout.flush()
    status = {0: OK, 2: BLOCKED, 3: FAILED}.get(rc, FAILED)
    lines = [ln.strip() for ln in (err + "\n" + out).splitlines() if ln.strip()]
    if status == OK:
        details = next((ln for ln in reversed(lines) if "[INFO]" in ln), lines[-1] if lines else "done")
    else:
        # the most telling line: the last ERROR/WARNING one, else the last line (a traceback's exception)
        details = next((ln for ln in reversed(lines) if "[ERROR]" in ln or "[WARNING]" in ln),
                       lines[-1] if lines else f"exit code {rc}")
        if rc not in (0, 2, 3):
            details = f"unexpected exit code {rc}: {details}"
    details = _plain(details)[:500]
    level = logging.INFO if status == OK else (logging.WARNING if status == BLOCKED else logging.ERROR)
    log.event(_log, "OPS_STEP_END", f"step={name} status={status} {details}", rc=rc, elapsed_ms=elapsed, level=level)
    return Step(name, status, rc, elapsed, details)


# A child's log line in the DESIGN section 8 format; the receipt keeps its event and details, not the frame.
_LOG_LINE = re.compile(r"^\[[^\]]*\] \[[A-Z]+\] \[([^\]]+)\](?: rc=\S+)? details=(.*?)(?: elapsed=\d+ms)?$")


def _plain(line: str) -> str:
    m = _LOG_LINE.match(line)
    return f"{m.group(1)}: {m.group(2)}" if m else line


def _text(data: Any) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def _modes(home: Home, env: Mapping[str, str]) -> dict[str, str]:
    stop, snd, g = switches.emergency_stop(home), switches.sender(home), switches.gate_state(home)
    try:
        policy = config.load("notify", home, env=env)["delivery_policy"]
    except config.ConfigError:
        policy = "UNREADABLE"
    return {
        "emergency_stop": ("ON" if stop.on else "OFF") if stop.readable else "UNREADABLE",
        "gate": g.mode if g.readable else "UNREADABLE",
        "effective_gate": switches.effective_gate(home) if g.readable else "UNREADABLE",
        "delivery_policy": policy,
        "sender": ("ON" if snd.on else "OFF") if snd.readable else "UNREADABLE",
        "window": window.describe(home),
    }


def _strategy(home: Home, env: Mapping[str, str]) -> str:
    try:
        return config.load("strategies", home, env=env)["allowlist"][0]
    except (config.ConfigError, IndexError, KeyError):
        return "unknown"


def _emit(home: Home, name: str, cid: str | None, warnings: list[str], **fields: Any) -> None:
    """Append to the event log; a failure to audit is a warning of the run, never a crash of it."""
    why = events.append_quietly(home, name, correlation_id=cid, level=logging.ERROR, **fields)
    if why:
        warnings.append(f"EVENT_LOG_WRITE_FAILED: {why}")


def _export_checkpoint(home: Home) -> None:
    """A signed checkpoint of the event log into reports/ops/, which `krx sync push` carries off the box."""
    try:
        events.export_checkpoint(home)
    except OSError as exc:
        log.event(_log, "OPS_CHECKPOINT_FAILED", f"{exc}", level=logging.WARNING)


def _write_receipt(home: Home, receipt: dict) -> Path:
    snapshots = daily_dir(home) / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    snap = snapshots / f"ops_run_{receipt['run_id']}.json"
    n = 2
    while snap.exists():  # two runs in one second keep both receipts
        snap = snapshots / f"ops_run_{receipt['run_id']}_{n}.json"
        n += 1
    receipt["snapshot"] = str(snap.relative_to(home.root))
    atomic.write_json(snap, receipt)
    atomic.write_json(latest_receipt_path(home), receipt)
    return snap


class _Run:
    """One cycle's state as it goes; `finish()` writes the receipt and the closing event."""

    def __init__(self, home: Home, day: dt.date | None, base_env: Mapping[str, str] | None,
                 now: dt.datetime | None = None):
        self.home, self.day, self.now = home, day, now
        self.started_at = log.now()
        self.t0 = time.monotonic()
        self.run_id = f"{self.started_at:%Y%m%d-%H%M%S}"
        self.gate = switches.gate_state(home)
        self.mock_only = self.gate.mode == switches.MOCK_ONLY  # an unreadable gate reads as MOCK_ONLY
        self.env = child_env(home, self.mock_only, base_env)
        self.steps: list[Step] = []
        self.command: tuple[str, ...] = ()
        self.warnings: list[str] = []
        self.checks: list[dict] = []
        self.result, self.reason = COMPLETED, "OK"
        self.asof: dt.date | None = day
        self.cid: str | None = None
        self.live_fire_step: dict[str, Any] | None = None  # None: the cycle stopped before it
        self.tampered = ""  # what verify-log said, when it failed

    def emit(self, name: str, **fields: Any) -> None:
        _emit(self.home, name, self.cid, self.warnings, run_id=self.run_id, **fields)

    def finish(self) -> tuple[int, dict]:
        receipt = {
            "schema": SCHEMA, "run_id": self.run_id, "started_at": self.started_at.isoformat(timespec="seconds"),
            "finished_at": log.now().isoformat(timespec="seconds"), "result": self.result, "reason": self.reason,
            "date": self.asof.isoformat() if self.asof else None, "correlation_id": self.cid,
            "steps": [asdict(s) for s in self.steps], "observed_modes": _modes(self.home, self.env),
            "live_fire_step": self.live_fire_step or {"ran": False, "reason": f"CYCLE_{self.result}"},
            "warnings": self.warnings, "preflight": self.checks,
            "elapsed_ms": int((time.monotonic() - self.t0) * 1000),
        }
        try:
            _write_receipt(self.home, receipt)
        except OSError as exc:  # the exit code still tells cron what happened
            log.event(_log, "OPS_RECEIPT_FAILED", f"{exc}", level=logging.ERROR)
        self.emit("OPS_CYCLE_END", result=self.result, reason=self.reason,
                  steps={s.name: s.status for s in self.steps})
        _export_checkpoint(self.home)  # the newest one, for the next push
        rc = EXIT_OF[self.result]
        level = logging.INFO if rc == EXIT_OK else (logging.WARNING if rc == EXIT_BLOCKED else logging.ERROR)
        log.event(_log, "OPS_CYCLE_END", f"run_id={self.run_id} result={self.result} reason={self.reason}", rc=rc,
                  elapsed_ms=receipt["elapsed_ms"], level=level)
        return rc, receipt


def run_exclusive(home: Home, day: dt.date | None = None, *, command: Sequence[str]) -> tuple[int, dict]:
    """`run_cycle` unless another cycle runs (cron's `--lock daily`, one started by hand, the HTTP face): then
    OpsError CYCLE_RUNNING (exit 2) and nothing ran. What `krx ops cycle` and `POST /api/ops/cycle/run` call."""
    from common import locks
    from common.errors import OpsError

    try:
        with locks.job_lock(home, "daily", wait_s=0):
            return run_cycle(home, day, command=command)
    except locks.LockBusy:
        why = f"another ops cycle is running ({locks.job_lock_path(home, 'daily')}); this one did nothing"
        log.event(_log, "OPS_CYCLE_LOCKED", why, rc=EXIT_BLOCKED, level=logging.WARNING)
        raise OpsError("CYCLE_RUNNING", why) from None


def run_cycle(home: Home, day: dt.date | None = None, *, command: Sequence[str],
              base_env: Mapping[str, str] | None = None, now: dt.datetime | None = None) -> tuple[int, dict]:
    """Run the daily cycle once; returns (exit code, receipt). The receipt is also written to disk, whatever
    happens: an unexpected error inside the cycle itself is a FAILED run (CYCLE_ERROR), not a missing receipt.
    `command`: how to start a `krx` step (the face says; e.g. [python, "-m", "faces.cli"]).
    `now` is the clock of the live fire step (tests inject it; the real Seoul time otherwise)."""
    run = _Run(home, day, base_env, now)
    run.command = tuple(command)
    try:
        _cycle(run)
    except Exception as exc:
        log.event(_log, "OPS_CYCLE_ERROR", f"{type(exc).__name__}: {exc}", level=logging.ERROR)
        run.steps.append(Step("cycle", FAILED, None, 0, _redact(f"{type(exc).__name__}: {exc}", run.env)[:500]))
        run.result, run.reason = FAILED, "CYCLE_ERROR"
    return run.finish()


def _cycle(run: _Run) -> None:
    home, day, env, steps, g = run.home, run.day, run.env, run.steps, run.gate
    # 1. preflight
    p0 = time.monotonic()
    run.checks = checks = preflight(home, env, day)
    failed = [c for c in checks if not c["ok"]]
    steps.append(Step("preflight", FAILED if failed else OK, None, int((time.monotonic() - p0) * 1000),
                      "; ".join(f"{c['check']}: {c['details']}" for c in failed)[:1000] if failed
                      else f"all {len(checks)} checks passed ({', '.join(c['check'] for c in checks)})"))
    run.cid = events.correlation_id(day, _strategy(home, env)) if day else None
    ok_log, _bad_line, log_msg = events.verify(home)
    if not ok_log:  # the day's data does not depend on the audit trail: the steps run, the result is BLOCKED
        run.tampered = log_msg
        log.event(_log, "OPS_EVENT_LOG_TAMPERED", log_msg, level=logging.ERROR)
    if failed:
        run.result, run.reason = BLOCKED, "PREFLIGHT_FAIL"
        run.emit("OPS_CYCLE_START", gate=g.mode)
        try:
            atomic.write_json(home.reports / "tickets" / "preflight" / f"{run.run_id}.json", {
                "schema": "preflight_ticket/1", "run_id": run.run_id, "at": run.started_at.isoformat(
                    timespec="seconds"), "failing": failed, "checks": checks})
        except OSError as exc:
            run.warnings.append(f"TICKET_WRITE_FAILED: {exc.strerror}")
        return
    from common import calendar

    cal = calendar.load(home)
    if run.asof is None:
        run.asof = cal.latest_complete_day()
    run.cid = events.correlation_id(run.asof, _strategy(home, env))
    run.emit("OPS_CYCLE_START", date=run.asof.isoformat(), gate=g.mode)
    log.event(_log, "OPS_CYCLE_START", f"run_id={run.run_id} date={run.asof} gate={g.mode} correlation_id={run.cid}")

    # 2. the emergency stop, 3. the gate, and every other switch: an unreadable one blocks (fail closed)
    stop, snd = switches.emergency_stop(home), switches.sender(home)
    if not stop.readable:
        steps.append(Step("emergency_stop", BLOCKED, None, 0, f"unreadable, treated as on: {stop.error}"))
        run.result, run.reason = BLOCKED, "STATE_UNREADABLE"
        return
    if stop.on:
        steps.append(Step("emergency_stop", BLOCKED, None, 0, f"on since {stop.at} by {stop.by}: {stop.reason}"))
        run.result, run.reason = BLOCKED, "STOPPED"
        return
    steps.append(Step("emergency_stop", OK, None, 0, "off"))
    if not g.readable or not snd.readable:
        what = g.error if not g.readable else snd.error
        steps.append(Step("gate", BLOCKED, None, 0, f"state unreadable, fail closed: {what}"))
        run.result, run.reason = BLOCKED, "STATE_UNREADABLE"
        return
    from nas.scan import ScanError, load_portfolio

    try:  # the model portfolio is state too: damaged, it blocks like a damaged switch (README: exit 2)
        load_portfolio(home)
    except ScanError as exc:
        steps.append(Step("portfolio", BLOCKED, None, 0, f"state unreadable, fail closed: {exc}"))
        run.result, run.reason = BLOCKED, "STATE_UNREADABLE"
        return
    allowed, why = switches.external_send_allowed(home)
    steps.append(Step("gate", OK, None, 0, f"{g.mode}" + (
        ": sample source forced, no Slack, no sync" if run.mock_only else "") + (
        "" if allowed else f"; external sends off ({why})")))

    # 4. the steps
    app = config.load("app", home, env=env)
    timeout_s = float(app["ops"]["step_timeout_s"])
    apply = ["--apply"] if app["ops"]["apply_scan"] else []  # the model portfolio follows the day's scan
    if day is not None:
        when = day
        date_args = ["--date", day.isoformat()]
        plan = [("ingest", ["ingest", "--end", day.isoformat()]), ("scan", ["scan", *date_args, *apply]),
                ("alert", ["alert", *date_args]), ("request", ["request", *date_args])]
    else:
        # no --date: run if today (Seoul) is a trading day; each step picks the latest complete day itself
        when = log.now().date()
        plan = [(name, [name, *apply] if name == "scan" else [name]) for name in DATA_STEPS]
    trading = cal.is_trading_day(when)
    if app["sync"]["remote"]:
        plan.append(("sync", ["sync", "push"]))
    skip_rest = ""
    for name, argv in plan:
        if name in DATA_STEPS and not trading:
            steps.append(Step(name, SKIPPED, None, 0, f"{when} is not a KRX trading day (next: "
                                                      f"{cal.next_trading_day(when)}): data steps skipped"))
            continue
        if name == "sync" and run.mock_only:
            steps.append(Step(name, SKIPPED, None, 0, "MOCK_ONLY: no external transfer"))
            continue
        if skip_rest:
            steps.append(Step(name, SKIPPED, None, 0, skip_rest))
            continue
        stop = switches.emergency_stop(home)  # an operator may pull the stop while the day runs
        if stop.on:
            skip_rest = "emergency stop turned on during the cycle"
            steps.append(Step(name, SKIPPED, None, 0, skip_rest))
            run.result, run.reason = BLOCKED, "STOPPED"
            continue
        if name == "sync":
            _export_checkpoint(home)  # so today's push carries it off the box
        step = run_step(name, run.command, argv, env, home.root, timeout_s)
        steps.append(step)
        run.emit("OPS_STEP", step=name, status=step.status, rc=step.rc, elapsed_ms=step.elapsed_ms)
        if step.status == FAILED:
            run.result, run.reason, skip_rest = FAILED, f"STEP_FAILED:{name}", f"skipped: {name} failed"
        elif step.status == BLOCKED:
            if name in STOP_WHEN_BLOCKED:
                run.result, run.reason = BLOCKED, f"STEP_BLOCKED:{name}"
                skip_rest = f"skipped: {name} was blocked"
            elif run.result == COMPLETED:
                run.result, run.reason = WARN, f"STEP_BLOCKED:{name}"
    if run.tampered and run.result in (COMPLETED, WARN):
        run.result, run.reason = BLOCKED, "EVENT_LOG_TAMPERED"
        run.warnings.append(f"EVENT_LOG_TAMPERED: {run.tampered}")
    from nas import live_fire

    run.live_fire_step = live_fire.cycle_step(home, run.result, now=run.now, env=env)
    if run.live_fire_step.get("result") == FAILED:
        run.result, run.reason = FAILED, "STEP_FAILED:live_fire"
    if run.result == COMPLETED:
        if run.warnings:
            run.result, run.reason = WARN, run.warnings[0].split(":", 1)[0]
        elif not trading:
            run.reason = "NON_TRADING_DAY"
        elif run.mock_only:
            run.reason = "GATE_MOCK_ONLY"

"""Every file format the project writes for another job, machine or person to read: the name in its `schema`
field, where it lives and who writes and reads it. A format changes its name (`/2`) when a reader of the old one
would misread the new one. Modules take their names from here, so one grep finds every writer and reader.
"""

from __future__ import annotations

from typing import NamedTuple


class Format(NamedTuple):
    name: str       # the `schema` field
    where: str      # below the home
    writer: str
    readers: str


# the queue: NAS -> PC -> NAS
BACKTEST_REQUEST = "backtest_request/1"
BACKTEST_SWEEP = "backtest_sweep/1"
QUEUE_ERROR = "queue_error/1"
BACKTEST_RESULT = "backtest_result/1"
BACKTEST_SWEEP_RESULT = "backtest_sweep_result/1"
# the day's work on the NAS
EOD_MANIFEST = "eod_manifest/1"
SCAN_RESULT = "scan_result/1"
PORTFOLIO = "portfolio/2"
ALERT_OUTBOX = "alert_outbox/1"
OPS_RUN_RECEIPT = "ops_run_receipt/1"
PREFLIGHT_TICKET = "preflight_ticket/1"
OPS_SUMMARY = "ops_summary/1"
DAILY_SUMMARY = "daily_summary/1"
OPS_STATUS = "ops_status/1"
LIVE_CYCLE_RECEIPT = "live_cycle_receipt/1"
WATCHDOG_STATE = "watchdog_state/1"
DASHBOARD_SIGNOUTS = "dashboard_signouts/1"
WORKER_HEARTBEAT = "worker_heartbeat/1"
# switches, operators and the REAL path (state/)
SWITCH = "switch/1"
GATE = "gate/1"
OPERATORS = "operators/1"
APPROVALS = "approvals/1"
WINDOWS = "windows/1"
EVENT_CHECKPOINT = "event_checkpoint/1"
LIVE_FIRE_RECEIPT = "live_fire_receipt/1"
LIVE_FIRE_JOURNAL = "live_fire_journal/1"
LIVE_FIRE_POSTMORTEM = "live_fire_postmortem/1"
# trading, Phase 0
MARKET_SNAPSHOT = "market_snapshot/1"
RECON_SUMMARY = "recon_summary/1"

FORMATS: tuple[Format, ...] = (
    Format(BACKTEST_REQUEST, "reports/pending/<id>.json", "krx request (nas/request.py); the PC's backtest API",
           "krx worker (common/schemas.py validates)"),
    Format(BACKTEST_SWEEP, "reports/pending/<id>.json", "krx request --sweep", "krx worker -> pc/sweep.py"),
    Format(QUEUE_ERROR, "reports/failed/<id>.error.json", "common/queue.py", "a person; krx ops status"),
    Format(BACKTEST_RESULT, "reports/done/<id>/result.json", "pc/report.py", "krx ops summary, daily summary"),
    Format(BACKTEST_SWEEP_RESULT, "reports/done/<id>/result.json", "pc/sweep.py", "a person"),
    Format(EOD_MANIFEST, "data/eod/manifest.json", "common/store.py", "common/store.py"),
    Format(SCAN_RESULT, "reports/signals/signals_<YYYYMMDD>.json", "krx scan", "krx alert, daily summary"),
    Format(PORTFOLIO, "state/portfolio.json", "krx scan --apply (common/book.py)", "krx scan, the cycle"),
    Format(ALERT_OUTBOX, "reports/outbox/<YYYYMMDD>.json", "krx alert", "the live fire"),
    Format(OPS_RUN_RECEIPT, "reports/ops/daily/ops_report_latest.json and snapshots/", "nas/cycle.py",
           "krx ops summary, daily summary, the ops API"),
    Format(PREFLIGHT_TICKET, "reports/tickets/preflight/<run_id>.json", "nas/cycle.py", "a person"),
    Format(OPS_SUMMARY, "reports/ops/summary/ops_summary_latest.json", "nas/summary.py", "the ops API, scripts"),
    Format(DAILY_SUMMARY, "reports/ops/daily_summary/<YYYY-MM-DD>.json",
           "nas/daily_summary.py", "nas/daily_summary.py"),
    Format(OPS_STATUS, "(an answer, not a file: GET /api/status)", "nas/status.py", "the dashboard, scripts"),
    Format(LIVE_CYCLE_RECEIPT, "reports/ops/live/", "krx ops live-cycle (nas/live_cycle.py)",
           "GET /api/live/cycle/latest, check_live_cycle.sh"),
    Format(DASHBOARD_SIGNOUTS, "state/dashboard_signouts.json", "the dashboard's sign-out (faces/http/session.py)",
           "every dashboard request"),
    Format(WATCHDOG_STATE, "state/watchdog.json", "krx ops watchdog (nas/watchdog.py)", "krx ops watchdog"),
    Format(WORKER_HEARTBEAT, "reports/ops/heartbeat/<host>.json", "krx worker (common/heartbeat.py)",
           "krx ops watchdog"),
    Format(SWITCH, "state/emergency_stop.json, state/sender.json", "common/switches.py", "every job"),
    Format(GATE, "state/gate.json", "common/switches.py", "every job"),
    Format(OPERATORS, "state/operators.json", "common/operators.py", "every authenticated action"),
    Format(APPROVALS, "state/approvals.json", "common/approvals.py", "common/window.py"),
    Format(WINDOWS, "state/windows.json", "common/window.py", "the gate, the live fire"),
    Format(EVENT_CHECKPOINT, "state/events.head.json, reports/ops/checkpoint/event_log_checkpoint.json",
           "common/anchor.py", "krx ops verify-log"),
    Format(LIVE_FIRE_RECEIPT, "reports/ops/push/live_fire/live_fire_latest.json and snapshots/",
           "nas/live_fire.py", "the postmortem, the ops API"),
    Format(LIVE_FIRE_JOURNAL, "state/live_fire.json", "nas/live_fire.py", "nas/live_fire.py (recovery)"),
    Format(LIVE_FIRE_POSTMORTEM, "reports/ops/push/postmortem/postmortem_latest.json",
           "nas/postmortem.py", "a person, the ops API"),
    Format(MARKET_SNAPSHOT, "state/trading.db (proposals), or --snapshot FILE", "nas/trading/proposals.py",
           "krx trade propose, the mock broker"),
    Format(RECON_SUMMARY, "reports/phase_c/latest/recon_summary.json",
           "nas/trading/reconcile.py", "a person, krx sync"),
)

#!/usr/bin/env bash
# cron job: the daily ops cycle (preflight, emergency stop, gate, ingest, scan, alert, request, sync), then the
# Slack daily summary.
# Exit 0 completed, 2 blocked by a safety check (not retried), 3 failed (retried).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 2 --retry-sleep 300 --lock daily --log "$KRX_LOG_DIR/cron_daily.log" -- "$KRX_BIN" ops cycle "$@"
rc=$?
# then the day's summary to Slack (once a day; its own failure never changes the cycle's exit code)
"$KRX_BIN" ops daily-summary >>"$KRX_LOG_DIR/cron_daily.log" 2>&1 || true
exit "$rc"

#!/usr/bin/env bash
# cron job: the daily ops cycle (preflight, emergency stop, gate, ingest, scan, alert, request, sync).
# Exit 0 completed, 2 blocked by a safety check (not retried), 3 failed (retried).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 2 --retry-sleep 300 --lock daily --log "$KRX_LOG_DIR/cron_daily.log" -- "$KRX_BIN" ops cycle "$@"

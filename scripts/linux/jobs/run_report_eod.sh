#!/usr/bin/env bash
# cron job: krx alert, under the generic wrapper (lock, bounded retries, one log line per attempt). Extra arguments
# go to the command, e.g. `run_report_eod.sh --date 2026-11-20`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 3 --retry-sleep 60 --lock alert --log "$KRX_LOG_DIR/cron_alert.log" -- "$KRX_BIN" alert "$@"

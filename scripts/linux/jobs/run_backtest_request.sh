#!/usr/bin/env bash
# cron job: krx request, under the generic wrapper (lock, bounded retries, one log line per attempt). Extra arguments
# go to the command, e.g. `run_backtest_request.sh --date 2026-11-20`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 2 --retry-sleep 30 --lock request --log "$KRX_LOG_DIR/cron_request.log" -- "$KRX_BIN" request "$@"

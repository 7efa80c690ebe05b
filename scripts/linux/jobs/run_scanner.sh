#!/usr/bin/env bash
# cron job: krx scan, under the generic wrapper (lock, bounded retries, one log line per attempt). Extra arguments
# go to the command, e.g. `run_scanner.sh --date 2026-11-20`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 2 --retry-sleep 30 --lock scan --log "$KRX_LOG_DIR/cron_scan.log" -- "$KRX_BIN" scan "$@"

#!/usr/bin/env bash
# cron job: krx ingest, under the generic wrapper (lock, bounded retries, one log line per attempt). Extra arguments
# go to the command, e.g. `run_ingest_eod.sh --date 2026-11-20`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 3 --retry-sleep 120 --lock ingest --log "$KRX_LOG_DIR/cron_ingest.log" -- "$KRX_BIN" ingest "$@"

#!/usr/bin/env bash
# cron job: pack reports, logs and cached data older than the retention window into verified monthly archives.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 1 --lock retention --log "$KRX_LOG_DIR/cron_retention.log" -- "$KRX_BIN" retention pack "$@"

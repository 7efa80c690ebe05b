#!/usr/bin/env bash
# cron job: weekly backup of the home with rsync to configs/app.yaml `retention.backup_target`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --retry 3 --retry-sleep 300 --lock backup --log "$KRX_LOG_DIR/cron_backup.log" -- "$KRX_BIN" retention backup "$@"

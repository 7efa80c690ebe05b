#!/usr/bin/env bash
# cron job: bring results home. Default: push reports/done and the ops receipts with the via/remote of
# configs/app.yaml `sync:`; pass arguments to choose, e.g. `sync_reports.sh pull --via rsync --remote pc:/krx`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
(($#)) || set -- push
run_generic --retry 3 --retry-sleep 60 --lock sync --log "$KRX_LOG_DIR/cron_sync.log" -- "$KRX_BIN" sync "$@"

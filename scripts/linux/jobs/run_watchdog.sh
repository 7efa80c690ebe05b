#!/usr/bin/env bash
# cron job every 15 minutes on the NAS: the dead-man checks (`krx ops watchdog`; docs/ops.md "Dead-man checks").
# Exit 0 all clear, 3 an incident is open (said once in Slack; not retried: the next run is 15 minutes away),
# 2 another watchdog run is still busy, 75 the wrapper's lock is held.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
run_generic --lock watchdog --log "$KRX_LOG_DIR/cron_watchdog.log" -- "$KRX_BIN" ops watchdog "$@"

#!/usr/bin/env bash
# One-minute check of the latest live cycle a running `krx serve` recorded (GET /api/live/cycle/latest): one line.
# Exit 0 COMPLETED (or none yet), 2 BLOCKED, 3 FAILED, no answer or a bad one.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_ops_api.sh"

api_get /api/live/cycle/latest
if [ "$API_STATUS" != 200 ]; then
  echo "live cycle: FAILED: $(api_error)"
  exit 3
fi
result=$(jget rows.0.result NONE)
if [ "$result" = NONE ]; then
  echo "live cycle: NONE none yet (POST /api/live/cycle/run?confirm=true or krx ops live-cycle)"
  exit 0
fi
echo "live cycle: $result $(jget rows.0.run_id) ($(jget rows.0.reason)) decision $(jget rows.0.decision.asof -)" \
  "push $(jget rows.0.push.delivery_actual) snapshot $(jget rows.0.snapshot_ref)"
case "$result" in
  COMPLETED) exit 0 ;;
  BLOCKED) exit 2 ;;
  *) exit 3 ;;
esac

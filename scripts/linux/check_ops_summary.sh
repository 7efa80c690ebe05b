#!/usr/bin/env bash
# One-minute check of the risk summary a running `krx serve` holds (GET /api/ops/summary/latest): one line.
# Exit 0 OK, WARN or NO_RUN_HISTORY (or no summary written yet), 2 STOPPED or BLOCKED, 3 no answer or a bad one.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_ops_api.sh"

api_get /api/ops/summary/latest
if [ "$API_STATUS" != 200 ]; then
  echo "ops summary: FAILED: $(api_error)"
  exit 3
fi
line=$(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1], encoding="utf-8"))["rows"]
if not rows:
    print("NONE no summary written yet (krx ops summary)")
else:
    s = rows[0]
    risks = ", ".join(r["code"] + "/" + r["severity"] for r in s["top_risks"]) or "no risk"
    print(s["overall_status"], len(s["top_risks"]), "risk(s):", risks, "(generated " + s["generated_at"] + ")")
' "$API_BODY" 2>&1) || { echo "ops summary: FAILED: unreadable answer: $line"; exit 3; }
echo "ops summary: $line"
case "${line%% *}" in
  OK|WARN|NO_RUN_HISTORY|NONE) exit 0 ;;
  STOPPED|BLOCKED) exit 2 ;;
  *) exit 3 ;;
esac

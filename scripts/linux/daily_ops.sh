#!/usr/bin/env bash
# The runbook's daily checklist against a running `krx serve` (docs/ops_api.md):
#   1. git pull of the results (when KRX_RESULTS_REPO names a git work tree, e.g. the PC's results repository)
#   2. health check                        GET  /api/ops/health
#   3. summary regenerate, then verify     POST /api/ops/summary/regenerate?confirm=true, GET /api/ops/summary/latest
#   4. live cycle run, then verify         POST /api/live/cycle/run?confirm=true,         GET /api/live/cycle/latest
#   5. resolver check of its snapshot      GET  /api/ops/resolve?ref=...
# Exit 0 done (the last line says DONE or WARN), 2 blocked by a safety check (emergency stop, unhealthy state, a
# blocked run), 3 failure (no answer, a refused call, a failed run). Env: KRX_API, KRX_OPERATOR_TOKEN (or
# KRX_OPERATOR_TOKEN_FILE), KRX_RESULTS_REPO.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_ops_api.sh"

warn=()
say() { printf 'daily_ops: %s\n' "$*"; }
finish() {  # finish RC WORD MESSAGE
  say "$2: $3"
  exit "$1"
}

# 1. the results
if [ -n "${KRX_RESULTS_REPO:-}" ]; then
  if git -C "$KRX_RESULTS_REPO" pull --ff-only -q >"$API_TMP/git.out" 2>&1; then
    say "results: pulled ($KRX_RESULTS_REPO at $(git -C "$KRX_RESULTS_REPO" rev-parse --short HEAD))"
  else
    warn+=("git pull failed: $(tail -n1 "$API_TMP/git.out")")
    say "results: WARN git pull failed; the day goes on with the results already here"
  fi
else
  say "results: no KRX_RESULTS_REPO; nothing to pull"
fi

# 2. health
api_get /api/ops/health
case "$API_STATUS" in
  200) say "health: ok (version $(jget version), gate $(jget effective_gate), store $(jget store_last_day -))" ;;
  503) finish 2 BLOCKED "health: the home's state is not sane: $(jget checks)" ;;
  *) finish 3 FAILED "health: $(api_error)" ;;
esac

# 3. the summary
api_post "/api/ops/summary/regenerate?confirm=true"
[ "$API_STATUS" = 200 ] || finish 3 FAILED "summary regenerate: $(api_error)"
api_get /api/ops/summary/latest
[ "$API_STATUS" = 200 ] || finish 3 FAILED "summary: $(api_error)"
overall=$(jget rows.0.overall_status)
risks=$(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1], encoding="utf-8"))["rows"]
print(", ".join(r["code"] for r in rows[0]["top_risks"]) if rows else "")
' "$API_BODY")
say "summary: $overall${risks:+ ($risks)}"
case "$overall" in
  OK) ;;
  WARN|NO_RUN_HISTORY) warn+=("summary $overall${risks:+: $risks}") ;;
  STOPPED|BLOCKED) finish 2 BLOCKED "summary is $overall${risks:+ ($risks)}; the live cycle was not run" ;;
  *) finish 3 FAILED "summary: unexpected overall_status '$overall'" ;;
esac

# 4. the live cycle
api_post "/api/live/cycle/run?confirm=true"
[ "$API_STATUS" = 200 ] || finish 3 FAILED "live cycle: $(api_error)"
run_id=$(jget run_id)
api_get /api/live/cycle/latest
[ "$API_STATUS" = 200 ] || finish 3 FAILED "live cycle latest: $(api_error)"
[ "$(jget rows.0.run_id)" = "$run_id" ] || finish 3 FAILED "live cycle latest is $(jget rows.0.run_id), not $run_id"
result=$(jget rows.0.result)
snapshot=$(jget rows.0.snapshot_ref)
say "live cycle $run_id: $result ($(jget rows.0.reason)); push $(jget rows.0.push.delivery_actual) ($(jget rows.0.push.reason))"
case "$result" in
  COMPLETED) ;;
  BLOCKED) finish 2 BLOCKED "live cycle $run_id was blocked: $(jget rows.0.reason)" ;;
  *) finish 3 FAILED "live cycle $run_id: $result ($(jget rows.0.reason))" ;;
esac

# 5. the snapshot through the resolver
api_get /api/ops/resolve --data-urlencode "ref=$snapshot"
[ "$API_STATUS" = 200 ] || finish 3 FAILED "resolve $snapshot: $(api_error)"
[ "$(jget run_id)" = "$run_id" ] || finish 3 FAILED "resolve $snapshot: it names run $(jget run_id), not $run_id"
say "snapshot: $snapshot resolves"

if [ "${#warn[@]}" -gt 0 ]; then
  finish 0 WARN "$(IFS='; '; printf '%s' "${warn[*]}")"
fi
finish 0 DONE "health ok, summary $overall, live cycle $run_id $result"

#!/usr/bin/env bash
# Run one job command for cron: a lock so two runs never overlap, bounded retries, one log line per attempt,
# and the command's own exit code back to the caller.
#
#   _run_generic.sh [--retry N] [--retry-sleep S] [--lock NAME] [--log FILE] -- CMD...
#
# --retry N        at most N attempts in all (default 1). Only a failure is retried: rc 0 (done) and rc 2
#                  (blocked by a safety check, a normal outcome) never are; rc 3 or any other rc is.
# --retry-sleep S  seconds between attempts (default 30)
# --lock NAME      flock on $KRX_HOME/state/locks/NAME.lock; when another run holds it this one exits at once
#                  with rc 75 (EX_TEMPFAIL) and a log line. `krx ingest`, `krx alert` and `krx ops cycle` take
#                  their lock (ingest, alert, daily) themselves too; under the wrapper they use its descriptor.
# --log FILE       append the log lines to FILE too (they always go to stderr)
# Exit: the command's rc of the last attempt; 64 on a usage error; 75 when the lock is held.
set -uo pipefail

retry=1 sleep_s=30 lock="" logfile=""
usage() { echo "usage: $(basename "$0") [--retry N] [--retry-sleep S] [--lock NAME] [--log FILE] -- CMD..." >&2; exit 64; }
while (($#)); do
  case "$1" in
    --retry) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || usage; retry=$2; shift 2 ;;
    --retry-sleep) [[ "${2:-}" =~ ^[0-9]+([.][0-9]+)?$ ]] || usage; sleep_s=$2; shift 2 ;;
    --lock) [[ "${2:-}" =~ ^[A-Za-z0-9._-]+$ ]] || usage; lock=$2; shift 2 ;;
    --log) [ -n "${2:-}" ] || usage; logfile=$2; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
(($#)) || usage
job="${lock:-$(basename "$1")}"
EVENT="JOB_$(printf '%s' "$job" | tr '[:lower:].-' '[:upper:]__')"

log_line() {  # LEVEL rc details elapsed_ms  -> the one format of DESIGN 8, Seoul time
  local line
  line="[$(TZ=Asia/Seoul date '+%Y-%m-%d %H:%M:%S')] [$1] [$EVENT] rc=$2 details=$3 elapsed=${4}ms"
  echo "$line" >&2
  if [ -n "$logfile" ]; then echo "$line" >>"$logfile"; fi
}
now_ms() { date +%s%3N; }

if [ -n "$lock" ]; then
  lock_dir="${KRX_HOME:-.}/state/locks"
  mkdir -p "$lock_dir" || { log_line ERROR 3 "cannot create lock folder $lock_dir" 0; exit 3; }
  exec 9>"$lock_dir/$lock.lock"
  if ! flock -n 9; then
    log_line WARNING 75 "lock $lock is held by another run; this run exits without running" 0
    exit 75
  fi
  # the command takes the same lock itself (common/locks.py): it finds it held on this descriptor
  export KRX_LOCK_FD=9
fi

attempt=1
while :; do
  start=$(now_ms)
  "$@"
  rc=$?
  elapsed=$(($(now_ms) - start))
  case $rc in
    0) log_line INFO 0 "attempt=$attempt/$retry cmd=$1 done" "$elapsed"; exit 0 ;;
    2) log_line WARNING 2 "attempt=$attempt/$retry cmd=$1 blocked by a safety check; not retried" "$elapsed"; exit 2 ;;
  esac
  if ((attempt >= retry)); then
    log_line ERROR "$rc" "attempt=$attempt/$retry cmd=$1 failed; no attempts left" "$elapsed"
    exit "$rc"
  fi
  log_line WARNING "$rc" "attempt=$attempt/$retry cmd=$1 failed; retrying in ${sleep_s}s" "$elapsed"
  attempt=$((attempt + 1))
  sleep "$sleep_s"
done

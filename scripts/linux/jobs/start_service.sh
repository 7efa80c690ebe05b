#!/usr/bin/env bash
# (Re)start one long-running krx service in the background, for a host without systemd (Synology DSM): as the
# watchdog's restart command (configs/app.yaml `watchdog.restart.serve: [/volume1/krx/scripts/linux/jobs/
# start_service.sh, serve]`) and as a boot-up task. With systemd use scripts/linux/systemd/ instead.
#
#   start_service.sh serve|execution-server|worker [ARGS...]
#
# A running copy started by this script (its pid in $KRX_HOME/state/<service>.pid, checked against the process's
# command line) is stopped first: SIGTERM, up to 30 s, then SIGKILL; the watchdog only calls this when the service
# does not answer, and a hung process must not keep the port. The new one runs in its own session (it outlives
# this script and cron), output appended to $KRX_LOG_DIR/<service>.out.
# The execution server's secrets never live in the home's .env: this script reads them for it alone from
# $KRX_EXECUTION_ENV_FILE (default ~/.config/krx-alertor/execution.env, KEY=value lines, chmod 600) when present.
# Exit: 0 started, 64 usage, 3 it exited at once (see the .out file).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
set -uo pipefail

service="${1:-}"
case "$service" in
  serve) cmd=("$KRX_BIN" serve) ;;
  execution-server) cmd=("$KRX_BIN" trade execution-server) ;;
  worker) cmd=("$KRX_BIN" worker) ;;
  *) echo "usage: $(basename "$0") serve|execution-server|worker [ARGS...]" >&2; exit 64 ;;
esac
shift
cmd+=("$@")
mkdir -p "$KRX_HOME/state"
pidfile="$KRX_HOME/state/$service.pid"
out="$KRX_LOG_DIR/$service.out"

ours() {  # the pid is alive and is this service (a pid file may outlive its process, and pids are reused)
  local line
  line="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  [[ "$line" == *krx* && "$line" == *" ${cmd[1]} "* ]]
}
if [ -f "$pidfile" ]; then
  old="$(cat "$pidfile")"
  if [[ "$old" =~ ^[0-9]+$ ]] && ours "$old"; then
    kill -TERM "$old" 2>/dev/null
    for _ in $(seq 1 30); do ours "$old" || break; sleep 1; done
    ours "$old" && kill -KILL "$old" 2>/dev/null
    echo "[$(date '+%Y-%m-%d %H:%M:%S')] stopped $service (pid $old)" >>"$out"
  fi
fi

if [ "$service" = execution-server ]; then
  envfile="${KRX_EXECUTION_ENV_FILE:-$HOME/.config/krx-alertor/execution.env}"
  if [ -f "$envfile" ]; then set -a; source "$envfile"; set +a; fi
fi
echo "[$(date '+%Y-%m-%d %H:%M:%S')] starting $service: ${cmd[*]}" >>"$out"
cd "$KRX_HOME" || exit 3
detach=(nohup)
command -v setsid >/dev/null && detach=(setsid)  # its own session: cron ending the task does not end it
"${detach[@]}" "${cmd[@]}" </dev/null >>"$out" 2>&1 &
pid=$!
echo "$pid" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
sleep 1
if ! kill -0 "$pid" 2>/dev/null; then
  echo "$service exited at once; see $out" >&2
  exit 3
fi
echo "$service started (pid $pid, output $out)"

# Sourced by the job scripts: where the project, its venv and the home are. Override any of them in the
# crontab or the environment (KRX_HOME, KRX_BIN, KRX_LOG_DIR).
JOBS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$JOBS_DIR/../../.." && pwd)"
export KRX_HOME="${KRX_HOME:-$REPO_DIR}"
export TZ="${TZ:-Asia/Seoul}"
KRX_BIN="${KRX_BIN:-$REPO_DIR/.venv/bin/krx}"
KRX_LOG_DIR="${KRX_LOG_DIR:-$KRX_HOME/logs}"
mkdir -p "$KRX_LOG_DIR"
run_generic() { "$JOBS_DIR/_run_generic.sh" "$@"; }

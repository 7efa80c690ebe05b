# Sourced by the runbook scripts beside it: how they talk to `krx serve` (curl) and read its answers (python3 -c).
#   KRX_API             the server (default http://127.0.0.1:8000)
#   KRX_OPERATOR_TOKEN  the operator token for POSTs (or KRX_OPERATOR_TOKEN_FILE: a file holding it)
# The token goes to curl in a header file of mode 0600 (never on a command line, where `ps` would show it) and
# is never printed. Answers are written to files and read with `python3 -c` (never `eval`, never a heredoc on a
# pipe's stdin); refs are URL-encoded by curl (--data-urlencode).
KRX_API="${KRX_API:-http://127.0.0.1:8000}"
KRX_API="${KRX_API%/}"
API_TMP="$(mktemp -d "${TMPDIR:-/tmp}/krx-api.XXXXXX")"
trap 'rm -rf "$API_TMP"' EXIT
API_STATUS=""   # the HTTP status of the last call ("000": no answer)
API_BODY="$API_TMP/body.json"

_auth_header() {
  local token="${KRX_OPERATOR_TOKEN:-}"
  if [ -z "$token" ] && [ -n "${KRX_OPERATOR_TOKEN_FILE:-}" ]; then
    IFS= read -r token <"$KRX_OPERATOR_TOKEN_FILE" || true
  fi
  [ -n "$token" ] || return 1
  (umask 077 && printf 'Authorization: Bearer %s\n' "$token" >"$API_TMP/auth.hdr")
}

# api_get PATH [curl args...]: GET into $API_BODY; sets API_STATUS
api_get() {
  local path="$1"; shift
  API_STATUS=$(curl -sS -G -o "$API_BODY" -w '%{http_code}' --max-time "${KRX_API_TIMEOUT:-30}" "$@" \
    "$KRX_API$path" 2>"$API_TMP/curl.err") || API_STATUS="000"
}

# api_post PATH: POST (as the operator) into $API_BODY; sets API_STATUS; 1 when there is no token
api_post() {
  _auth_header || { API_STATUS="no-token"; return 1; }
  API_STATUS=$(curl -sS -X POST -o "$API_BODY" -w '%{http_code}' --max-time "${KRX_API_RUN_TIMEOUT:-3600}" \
    -H @"$API_TMP/auth.hdr" "$KRX_API$1" 2>"$API_TMP/curl.err") || API_STATUS="000"
}

# jget KEY.PATH [DEFAULT]: a value of $API_BODY (dots between keys, numbers index lists); DEFAULT when absent
jget() {
  python3 -c '
import json, sys
try:
    value = json.load(open(sys.argv[1], encoding="utf-8"))
    for key in sys.argv[2].split("."):
        value = value[int(key)] if isinstance(value, list) else value[key]
except (OSError, ValueError, KeyError, IndexError, TypeError):
    value = sys.argv[3] if len(sys.argv) > 3 else ""
print("" if value is None else value if isinstance(value, str) else json.dumps(value))
' "$API_BODY" "$1" "${2-}"
}

# api_error: one line saying why the last call failed (the answer's code and message, or curl's)
api_error() {
  if [ "$API_STATUS" = "000" ]; then
    printf 'no answer from %s (%s)' "$KRX_API" "$(tr '\n' ' ' <"$API_TMP/curl.err" | cut -c1-200)"
  elif [ "$API_STATUS" = "no-token" ]; then
    printf 'a POST needs an operator: set KRX_OPERATOR_TOKEN or KRX_OPERATOR_TOKEN_FILE'
  else
    printf 'HTTP %s %s: %s' "$API_STATUS" "$(jget code)" "$(jget message | cut -c1-300)"
  fi
}

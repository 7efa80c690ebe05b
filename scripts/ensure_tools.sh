#!/usr/bin/env bash
# `make demo` and `make test` use rsync and git for real, and curl (the runbook scripts of scripts/linux/ talk to
# `krx serve` with it). Install whatever of them is missing when this user may
# (root, or sudo without a password; Debian/Ubuntu apt-get), otherwise stop before anything runs, with one line
# saying what to install. Exit 0 when all are there (afterwards), 1 otherwise.
#
# --browser (`make test`): also chromium, which the dashboard's browser tests drive. It is installed the same way,
# but its absence stops nothing here: those tests then skip with the reason, except under CI (CI set), where they
# fail, so a green CI run always drove a real browser.
set -uo pipefail
tools=(rsync git curl)
optional=()
[ "${1:-}" = --browser ] && optional=(chromium)
missing() { local t; for t in "$@"; do command -v "$t" >/dev/null 2>&1 || printf '%s ' "$t"; done; }
need=$(missing "${tools[@]}" "${optional[@]}")
[ -z "$need" ] && exit 0
need=${need% }
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  sudo=(sudo -n)
else
  sudo=(none)
fi
if [ "${sudo[0]:-}" != none ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing $need (apt-get)" >&2
  # shellcheck disable=SC2086  # one word per package
  "${sudo[@]}" apt-get update -qq >/dev/null && \
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $need >/dev/null
fi
if [ -n "$(missing "${optional[@]}")" ]; then
  echo "chromium is missing (Debian/Ubuntu: sudo apt-get install chromium): the dashboard's browser tests will" \
       "skip$([ -n "${CI:-}" ] && echo ', and fail under CI')" >&2
fi
need=$(missing "${tools[@]}")
[ -z "$need" ] && exit 0
need=${need% }
echo "krx-alertor needs $need: install it first (Debian/Ubuntu: sudo apt-get install $need), then run make again" >&2
exit 1

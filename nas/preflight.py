"""The daily cycle's preflight: dependencies, configs, home writable, credentials, free disk, calendar.

Every check is {check, ok, details}; one that is not ok means the cycle must not run (BLOCKED, PREFLIGHT_FAIL).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from common import atomic, calendar, config
from common.home import Home
from nas import selftest

CONFIGS = ("app", "notify", "strategies", "execution_allowlist")
BASE_DEPENDENCIES = ("pandas", "numpy", "pyarrow", "yaml", "tenacity", "exchange_calendars", "rich", "dotenv")


def _check_dependencies(source: str, slack: bool) -> tuple[bool, str]:
    wanted = list(BASE_DEPENDENCIES) + (["slack_sdk"] if slack else []) + (["pykrx"] if source == "pykrx" else [])
    # find_spec, not import: importing pykrx logs in to KRX, which a preflight must never do
    gone = [m for m in wanted if importlib.util.find_spec(m) is None]
    return (not gone), ("missing: " + ", ".join(gone)) if gone else f"{len(wanted)} modules importable"


def _check_writable(home: Home, receipts: Path) -> tuple[bool, str]:
    bad = []
    for folder in (home.state, receipts, home.logs, home.data):
        try:
            probe = atomic.write_text(folder / f".krx_probe_{os.getpid()}", "probe")
            probe.unlink()
        except OSError as exc:
            bad.append(f"{folder.relative_to(home.root)} ({exc.strerror})")
    return (not bad), ("not writable: " + ", ".join(bad)) if bad else "state, reports, logs, data writable"


def preflight(home: Home, env: Mapping[str, str], day: dt.date | None, receipts: Path) -> tuple[list[dict], dict]:
    """(every check as {check, ok, details}, the configs that loaded, by name). `ok` False on any check means the
    cycle must not run; the configs are validated here once and the cycle uses them (`receipts`: the folder the
    cycle writes its receipt to, checked writable with the state, logs and data)."""
    checks: list[dict] = []

    def add(name: str, ok: bool, details: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "details": details})

    configs: dict[str, dict] = {}
    try:
        for name in CONFIGS:
            configs[name] = config.load(name, home, env=env)
        add("configs", True, f"{', '.join(CONFIGS)} valid")
    except config.ConfigError as exc:
        add("configs", False, str(exc))
        return checks, configs
    app, notify = configs["app"], configs["notify"]
    slack_used = notify["delivery_policy"] == "SLACK" or notify["error_log_to_slack"]
    add("dependencies", *_check_dependencies(app["source"], slack_used))
    add("home_writable", *_check_writable(home, receipts))
    reqs = selftest.requirements(app, notify, env)
    bad = selftest.missing(reqs)
    add("credentials", not bad, ("missing secrets for: " + ", ".join(r.channel for r in bad)) if bad
        else f"source {app['source']}, delivery {notify['delivery_policy']}: required secrets present")
    try:
        free_mb = shutil.disk_usage(home.root).free // (1024 * 1024)
        floor = app["ops"]["min_free_disk_mb"]
        add("free_disk", free_mb >= floor, f"{free_mb} MB free (minimum {floor} MB)")
    except OSError as exc:
        add("free_disk", False, f"cannot read free space: {exc.strerror}")
    try:
        cal = calendar.load(home, app["calendar"])
        if day is not None:
            cal.is_trading_day(day)  # raises outside the calendar's range
        add("calendar", True, f"XKRX {cal.first}..{cal.last}")
    except Exception as exc:  # a broken calendar is a preflight failure, whatever the cause
        add("calendar", False, f"{type(exc).__name__}: {exc}")
    return checks, configs

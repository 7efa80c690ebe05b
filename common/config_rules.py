"""What each config value may be, beyond the type its shipped default gives it: a choice, a range, a ticker, a
loopback address. Keys are dotted paths; `*` matches one level (common/config.py applies them at load)."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

Rule = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def choice(*allowed: Any) -> Rule:
    return lambda v: None if v in allowed else "one of " + ", ".join(map(str, allowed))


def between(lo: float, hi: float) -> Rule:
    return lambda v: None if lo <= v <= hi else f"a number between {lo} and {hi}"


# KRX's short codes: six characters, digits and capital letters (005930, 00104K, 0000J0). Every ticker a config,
# a parameter or a request names must match it: it ends up in file names, log lines and Slack.
TICKER_RE = re.compile(r"[0-9A-Z]{6}")


def _ticker(v: Any) -> str | None:
    return None if isinstance(v, str) and TICKER_RE.fullmatch(v) else "a 6-character KRX ticker like 005930"


def _core_tickers(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(h, Mapping) and _ticker(h.get("ticker")) is None for h in v)
    return None if ok else "a list of {ticker, weight} whose tickers are 6-character KRX tickers like 005930"


def _core_holdings(v: Any) -> str | None:
    ok = all(
        isinstance(h, Mapping) and set(h) == {"ticker", "weight"} and isinstance(h["ticker"], str)
        and isinstance(h["weight"], (int, float)) and not isinstance(h["weight"], bool) and 0 < h["weight"] <= 1
        for h in v
    )
    if ok and sum(h["weight"] for h in v) <= 1:
        return None
    return "a list of {ticker: str, weight: 0..1} whose weights sum to at most 1"


def _tax_table(v: Any) -> str | None:
    ok = all(isinstance(row, Mapping) and isinstance(row.get("from"), dt.date) and len(row) > 1
             and all(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r <= 1000
                     for k, r in row.items() if k != "from") for row in v)
    if ok and all(a["from"] < b["from"] for a, b in zip(v, v[1:], strict=False)):
        return None
    return "a list of {from: YYYY-MM-DD, <market>: bps 0..1000, ...} rows in increasing date order"


def _hhmm(v: Any) -> str | None:
    try:
        dt.datetime.strptime(v, "%H:%M")
        return None
    except (TypeError, ValueError):
        return "a time HH:MM"


def _loopback_host(v: Any) -> str | None:
    return None if v in LOOPBACK_HOSTS else "a loopback host (Phase 0): " + ", ".join(LOOPBACK_HOSTS)


def _loopback_url(v: Any) -> str | None:
    from urllib.parse import urlsplit

    try:
        url = urlsplit(v)
        ok = url.scheme in ("http", "https") and url.hostname in LOOPBACK_HOSTS and url.port is not None
    except (TypeError, ValueError):
        ok = False
    return None if ok else "a loopback URL with a port, e.g. http://127.0.0.1:29443 (Phase 0: mock only)"


def _http_url(v: Any) -> str | None:
    """"" (unset) or an http(s) URL with a host: the PC's backtest API, a health check's address."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(v)
        ok = v == "" or (url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0)
    except (TypeError, ValueError, AttributeError):
        ok = False
    return None if ok else '"" or an http(s) URL, e.g. http://pc:8000 or http://127.0.0.1:8000/api/ops/health'


def _argv(v: Any) -> str | None:
    # a list, never a string a shell would split: no quoting, no injection, and the program named by its full path
    # (cron's PATH is minimal and must not choose which program runs)
    ok = isinstance(v, list) and all(isinstance(a, str) and a and "\0" not in a for a in v) and \
        (not v or os.path.isabs(v[0]))
    return None if ok else "a list: a program by its absolute path, then its arguments (no shell), or [] (none)"


def _env_name(v: Any) -> str | None:
    return None if isinstance(v, str) and v.replace("_", "").isalnum() and v.isupper() else \
        "an environment variable name (A-Z, 0-9, _)"


def _dates(v: Any) -> str | None:
    return None if all(isinstance(d, dt.date) for d in v) else "a list of dates YYYY-MM-DD"


def _action_names(v: Any) -> str | None:
    ok = all(isinstance(a, str) and a.replace("_", "").isalnum() and a.islower() for a in v)
    return None if ok and len(set(v)) == len(v) else "a list of distinct names like live_fire (a-z, 0-9, _)"


# Tickers of the configs and of a request's parameters: real KRX codes (unit tests of the engine use made-up ones)
TICKER_RULES: dict[str, Rule] = {"core_holdings": _core_tickers, "benchmark": _ticker, "regime.ticker": _ticker}

STRATEGY_RULES: dict[str, Rule] = {
    "rebalance": choice("month_end", "week_end", "every_n"),
    "rebalance_every_n": between(1, 10_000),
    "top_n": between(0, 1000),
    "invest_fraction": between(0, 1),
    "initial_cash": between(1, 1e15),
    "commission_bps": between(0, 1000),
    "sell_tax": _tax_table,
    "execution": choice("next_open", "close"),
    "slippage_bps": between(0, 1000),
    "core_holdings": _core_holdings,
    "lookbacks": lambda v: None if v and all(1 <= x <= 5000 for x in v) else "a non-empty list of day counts 1..5000",
    "weights": lambda v: None if v and all(-100 <= x <= 100 for x in v) else
    "a non-empty list of weights -100..100, one per lookback",
    "daily_limit_pct": between(0, 1000),
    "filters.min_history_days": between(0, 10_000),
    "filters.min_avg_value": between(0, 1e15),
    "filters.value_window": between(1, 1000),
    "regime.sma_days": between(1, 5000),
    "sell_rules.trend_sma_days": between(1, 5000),
    "sell_rules.rsi_days": between(2, 1000),
    "sell_rules.rsi_overbought": between(0, 100),
    "sell_rules.stop_loss_pct": between(0, 100),
}

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

RULES: dict[str, dict[str, Rule]] = {
    # every number has a range (a negative size or timeout fails everything at once); NaN and infinity are
    # refused by the type check itself
    "app": {
        "source": choice("sample", "pykrx"),
        "sample.seed": between(0, 2**32 - 1),
        "sample.tickers": between(10, 3000),
        "ingest.history_days": between(1, 36_500),
        "ingest.http_timeout_s": between(1, 600),
        "ingest.login_lock_wait_s": between(0, 7200),
        "calendar.confirmed_open": _dates,
        "retry.attempts": between(1, 20),
        "retry.deadline_s": between(1, 86_400),
        "retry.wait_initial_s": between(0, 3600),
        "retry.wait_max_s": between(0, 3600),
        "worker.interval_s": between(0.05, 3600),
        "worker.lease_s": between(1, 86400),
        "worker.max_attempts": between(1, 100),
        "worker.concurrency": between(1, 64),
        "worker.settle_s": between(0, 3600),
        "worker.max_request_bytes": between(1024, 1 << 30),
        "worker.stop_grace_s": between(0, 3600),
        "worker.http.port": between(1, 65535),
        "request.years": between(1, 50),
        "request.via": _http_url,
        "request.http_timeout_s": between(0.1, 600),
        "sweep.workers": between(0, 1024),
        "sync.via": choice("rsync", "git"),
        "sync.io_timeout_s": between(1, 86_400),
        "sync.timeout_s": between(1, 86_400),
        "ops.min_free_disk_mb": between(0, 1e15),
        "ops.queue_backlog_hours": between(0, 8760),
        "ops.step_timeout_s": between(1, 86_400),
        "retention.keep_days": between(1, 36_500),
        "retention.backup_keep": between(0, 10_000),
        "real_path.approval_ttl_hours": between(1, 168),
        "real_path.window_max_minutes": between(1, 120),
        "real_path.max_real_executions": between(1, 10),
        "watchdog.cycle_deadline": _hhmm,
        "watchdog.heartbeat_max_age_s": between(0, 30 * 86_400),
        "watchdog.health_timeout_s": between(0.1, 120),
        "watchdog.health.*": _http_url,
        "watchdog.restart_timeout_s": between(1, 3600),
        "watchdog.restart.*": _argv,
        "live_fire.weekday": choice("MON", "TUE", "WED", "THU", "FRI"),
        "live_fire.start": _hhmm,
        "live_fire.end": _hhmm,
        "api.post_burst": between(1, 10_000),
        "api.post_per_minute": between(1, 100_000),
    },
    "execution_allowlist": {"allowed": _action_names},
    "notify": {
        "delivery_policy": choice("CONSOLE_ONLY", "SLACK"),
        "error_log.fold_window_s": between(0, 86_400),
        "error_log.queue_size": between(1, 100_000),
        "error_log.flush_timeout_s": between(0, 600),
        "error_log.timeout_s": between(1, 600),
    },
    "strategies": {f"strategies.*.{k}": rule for k, rule in {**STRATEGY_RULES, **TICKER_RULES}.items()},
    "trading": {
        "*.host": _loopback_host,
        "*.port": between(1024, 65535),
        "*.url": _loopback_url,
        "*.base_url": _loopback_url,
        "execution.secret_env": _env_name,
        "execution.service_credential_env": _env_name,
        "broker.app_key_env": _env_name,
        "broker.app_secret_env": _env_name,
        "*.timeout_s": between(0.1, 600),
        "execution.default_token_ttl_s": between(1, 86400),
        "execution.max_token_ttl_s": between(1, 86400),
        "broker.account": lambda v: None if len(v) == 8 and v.isdigit() else "8 digits (CANO)",
        "broker.product_code": lambda v: None if len(v) == 2 and v.isdigit() else "2 digits (ACNT_PRDT_CD)",
        "broker.rate_limit_per_s": between(1, 1000),
        "limits.max_order_value": between(1, 1e12),
        "limits.max_orders_per_day": between(0, 1000),
        "limits.markets": lambda v: None if v and all(m in ("KOSPI", "KOSDAQ", "KONEX", "ETF") for m in v) else
        "a non-empty list of KOSPI, KOSDAQ, KONEX, ETF",
        "limits.limit_band_pct": between(0, 30),
    },
}

"""YAML configs, validated at load, every value overridable from the environment.

The shipped default file of each config is its schema: a key that is not in it is unknown, and a value
must have the default's type. A few keys carry an extra rule (a choice, a range) in RULES.
Environment overrides: KRX__<FILE>__<KEY>[__<SUBKEY>...]=<YAML scalar>, e.g. KRX__NOTIFY__DELIVERY_POLICY=SLACK.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from common import safeio
from common.errors import AlertorError
from common.home import DEFAULT_CONFIGS, Home

ENV_PREFIX = "KRX__"
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(AlertorError, ValueError):
    """A config value is wrong: names the file, the key path and what was expected."""

    def __init__(self, file: str | os.PathLike, key: str, expected: str, got: Any = None):
        self.file, self.key, self.expected, self.got = str(file), key, expected, got
        shown = "" if got is None else f", got {_clip(repr(got))}"  # a 4,000-digit value is not echoed whole
        super().__init__(f"{self.file}: {key or '<top>'}: expected {expected}{shown}")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


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
        "request.years": between(1, 50),
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


def default_path(name: str) -> Path:
    return DEFAULT_CONFIGS / f"{name}.yaml"


_PARSED: dict[str, Any] = {}  # file text -> parsed data: each distinct text is parsed once per process


def _read_yaml(path: Path) -> Any:
    """The parsed file (a fresh copy: callers merge into it). YAML parsing is slow and jobs load the same configs
    many times (every backtest build reads strategies.yaml), so the same text is never parsed twice."""
    try:
        text = safeio.read_bytes(path, MAX_CONFIG_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "<file>", f"UTF-8 text (byte {exc.start} is not)") from None
    except ValueError as exc:  # a folder, FIFO, link or 1 GB where the config should be
        raise ConfigError(path, "<file>", f"a readable YAML file ({exc})") from None
    except OSError as exc:
        raise ConfigError(path, "<file>", "a readable YAML file", exc.strerror) from None
    if text not in _PARSED:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "<file>"
            raise ConfigError(path, where, "valid YAML", str(getattr(exc, "problem", exc))) from None
        _PARSED[text] = {} if data is None else data
    return copy.deepcopy(_PARSED[text])


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, dt.date):
        return "a date YYYY-MM-DD"
    if isinstance(default, str):
        return "a string"
    return type(default).__name__


def _check(value: Any, schema: Any, key: str, file: Path) -> Any:
    """Return `value` checked (and normalised) against the default `schema`, or raise ConfigError."""
    if isinstance(schema, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(file, key, "a mapping", value)
        out = {}
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in schema:
                raise ConfigError(file, sub, "a known key (one of " + ", ".join(map(str, schema)) + ")")
            out[k] = _check(v, schema[k], sub, file)
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise ConfigError(file, key, "a list", value)
        if not schema:  # an empty default list carries no element type: a RULES entry checks it
            return value
        return [_check(v, schema[0], f"{key}[{i}]", file) for i, v in enumerate(value)]
    if isinstance(schema, bool):
        ok = isinstance(value, bool)
    elif isinstance(schema, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(schema, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(schema, dt.date):
        if isinstance(value, str):
            try:
                value = dt.date.fromisoformat(value)
            except ValueError:
                pass
        ok = isinstance(value, dt.date)
    elif isinstance(schema, str):
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(file, key, _type_name(schema), value)
    return value


def _matches(pattern: str, key: str) -> bool:
    p, k = pattern.split("."), key.split(".")
    return len(p) == len(k) and all(a in ("*", b) for a, b in zip(p, k, strict=True))


def _walk(data: Any, prefix: str = ""):
    if isinstance(data, Mapping):
        for k, v in data.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            yield key, v
            yield from _walk(v, key)


def apply_rules(data: Mapping, rules: Mapping[str, Rule], file: Path, prefix: str = "") -> None:
    for key, value in _walk(data, prefix):
        for pattern, rule in rules.items():
            if _matches(pattern, key):
                expected = rule(value)
                if expected:
                    raise ConfigError(file, key, expected, value)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def _scalar(raw: str) -> Any:
    """An environment value read as a YAML scalar; text YAML would drop (e.g. '#invest_ops', a comment) stays text."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if value is None and raw.strip() not in ("null", "~", "Null", "NULL"):
        return raw
    return value


def _env_overrides(name: str, schema: Mapping, env: Mapping[str, str]) -> tuple[dict, dict[str, str]]:
    """Collect KRX__<NAME>__... variables into a nested dict, keys matched to the schema's spelling; and which
    variable set which key path (so an error names the variable, not the file)."""
    prefix = f"{ENV_PREFIX}{name.upper()}__"
    out: dict = {}
    origin: dict[str, str] = {}
    for var, raw in env.items():
        if not var.startswith(prefix):
            continue
        parts = var[len(prefix):].split("__")
        node, sch, path = out, schema, []
        for i, part in enumerate(parts):
            known = {str(k).upper(): k for k in sch} if isinstance(sch, Mapping) else {}
            key = known.get(part.upper(), part.lower())
            path.append(str(key))
            if i == len(parts) - 1:
                node[key] = _scalar(raw)
            else:
                node = node.setdefault(key, {})
                sch = sch.get(key, {}) if isinstance(sch, Mapping) else {}
        origin[".".join(path)] = var
    return out, origin


def _from_env(exc: ConfigError, origin: Mapping[str, str], fallback: Path) -> ConfigError:
    """The error again, naming the environment variable that set the key (or the key's parent)."""
    key = exc.key
    for path, var in sorted(origin.items(), key=lambda kv: -len(kv[0])):
        if key == path or key.startswith(path + ".") or key.startswith(path + "["):
            return ConfigError(f"environment variable {var}", key, exc.expected, exc.got)
    return ConfigError(fallback, key, exc.expected, exc.got) if exc.file.startswith("<environment") else exc


def load(name: str, home: Home | None = None, env: Mapping[str, str] | None = None) -> dict:
    """Load configs/<name>.yaml of the home (the shipped default where the home has none), validated."""
    home = home or Home.from_env()
    env = os.environ if env is None else env
    schema = _read_yaml(default_path(name))
    path = home.configs / f"{name}.yaml"
    data = _read_yaml(path) if path.exists() or path.is_symlink() else {}
    if not (path.exists() or path.is_symlink()):
        path = default_path(name)
    merged = _merge(copy.deepcopy(schema), data)
    merged = _check(merged, schema, "", path)
    overrides, origin = _env_overrides(name, schema, env)
    try:
        if overrides:
            merged = _check(_merge(merged, overrides), schema, "", Path(f"<environment {ENV_PREFIX}{name.upper()}>"))
        apply_rules(merged, RULES.get(name, {}), path)  # on the final values: a variable may fix the file's
    except ConfigError as exc:
        raise _from_env(exc, origin, path) from None
    if name == "strategies":
        missing = [s for s in merged.get("allowlist", []) if s not in merged.get("strategies", {})]
        if missing:
            raise ConfigError(path, "allowlist", "names with parameters under strategies:", missing[0])
    return merged


def allowed_strategy(strategies: Mapping, name: Any) -> Mapping | None:
    """The configured parameters of `name` when configs/strategies.yaml allows it (in `allowlist` and with
    parameters), else None: the one check both the queue and `krx backtest` make."""
    if isinstance(name, str) and name in strategies.get("allowlist", []):
        return strategies.get("strategies", {}).get(name)
    return None


def check_strategy_params(params: Mapping, base: Mapping, source: str = "<params>", *, tickers: bool = False) -> dict:
    """Merge overrides `params` into a strategy's `base` parameters and validate the result (`tickers`: also
    require KRX codes, as for a request from the queue)."""
    merged = _check(_merge(copy.deepcopy(dict(base)), dict(params)), base, "", Path(source))
    apply_rules(merged, {**STRATEGY_RULES, **TICKER_RULES} if tickers else STRATEGY_RULES, Path(source))
    if len(merged["weights"]) != len(merged["lookbacks"]):
        raise ConfigError(source, "weights", "one weight per lookback", merged["weights"])
    return merged


# Every secret the project reads; redaction (common.redact) hides the values of all of them.
SECRET_NAMES = ("KRX_ID", "KRX_PW", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "EXECUTION_JWT_SECRET",
                "EXECUTION_SERVICE_CREDENTIAL", "KIS_APP_KEY", "KIS_APP_SECRET")


def secret(name: str) -> str | None:
    """A secret from the environment (a home's .env is loaded into it by the CLI); None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None

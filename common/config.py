"""YAML configs, validated at load, every value overridable from the environment.

The shipped default file of each config is its schema: a key that is not in it is unknown, and a value
must have the default's type. A few keys carry an extra rule (a choice, a range) in RULES.
Environment overrides: KRX__<FILE>__<KEY>[__<SUBKEY>...]=<YAML scalar>, e.g. KRX__NOTIFY__DELIVERY_POLICY=SLACK.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from common.home import DEFAULT_CONFIGS, Home

ENV_PREFIX = "KRX__"


class ConfigError(ValueError):
    """A config value is wrong: names the file, the key path and what was expected."""

    def __init__(self, file: str | os.PathLike, key: str, expected: str, got: Any = None):
        self.file, self.key, self.expected = str(file), key, expected
        shown = "" if got is None else f", got {got!r}"
        super().__init__(f"{self.file}: {key or '<top>'}: expected {expected}{shown}")


Rule = Callable[[Any], str | None]  # returns what was expected, or None when the value is fine


def choice(*allowed: Any) -> Rule:
    return lambda v: None if v in allowed else "one of " + ", ".join(map(str, allowed))


def between(lo: float, hi: float) -> Rule:
    return lambda v: None if lo <= v <= hi else f"a number between {lo} and {hi}"


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


def _action_names(v: Any) -> str | None:
    ok = all(isinstance(a, str) and a.replace("_", "").isalnum() and a.islower() for a in v)
    return None if ok and len(set(v)) == len(v) else "a list of distinct names like live_fire (a-z, 0-9, _)"


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
    "lookbacks": lambda v: None if v and all(x >= 1 for x in v) else "a non-empty list of positive day counts",
    "weights": lambda v: None if v else "a non-empty list of weights, one per lookback",
    "filters.value_window": between(1, 1000),
    "regime.sma_days": between(1, 5000),
    "sell_rules.trend_sma_days": between(1, 5000),
    "sell_rules.rsi_days": between(2, 1000),
    "sell_rules.rsi_overbought": between(0, 100),
    "sell_rules.stop_loss_pct": between(0, 100),
}

RULES: dict[str, dict[str, Rule]] = {
    "app": {
        "source": choice("sample", "pykrx"),
        "sample.tickers": between(10, 3000),
        "ingest.http_timeout_s": between(1, 600),
        "retry.attempts": between(1, 20),
        "worker.interval_s": between(0.05, 3600),
        "worker.lease_s": between(1, 86400),
        "worker.max_attempts": between(1, 100),
        "worker.concurrency": between(1, 64),
        "sweep.workers": between(0, 1024),
        "sync.via": choice("rsync", "git"),
        "real_path.approval_ttl_hours": between(1, 168),
        "real_path.window_max_minutes": between(1, 120),
        "real_path.max_real_executions": between(1, 10),
        "live_fire.weekday": choice("MON", "TUE", "WED", "THU", "FRI"),
        "live_fire.start": _hhmm,
        "live_fire.end": _hhmm,
    },
    "execution_allowlist": {"allowed": _action_names},
    "notify": {"delivery_policy": choice("CONSOLE_ONLY", "SLACK")},
    "strategies": {f"strategies.*.{k}": rule for k, rule in STRATEGY_RULES.items()},
}


def default_path(name: str) -> Path:
    return DEFAULT_CONFIGS / f"{name}.yaml"


_PARSED: dict[str, Any] = {}  # file text -> parsed data: each distinct text is parsed once per process


def _read_yaml(path: Path) -> Any:
    """The parsed file (a fresh copy: callers merge into it). YAML parsing is slow and jobs load the same configs
    many times (every backtest build reads strategies.yaml), so the same text is never parsed twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", "a readable YAML file", exc.strerror) from None
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
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
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


def _env_overrides(name: str, schema: Mapping, env: Mapping[str, str]) -> dict:
    """Collect KRX__<NAME>__... variables into a nested dict, keys matched to the schema's spelling."""
    prefix = f"{ENV_PREFIX}{name.upper()}__"
    out: dict = {}
    for var, raw in env.items():
        if not var.startswith(prefix):
            continue
        parts = var[len(prefix):].split("__")
        node, sch = out, schema
        for i, part in enumerate(parts):
            known = {str(k).upper(): k for k in sch} if isinstance(sch, Mapping) else {}
            key = known.get(part.upper(), part.lower())
            if i == len(parts) - 1:
                node[key] = _scalar(raw)
            else:
                node = node.setdefault(key, {})
                sch = sch.get(key, {}) if isinstance(sch, Mapping) else {}
    return out


def load(name: str, home: Home | None = None, env: Mapping[str, str] | None = None) -> dict:
    """Load configs/<name>.yaml of the home (the shipped default where the home has none), validated."""
    home = home or Home.from_env()
    env = os.environ if env is None else env
    schema = _read_yaml(default_path(name))
    path = home.configs / f"{name}.yaml"
    data = _read_yaml(path) if path.exists() else {}
    if not path.exists():
        path = default_path(name)
    merged = _merge(copy.deepcopy(schema), data)
    merged = _check(merged, schema, "", path)
    overrides = _env_overrides(name, schema, env)
    if overrides:
        env_file = Path(f"<environment {ENV_PREFIX}{name.upper()}__...>")
        merged = _check(_merge(merged, overrides), schema, "", env_file)
        apply_rules(merged, RULES.get(name, {}), env_file)
    apply_rules(merged, RULES.get(name, {}), path)
    return merged


def check_strategy_params(params: Mapping, base: Mapping, source: str = "<params>") -> dict:
    """Merge overrides `params` into a strategy's `base` parameters and validate the result."""
    merged = _check(_merge(copy.deepcopy(dict(base)), dict(params)), base, "", Path(source))
    apply_rules(merged, STRATEGY_RULES, Path(source))
    if len(merged["weights"]) != len(merged["lookbacks"]):
        raise ConfigError(source, "weights", "one weight per lookback", merged["weights"])
    return merged


# Every secret the project reads; redaction (common.slack.redact) hides the values of all of them.
SECRET_NAMES = ("KRX_ID", "KRX_PW", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL")


def secret(name: str) -> str | None:
    """A secret from the environment (a home's .env is loaded into it by the CLI); None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None

"""YAML configs, validated at load, every value overridable from the environment.

The shipped default file of each config is its schema: a key that is not in it is unknown, and a value
must have the default's type. A few keys carry an extra rule (a choice, a range): common/config_rules.py.
Environment overrides: KRX__<FILE>__<KEY>[__<SUBKEY>...]=<YAML scalar>, e.g. KRX__NOTIFY__DELIVERY_POLICY=SLACK.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common import safeio
from common.config_rules import RULES, STRATEGY_RULES, TICKER_RULES, Rule
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


def default_path(name: str) -> Path:
    return DEFAULT_CONFIGS / f"{name}.yaml"


_PARSED: dict[str, Any] = {}  # file text -> parsed data: each distinct text is parsed once per process
# the inputs of a load (name, file, both texts, its KRX__ variables) -> the validated config: jobs load the same
# configs many times (every backtest build reads strategies.yaml), and each distinct input is validated once
_LOADED: dict[tuple, dict] = {}


def _read_text(path: Path) -> str:
    try:
        return safeio.read_bytes(path, MAX_CONFIG_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "<file>", f"UTF-8 text (byte {exc.start} is not)") from None
    except ValueError as exc:  # a folder, FIFO, link or 1 GB where the config should be
        raise ConfigError(path, "<file>", f"a readable YAML file ({exc})") from None
    except OSError as exc:
        raise ConfigError(path, "<file>", "a readable YAML file", exc.strerror) from None


def _parse(text: str, path: Path) -> Any:
    """The parsed text (a fresh copy: callers merge into it); YAML parsing is slow, so a text is parsed once."""
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
    path = home.configs / f"{name}.yaml"
    present = path.exists() or path.is_symlink()
    schema_text = _read_text(default_path(name))
    text = _read_text(path) if present else None
    prefix = f"{ENV_PREFIX}{name.upper()}__"
    variables = tuple(sorted((k, v) for k, v in env.items() if k.startswith(prefix)))
    key = (name, str(path), schema_text, text, variables)
    if key not in _LOADED:
        _LOADED[key] = _validated(name, path if present else default_path(name), schema_text, text, dict(variables))
    return copy.deepcopy(_LOADED[key])


def _validated(name: str, path: Path, schema_text: str, text: str | None, variables: Mapping[str, str]) -> dict:
    schema = _parse(schema_text, default_path(name))
    data = _parse(text, path) if text is not None else {}
    merged = _merge(copy.deepcopy(schema), data)
    merged = _check(merged, schema, "", path)
    overrides, origin = _env_overrides(name, schema, variables)
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

"""`backtest_request/1`: the one request schema, checked by the NAS before it queues and by the worker before any
work (DESIGN section 7).

    {"schema": "backtest_request/1", "id": "...", "created_at": "2024-01-05T16:10:00+09:00",
     "strategy": "momentum_topN_v1", "params": {"top_n": 10}, "universe": "ALL",
     "start": "2021-01-04", "end": "2024-01-05", "requested_by": "nas", "correlation_id": "20240105-..."}

- `id` matches `[A-Za-z0-9._-]{1,128}` (not starting with ".": hidden files are never read) and equals the file
  name's stem.
- `strategy` is in the allowlist of configs/strategies.yaml; `params` are overrides of that strategy's parameters
  and must pass the same checks as the config file.
- `universe` is a market name (UNIVERSES) or a list of 6-character tickers.
- No other field is allowed: a request never chooses a path, a job or anything outside these fields.

`backtest_sweep/1` (DESIGN section 12) has the same fields with `grid` in place of `params`: an object of
parameter paths (dots nest: `filters.enabled`) to lists of values, e.g. `{"top_n": [5, 10], "lookbacks": [[21, 63,
126], [63, 126, 252]]}`; at most MAX_SWEEP_RUNS combinations, each of which must pass the parameter checks.

Every failure is a RequestError with one of the codes below and a message that names the file and the field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import config, config_rules, formats, safeio
from common.errors import AlertorError
from common.home import Home
from common.log import now
from common.queue_names import ID_RE, is_valid_id

SCHEMA = formats.BACKTEST_REQUEST
SCAN_RESULT = formats.SCAN_RESULT
SWEEP_SCHEMA = formats.BACKTEST_SWEEP
MAX_SWEEP_RUNS = 1024  # a grid is checked combination by combination before any work: bounded
DEFAULT_MAX_BYTES = 1_048_576
INVALID_JSON, INVALID_REQUEST, STRATEGY_NOT_ALLOWED, TOO_LARGE = (
    "INVALID_JSON", "INVALID_REQUEST", "STRATEGY_NOT_ALLOWED", "TOO_LARGE")
REQUIRED = ("schema", "id", "created_at", "strategy", "params", "universe", "start", "end", "requested_by")
SWEEP_REQUIRED = tuple("grid" if k == "params" else k for k in REQUIRED)
OPTIONAL = ("correlation_id",)
UNIVERSES = ("ALL", "KOSPI", "KOSDAQ", "KONEX")
TICKER_RE = config_rules.TICKER_RE
MAX_TICKERS = 5000
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TEXT_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")  # printable one-liners: they end up in logs
_PARAM_RE = re.compile(r"[a-z_][a-z0-9_]{0,63}(\.[a-z_][a-z0-9_]{0,63}){0,3}")


class RequestError(AlertorError, ValueError):
    """A request that must not run. `code` is the error_code written to failed/<id>.error.json."""

    def __init__(self, code: str, message: str, *, file: str = "<request>", field: str | None = None):
        self.code, self.file, self.field = code, file, field
        super().__init__(message)


def _err(code: str, file: str, field: str | None, what: str) -> RequestError:
    where = f"{file}: {field}" if field else file
    return RequestError(code, f"{where}: {what}", file=file, field=field)


# --- reading ---------------------------------------------------------------------------------------------------


def parse(data: bytes, *, file: str = "<request>") -> dict:
    """Bytes -> the request object. INVALID_JSON for anything that is not one strict UTF-8 JSON object text
    (duplicate keys included: the last one would silently win)."""
    if not data.strip():
        raise _err(INVALID_JSON, file, None, "empty file")
    try:
        obj = safeio.loads_json(data)
    except ValueError as exc:
        raise _err(INVALID_JSON, file, None, f"not valid JSON: {exc}"[:300]) from None
    if not isinstance(obj, dict):
        raise _err(INVALID_REQUEST, file, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None) -> dict:
    """Read and parse one request file (`name`: how messages call it; default its file name). Only a regular file
    is read (a symbolic link, a folder or a FIFO is refused: a request never chooses a path), and at most
    max_bytes of it (TOO_LARGE, checked before reading and again while reading in case the file grows)."""
    path = Path(path)
    file = name or safeio.show_name(path.name)
    try:
        data = safeio.read_bytes(path, max_bytes)
    except safeio.UnsafeFile as exc:
        if exc.kind == "too_large":
            raise _err(TOO_LARGE, file, None, str(exc).split(": ", 1)[-1]) from None
        raise _err(INVALID_REQUEST, file, None, f"not a regular file ({exc.kind})") from None
    return parse(data, file=file)


# --- validating ------------------------------------------------------------------------------------------------


def _text(request: Mapping, key: str, file: str) -> str:
    value = request[key]
    if not isinstance(value, str) or not _TEXT_RE.fullmatch(value):
        raise _err(INVALID_REQUEST, file, key, f"expected a one-line string of 1 to 128 characters, got {value!r:.80}")
    return value


def is_date(value: Any) -> bool:
    """A date as the project's files write it: YYYY-MM-DD (fromisoformat alone also takes week dates)."""
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
        return True
    except ValueError:
        return False


def _date(request: Mapping, key: str, file: str) -> dt.date:
    value = request[key]
    try:
        if not isinstance(value, str) or not _DATE_RE.fullmatch(value):  # fromisoformat also takes week dates
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _err(INVALID_REQUEST, file, key, f"expected a date YYYY-MM-DD, got {value!r:.80}") from None


def _universe(value: Any, file: str) -> None:
    if isinstance(value, str):
        if value not in UNIVERSES:
            raise _err(INVALID_REQUEST, file, "universe", f"expected one of {', '.join(UNIVERSES)} or a list of "
                       f"tickers, got {value!r:.80}")
        return
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TICKERS:
        raise _err(INVALID_REQUEST, file, "universe", f"expected one of {', '.join(UNIVERSES)} or a list of 1 to "
                   f"{MAX_TICKERS} tickers, got {type(value).__name__}")
    for i, ticker in enumerate(value):
        if not isinstance(ticker, str) or not TICKER_RE.fullmatch(ticker):
            raise _err(INVALID_REQUEST, file, f"universe[{i}]", f"expected a 6-character ticker, got {ticker!r:.40}")
    if len(set(value)) != len(value):
        raise _err(INVALID_REQUEST, file, "universe", "lists a ticker twice")


def validate(request: Any, *, stem: str | None = None, home: Home | None = None, strategies: Mapping | None = None,
             file: str = "<request>") -> dict:
    """Check a parsed request against backtest_request/1 and the strategies config (loaded from `home` unless
    given). `stem` is the request file's id part, which the id must equal. Returns a copy with
    correlation_id filled in (None when absent)."""
    if not isinstance(request, Mapping):
        raise _err(INVALID_REQUEST, file, None, f"expected a JSON object, got {type(request).__name__}")
    sweep = request.get("schema") == SWEEP_SCHEMA
    required = SWEEP_REQUIRED if sweep else REQUIRED
    unknown = sorted(str(k) for k in request if k not in required and k not in OPTIONAL)
    if unknown:
        raise _err(INVALID_REQUEST, file, unknown[0], "unknown field (allowed: " + ", ".join(required + OPTIONAL) + ")")
    missing = [k for k in required if k not in request]
    if missing:
        raise _err(INVALID_REQUEST, file, missing[0], "missing field" + (
            f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""))
    if request["schema"] != SCHEMA and not sweep:
        raise _err(INVALID_REQUEST, file, "schema", f"expected {SCHEMA!r} or {SWEEP_SCHEMA!r}, got "
                   f"{request['schema']!r:.80}")
    request_id = request["id"]
    if not is_valid_id(request_id):
        raise _err(INVALID_REQUEST, file, "id", f"expected a file-name-safe id matching {ID_RE.pattern} (not "
                   f"starting with '.'), got {request_id!r:.80}")
    if stem is not None and request_id != stem:
        raise _err(INVALID_REQUEST, file, "id", f"{request_id!r} differs from the file name {stem!r}")
    created = _text(request, "created_at", file)
    try:
        dt.datetime.fromisoformat(created)
    except ValueError:
        raise _err(INVALID_REQUEST, file, "created_at", f"expected an ISO 8601 date-time, got {created!r}") from None
    _text(request, "requested_by", file)
    if request.get("correlation_id") is not None:
        _text(request, "correlation_id", file)
    start, end = _date(request, "start", file), _date(request, "end", file)
    if start > end:
        raise _err(INVALID_REQUEST, file, "end", f"{end} is before start {start}")
    _universe(request["universe"], file)

    strategy = request["strategy"]
    if not isinstance(strategy, str):
        raise _err(INVALID_REQUEST, file, "strategy", f"expected a string, got {type(strategy).__name__}")
    strategies = config.load("strategies", home) if strategies is None else strategies
    base = config.allowed_strategy(strategies, strategy)
    if base is None:
        raise _err(STRATEGY_NOT_ALLOWED, file, "strategy", f"{strategy!r:.80} is not in the allowlist of "
                   f"configs/strategies.yaml ({', '.join(strategies.get('allowlist', [])) or 'empty'})")
    if sweep:
        for values, overrides in grid_runs(request["grid"], file=file):
            _check_params(overrides, base, file, "grid", values)
    else:
        params = request["params"]
        if not isinstance(params, Mapping):
            raise _err(INVALID_REQUEST, file, "params", f"expected an object of parameter overrides, got "
                       f"{type(params).__name__}")
        _check_params(params, base, file, "params")
    out = dict(request)
    out.setdefault("correlation_id", None)
    return out


def _check_params(params: Mapping, base: Mapping, file: str, field: str, combo: Mapping | None = None) -> None:
    try:
        config.check_strategy_params(params, base, source=file, tickers=True)
    except config.ConfigError as exc:
        prefix = f"{exc.file}: {exc.key or '<top>'}: "
        what = str(exc)[len(prefix):] if str(exc).startswith(prefix) else f"expected {exc.expected}"
        if combo is not None:
            what += " (in the combination " + ", ".join(f"{k}={json.dumps(v)}" for k, v in combo.items()) + ")"
        raise _err(INVALID_REQUEST, file, f"{field}.{exc.key}" if exc.key else field, what[:300]) from None


def grid_runs(grid: Any, *, file: str = "<request>") -> list[tuple[dict, dict]]:
    """A sweep's grid -> its runs in order, each (values: parameter path -> value, overrides: the nested
    parameter overrides `--set` would give). RequestError for a grid that is not an object of parameter paths
    to non-empty lists, overlapping paths (`filters` and `filters.enabled`) or more than MAX_SWEEP_RUNS runs."""
    if not isinstance(grid, Mapping) or not grid:
        raise _err(INVALID_REQUEST, file, "grid", f"expected an object of parameter paths to lists of values, got "
                   f"{type(grid).__name__ if not isinstance(grid, Mapping) else 'an empty object'}")
    total = 1
    for key, values in grid.items():
        if not isinstance(key, str) or not _PARAM_RE.fullmatch(key):
            raise _err(INVALID_REQUEST, file, "grid", f"expected parameter paths like top_n or filters.enabled, got "
                       f"{key!r:.80}")
        if not isinstance(values, list) or not values:
            raise _err(INVALID_REQUEST, file, f"grid.{key}", f"expected a non-empty list of values, got "
                       f"{type(values).__name__}")
        total *= len(values)
        if total > MAX_SWEEP_RUNS:
            raise _err(INVALID_REQUEST, file, "grid", f"more than {MAX_SWEEP_RUNS} combinations")
    keys = list(grid)
    for a in keys:
        for b in keys:
            if a != b and b.startswith(a + "."):
                raise _err(INVALID_REQUEST, file, f"grid.{b}", f"overlaps grid.{a}: give one or the other")
    runs = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        overrides: dict = {}
        for key, value in values.items():
            node = overrides
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        runs.append((values, overrides))
    return runs


def load(path: str | os.PathLike, *, stem: str | None = None, home: Home | None = None,
         strategies: Mapping | None = None, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None) -> dict:
    """Read, parse and validate one request file (stem: the id its name carries, default the file's stem; name:
    how messages call the file, default its name)."""
    path = Path(path)
    request = read(path, max_bytes=max_bytes, name=name)
    return validate(request, stem=path.stem if stem is None else stem, home=home, strategies=strategies,
                    file=name or path.name)


# --- building --------------------------------------------------------------------------------------------------


def _iso(day: dt.date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()


def request_id(strategy: str, start: dt.date | str, end: dt.date | str, params: Mapping | None = None,
               universe: str | list[str] = "ALL") -> str:
    """A deterministic id from what the backtest computes, e.g. `momentum_topN_v1_20210104_20240105_3fa94c1b`:
    the same request made twice gets the same id, so the queue takes it once."""
    digest = hashlib.sha256(json.dumps([strategy, _iso(start), _iso(end), dict(params or {}), universe],
                                       sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", strategy)[:80] or "request"
    return f"{safe}_{_compact(start)}_{_compact(end)}_{digest}"


def _compact(day: dt.date | str) -> str:
    """YYYYMMDD of a date; something that is not one (a typo in a query) still makes a valid id, so the
    validation that follows names the date's own field."""
    text = _iso(day)
    return text.replace("-", "") if is_date(text) else "nodate"


def new_sweep(strategy: str, start: dt.date | str, end: dt.date | str, grid: Mapping[str, list], *,
              universe: str | list[str] = "ALL", requested_by: str | None = None, correlation_id: str | None = None,
              created_at: dt.datetime | str | None = None, home: Home | None = None,
              strategies: Mapping | None = None) -> dict:
    """A backtest_sweep/1, valid by construction; its id (`sweep_...`) hashes the strategy, window, grid and
    universe, so the same sweep queued twice runs once."""
    request = {"schema": SWEEP_SCHEMA, "id": "sweep_" + request_id(strategy, start, end, {"grid": grid}, universe),
               "created_at": (created_at or now()).isoformat() if not isinstance(created_at, str) else created_at,
               "strategy": strategy, "grid": dict(grid), "universe": universe, "start": _iso(start),
               "end": _iso(end), "requested_by": requested_by or (socket.gethostname() or "unknown")[:128],
               "correlation_id": correlation_id}
    return validate(request, home=home, strategies=strategies, file=f"{request['id']}.json")


def new_request(strategy: str, start: dt.date | str, end: dt.date | str, *, params: Mapping | None = None,
                universe: str | list[str] = "ALL", requested_by: str | None = None,
                correlation_id: str | None = None, id: str | None = None,
                created_at: dt.datetime | str | None = None, home: Home | None = None,
                strategies: Mapping | None = None, file: str | None = None) -> dict:
    """A backtest_request/1, valid by construction (validated here; raises RequestError otherwise, naming `file`:
    default the request's file name)."""
    params = dict(params or {})
    request = {
        "schema": SCHEMA,
        "id": id or request_id(strategy, start, end, params, universe),
        "created_at": (created_at or now()).isoformat() if not isinstance(created_at, str) else created_at,
        "strategy": strategy,
        "params": params,
        "universe": universe,
        "start": _iso(start),
        "end": _iso(end),
        "requested_by": requested_by or (socket.gethostname() or "unknown")[:128],
        "correlation_id": correlation_id,
    }
    return validate(request, home=home, strategies=strategies, file=file or f"{request['id']}.json")

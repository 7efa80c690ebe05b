"""`krx request`: queue the day's backtest request for the PC worker (DESIGN 6, submit)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

import yaml

from common import config, events, log, queue, schemas
from common.args import parse_date
from common.errors import EXIT_FAILED, EXIT_OK
from common.home import Home
from common.store import EodStore, StoreError
from common.strategy import NAME as STRATEGY
from common.strategy import warmup_rows

_log = log.get("request")


def _window(home: Home, store: EodStore, day: dt.date | None, warmup: int) -> tuple[dt.date, dt.date]:
    """(start, end) of a queued request: the configured years up to `day` (default: the store's last day),
    starting no earlier than `warmup` rows after the store's first day (when the store has them)."""
    last = store.last_date()
    if last is None:
        raise ValueError(f"the store {store.root} is empty; run `krx ingest` first")
    end = day or last
    if end > last:
        raise ValueError(f"{end} is after the store's last day {last}; run `krx ingest --date {end}` first")
    years = config.load("app", home)["request"]["years"]
    # leave the strategy its warm-up history before the first day it reports on (when the store has it)
    stored = sorted(d for d in store.stored_dates() if d <= end)
    if not stored:
        raise ValueError(f"{end} is before the store's first day {store.first_date()}: no data to backtest")
    warm = stored[warmup] if len(stored) > warmup else stored[0]
    return max(warm, end - dt.timedelta(days=round(365.25 * years))), end


def build(home: Home, day: dt.date | None = None) -> dict:
    """The day's backtest_request/1: the strategy with the NAS's current parameters, over the configured years up
    to `day` (default: the store's last day), starting no earlier than the strategy's warm-up allows. Its id
    derives from date, strategy and parameters."""
    strategies = config.load("strategies", home)
    params = strategies["strategies"][STRATEGY]
    start, end = _window(home, EodStore.for_home(home), day, warmup_rows(params))
    return schemas.new_request(STRATEGY, start, end, params=params,
                               correlation_id=events.correlation_id(end, STRATEGY), home=home,
                               strategies=strategies, requested_by=events.who())


SWEEP_KEYS = ("strategy", "grid", "start", "end", "universe")


def build_sweep(home: Home, path: Path, day: dt.date | None = None) -> dict:
    """A backtest_sweep/1 from a YAML file (`grid:` parameter -> list of values; `strategy`, `start`, `end`,
    `universe` optional: by default the day's request's strategy and window, with the warm-up of the grid's
    hungriest combination)."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the sweep: {str(exc).splitlines()[0]}") from None
    if not isinstance(spec, dict) or "grid" not in spec:
        raise ValueError(f"{path}: expected a mapping with grid: (parameter: [values, ...]) and optionally "
                         f"{', '.join(k for k in SWEEP_KEYS if k != 'grid')}")
    unknown = sorted(str(k) for k in spec if k not in SWEEP_KEYS)
    if unknown:
        raise ValueError(f"{path}: {unknown[0]}: unknown key (allowed: {', '.join(SWEEP_KEYS)})")
    strategies = config.load("strategies", home)
    strategy = spec.get("strategy", STRATEGY)
    base = strategies["strategies"].get(strategy)
    if not isinstance(strategy, str) or base is None:
        raise ValueError(f"{path}: strategy: {strategy!r} is not in configs/strategies.yaml")
    try:
        combos = schemas.grid_runs(spec["grid"], file=str(path))
        warmup = max(warmup_rows(config.check_strategy_params(o, base, source=str(path))) for _, o in combos)
    except config.ConfigError as exc:
        raise ValueError(f"{exc} (in the grid)") from None
    start, end = _window(home, EodStore.for_home(home), day, warmup)
    day = spec["end"] if isinstance(spec.get("end"), dt.date) else end
    # a date YAML could not read stays text here: the request's validation names the field
    return schemas.new_sweep(strategy, spec.get("start", start), spec.get("end", end), spec["grid"],
                             universe=spec.get("universe", "ALL"), correlation_id=events.correlation_id(day, strategy),
                             home=home, strategies=strategies, requested_by=events.who())


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=parse_date, help="the day the request ends on (default: the store's last day)")
    p.add_argument("--sweep", type=Path, metavar="FILE", help="queue a backtest_sweep/1 instead: a YAML file with "
                   "grid: (parameter: [values]) and optionally strategy, start, end, universe (docs/sweep.md)")


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("request", home)
    try:
        request = build_sweep(home, args.sweep, args.date) if args.sweep else build(home, args.date)
        queued = queue.Queue.of_home(home).submit(request)
    except (ValueError, OSError, StoreError) as exc:  # RequestError and ConfigError are ValueErrors too
        log.event(_log, "REQUEST_FAILED", str(exc), rc=EXIT_FAILED, level=logging.ERROR)
        return EXIT_FAILED
    what = "queued" if queued else "already queued or done; nothing new"
    log.event(_log, "REQUEST_QUEUED" if queued else "REQUEST_EXISTS",
              f"id={request['id']} {request['start']}..{request['end']} {what}", rc=EXIT_OK)
    if queued:
        events.append(home, "request_queued", correlation_id=request["correlation_id"], id=request["id"],
                      start=request["start"], end=request["end"])
    print(request["id"])
    return EXIT_OK

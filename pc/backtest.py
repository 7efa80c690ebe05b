"""Backtests on the store: the parity entry point, the worker's job and `krx backtest`.

    krx backtest --strategy momentum_topN_v1 [--start D] [--end D] [--universe ALL] [--set key=value ...] [--out DIR]
    python -m pc.backtest run --inbox reports/pending --out reports/done     # the worker's one-shot (cron, watchmedo)

- `run_backtest(closes, params)` runs the engine on a wide frame of closes with the strategy's defaults filled in
  under `params` (the parity check of the backtest issue calls it).
- `run_request(request, out_dir, home, progress)` is the worker's job: it loads the window of a validated
  backtest_request/1 from the home's store, with earlier rows as warm-up for the longest lookback or moving
  average, runs the engine, and writes result.json, equity.csv, trades.csv and report.html into out_dir.
  The strategy trades from the window's first day, starting in cash; only the window is reported.
- Every refusal (unknown strategy, no data in range, a bad parameter) is a BacktestError with a message that
  says what to change; the CLI turns it into exit 3.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common import calendar, config, log
from common.args import Parser, parse_date
from common.errors import EXIT_OK, AlertorError
from common.home import DEFAULT_CONFIGS, Home
from common.schemas import UNIVERSES, request_id
from common.store import EodStore
from common.strategy import NAME, warmup_rows
from pc import metrics as mx
from pc import report

DEFAULT_STRATEGY = NAME  # the one strategy there is (common.strategy)
PANEL_FIELDS = ("close", "open", "base", "value", "halted")
ETF_MARKET = "ETF"
MIN_REPORTED_ROWS = 60  # a default window shorter than this reports the whole store, warm-up included

_log = log.get("backtest")


class BacktestError(AlertorError, RuntimeError):
    """A backtest that cannot run as asked: the message says why and what to change."""

    permanent = True  # the worker does not try it again: a retry cannot change the answer


# --- parameters ------------------------------------------------------------------------------------------------


def strategies(home: Home | None) -> dict:
    """configs/strategies.yaml of `home`; without a home, the shipped defaults (no environment overrides), so the
    parity entry point always means the same thing."""
    if home is None:
        return config.load("strategies", Home(DEFAULT_CONFIGS.parent), env={})
    return config.load("strategies", home)


def strategy_params(strategy: str, overrides: Mapping[str, Any] | None = None, *, home: Home | None = None,
                    source: str = "<params>", cfg: Mapping[str, Any] | None = None) -> dict:
    """The strategy's full parameters: its config (`cfg`: the strategies.yaml the command loaded, else the home's)
    with `overrides` merged in, validated. BacktestError for an unknown strategy or a bad parameter."""
    cfg = strategies(home) if cfg is None else cfg
    base = config.allowed_strategy(cfg, strategy)
    if base is None:
        raise BacktestError(f"unknown strategy {strategy!r}: configs/strategies.yaml allows "
                            f"{', '.join(cfg.get('allowlist', [])) or 'none'}")
    try:
        return config.check_strategy_params(dict(overrides or {}), base, source=source)
    except config.ConfigError as exc:
        raise BacktestError(f"bad parameter: {exc}") from None


def parse_sets(items: Sequence[str], base: Mapping[str, Any] | None = None) -> dict:
    """`--set key=value` items -> nested overrides. Values are YAML scalars (`false`, `0.5`, `[21, 63]`); dots
    nest (`filters.enabled=false`). Where the default is text, the value stays the text typed (`069500` is a
    ticker, not a number); where it is a number, `1e8` is read as one."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise BacktestError(f"bad --set {item!r}: expected KEY=VALUE, e.g. top_n=10 or filters.enabled=false")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise BacktestError(f"bad --set {item!r}: the value is not a YAML scalar or list") from None
        default: Any = base or {}
        for part in key.split("."):
            default = default.get(part) if isinstance(default, Mapping) else None
        if isinstance(default, str) and not isinstance(value, str):
            value = raw.strip()
        elif isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            try:
                number = float(value)
                value = int(number) if isinstance(default, int) and number.is_integer() else number
            except ValueError:
                pass  # left as text: the parameter check says what was expected
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise BacktestError(f"bad --set {item!r}: {part} was already given a value")
            node = child
        node[parts[-1]] = value
    return out


# --- the parity entry point ------------------------------------------------------------------------------------


def run_backtest(closes: pd.DataFrame, params: Mapping[str, Any], *, strategy: str = DEFAULT_STRATEGY,
                 markets: pd.Series | None = None, progress: Callable[[], None] | None = None) -> Any:
    """Run the engine on wide closes (DatetimeIndex rows, ticker columns, NaN where no price) with `params`
    (possibly partial: the rest comes from the strategy's shipped defaults; a closes-only panel needs
    `execution: close`). Returns the engine's result, whose `.equity` is a Series on the same index."""
    from common import engine

    full = strategy_params(strategy, params)
    closes = closes.astype(float)
    return engine.run({"close": closes}, full, markets=markets, progress=progress)


# --- the worker's job ------------------------------------------------------------------------------------------


def request_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise BacktestError(f"bad {name} {value!r}: expected a date YYYY-MM-DD") from None


def window(store: EodStore, start: dt.date | None, end: dt.date | None, warmup: int) -> tuple[dt.date, dt.date,
                                                                                                dt.date]:
    """(first row loaded, first reported row, last reported row) from the store's days."""
    days = sorted(store.stored_dates())
    if not days:
        raise BacktestError(f"no data: the store {store.root} is empty; run `krx ingest` first")
    lo, hi = start or days[0], end or days[-1]
    if lo > hi:
        raise BacktestError(f"no data in range: start {lo} is after end {hi}")
    inside = [d for d in days if lo <= d <= hi]
    if not inside:
        raise BacktestError(f"no data in range {lo} to {hi}: the store holds {days[0]} to {days[-1]}")
    first = days.index(inside[0])
    return days[max(0, first - warmup)], inside[0], inside[-1]


def _universe(panels: dict[str, pd.DataFrame], tickers: pd.DataFrame, universe: Any,
              keep: set[str]) -> dict[str, pd.DataFrame]:
    """Restrict the panels' columns to a market (KOSPI, KOSDAQ, ...) or a list of tickers; `keep` (the regime,
    benchmark and core tickers) stay, since the strategy reads them whatever the universe."""
    if universe in (None, "ALL"):
        return panels
    columns = panels["close"].columns
    if isinstance(universe, str):
        markets = tickers["market"].reindex(columns)
        chosen = set(columns[(markets == universe).to_numpy()])
    else:
        chosen = set(universe) & set(columns)
    chosen |= keep & set(columns)
    if not chosen - keep:
        raise BacktestError(f"no data for universe {universe!r}: none of its tickers is in the store")
    cols = [c for c in columns if c in chosen]
    return {name: frame[cols] for name, frame in panels.items()}


def _markets(tickers: pd.DataFrame, columns: pd.Index) -> pd.Series:
    return tickers["market"].reindex(columns).fillna("").rename("market")


@dataclass
class Outcome:
    """One engine run on loaded panels and its metrics over the reported rows."""

    panels: dict[str, pd.DataFrame]  # restricted to the universe
    run: Any                         # the engine's result
    equity: pd.Series                # the reported rows
    benchmark: pd.Series | None      # the benchmark's closes, when it is in the panel
    metrics: dict


def simulate(panels: dict[str, pd.DataFrame], tickers: pd.DataFrame, params: Mapping[str, Any], *, universe: Any,
             first_day: dt.date, sessions: pd.DatetimeIndex, partial: Any = None,
             progress: Callable[..., None] | None = None) -> Outcome:
    """The backtest proper on panels already loaded (warm-up rows first): `run_request` and every run of a sweep
    call this, so a sweep's row is exactly the single backtest of its parameters. `partial`: the store's partial
    days (per row of the panels; no new buys on them)."""
    keep = {params["benchmark"], *(h["ticker"] for h in params["core_holdings"])}
    if params["regime"]["enabled"]:
        keep.add(params["regime"]["ticker"])
    panels = _universe(panels, tickers, universe, keep)
    from common import engine  # here, so a refused request is refused before the engine's imports

    # rows before the window only warm the indicators up: the book starts in cash on the window's first day
    reported = pd.Timestamp(first_day)
    run = engine.run(panels, params, markets=_markets(tickers, panels["close"].columns), start=reported,
                     sessions=sessions, progress=progress, partial=partial)
    equity = run.equity.loc[reported:]
    if equity.empty:
        raise BacktestError(f"no data in range from {first_day}: the engine returned no rows")
    bench_ticker = params["benchmark"]
    bench = panels["close"][bench_ticker] if bench_ticker in panels["close"] else None
    m = mx.compute(equity, exposure=run.exposure, trades=run.trades, benchmark=bench,
                   benchmark_ticker=bench_ticker, initial=params["initial_cash"])
    return Outcome(panels, run, equity, bench, m)


def run_request(request: Mapping[str, Any], out_dir: Path, home: Home,
                progress: Callable[..., None] | None = None, *, cfg: Mapping[str, Any] | None = None) -> dict:
    """Run a validated backtest_request/1 on the home's store and write its four files into `out_dir`; returns
    the backtest_result/1 written. BacktestError: unknown strategy, no data in range, a bad parameter."""
    t0 = time.monotonic()
    strategy = request["strategy"]
    request_id = str(request.get("id") or "backtest")
    params = strategy_params(strategy, request.get("params") or {}, home=home, source=f"{request_id}: params",
                             cfg=cfg)
    start = request_date(request["start"], "start") if request.get("start") else None
    end = request_date(request["end"], "end") if request.get("end") else None
    store = EodStore.for_home(home)
    first_row, first_day, last_day = window(store, start, end, warmup_rows(params))

    store.require_days(first_row, last_day)  # StoreError naming the days a lost year file took, and the repair
    panels = store.load_panel(PANEL_FIELDS, first_row, last_day)
    if progress is not None:
        progress()
    out = simulate(panels, store.tickers(), params, universe=request.get("universe", "ALL"), first_day=first_day,
                   sessions=calendar.load(home).index, partial=store.partial_flags(panels["close"].index),
                   progress=progress)
    panels, run, equity, bench, m = out.panels, out.run, out.equity, out.benchmark, out.metrics
    reported = pd.Timestamp(first_day)
    trades = run.trades
    if progress is not None:
        progress()
    data = {
        "first_date": first_day.isoformat(), "last_date": last_day.isoformat(),
        "tickers": int(panels["close"].shape[1]), "content_hash": store.content_hash(first_row, last_day),
        "warmup_first_date": first_row.isoformat(), "warmup_rows": int((run.equity.index < reported).sum()),
        "rows": int(len(equity)), "universe": request.get("universe", "ALL"),
    }
    notes = list(getattr(run, "notes", []))
    if data["warmup_rows"] < warmup_rows(params, margin=0):
        # the store starts too late: the first months of the window trade on a strategy that cannot decide yet
        notes.append(f"only {data['warmup_rows']} rows of history before {first_day} (the strategy needs "
                     f"{warmup_rows(params, margin=0)}): early rows may stay in cash")
        log.event(_log, "BACKTEST_WARMUP", f"id={request_id}: {notes[-1]}", level=logging.WARNING)
    bench_frame = mx.benchmark_curve(bench, equity) if bench is not None else None
    cash = run.cash.loc[reported:] if run.cash is not None else None
    frame = report.equity_frame(equity, cash, run.exposure.loc[reported:], bench_frame)
    extra = {"request": {k: request.get(k) for k in ("start", "end", "universe", "params", "requested_by",
                                                      "created_at") if k in request},
             "correlation_id": request.get("correlation_id"), "notes": notes}
    result = report.build_result(id=request_id, strategy=strategy, params=dict(getattr(run, "params", params)),
                                 data=data, metrics=m, elapsed_ms=(time.monotonic() - t0) * 1000, extra=extra)
    return report.write(out_dir, result, frame, trades, run.positions)


# --- krx backtest ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY, help=f"a strategy of configs/strategies.yaml "
                        f"(default {DEFAULT_STRATEGY})")
    parser.add_argument("--start", type=parse_date, help="first reported day (default: the first stored day with "
                        "enough history before it)")
    parser.add_argument("--end", type=parse_date, help="last reported day (default: the last stored day)")
    parser.add_argument("--universe", default="ALL", help="ALL, KOSPI, KOSDAQ, KONEX or tickers separated by commas")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter (YAML value; dots nest: filters.enabled=false); repeatable")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/backtests/<id> of the home)")
    parser.add_argument("--id", help="the result's id (default: the strategy, the window and a hash of the "
                        "resolved parameters)")
    parser.add_argument("--force", action="store_true", help="write into an output folder that already exists")


def default_start(store: EodStore, params: Mapping[str, Any]) -> dt.date | None:
    """The first stored day with the strategy's warm-up before it (the first day at all on a short store)."""
    days = sorted(store.stored_dates())
    if not days:
        return None
    need = warmup_rows(params)
    return days[need] if len(days) - need >= MIN_REPORTED_ROWS else days[0]


class _Progress:
    """A spinner with a step count on stderr while the engine works (only on a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} steps"),
                            TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
        self.task = self.bar.add_task("backtest", total=None)

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, *_args: Any, **_kwargs: Any) -> None:
        self.bar.advance(self.task)


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("backtest", home)
    t0 = time.monotonic()
    try:
        cfg = strategies(home)
        base = cfg.get("strategies", {}).get(args.strategy, {})
        overrides = parse_sets(args.sets, base)
        params = strategy_params(args.strategy, overrides, source="--set", cfg=cfg)
        store = EodStore.for_home(home)
        start = args.start or default_start(store, params)
        end = args.end or store.last_date()
        universe: Any = args.universe
        if universe not in UNIVERSES:
            universe = [t.strip() for t in universe.split(",") if t.strip()]
        if start is None or end is None:
            raise BacktestError(f"no data: the store {store.root} is empty; run `krx ingest` first")
        # the resolved parameters are in the id: two runs differing in one parameter never share a folder
        ident = args.id or request_id(args.strategy, start, end, params, universe)
        request = {"id": ident, "strategy": args.strategy, "params": overrides, "universe": universe,
                   "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
                   "requested_by": "cli"}
        out = args.out or home.reports / "backtests" / ident
        if Path(out).exists() and not args.force:
            raise BacktestError(f"{out} already exists (a result of the same strategy, window and parameters, or "
                                "another --out): nothing was overwritten; --force runs it again into it")
        with _Progress() as progress:
            result = run_request(request, out, home, progress=progress, cfg=cfg)
    except Exception as exc:  # noqa: BLE001 - one clear line and exit 3, whatever failed
        return log.failed(_log, "krx backtest", "BACKTEST_FAILED", exc, t0)
    m = result["metrics"]
    d = result["data"]
    print(f"{result['strategy']}  {d['first_date']} to {d['last_date']}  ({d['tickers']} tickers, "
          f"{m['days']} days, {m['trades']} trades)")
    width = max(len(k) for k, _ in mx.headline(m))
    for label, value in mx.headline(m):
        print(f"  {label:<{width}}  {value}")
    print(f"report: {(Path(out) / report.FILES['report']).resolve()}")
    figures = " ".join(f"{k}={m[k]:.4f}" if m[k] is not None else f"{k}=n/a" for k in ("cagr", "mdd", "sharpe"))
    log.event(_log, "BACKTEST_DONE", f"id={result['id']} strategy={result['strategy']} "
              f"range={d['first_date']}..{d['last_date']} {figures} out={out}", rc=EXIT_OK,
              elapsed_ms=(time.monotonic() - t0) * 1000)
    return EXIT_OK


# --- python -m pc.backtest run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`python -m pc.backtest run --inbox DIR --out DIR`: process what is pending, then exit (the seed's PC
    command). Any other arguments are those of `krx backtest`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from pc import worker
        from pc.worker_settings import positive

        parser = Parser(prog="python -m pc.backtest run",
                        description="process every pending backtest request, then exit")
        parser.add_argument("--inbox", type=Path, help="the queue's inbox (default: reports/pending of the home)")
        parser.add_argument("--out", type=Path, help="where results go (default: done/ beside the inbox)")
        parser.add_argument("--max-attempts", type=positive(int), help="tries before failed/ (default: "
                            "app.yaml)")
        parser.add_argument("--concurrency", type=positive(int), help="jobs at the same time (default: "
                            "app.yaml)")
        args = parser.parse_args(argv[1:])
        return worker.run_once(args.inbox, args.out, max_attempts=args.max_attempts, concurrency=args.concurrency)
    parser = Parser(prog="python -m pc.backtest", description="run one backtest on the store "
                    "(or: run --inbox DIR --out DIR, the worker's one-shot)")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

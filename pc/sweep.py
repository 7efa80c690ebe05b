"""`krx sweep`: the cartesian product of a parameter grid, each run exactly `krx backtest --set` of it, on Dask.

    krx sweep --strategy momentum_topN_v1 --grid top_n=5,10 --grid 'lookbacks=[21,63,126],[63,126,252]'
              [--start D] [--end D] [--universe U] [--workers N | --scheduler tcp://host:8786] --out DIR

- The grid's values are YAML, split at the commas outside brackets; each one goes through `parse_sets`, so
  `--grid top_n=5,10` means what `--set top_n=5` and `--set top_n=10` mean. A run's key is the id `krx backtest`
  gives the same parameters (`schemas.request_id`: a hash of the strategy, window, resolved parameters and
  universe).
- The panel (with the warm-up rows of the grid's longest need) is loaded once and scattered to every worker once;
  each run slices its own warm-up rows from it and calls `pc.backtest.simulate`, the same function a single
  backtest calls. The engine builds its indicators itself (`engine.run` has no hook to pass them in), so runs
  that share lookbacks share the worker's sliced panel, not the indicators.
- Each finished run is appended to DIR/runs.jsonl at once (fsynced); a sweep run again with DIR skips the keys
  already there, so an interrupted sweep resumes. sweep.parquet, sweep.csv and report.html (pc.sweep_report)
  are written at the end from runs.jsonl.
- `backtest_sweep/1` requests (`krx request --sweep FILE`) run through `run_request` on the PC worker.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from common import atomic, calendar, config, formats, log, schemas
from common.args import parse_date
from common.errors import EXIT_OK
from common.home import Home
from common.store import EodStore
from pc import backtest, sweep_report
from pc.backtest import BacktestError
from pc.grid import Plan, Run, parse_grid, plan

RUNS_FILE = "runs.jsonl"
SPEC_FILE = "sweep.json"
RESULT_SCHEMA = formats.BACKTEST_SWEEP_RESULT

_log = log.get("sweep")


# --- what each worker holds and runs -----------------------------------------------------------------------------


@dataclass
class Panel:
    """Scattered once to each worker: the panels from the grid's first warm-up row, the tickers' markets and the
    KRX sessions. Each run slices its own warm-up rows (kept per worker: runs with the same lookbacks share it)."""

    panels: dict[str, pd.DataFrame]
    tickers: pd.DataFrame
    sessions: pd.DatetimeIndex
    partial: pd.Series  # the store's partial days (no new buys), as `krx backtest` passes them
    _windows: dict = field(default_factory=dict, repr=False)

    def window(self, first_row: dt.date) -> dict[str, pd.DataFrame]:
        """The panels `store.load_panel` would give from `first_row`: its rows, and only the tickers with a row."""
        if first_row not in self._windows:
            rows = {name: frame.loc[pd.Timestamp(first_row):] for name, frame in self.panels.items()}
            seen = None
            for name, frame in rows.items():
                has = frame.any() if name == "halted" else frame.notna().any()
                seen = has if seen is None else seen | has
            keep = seen.to_numpy()
            self._windows[first_row] = rows if keep.all() else {n: f.loc[:, keep] for n, f in rows.items()}
        return self._windows[first_row]


def load_panel(plan_: Plan, home: Home) -> Panel:
    store = EodStore.for_home(home)
    panels = store.load_panel(backtest.PANEL_FIELDS, plan_.load_from, plan_.last_day)
    return Panel(panels, store.tickers(), calendar.load(home).index, store.partial_flags(panels["close"].index))


def run_one(data: Panel, run: Run, universe: Any, first_day: dt.date) -> dict:
    """One run on a worker: the record appended to runs.jsonl."""
    t0 = time.monotonic()
    out = backtest.simulate(data.window(run.first_row), data.tickers, run.params, universe=universe,
                            first_day=first_day, sessions=data.sessions, partial=data.partial)
    return {"key": run.key, "values": run.values, "metrics": out.metrics,
            "dates": [d.date().isoformat() for d in out.equity.index], "equity": out.equity.tolist(),
            "elapsed_ms": round((time.monotonic() - t0) * 1000, 1), "pid": os.getpid()}


# --- running -----------------------------------------------------------------------------------------------------


def read_runs(out: Path) -> list[dict]:
    """The records of runs.jsonl; a last line cut short by a kill is dropped (and cut off the file, so the next
    record starts on a line of its own)."""
    path = out / RUNS_FILE
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(end)
    records = []
    for n, line in enumerate(data[:end].splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise BacktestError(f"{path}: line {n} is not a JSON record; move the file away to start over") from None
    return records


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A client of an existing cluster (`scheduler`), or of a local cluster of `workers` processes (default: one
    per CPU), one thread each: the engine is single-threaded numpy and holds the GIL between calls."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise BacktestError(f"cannot reach the Dask scheduler {scheduler}: {exc} (start one with `dask "
                                "scheduler` and workers with `dask worker ADDRESS`, see docs/sweep.md)") from None
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        yield client


def execute(plan_: Plan, out: Path, home: Home, *, workers: int | None = None, scheduler: str | None = None,
            on_done: Callable[[dict], None] | None = None, check: Callable[[], None] | None = None) -> list[str]:
    """Run the plan's runs that runs.jsonl of `out` does not hold yet, appending each record as it finishes.
    Returns the errors of the runs that failed (they are not recorded: a resume tries them again). `check` is
    called as each run finishes (the queue worker's progress: it raises to cancel)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / SPEC_FILE, plan_.spec())
    done = {r["key"] for r in read_runs(out)}
    todo = [r for r in plan_.runs if r.key not in done]
    errors: list[str] = []
    if not todo:
        return errors
    from distributed import as_completed

    data = load_panel(plan_, home)
    with dask_client(workers, scheduler) as client, open(out / RUNS_FILE, "ab") as fh:
        # once per worker, not with every task (hash=False: hashing the panel would cost more than sending it)
        shared = client.scatter(data, broadcast=True, hash=False)
        futures = {client.submit(run_one, shared, r, plan_.universe, plan_.first_day, key=f"sweep-{r.key}",
                                 pure=False): r for r in todo}
        for future in as_completed(futures):
            run = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # noqa: BLE001 - one run's failure is reported; the others go on
                what = ", ".join(f"{k}={json.dumps(v)}" for k, v in run.values.items())
                errors.append(f"{what}: {exc if isinstance(exc, BacktestError) else f'{type(exc).__name__}: {exc}'}")
                continue
            fh.write((json.dumps(record, default=str) + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
            if on_done is not None:
                on_done(record)
            if check is not None:
                check()
    return errors


def finish(plan_: Plan, out: Path, home: Home, *, metric: str = sweep_report.DEFAULT_METRIC,
           heatmap: Sequence[str] | None = None) -> dict:
    """Write sweep.parquet, sweep.csv and report.html from the records of the plan's runs; returns the summary."""
    keys = {r.key: i for i, r in enumerate(plan_.runs)}
    records = sorted((r for r in read_runs(out) if r["key"] in keys), key=lambda r: keys[r["key"]])
    bench_ticker = plan_.runs[0].params["benchmark"]
    close = EodStore.for_home(home).load_panel(["close"], plan_.first_day, plan_.last_day)["close"]
    bench = close[bench_ticker] if bench_ticker in close else None
    return sweep_report.write(out, plan_.spec(), list(plan_.grid), records, bench, bench_ticker, metric=metric,
                              heatmap=heatmap)


# --- backtest_sweep/1 on the PC worker ------------------------------------------------------------------------------


def run_request(request: Mapping[str, Any], out_dir: Path, home: Home,
                progress: Callable[..., None] | None = None) -> dict:
    """A validated backtest_sweep/1: its grid on the cluster of app.yaml `sweep:`, its outputs and a result.json
    (backtest_sweep_result/1) into `out_dir`. BacktestError when a run fails."""
    t0 = time.monotonic()
    ident = str(request["id"])
    start, end = backtest.request_date(request["start"], "start"), backtest.request_date(request["end"], "end")
    plan_ = plan(request["strategy"], request["grid"], home, start=start, end=end, universe=request["universe"],
                 source=f"{ident}: grid")
    settings = config.load("app", home)["sweep"]
    if progress is not None:
        progress()
    errors = execute(plan_, Path(out_dir), home, workers=settings["workers"] or None,
                     scheduler=settings["scheduler"] or None, check=progress)
    if errors:
        raise BacktestError(f"{len(errors)} of {len(plan_.runs)} runs failed; the first: {errors[0]}")
    summary = finish(plan_, Path(out_dir), home)
    result = {"schema": RESULT_SCHEMA, "id": ident, "status": "ok", "strategy": plan_.strategy,
              "correlation_id": request.get("correlation_id"), **plan_.spec(), "best": summary["best"],
              "spread": summary["spread"], "files": summary["files"],
              "elapsed_ms": round((time.monotonic() - t0) * 1000, 1)}
    atomic.write_json(Path(out_dir) / "result.json", result)
    return result


# --- krx sweep -----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", default=backtest.DEFAULT_STRATEGY, help="a strategy of configs/strategies.yaml")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a parameter and its values (YAML; commas inside brackets stay: "
                        "'lookbacks=[21,63],[63,126]'); repeatable: the sweep runs every combination")
    parser.add_argument("--start", type=parse_date, help="first reported day (default: the first stored day with "
                        "the warm-up of every run before it)")
    parser.add_argument("--end", type=parse_date, help="last reported day (default: the last stored day)")
    parser.add_argument("--universe", default="ALL", help="ALL, KOSPI, KOSDAQ, KONEX or tickers separated by commas")
    parser.add_argument("--workers", type=int, metavar="N", help="local Dask worker processes (default: app.yaml "
                        "sweep.workers; 0 there = one per CPU)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask cluster, e.g. tcp://host:8786 "
                        "(default: app.yaml sweep.scheduler; empty = a local cluster)")
    parser.add_argument("--metric", default=sweep_report.DEFAULT_METRIC, choices=sweep_report.METRICS,
                        help=f"the metric the report ranks and maps (default {sweep_report.DEFAULT_METRIC})")
    parser.add_argument("--heatmap", metavar="KEY,KEY", help="the two grid parameters of the heatmap (default: the "
                        "first two with several values)")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's folder; run again with the same "
                        "folder to resume")


class _Bar:
    """A progress bar of runs on stderr (on a terminal), and one line per finished run on stdout."""

    def __init__(self, total: int, done: int, metric: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        console = Console(stderr=True)
        self.metric = metric
        self.bar = Progress("sweep", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=console, transient=False, disable=not console.is_terminal)
        self.task = self.bar.add_task("sweep", total=total, completed=done)

    def __enter__(self) -> _Bar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, record: dict) -> None:
        self.bar.advance(self.task)
        values = " ".join(f"{k}={json.dumps(v)}" for k, v in record["values"].items())
        print(f"  {values}  {sweep_report.line(record['metrics'], self.metric)}", flush=True)


def run(args: argparse.Namespace) -> int:
    home = Home.from_env()
    log.setup_logging("sweep", home)
    t0 = time.monotonic()
    try:
        if args.workers is not None and args.workers < 1:
            raise BacktestError(f"bad --workers {args.workers}: expected 1 or more")
        cfg = backtest.strategies(home)
        grid = parse_grid(args.grid, cfg.get("strategies", {}).get(args.strategy, {}))
        heatmap = sweep_report.heatmap_keys(args.heatmap, grid)
        universe: Any = args.universe
        if universe not in schemas.UNIVERSES:
            universe = [t.strip() for t in universe.split(",") if t.strip()]
        plan_ = plan(args.strategy, grid, home, start=args.start, end=args.end, universe=universe)
        settings = config.load("app", home)["sweep"]
        done = {r["key"] for r in read_runs(args.out)} & {r.key for r in plan_.runs}
        print(f"{plan_.strategy}  {plan_.first_day} to {plan_.last_day}  {len(plan_.runs)} runs"
              + (f" ({len(done)} already done in {args.out}: resuming)" if done else ""), flush=True)
        with _Bar(len(plan_.runs), len(done), args.metric) as bar:
            errors = execute(plan_, args.out, home, workers=args.workers or settings["workers"] or None,
                             scheduler=args.scheduler or settings["scheduler"] or None, on_done=bar)
        summary = finish(plan_, args.out, home, metric=args.metric, heatmap=heatmap)
        if errors:
            raise BacktestError(f"{len(errors)} of {len(plan_.runs)} runs failed (the others are in {args.out}; "
                                f"run again to retry): {errors[0]}")
    except KeyboardInterrupt:
        print(f"krx sweep: interrupted; the finished runs are in {args.out / RUNS_FILE}: the same command resumes",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clear line and exit 3, whatever failed
        return log.failed(_log, "krx sweep", "SWEEP_FAILED", exc, t0)
    best = summary["best"]
    print(f"best {args.metric}: {sweep_report.fmt(best[args.metric])}  "
          + " ".join(f"{k}={json.dumps(best[k])}" for k in plan_.grid))
    print(f"report: {(args.out / sweep_report.FILES['report']).resolve()}")
    log.event(_log, "SWEEP_DONE", f"strategy={plan_.strategy} runs={len(plan_.runs)} out={args.out}", rc=EXIT_OK,
              elapsed_ms=(time.monotonic() - t0) * 1000)
    return EXIT_OK

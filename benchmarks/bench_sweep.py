"""Sweep throughput: a 64-run grid on 2,500 tickers x 2,520 days (bench_backtest's synthetic market), runs per
second and peak memory per worker.

Rows:
- full default, in process: pc.sweep.run_one in a loop in this process (no Dask: the floor of the per-run cost);
- full default, N local workers: the same runs through pc.sweep's Dask path (a LocalCluster of N processes, the
  panel scattered once, one task per run), N = 1 and 2; cluster start-up is timed apart;
- parity-like grid (lookback x top_n, closes only, execution at the close, fractional shares), ours on 2 workers,
  and vectorbt's parameter broadcasting of the same grid (one Portfolio.from_orders per chunk of runs, the runs
  as column groups with cash sharing; its picks computed in pandas inside the timing), when vectorbt is
  importable (`pip install -e '.[bench]'`). "max rel diff" compares vectorbt's first run with ours every day.

The full default grid: top_n 5/10/20/30 x four lookback sets x regime on/off x sell rules on/off, with 3 core
holdings. Peak memory per worker is the worker process's max RSS after the sweep.

Run: .venv/bin/python benchmarks/bench_sweep.py [--tickers 2500] [--days 2520] [--workers 1,2] [--no-inprocess]
     [--vbt-runs 64] [--vbt-chunk 2]   (vectorbt takes about 14 s a run at full size: --vbt-runs 8 times a subset)
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backtest import ETF, PARITY, rel_diff, synthetic_market  # noqa: E402

from common import schemas, strategy  # noqa: E402
from pc import backtest, grid, sweep  # noqa: E402

FULL_GRID = {"top_n": [5, 10, 20, 30], "lookbacks": [[21, 63, 126], [63, 126, 252], [21, 63, 252], [42, 126, 252]],
             "regime.enabled": [True, False], "sell_rules.enabled": [True, False]}
PARITY_GRID = {"lookbacks": [[20], [40], [60], [80], [100], [120], [160], [200]],
               "top_n": [5, 10, 15, 20, 30, 40, 50, 60]}


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runs_of(values_of: dict, extra: dict, index: pd.DatetimeIndex) -> tuple[list[grid.Run], object]:
    """The grid's runs with `extra` overrides; every run reports from the hungriest run's warm-up on."""
    runs = []
    for i, (values, overrides) in enumerate(schemas.grid_runs(values_of)):
        params = backtest.strategy_params(backtest.DEFAULT_STRATEGY, {**extra, **overrides})
        runs.append(grid.Run(f"run{i:03d}", values, overrides, params, index[0].date()))
    first = max(strategy.warmup_rows(r.params) for r in runs)
    return runs, index[min(first, len(index) - 1)].date()


def on_dask(panel: sweep.Panel, runs: list[grid.Run], first_day: object, workers: int) -> dict:
    t0 = time.perf_counter()
    with sweep.dask_client(workers=workers) as client:
        up = time.perf_counter() - t0
        t1 = time.perf_counter()
        shared = client.scatter(panel, broadcast=True, hash=False)
        futures = [client.submit(sweep.run_one, shared, r, "ALL", first_day, pure=False) for r in runs]
        records = client.gather(futures)
        wall = time.perf_counter() - t1
        rss = list(client.run(_peak_rss_mb).values())
    return {"up": up, "wall": wall, "rss": max(rss), "records": records}


def vectorbt_grid(closes: pd.DataFrame, grid: dict, chunk: int, limit: int | None = None) -> list[pd.Series]:
    """The parity-like grid (its first `limit` runs) through vectorbt: runs as column groups of one from_orders
    call per chunk."""
    import vectorbt as vbt

    reb = np.flatnonzero(strategy.schedule(closes.index, {"rebalance": "month_end"}))
    combos = schemas.grid_runs(grid)[:limit]
    values = closes.to_numpy()
    n = values.shape[1]
    out = []
    for c in range(0, len(combos), chunk):
        part = combos[c:c + chunk]
        size = np.full((len(closes), n * len(part)), np.nan)
        for k, (v, _) in enumerate(part):
            lb, top = v["lookbacks"][0], v["top_n"]
            weight = PARITY["invest_fraction"] / top
            score = values[reb] / np.where(reb[:, None] >= lb, values[np.maximum(reb - lb, 0)], np.nan) - 1
            block = np.where(np.isfinite(values[reb]), 0.0, np.nan)
            ranked = np.argsort(-np.where(np.isfinite(score), score, -np.inf), axis=1, kind="stable")[:, :top]
            ok = np.take_along_axis(np.isfinite(score), ranked, axis=1)
            rows = np.repeat(np.arange(len(reb)), top)[ok.ravel()]
            block[rows, ranked.ravel()[ok.ravel()]] = weight
            block[~np.isfinite(score).any(axis=1)] = np.nan  # no scores yet: no order
            size[reb, k * n:(k + 1) * n] = block
        columns = pd.MultiIndex.from_product([range(len(part)), closes.columns], names=["run", "ticker"])
        price = pd.DataFrame(np.tile(values, (1, len(part))), index=closes.index, columns=columns)
        pf = vbt.Portfolio.from_orders(price, pd.DataFrame(size, index=closes.index, columns=columns),
                                       size_type="targetpercent", fees=PARITY["commission_bps"] / 1e4,
                                       init_cash=float(PARITY["initial_cash"]), cash_sharing=True, group_by="run",
                                       call_seq="auto", freq="1D")
        value = pf.value()
        value = value.to_frame(0) if isinstance(value, pd.Series) else value  # one group comes back as a Series
        out += [value[k] for k in range(len(part))]
    return out


def _done(rows: list) -> None:
    print(f"  done: {rows[-1][0]} ({rows[-1][2]:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickers", type=int, default=2500)
    ap.add_argument("--days", type=int, default=2520)
    ap.add_argument("--workers", default="1,2", help="local worker counts to time, separated by commas")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process loop")
    ap.add_argument("--vbt-chunk", type=int, default=2, help="vectorbt runs per from_orders call (memory grows "
                    "with it: about 0.8 GB a run at full size)")
    ap.add_argument("--vbt-runs", type=int, default=64, help="vectorbt runs of the grid to time (about 14 s each "
                    "at full size on our machine: a subset gives its runs per second sooner)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    counts = [int(w) for w in args.workers.split(",")]

    mkt = synthetic_market(args.tickers, args.days)
    index = mkt["close"].index
    tickers = pd.DataFrame({"market": mkt["markets"]})
    panel = sweep.Panel({k: mkt[k] for k in ("close", "open", "value", "halted")}, tickers, index,
                        pd.Series(False, index=index))  # no partial days in a synthetic market
    core = [{"ticker": ETF, "weight": 0.1}, {"ticker": mkt["close"].columns[0], "weight": 0.05},
            {"ticker": mkt["close"].columns[1], "weight": 0.05}]
    runs, first_day = runs_of(FULL_GRID, {"core_holdings": core}, index)
    print(f"synthetic market: {args.tickers:,} tickers x {args.days:,} days; {len(runs)} runs of the full default "
          f"strategy reported from {first_day}")
    rows = []
    if not args.no_inprocess:
        t0 = time.perf_counter()
        local = [sweep.run_one(panel, r, "ALL", first_day) for r in runs]
        wall = time.perf_counter() - t0
        rows.append(("full default, in process (no Dask)", "-", wall, len(runs) / wall, _peak_rss_mb(), ""))
        _done(rows)
    tables = {}
    for n in counts:
        res = on_dask(panel, runs, first_day, n)
        tables[n] = [r["metrics"]["sharpe"] for r in res["records"]]
        same = "" if args.no_inprocess else "same table as in process" if tables[n] == [
            r["metrics"]["sharpe"] for r in local] else "TABLE DIFFERS"
        rows.append((f"full default, {n} local worker{'s' if n > 1 else ''}", f"{res['up']:.1f}", res["wall"],
                     len(runs) / res["wall"], res["rss"], same))
        _done(rows)

    lib = synthetic_market(args.tickers, args.days, delistings=False)["close"]
    lib_panel = sweep.Panel({"close": lib}, tickers, lib.index, pd.Series(False, index=lib.index))
    p_runs, _ = runs_of(PARITY_GRID, PARITY, lib.index)
    res = on_dask(lib_panel, p_runs, lib.index[0].date(), max(counts))
    rows.append((f"parity-like grid, ours, {max(counts)} workers", f"{res['up']:.1f}", res["wall"],
                 len(p_runs) / res["wall"], res["rss"], ""))
    _done(rows)
    try:
        import vectorbt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: not available here
        rows.append(("parity-like grid, vectorbt", "-", float("nan"), float("nan"), float("nan"),
                     f"not available ({type(exc).__name__}); pip install -e '.[bench]'"))
    else:
        vectorbt_grid(lib.iloc[:300], {"lookbacks": [[20]], "top_n": [5]}, 1)  # numba compiles on the first call
        t0 = time.perf_counter()
        curves = vectorbt_grid(lib, PARITY_GRID, args.vbt_chunk, args.vbt_runs)
        wall = time.perf_counter() - t0
        ours = pd.Series(res["records"][0]["equity"], index=pd.to_datetime(res["records"][0]["dates"]))
        diff = rel_diff(curves[0].to_numpy(), ours.reindex(curves[0].index).to_numpy())
        rows.append(("parity-like grid, vectorbt (1 process)", "-", wall, len(curves) / wall, _peak_rss_mb(),
                     f"{len(curves)} of {len(p_runs)} runs; first run's max rel diff vs ours {diff:.1e}"))

    print(flush=True)
    print(f"{'case':<44} {'start-up s':>10} {'wall s':>8} {'runs/s':>8} {'peak MB/worker':>15}  note")
    for label, up, wall, rate, mb, note in rows:
        print(f"{label:<44} {up:>10} {wall:>8.2f} {rate:>8.2f} {mb:>15.0f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`krx demo` (and `make demo`): the whole day on the embedded sample market, as a person would run it.

Each step is the real CLI in its own process, shown before it runs: init, sample ingest, the daily ops cycle
(scan, console alert, backtest request), the PC worker once, an rsync push to a local folder, then the
backtest's headline metrics, its HTML report and the ops status.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from common import calendar, config, strategy
from common.home import Home
from faces import KRX

SYNC_DIR = "demo_sync"  # the demo's stand-in for the NAS share the results are pushed to
# The demo holds KODEX 200 as a 20% core holding, to show HOLD_CORE; an environment override, as an operator would
# flip a setting without editing YAML (configs/strategies.yaml ships with no core holdings).
DEMO_ENV = {"KRX__STRATEGIES__STRATEGIES__MOMENTUM_TOPN_V1__CORE_HOLDINGS": '[{ticker: "069500", weight: 0.2}]'}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="home folder (default: KRX_HOME or the current folder)")


def _step(title: str, *args: str, home: Home, ok: tuple[int, ...] = (0,)) -> int:
    print(f"\n== {title}\n$ krx {' '.join(args)}", flush=True)
    started = time.monotonic()
    env = {**os.environ, **DEMO_ENV, "KRX_HOME": str(home.root)}
    home.root.mkdir(parents=True, exist_ok=True)
    rc = subprocess.run([*KRX, *args], env=env, cwd=home.root).returncode
    print(f"-> rc={rc} in {time.monotonic() - started:.1f}s", flush=True)
    if rc not in ok:
        raise SystemExit(f"demo: `krx {' '.join(args)}` failed with rc={rc}; see the lines above and logs/")
    return rc


def _last_rebalance(home: Home, day: dt.date) -> dt.date:
    """The strategy's last rebalance day before `day` (its schedule on the KRX calendar)."""
    cal = calendar.load(home)
    params = config.load("strategies", home, env={**os.environ, **DEMO_ENV})["strategies"][strategy.NAME]
    recent = cal.index[(cal.index < pd.Timestamp(day)) & (cal.index >= pd.Timestamp(day - dt.timedelta(days=70)))]
    return recent[strategy.schedule(recent, params, cal.index)][-1].date()


def _latest_result(home: Home) -> Path | None:
    results = sorted(home.queue("done").glob("*/result.json"), key=lambda p: p.stat().st_mtime)
    return results[-1] if results else None


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    home = Home(Path(args.home).resolve()) if args.home else Home.from_env()
    _step("1. Create the home: default configs and empty folders", "init", str(home.root), home=home)
    day = calendar.load(home).latest_complete_day()
    print("\n(demo settings, from the environment: " + ", ".join(f"{k}={v}" for k, v in DEMO_ENV.items()) + ")")
    _step("2. Ingest end-of-day prices from the embedded sample market (incremental)", "ingest", "--source", "sample",
          "--end", day.isoformat(), home=home)
    start = _last_rebalance(home, day)
    _step(f"3. A new model portfolio from the last rebalance day ({start}): its picks fill at the next open, and "
          "today's cycle carries it on (a rerun of the demo starts it again: same alert)",
          "scan", "--date", start.isoformat(), "--apply", "--reset", home=home)
    _step(f"4. The NAS's daily ops cycle for {day}: preflight, safety checks, ingest, scan, alert, request",
          "ops", "cycle", "--date", day.isoformat(), home=home)
    _step("5. The PC worker: claim the pending request, run the backtest, write reports/done/<id>/",
          "worker", "--once", home=home)
    (home.root / SYNC_DIR).mkdir(exist_ok=True)
    _step("6. Bring the results home: rsync push to a local folder standing in for the NAS share",
          "sync", "push", "--via", "rsync", "--remote", str(home.root / SYNC_DIR), home=home)
    result_path = _latest_result(home)
    print("\n== 7. The backtest's headline metrics")
    if result_path is None:
        print("no backtest result in reports/done/ (see the worker's lines above)")
    else:
        result = json.loads(result_path.read_text(encoding="utf-8"))
        m = result["metrics"]
        print(f"request   {result['id']}  ({result['data']['first_date']} .. {result['data']['last_date']}, "
              f"{result['data']['tickers']} tickers)")
        for key in ("total_return", "cagr", "mdd", "sharpe", "sortino", "calmar", "volatility", "win_rate"):
            if isinstance(m.get(key), (int, float)):
                pct = key not in ("sharpe", "sortino", "calmar")
                print(f"  {key:<13}{m[key] * 100:>9.2f}%" if pct else f"  {key:<13}{m[key]:>9.2f}")
        bench = m.get("benchmark") or {}
        if isinstance(bench.get("total_return"), (int, float)):
            print(f"  {'069500':<13}{bench['total_return'] * 100:>9.2f}%  (benchmark; excess "
                  f"{bench['excess_return'] * 100:+.2f}%)")
        print(f"report    {result_path.parent / 'report.html'}")
    _step("8. Ops status: switches, the last run and today's risks", "ops", "status", home=home)
    print(f"\nDemo done in {time.monotonic() - started:.1f}s. Where to look:")
    print(f"  signals   {home.reports / 'signals'}    alert outbox {home.reports / 'outbox'}")
    print(f"  receipts  {home.reports / 'ops' / 'daily'}    logs {home.logs}    events {home.state / 'events.jsonl'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m faces.demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())

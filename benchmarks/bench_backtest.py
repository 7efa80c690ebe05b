"""Backtest speed: synthetic closes, 2,500 tickers x 2,520 days (10 years), median of several runs, peak memory.

Rows (targets from issue 3: parity configuration <= 0.1 s; peak < 1 GB; from issue 17: the parity run within
1.5x of the numpy loop, the full default strategy <= 0.15 s):
- ours, parity: common.engine.run with issue 3's parity parameters on closes with listings and delistings;
- numpy loop, parity: a bare numpy loop over rebalance days of the same definition (the floor to beat), run
  alternately with ours so that a busy machine slows both alike;
- ours, full default: the default strategy (multi-lookback score, filters with the value panel, regime on
  069500, sell rules, 3 core holdings, sell tax with the ETF exempt, slippage, whole shares), halts included;
  and the same with daily sell checks;
- bt / vectorbt / backtrader, parity, when importable (`pip install -e '.[bench]'`; a note otherwise), on the
  closes with listings only (their books cannot hold a ticker whose price disappears), against our engine on
  the same closes. "max rel diff" is every day's |equity - ours| / ours. bt nets each trade's commission into
  the allocation (a 0.0495 target buys 0.0495 of value including the fee) while the parity definition pays the
  fee from cash on top, so bt is also run with zero commission, where the definitions coincide. backtrader takes
  minutes: pass --backtrader; its fills at the close are booked on the next bar, so its rebalance days (value
  before the trades) are left out of its comparison.

Peak memory: tracemalloc's peak of the allocations made by one run (numpy's included; the input panels are
not counted), and the process's max RSS at the end.

Run: .venv/bin/python benchmarks/bench_backtest.py [--tickers 2500] [--days 2520] [--repeat 5] [--backtrader]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import engine, strategy  # noqa: E402

PARITY = {"lookbacks": [60], "weights": [1.0], "top_n": 20, "rebalance": "month_end",
          "invest_fraction": 0.99, "commission_bps": 25, "sell_tax": [], "slippage_bps": 0, "execution": "close",
          "fractional_shares": True, "initial_cash": 100000000,
          "filters": {"enabled": False}, "regime": {"enabled": False},
          "core_holdings": [], "sell_rules": {"enabled": False}}
ETF = "069500"


# --- data ----------------------------------------------------------------------------------------------------------


def synthetic_market(tickers: int, days: int, seed: int = 20240101, delistings: bool = True) -> dict:
    """KRX-like panels: whole-won closes (a one-factor market, daily moves clipped at 25%), 12% of tickers listed
    later, 5% delisted (when `delistings`), traded value, 0.2% halted days, and 069500 (the market) last."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-05", periods=days, name="date")
    n = tickers - 1
    market = rng.normal(0.0003, 0.011, days)
    rets = rng.standard_normal((days, n))
    rets *= rng.uniform(0.008, 0.03, n)
    rets += rng.normal(0.0002, 0.0006, n) + market[:, None] * rng.uniform(0.5, 1.5, n)
    np.clip(rets, -0.25, 0.25, out=rets)
    np.log1p(rets, out=rets)
    np.cumsum(rets, axis=0, out=rets)
    np.exp(rets, out=rets)
    rets *= np.exp(rng.uniform(np.log(1000), np.log(300000), n))
    close = np.empty((days, tickers))
    close[:, :n] = np.maximum(np.round(rets), 50)
    del rets
    close[:, n] = np.round(30000 * np.cumprod(1 + market))
    listed = np.where(rng.random(n) < 0.12, rng.integers(60, 1500, n), 0)
    delisted = np.where(rng.random(n) < 0.05, rng.integers(300, days - 20, n), days) if delistings else np.full(n, days)
    rows = np.arange(days)[:, None]
    close[:, :n][(rows < listed) | (rows >= delisted)] = np.nan
    names = [f"{k * 7 + 100000:06d}" for k in range(n)] + [ETF]
    volume = np.exp(rng.uniform(np.log(2e4), np.log(5e6), tickers))
    value = close * volume
    halted = rng.random((days, tickers)) < 0.002
    halted &= np.isfinite(close)
    halted[:, n] = False
    frame = lambda a: pd.DataFrame(a, index=index, columns=pd.Index(names, name="ticker"))  # noqa: E731
    return {"close": frame(close), "value": frame(value), "halted": frame(halted),
            "open": frame(np.vstack([close[:1], close[:-1]]) * (1 + 0.002 * rng.standard_normal((days, tickers)))),
            "markets": pd.Series({ETF: "ETF"})}


# --- the bare numpy loop ---------------------------------------------------------------------------------------------


def numpy_parity(close: np.ndarray, index: pd.DatetimeIndex, p: dict) -> np.ndarray:
    """Issue 3's definition as a bare loop over rebalance days, vectorised over tickers, with the engine's
    delisting rule (a holding absent from a day's data is sold that day at its last close, paying commission)."""
    t_rows, n = close.shape
    month = index.year.to_numpy() * 12 + index.month.to_numpy()
    valid = np.isfinite(close)
    last = np.where(valid.any(0), t_rows - 1 - valid[::-1].argmax(0), -1)
    gone_day = np.where(last < t_rows - 1, last + 1, t_rows)  # the first day it is absent
    lb, top_n, frac, fee = p["lookbacks"][0], p["top_n"], p["invest_fraction"], p["commission_bps"] / 1e4
    equity = np.empty(t_rows)
    cash, held, shares = float(p["initial_cash"]), np.array([], dtype=np.int64), np.array([])
    prev = -1
    for t in [*np.flatnonzero(month[1:] != month[:-1]), t_rows]:
        a = prev + 1  # the quiet rows a..t-1: fixed shares, delistings sold on their last day
        if len(held) and a < t:
            block = close[a:t, held] * shares
            dies = (gone_day[held] >= a) & (gone_day[held] < t)
            extra = 0.0
            if dies.any():
                after = np.arange(a, t)[:, None] >= gone_day[held][None, :]
                gone = after[:, dies]
                proceeds = close[gone_day[held[dies]] - 1, held[dies]] * shares[dies] * (1 - fee)
                block[after] = 0.0
                extra = gone @ proceeds
            equity[a:t] = cash + block.sum(axis=1) + extra
            if dies.any():
                cash += proceeds.sum()
                held, shares = held[~dies], shares[~dies]
        else:
            equity[a:t] = cash
        if t == t_rows:
            break
        gone_now = gone_day[held] == t
        if gone_now.any():
            cash += (shares[gone_now] * close[t - 1, held[gone_now]]).sum() * (1 - fee)
            held, shares = held[~gone_now], shares[~gone_now]
        px = close[t, held]
        value = cash + px @ shares
        score = close[t] / close[t - lb] - 1 if t >= lb else np.full(n, np.nan)
        ok = np.flatnonzero(np.isfinite(score))
        if len(ok):
            picks = ok[np.argsort(-score[ok])[:top_n]]
            target = frac * value / top_n
            current = np.zeros(n)
            current[held] = shares * px
            turnover = np.abs(current[picks] - target).sum() + current.sum() - current[picks].sum()
            cash = value - target * len(picks) - fee * turnover
            held, shares = picks, target / close[t, picks]
        equity[t] = cash + close[t, held] @ shares
        prev = t
    return equity


# --- other libraries ------------------------------------------------------------------------------------------------


def picks_by_date(closes: pd.DataFrame, p: dict) -> dict[pd.Timestamp, list[str]]:
    """The parity picks on each month-end row (shared input for the libraries, computed outside their timing)."""
    reb = np.flatnonzero(strategy.schedule(closes.index, {"rebalance": "month_end"}))
    score = closes / closes.shift(p["lookbacks"][0]) - 1
    out = {}
    for t in reb:
        s = score.iloc[t].dropna()
        if len(s):
            out[closes.index[t]] = list(s.nlargest(p["top_n"]).index)
    return out


def run_bt(closes: pd.DataFrame, picks: dict, p: dict, commission_bps: float) -> pd.Series:
    import bt

    weight = p["invest_fraction"] / p["top_n"]

    class TopN(bt.Algo):
        def __call__(self, target):
            names = picks.get(target.now)
            if names is None:
                return False
            target.temp["weights"] = {name: weight for name in names}
            return True

    strat = bt.Strategy("parity", [TopN(), bt.algos.Rebalance()])
    rate = commission_bps / 1e4
    test = bt.Backtest(strat, closes, initial_capital=float(p["initial_cash"]), integer_positions=False,
                       commissions=lambda q, price: abs(q) * price * rate, progress_bar=False)
    res = bt.run(test)
    return res.backtests["parity"].strategy.values.reindex(closes.index)


def run_vectorbt(closes: pd.DataFrame, picks: dict, p: dict) -> pd.Series:
    import vectorbt as vbt

    size = pd.DataFrame(np.nan, index=closes.index, columns=closes.columns)
    weight = p["invest_fraction"] / p["top_n"]
    for day, names in picks.items():
        row = np.where(np.isfinite(closes.loc[day].to_numpy()), 0.0, np.nan)
        size.loc[day] = row
        size.loc[day, names] = weight
    pf = vbt.Portfolio.from_orders(closes, size, size_type="targetpercent", fees=p["commission_bps"] / 1e4,
                                   init_cash=float(p["initial_cash"]), cash_sharing=True, group_by=True,
                                   call_seq="auto", freq="1D")
    return pf.value()


def run_backtrader(closes: pd.DataFrame, picks: dict, p: dict) -> pd.Series:
    import backtrader as btr

    weight = p["invest_fraction"] / p["top_n"]

    class Fractional(btr.CommInfoBase):
        params = (("commission", p["commission_bps"] / 1e4), ("stocklike", True),
                  ("commtype", btr.CommInfoBase.COMM_PERC), ("percabs", True))

        def getsize(self, price, cash):
            return cash / price

    class Parity(btr.Strategy):
        def next(self):
            day = pd.Timestamp(self.datas[0].datetime.date(0))
            names = picks.get(day)
            if names is not None:
                value = self.broker.getvalue()
                keep = set(names)
                for d in self.datas:  # sells first, so the buys find the cash
                    if self.getposition(d).size and d._name not in keep:
                        self.order_target_size(d, 0)
                wanted = [d for d in self.datas if d._name in keep]
                for sells in (True, False):  # trims before buys too
                    for d in wanted:
                        if (self.getposition(d).size * d.close[0] > weight * value) == sells:
                            self.order_target_value(d, weight * value)

    cerebro = btr.Cerebro(stdstats=False)
    cerebro.broker.set_coc(True)
    cerebro.broker.set_checksubmit(False)
    cerebro.broker.setcash(float(p["initial_cash"]))
    cerebro.broker.addcommissioninfo(Fractional())
    filled = closes.dropna(axis=1, how="all").ffill().bfill()  # a feed of NaN makes the broker value NaN
    for name in filled.columns:
        col = filled[name]
        feed = pd.DataFrame({"open": col, "high": col, "low": col, "close": col, "volume": 0.0})
        cerebro.adddata(btr.feeds.PandasData(dataname=feed), name=name)
    cerebro.addstrategy(Parity)
    cerebro.addanalyzer(btr.analyzers.TimeReturn, _name="ret")
    strat = cerebro.run(runonce=False)[0]
    rets = pd.Series(strat.analyzers.ret.get_analysis())
    values = float(p["initial_cash"]) * (1 + rets).cumprod()
    values.index = pd.DatetimeIndex(values.index).normalize()
    # fills at the close are booked on the next bar: a rebalance day's value is before its trades
    return values.reindex(closes.index).where(~closes.index.isin(list(picks)))


# --- measuring -------------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def timed_pair(a: Callable[[], object], b: Callable[[], object], repeat: int
               ) -> tuple[tuple[float, object], tuple[float, object]]:
    """`timed` for two functions run alternately after one untimed run each: on a machine shared with other work
    both see the same load, so the ratio of their medians compares like with like."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    out: list[object] = [None, None]
    for _ in range(repeat):
        for k, fn in enumerate((a, b)):
            t0 = time.perf_counter()
            out[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return (statistics.median(times[0]), out[0]), (statistics.median(times[1]), out[1])


def peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def rel_diff(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray) -> float:
    """Max relative difference over the days both have (backtrader leaves its rebalance days out)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 0.9 * len(b):
        return float("nan")
    return float(np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok])))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickers", type=int, default=2500)
    ap.add_argument("--days", type=int, default=2520)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backtrader", action="store_true", help="also run backtrader (minutes)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")

    t0 = time.perf_counter()
    mkt = synthetic_market(args.tickers, args.days)
    closes = mkt["close"]
    print(f"synthetic market: {args.tickers:,} tickers x {args.days:,} days "
          f"({time.perf_counter() - t0:.1f} s to generate); median of {args.repeat} runs")
    rows: list[tuple[str, float, int, float | None, str, str]] = []

    def ours_parity():
        return engine.run({"close": closes}, PARITY)

    (med, res), (med_np, eq) = timed_pair(ours_parity, lambda: numpy_parity(closes.to_numpy(), closes.index, PARITY),
                                          args.repeat)
    ref = res.equity
    rows.append(("ours, parity", med, args.repeat, peak_mb(ours_parity), "-", "target <= 0.1 s"))
    rows.append(("numpy loop, parity", med_np, args.repeat, None, f"{rel_diff(eq, ref):.1e}",
                 f"ours / numpy = {med / med_np:.2f}x (target <= 1.5x; the two run alternately)"))

    core = [{"ticker": ETF, "weight": 0.1}, {"ticker": closes.columns[0], "weight": 0.05},
            {"ticker": closes.columns[1], "weight": 0.05}]
    full_panels = {k: mkt[k] for k in ("close", "open", "value", "halted")}

    def ours_full(daily: bool = False):
        return engine.run(full_panels, {"core_holdings": core, "sell_rules": {"daily": daily}},
                          markets=mkt["markets"])

    ours_full()  # untimed: the first run reads the config
    med, res_full = timed(ours_full, args.repeat)
    note = f"{len(res_full.trades):,} trades, {len(res_full.rebalances)} rebalances; target <= 0.15 s"
    rows.append(("ours, full default", med, args.repeat, peak_mb(ours_full), "-", note))
    med, res_daily = timed(lambda: ours_full(True), args.repeat)
    rows.append(("ours, full default, daily sells", med, args.repeat, peak_mb(lambda: ours_full(True)), "-",
                 f"{len(res_daily.trades):,} trades"))

    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # the libraries: closes with listings only
    lib_closes = synthetic_market(args.tickers, args.days, delistings=False)["close"]
    picks = picks_by_date(lib_closes, PARITY)
    lib_ref = engine.run({"close": lib_closes}, PARITY).equity
    lib_ref0 = engine.run({"close": lib_closes}, {**PARITY, "commission_bps": 0}).equity
    libs: list[tuple[str, str, Callable[[], pd.Series], pd.Series, str]] = [
        ("bt", "bt", lambda: run_bt(lib_closes, picks, PARITY, PARITY["commission_bps"]), lib_ref,
         "fee netted into allocations"),
        ("bt, commission 0", "bt", lambda: run_bt(lib_closes, picks, PARITY, 0), lib_ref0, "same definition"),
        ("vectorbt", "vectorbt", lambda: run_vectorbt(lib_closes, picks, PARITY), lib_ref, "targetpercent"),
    ]
    if args.backtrader:
        libs.append(("backtrader", "backtrader", lambda: run_backtrader(lib_closes, picks, PARITY), lib_ref,
                     "cheat-on-close; rebalance days left out (booked on the next bar)"))
    for label, module, fn, against, note in libs:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - any import failure means: not available here
            rows.append((label, float("nan"), 0, None, "-", f"not available ({type(exc).__name__}); "
                         "pip install -e '.[bench]'"))
            continue
        repeat = 1 if module in ("vectorbt", "backtrader") else min(args.repeat, 3)
        if module == "vectorbt":
            fn()  # numba compiles on the first call; time the runs after it
        med, eq = timed(fn, repeat)
        rows.append((label, med, repeat, None, f"{rel_diff(eq, against):.1e}", note))
    if not args.backtrader:
        rows.append(("backtrader", float("nan"), 0, None, "-", "skipped (minutes); pass --backtrader"))

    print()
    print(f"{'case':<34} {'median s':>9} {'runs':>5} {'peak MB':>8} {'max rel diff':>13}  note")
    print("-" * 110)
    for label, med, runs, peak, diff, note in rows:
        med_s = "-" if np.isnan(med) else f"{med:.3f}"
        peak_s = "-" if peak is None else f"{peak:.0f}"
        print(f"{label:<34} {med_s:>9} {runs:>5} {peak_s:>8} {diff:>13}  {note}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess max RSS: {rss_ours:.0f} MB after our runs (input panels included), "
          f"{rss:.0f} MB at the end (libraries included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

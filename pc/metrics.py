"""Performance metrics of a backtest: pure functions over the engine's Series and DataFrames.

Conventions (the report and the README say the same):

- returns are simple daily returns of the equity curve, one per row (trading day); annualised with 252 rows a
  year; the risk-free rate is 0; standard deviations are sample ones (ddof=1);
- CAGR uses calendar time: (end / start) ** (365.25 / calendar days) - 1;
- drawdowns and MDD are negative fractions (-0.25 is a 25% fall from the running peak); Calmar = CAGR / |MDD|;
- Sortino divides by the downside deviation sqrt(mean(min(r, 0)^2)) over all days (target 0);
- turnover is two-sided and annualised: (bought + sold value) / mean equity / years. A fully invested portfolio
  replaced once a year scores 2.0; `turnover_total` is the same without dividing by the years;
- win rate is by round trip: a position from flat to flat again (its sells against its buys, costs included);
  positions still open at the end are not counted;
- exposure is the mean invested fraction (holdings value / equity) over the rows.

A value that cannot be computed (a flat curve has no Sharpe, one row has no CAGR) is None in the JSON output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

TRADING_DAYS = 252
DAYS_PER_YEAR = 365.25
COST_COLUMNS = ("commission", "tax", "slippage")


def _num(x: Any) -> float | None:
    """A JSON-safe float: None for NaN, infinities and missing values."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _clean(equity: pd.Series) -> pd.Series:
    return pd.Series(equity, dtype=float).dropna()


# --- the equity curve ----------------------------------------------------------------------------------------


def daily_returns(equity: pd.Series) -> pd.Series:
    """Simple returns row over row (the first row has none)."""
    eq = _clean(equity)
    return (eq / eq.shift(1) - 1).iloc[1:]


def total_return(equity: pd.Series) -> float:
    eq = _clean(equity)
    if len(eq) < 1 or eq.iloc[0] <= 0:
        return math.nan
    return float(eq.iloc[-1] / eq.iloc[0] - 1)


def years(index: pd.Index) -> float:
    """Calendar years spanned by a DatetimeIndex (first to last row)."""
    if len(index) < 2:
        return 0.0
    return (pd.Timestamp(index[-1]) - pd.Timestamp(index[0])).days / DAYS_PER_YEAR


def cagr(equity: pd.Series) -> float:
    eq = _clean(equity)
    span = years(eq.index)
    if span <= 0 or eq.iloc[0] <= 0 or eq.iloc[-1] < 0:
        return math.nan
    return float((eq.iloc[-1] / eq.iloc[0]) ** (1 / span) - 1)


def drawdown(equity: pd.Series) -> pd.Series:
    """Fall from the running peak at each row, as a non-positive fraction."""
    eq = _clean(equity)
    return eq / eq.cummax() - 1


def max_drawdown(equity: pd.Series) -> float:
    dd = drawdown(equity)
    return float(dd.min()) if len(dd) else math.nan


def volatility(equity: pd.Series) -> float:
    r = daily_returns(equity)
    return float(r.std(ddof=1) * math.sqrt(TRADING_DAYS)) if len(r) > 1 else math.nan


def sharpe(equity: pd.Series) -> float:
    r = daily_returns(equity)
    if len(r) < 2:
        return math.nan
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(TRADING_DAYS)) if sd > 0 else math.nan


def sortino(equity: pd.Series) -> float:
    r = daily_returns(equity)
    if len(r) < 2:
        return math.nan
    downside = math.sqrt(float((np.minimum(r.to_numpy(), 0.0) ** 2).mean()))
    return float(r.mean() / downside * math.sqrt(TRADING_DAYS)) if downside > 0 else math.nan


def calmar(equity: pd.Series) -> float:
    mdd = max_drawdown(equity)
    return cagr(equity) / abs(mdd) if mdd < 0 else math.nan


# --- trades --------------------------------------------------------------------------------------------------


def _cost(trades: pd.DataFrame) -> pd.Series:
    return sum((trades[c].astype(float) for c in COST_COLUMNS if c in trades), pd.Series(0.0, index=trades.index))


def costs(trades: pd.DataFrame | None) -> dict[str, float]:
    """Totals of commission, tax and slippage (currency units), and their sum."""
    out = {c: float(trades[c].sum()) if trades is not None and c in trades and len(trades) else 0.0
           for c in COST_COLUMNS}
    out["total"] = sum(out.values())
    return out


def traded_value(trades: pd.DataFrame | None) -> float:
    if trades is None or not len(trades):
        return 0.0
    return float(trades["value"].abs().sum())


def turnover(trades: pd.DataFrame | None, equity: pd.Series) -> tuple[float, float]:
    """(annualised, total) two-sided turnover: traded value / mean equity, per year and over the whole run."""
    eq = _clean(equity)
    mean = float(eq.mean()) if len(eq) else math.nan
    if not mean or not math.isfinite(mean):
        return math.nan, math.nan
    total = traded_value(trades) / mean
    span = years(eq.index)
    return (total / span if span > 0 else math.nan), total


def round_trips(trades: pd.DataFrame | None) -> pd.DataFrame:
    """One row per closed round trip: ticker, entry_date, exit_date, cost (buys incl. their costs), proceeds
    (sells net of their costs), pnl, return. A trip runs from a ticker's first buy while flat to the sell that
    leaves it flat again; partial sells in between count toward it."""
    cols = ["ticker", "entry_date", "exit_date", "cost", "proceeds", "pnl", "return"]
    if trades is None or not len(trades):
        return pd.DataFrame(columns=cols)
    t = trades.reset_index(drop=True)
    buy = t["side"].astype(str).str.upper().eq("BUY")
    shares = t["shares"].astype(float).abs()
    value = t["value"].astype(float).abs()
    cost = _cost(t)
    signed = shares.where(buy, -shares)
    position = signed.groupby(t["ticker"]).cumsum()
    # flat again: fractional shares leave float dust, so "flat" is relative to what was traded
    scale = shares.groupby(t["ticker"]).cummax()
    flat = ~buy & (position.abs() <= 1e-9 * scale)
    trip = flat.astype(int).groupby(t["ticker"]).cumsum() - flat.astype(int)  # a closing sell ends its own trip
    frame = pd.DataFrame({
        "ticker": t["ticker"], "trip": trip, "date": pd.to_datetime(t["date"]), "flat": flat,
        "cost": (value + cost).where(buy, 0.0), "proceeds": (value - cost).where(~buy, 0.0),
    })
    g = frame.groupby(["ticker", "trip"], sort=False)
    out = g.agg(entry_date=("date", "min"), exit_date=("date", "max"), cost=("cost", "sum"),
                proceeds=("proceeds", "sum"), closed=("flat", "any")).reset_index()
    out = out[out["closed"]]
    out = out.assign(pnl=out["proceeds"] - out["cost"])
    out = out.assign(**{"return": np.where(out["cost"] > 0, out["pnl"] / out["cost"].where(out["cost"] > 0), np.nan)})
    return out[cols].sort_values(["exit_date", "ticker"], kind="stable").reset_index(drop=True)


def win_rate(trips: pd.DataFrame) -> float:
    return float((trips["pnl"] > 0).mean()) if len(trips) else math.nan


# --- by year and the benchmark -------------------------------------------------------------------------------


def _segment_stats(seg: pd.Series) -> tuple[float, float]:
    """(return, MDD) of a segment whose first value is the previous period's close."""
    return float(seg.iloc[-1] / seg.iloc[0] - 1), float((seg / seg.cummax() - 1).min())


def by_year(equity: pd.Series, benchmark: pd.Series | None = None) -> list[dict[str, Any]]:
    """Return and MDD per calendar year, each measured from the previous year's last row (the first year from
    the first row); with a benchmark curve, its return and the excess too."""
    eq = _clean(equity)
    bench = _aligned(benchmark, eq.index) if benchmark is not None else None
    out = []
    prev_end: pd.Timestamp | None = None
    for year, rows in eq.groupby(eq.index.year):
        start = prev_end if prev_end is not None else rows.index[0]
        seg = eq.loc[start:rows.index[-1]]
        ret, mdd = _segment_stats(seg)
        row: dict[str, Any] = {"year": int(year), "first_date": rows.index[0].date().isoformat(),
                               "last_date": rows.index[-1].date().isoformat(), "days": int(len(rows)),
                               "return": _num(ret), "mdd": _num(mdd)}
        if bench is not None:
            b = bench.loc[start:rows.index[-1]].dropna()
            b_ret = float(b.iloc[-1] / b.iloc[0] - 1) if len(b) >= 2 else math.nan
            row["benchmark_return"] = _num(b_ret)
            row["excess_return"] = _num(ret - b_ret)
        out.append(row)
        prev_end = rows.index[-1]
    return out


def _aligned(prices: pd.Series, index: pd.Index) -> pd.Series:
    """Benchmark prices on the equity's rows; a missing day keeps the last price (a halt), never a future one."""
    return pd.Series(prices, dtype=float).reindex(index).ffill()


def benchmark_curve(prices: pd.Series, equity: pd.Series) -> pd.Series:
    """The benchmark as an equity curve: what the strategy's first equity bought of it (NaN before its first
    price)."""
    eq = _clean(equity)
    b = _aligned(prices, eq.index)
    valid = b.dropna()
    if valid.empty or not len(eq):
        return pd.Series(np.nan, index=eq.index)
    return b / valid.iloc[0] * float(eq.iloc[0])


def benchmark_stats(prices: pd.Series | None, equity: pd.Series, ticker: str | None = None) -> dict[str, Any] | None:
    """The benchmark's return, CAGR and MDD over the equity's rows, and the strategy's excess over it (simple
    differences of total return and of CAGR). None without benchmark prices."""
    if prices is None:
        return None
    eq = _clean(equity)
    b = _aligned(prices, eq.index).dropna()
    if len(b) < 2:
        return None
    out = {"ticker": ticker, "first_date": b.index[0].date().isoformat(),
           "total_return": total_return(b), "cagr": cagr(b), "mdd": max_drawdown(b),
           "sharpe": sharpe(b), "volatility": volatility(b)}
    out["excess_return"] = total_return(eq) - out["total_return"]
    out["excess_cagr"] = cagr(eq) - out["cagr"]
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in out.items()}


# --- everything at once --------------------------------------------------------------------------------------


def opened(equity: pd.Series, initial: float | None) -> pd.Series:
    """The curve measured from the initial cash: when the first row already paid for trades (a window that
    starts on a rebalance day with same-close fills), the cash before them is the opening point, the day before."""
    eq = _clean(equity)
    if initial is None or eq.empty or eq.iloc[0] == initial:
        return eq
    return pd.concat([pd.Series([float(initial)], index=[eq.index[0] - pd.Timedelta(days=1)]), eq])


def compute(equity: pd.Series, *, exposure: pd.Series | None = None, trades: pd.DataFrame | None = None,
            benchmark: pd.Series | None = None, benchmark_ticker: str | None = None,
            initial: float | None = None) -> dict[str, Any]:
    """The metrics block of backtest_result/1, JSON-safe, from the reported rows' equity and trades; returns
    are measured from `initial` (the initial cash) when given."""
    rows = _clean(equity)
    if rows.empty:
        raise ValueError("an empty equity curve has no metrics")
    eq = opened(rows, initial)
    t_annual, t_total = turnover(trades, eq)
    trips = round_trips(trades)
    bench = benchmark_stats(benchmark, eq, benchmark_ticker)
    m: dict[str, Any] = {
        "start_equity": _num(eq.iloc[0]),
        "end_equity": _num(eq.iloc[-1]),
        "total_return": _num(total_return(eq)),
        "cagr": _num(cagr(eq)),
        "mdd": _num(max_drawdown(eq)),
        "sharpe": _num(sharpe(eq)),
        "sortino": _num(sortino(eq)),
        "calmar": _num(calmar(eq)),
        "volatility": _num(volatility(eq)),
        "turnover": _num(t_annual),
        "turnover_total": _num(t_total),
        "win_rate": _num(win_rate(trips)),
        "round_trips": {
            "closed": int(len(trips)),
            "won": int((trips["pnl"] > 0).sum()),
            "avg_return": _num(trips["return"].mean()) if len(trips) else None,
        },
        "trades": int(len(trades)) if trades is not None else 0,
        "exposure": _num(pd.Series(exposure, dtype=float).reindex(rows.index).mean()) if exposure is not None
        else None,
        "costs": costs(trades),
        "days": int(len(rows)),
        "years": _num(years(eq.index)),
        "by_year": by_year(eq, benchmark_curve(benchmark, eq) if benchmark is not None else None),
        "benchmark": bench,
        "excess_return": bench["excess_return"] if bench else None,
    }
    return m


def headline(m: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) of the figures a person looks at first: the CLI and the HTML show these."""
    def pct(x: Any) -> str:
        return "n/a" if x is None else f"{x * 100:+.2f}%"

    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    bench = m.get("benchmark") or {}
    rows = [
        ("Total return", pct(m.get("total_return"))),
        ("CAGR", pct(m.get("cagr"))),
        ("MDD", pct(m.get("mdd"))),
        ("Sharpe", num(m.get("sharpe"))),
        ("Sortino", num(m.get("sortino"))),
        ("Calmar", num(m.get("calmar"))),
        ("Volatility (ann.)", pct(m.get("volatility")).lstrip("+")),
        ("Turnover (per year)", "n/a" if m.get("turnover") is None else f"{m['turnover']:.2f}x"),
        ("Win rate (round trips)", "n/a" if m.get("win_rate") is None else
         f"{m['win_rate'] * 100:.1f}% of {m['round_trips']['closed']}"),
        ("Exposure", "n/a" if m.get("exposure") is None else f"{m['exposure'] * 100:.1f}%"),
        ("Costs", f"{m['costs']['total']:,.0f}"),
    ]
    if bench:
        rows.append((f"Benchmark {bench.get('ticker') or ''} return".replace("  ", " "), pct(bench["total_return"])))
        rows.append(("Excess over benchmark", pct(bench["excess_return"])))
    return rows

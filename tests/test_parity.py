"""Parity: the engine against a plain-numpy reference of issue 3's definition, written here and sharing no code
with the engine. Every day's equity must agree within 1e-9 relative."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from common import engine

PARAMS = {"lookbacks": [60], "weights": [1.0], "top_n": 20, "rebalance": "month_end",
          "invest_fraction": 0.99, "commission_bps": 25, "sell_tax": [], "slippage_bps": 0, "execution": "close",
          "fractional_shares": True, "initial_cash": 100000000,
          "filters": {"enabled": False}, "regime": {"enabled": False},
          "core_holdings": [], "sell_rules": {"enabled": False}}


def synthetic_closes(seed: int = 7, days: int = 520, tickers: int = 80) -> pd.DataFrame:
    """Random walks with listings (leading NaN) and delistings (trailing NaN); one top-scoring ticker is
    delisted on a month-end row, so it is bought and sold on the same close."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2021-01-04", periods=days)
    rets = rng.normal(0.0004, 0.02, (days, tickers)) + rng.normal(0, 0.002, tickers)
    close = 1000 * rng.uniform(1, 50, tickers) * np.exp(np.cumsum(rets, axis=0))
    for j in range(tickers):
        kind = j % 5
        if kind == 1:  # listed later
            close[: rng.integers(30, days // 2), j] = np.nan
        elif kind == 2:  # delisted
            close[rng.integers(days // 3, days - 5):, j] = np.nan
        elif kind == 3:  # listed later and delisted
            a = rng.integers(10, days // 3)
            close[:a, j] = np.nan
            close[rng.integers(a + 80, days - 5):, j] = np.nan
    month = index.year * 12 + index.month
    month_end = np.flatnonzero(month[1:] != month[:-1])
    row = int(month_end[len(month_end) // 2])
    close[:, 0] = 500 * np.exp(np.linspace(0, 3, days))  # the best score on every row
    close[row + 1:, 0] = np.nan
    return pd.DataFrame(close, index=index, columns=[f"{k:05d}0" for k in range(tickers)])


def reference_equity(closes: pd.DataFrame, p: dict) -> np.ndarray:
    """Issue 3's parity definition in plain numpy, plus the engine's delisting rule: a holding absent from a
    day's data is sold that day at its last close, paying commission, before anything else happens that day."""
    c = closes.to_numpy()
    n_days, n = c.shape
    month = closes.index.year * 12 + closes.index.month
    lookback, top_n, frac = p["lookbacks"][0], p["top_n"], p["invest_fraction"]
    comm = p["commission_bps"] / 10_000
    cash = float(p["initial_cash"])
    shares = np.zeros(n)
    last_px = np.full(n, np.nan)
    equity = np.empty(n_days)
    for t in range(n_days):
        px = c[t]
        for j in np.flatnonzero(shares != 0):
            if np.isnan(px[j]):
                cash += shares[j] * last_px[j] * (1 - comm)
                shares[j] = 0.0
        held = shares != 0
        if t < n_days - 1 and month[t + 1] != month[t]:
            value = cash + np.sum(shares[held] * px[held])
            score = px / c[t - lookback] - 1 if t >= lookback else np.full(n, np.nan)
            ok = np.flatnonzero(np.isfinite(score))
            if len(ok):
                picks = ok[np.argsort(-score[ok])][:top_n]
                target = np.zeros(n)
                target[picks] = frac * value / top_n
                current = np.where(held, shares * np.nan_to_num(px), 0.0)
                fee = comm * np.sum(np.abs(target - current))
                shares = np.zeros(n)
                shares[picks] = target[picks] / px[picks]
                cash = value - target.sum() - fee
        held = shares != 0
        last_px[held] = px[held]
        equity[t] = cash + np.sum(shares[held] * px[held])
    return equity


def test_engine_matches_reference_every_day():
    closes = synthetic_closes()
    ref = reference_equity(closes, PARAMS)
    result = engine.run({"close": closes}, PARAMS)
    assert isinstance(result.equity, pd.Series) and result.equity.index.equals(closes.index)
    got = result.equity.to_numpy()
    rel = np.abs(got - ref) / np.abs(ref)
    worst = rel.argmax()
    assert rel.max() <= 1e-9, f"worst day {closes.index[worst].date()}: {got[worst]} vs {ref[worst]}"
    # the reference is not trivial: it traded, lost money to fees and saw the same-day delisting
    assert (ref[:60] == PARAMS["initial_cash"]).all() and len(set(np.round(ref, 2))) > 300
    delisted_same_day = result.trades[result.trades.ticker == closes.columns[0]]
    assert list(delisted_same_day.reason.iloc[-2:]) in (["BUY", "DELISTED"], ["HOLD", "DELISTED"])


def test_parity_fee_and_cash_on_a_rebalance_day():
    closes = synthetic_closes(seed=11)
    result = engine.run({"close": closes}, PARAMS)
    checked = 0
    for day in result.rebalances[3:]:
        trades = result.trades[result.trades.date == day]
        if (trades.reason == "DELISTED").any():
            continue
        fee = 0.0025 * trades["value"].sum()  # commission_bps / 1e4 x sum |target - current|
        assert np.isclose(trades["commission"].sum(), fee, rtol=1e-12)
        assert (trades["tax"] == 0).all() and (trades["slippage"] == 0).all()
        equity = result.equity[day]
        value = equity + fee  # V before trading: equity[t] = V - fee
        invested = result.exposure[day] * equity
        assert np.isclose(invested, 0.99 * value, rtol=1e-12)  # 20 picks x 0.99 V / 20
        assert np.isclose(result.cash[day], value - invested - fee, rtol=1e-9)
        checked += 1
    assert checked >= 10
    assert result.cash.min() >= 0


def test_parity_on_a_larger_panel():
    closes = synthetic_closes(seed=3, days=700, tickers=150)
    ref = reference_equity(closes, PARAMS)
    got = engine.run({"close": closes}, PARAMS).equity.to_numpy()
    assert np.max(np.abs(got - ref) / ref) <= 1e-9


@pytest.mark.skipif(importlib.util.find_spec("pc.backtest") is None, reason="pc/backtest.py not written yet")
def test_run_backtest_entry_point_matches_reference():
    from pc.backtest import run_backtest

    closes = synthetic_closes()
    result = run_backtest(closes, dict(PARAMS))
    assert result.equity.index.equals(closes.index)
    ref = reference_equity(closes, PARAMS)
    assert np.max(np.abs(result.equity.to_numpy() - ref) / ref) <= 1e-9

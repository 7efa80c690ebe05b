"""pc.metrics against figures worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pc import metrics

# Five rows four calendar years apart in all (2020-01-01 .. 2024-01-01 is 1461 days = 4 x 365.25), one per year.
DATES = pd.DatetimeIndex(["2020-01-01", "2021-06-01", "2022-03-01", "2023-05-01", "2024-01-01"])
# returns +10%, -10%, +10%, +20%
EQUITY = pd.Series([100.0, 110.0, 99.0, 108.9, 130.68], index=DATES)


def test_returns_drawdown_and_ratios_by_hand():
    r = metrics.daily_returns(EQUITY)
    assert r.tolist() == pytest.approx([0.1, -0.1, 0.1, 0.2])
    assert metrics.total_return(EQUITY) == pytest.approx(0.3068)
    # four calendar years exactly
    assert metrics.years(EQUITY.index) == pytest.approx(4.0)
    assert metrics.cagr(EQUITY) == pytest.approx(1.3068 ** 0.25 - 1)
    # the peak 110 falls to 99: -10%
    assert metrics.max_drawdown(EQUITY) == pytest.approx(-0.1)
    assert metrics.drawdown(EQUITY).tolist() == pytest.approx([0, 0, -0.1, -0.01, 0])
    # mean 0.075; deviations .025 -.175 .025 .125, squares sum 0.0475, sample variance 0.0475 / 3
    sd = math.sqrt(0.0475 / 3)
    assert metrics.volatility(EQUITY) == pytest.approx(sd * math.sqrt(252))
    assert metrics.sharpe(EQUITY) == pytest.approx(0.075 / sd * math.sqrt(252))
    # downside squares 0, 0.01, 0, 0: mean 0.0025, deviation 0.05
    assert metrics.sortino(EQUITY) == pytest.approx(0.075 / 0.05 * math.sqrt(252))
    assert metrics.calmar(EQUITY) == pytest.approx((1.3068 ** 0.25 - 1) / 0.1)


def test_flat_curve_has_no_ratio_and_json_gets_none():
    flat = pd.Series(1e8, index=pd.bdate_range("2024-01-01", periods=30))
    assert metrics.total_return(flat) == 0
    assert metrics.max_drawdown(flat) == 0
    assert math.isnan(metrics.sharpe(flat))
    m = metrics.compute(flat)
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None and m["win_rate"] is None
    json.dumps(m, allow_nan=False)  # no NaN leaks into result.json


def test_by_year_starts_each_year_from_the_previous_close():
    rows = metrics.by_year(EQUITY)
    assert [r["year"] for r in rows] == [2020, 2021, 2022, 2023, 2024]
    assert [r["return"] for r in rows] == pytest.approx([0.0, 0.1, -0.1, 0.1, 0.2])
    assert [r["mdd"] for r in rows] == pytest.approx([0.0, 0.0, -0.1, 0.0, 0.0])


def test_by_year_mdd_inside_a_year():
    idx = pd.DatetimeIndex(["2023-12-28", "2024-01-02", "2024-06-03", "2024-12-30", "2025-01-02"])
    eq = pd.Series([100.0, 120.0, 90.0, 108.0, 81.0], index=idx)
    rows = metrics.by_year(eq)
    # 2024 from 100: peak 120, trough 90 (-25%), ends 108 (+8%)
    assert rows[1]["return"] == pytest.approx(0.08)
    assert rows[1]["mdd"] == pytest.approx(-0.25)
    assert rows[1]["days"] == 3
    # 2025 from 108 to 81: -25%
    assert rows[2]["return"] == pytest.approx(-0.25) and rows[2]["mdd"] == pytest.approx(-0.25)


def _trades() -> pd.DataFrame:
    rows = [
        ("2024-01-02", "AAAAAA", "BUY", 10, 100.0, 1000.0, 1.0, 0.0, 0.0),
        ("2024-01-02", "BBBBBB", "BUY", 5, 200.0, 1000.0, 1.0, 0.0, 0.0),
        ("2024-02-01", "AAAAAA", "SELL", 4, 110.0, 440.0, 0.5, 1.0, 0.0),
        ("2024-03-04", "AAAAAA", "SELL", 6, 90.0, 540.0, 0.5, 1.0, 0.0),
        ("2024-03-04", "BBBBBB", "SELL", 5, 220.0, 1100.0, 1.0, 2.0, 0.0),
        ("2024-04-01", "AAAAAA", "BUY", 10, 80.0, 800.0, 1.0, 0.0, 0.5),
    ]
    return pd.DataFrame(rows, columns=["date", "ticker", "side", "shares", "price", "value", "commission", "tax",
                                       "slippage"]).assign(date=lambda f: pd.to_datetime(f["date"]), reason="")


def test_round_trips_and_win_rate_by_hand():
    trips = metrics.round_trips(_trades())
    # A: bought 1000 + 1 = 1001; sold 440 - 1.5 and 540 - 1.5 = 977 -> -24 (a loss, although one sell gained)
    # B: bought 1001; sold 1100 - 3 = 1097 -> +96.  A's second buy is still open: not counted.
    assert trips["ticker"].tolist() == ["AAAAAA", "BBBBBB"]
    assert trips["pnl"].tolist() == pytest.approx([-24.0, 96.0])
    assert trips["return"].tolist() == pytest.approx([-24 / 1001, 96 / 1001])
    assert trips["entry_date"].tolist() == [pd.Timestamp("2024-01-02")] * 2
    assert trips["exit_date"].tolist() == [pd.Timestamp("2024-03-04")] * 2
    assert metrics.win_rate(trips) == 0.5


def test_round_trips_with_fractional_dust():
    t = pd.DataFrame({
        "date": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]), "ticker": ["X00001"] * 3,
        "side": ["BUY", "BUY", "SELL"], "shares": [0.1, 0.2, 0.30000000000000004],
        "value": [10.0, 20.0, 33.0], "commission": [0.0] * 3, "tax": [0.0] * 3, "slippage": [0.0] * 3,
    })
    trips = metrics.round_trips(t)
    assert len(trips) == 1 and trips["pnl"].iloc[0] == pytest.approx(3.0)


def test_costs_turnover_exposure_and_benchmark():
    idx = pd.DatetimeIndex(["2024-01-01", "2024-04-01", "2024-07-01", "2024-10-01", "2024-12-31"])
    eq = pd.Series([10_000.0, 10_500.0, 9_500.0, 10_000.0, 10_000.0], index=idx)  # mean 10,000
    trades = _trades()
    c = metrics.costs(trades)
    assert c == {"commission": 5.0, "tax": 4.0, "slippage": 0.5, "total": 9.5}
    annual, total = metrics.turnover(trades, eq)
    # bought 1000 + 1000 + 800, sold 440 + 540 + 1100: 4880 over a mean equity of 10,000
    assert total == pytest.approx(0.488)
    assert annual == pytest.approx(0.488 / (365 / 365.25))
    bench = pd.Series([50.0, 55.0, np.nan, 60.0, 65.0], index=idx)
    b = metrics.benchmark_stats(bench, eq, "069500")
    assert b["total_return"] == pytest.approx(0.3)
    assert b["mdd"] == 0  # the missing day keeps 55, never a later price
    assert b["excess_return"] == pytest.approx(0.0 - 0.3)
    curve = metrics.benchmark_curve(bench, eq)
    assert curve.tolist() == pytest.approx([10_000, 11_000, 11_000, 12_000, 13_000])
    m = metrics.compute(eq, exposure=pd.Series([0, 0.5, 1.0, 1.0, 0.5], index=idx), trades=trades,
                        benchmark=bench, benchmark_ticker="069500")
    assert m["exposure"] == pytest.approx(0.6)
    assert m["win_rate"] == 0.5 and m["round_trips"] == {"closed": 2, "won": 1, "avg_return": pytest.approx(36 / 1001)}
    assert m["by_year"][0]["benchmark_return"] == pytest.approx(0.3)
    assert m["by_year"][0]["excess_return"] == pytest.approx(-0.3)
    assert m["excess_return"] == pytest.approx(-0.3)
    json.dumps(m, allow_nan=False)


def test_benchmark_listed_late_and_absent():
    idx = pd.bdate_range("2024-01-01", periods=4)
    eq = pd.Series([100.0, 100.0, 110.0, 121.0], index=idx)
    bench = pd.Series([np.nan, 10.0, 10.0, 12.0], index=idx)
    b = metrics.benchmark_stats(bench, eq, "069500")
    assert b["first_date"] == "2024-01-02" and b["total_return"] == pytest.approx(0.2)
    assert metrics.benchmark_curve(bench, eq).iloc[1:].tolist() == pytest.approx([100, 100, 120])
    assert metrics.benchmark_stats(None, eq) is None
    assert metrics.compute(eq)["benchmark"] is None


def test_headline_formats():
    m = metrics.compute(EQUITY)
    rows = dict(metrics.headline(m))
    assert rows["Total return"] == "+30.68%"
    assert rows["MDD"] == "-10.00%"

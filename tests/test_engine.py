"""The engine: costs (ETF tax exemption), whole shares, cash never negative, delisting, halts, schedules,
daily sell rules, core holdings."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from common import engine, strategy

QUIET = {"filters": {"enabled": False}, "regime": {"enabled": False}, "sell_rules": {"enabled": False},
         "core_holdings": [], "commission_bps": 0, "sell_tax": [], "slippage_bps": 0, "execution": "close",
         "fractional_shares": True, "initial_cash": 1_000_000, "lookbacks": [1], "weights": [1.0]}


def params(**over) -> dict:
    out = {**QUIET, **over}
    return out


def frame(data: dict, index) -> pd.DataFrame:
    return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in data.items()}, index=index)


# --- costs ---------------------------------------------------------------------------------------------------


COST_INDEX = pd.bdate_range("2024-01-01", periods=6)
COST_CLOSES = frame({
    "A": [100, 110, 120, 100, 100, 100],   # best on row 1, dropped on row 3 (a stock: taxed)
    "E": [100, 105, 200, 210, 210, 210],   # second on rows 1 and 3; doubled, so row 3 trims it (an ETF)
    "B": [100, 100, 100, 130, 130, 130],   # best on row 3
}, COST_INDEX)
COSTS = params(top_n=2, rebalance="every_n", rebalance_every_n=2, commission_bps=10,
               sell_tax=[{"from": "2000-01-01", "KOSPI": 23.0}], slippage_bps=5)
MARKETS = pd.Series({"A": "KOSPI", "E": "ETF", "B": "KOSPI"})


def test_costs_commission_tax_slippage_and_etf_exemption():
    r = engine.run({"close": COST_CLOSES}, COSTS, markets=MARKETS)
    t = r.trades
    assert list(t.columns) == engine.TRADE_COLUMNS
    assert list(r.rebalances) == [COST_INDEX[1], COST_INDEX[3], COST_INDEX[5]]
    day3 = t[t.date == COST_INDEX[3]].set_index("ticker")
    assert day3.loc["A", "side"] == "SELL" and day3.loc["A", "reason"] == "SELL_REPLACE"
    assert day3.loc["E", "side"] == "SELL" and day3.loc["E", "reason"] == "HOLD"
    assert day3.loc["B", "side"] == "BUY" and day3.loc["B", "reason"] == "BUY"
    np.testing.assert_allclose(t["commission"], t["value"] * 0.001)
    np.testing.assert_allclose(t["slippage"], t["value"] * 0.0005)
    assert day3.loc["A", "tax"] == pytest.approx(day3.loc["A", "value"] * 0.0023)
    assert day3.loc["E", "tax"] == 0.0 and day3.loc["B", "tax"] == 0.0  # ETF sell and a buy: no tax
    # cash moves by exactly the trades and their costs
    cash = 1_000_000.0
    for day, group in t.groupby("date"):
        sign = np.where(group.side == "SELL", 1.0, -1.0)
        cash += float(np.sum(sign * group.value - group.commission - group.tax - group.slippage))
        assert r.cash[day] == pytest.approx(cash, rel=1e-12)
    # equity between rebalances: cash + fixed shares x closes
    shares = t[t.date == COST_INDEX[1]].set_index("ticker")["shares"]
    assert r.equity[COST_INDEX[2]] == pytest.approx(r.cash[COST_INDEX[1]] + (shares * COST_CLOSES.iloc[2]).sum())
    # without markets the ETF's trim pays the tax like a stock
    taxed = engine.run({"close": COST_CLOSES}, COSTS).trades
    e_sell = taxed[(taxed.date == COST_INDEX[3]) & (taxed.ticker == "E")].iloc[0]
    assert e_sell.tax == pytest.approx(e_sell.value * 0.0023)


def test_whole_shares_by_default_leftover_stays_in_cash():
    closes = COST_CLOSES * 3.7  # prices that do not divide the targets
    r = engine.run({"close": closes}, {k: v for k, v in COSTS.items() if k != "fractional_shares"})
    assert r.params["fractional_shares"] is False
    assert (r.trades["shares"] == np.floor(r.trades["shares"])).all() and (r.trades["shares"] > 0).all()
    assert (r.positions["shares"] == np.floor(r.positions["shares"])).all()
    frac = engine.run({"close": closes}, COSTS)
    assert r.cash[COST_INDEX[1]] > frac.cash[COST_INDEX[1]]
    # a share dearer than the target is not bought at all
    dear = closes.copy()
    dear["A"] = dear["A"] * 10_000
    r = engine.run({"close": dear}, {k: v for k, v in COSTS.items() if k != "fractional_shares"})
    assert "A" not in set(r.trades.ticker)


@pytest.mark.parametrize("fractional", [True, False])
def test_cash_never_negative_when_buys_and_costs_exceed_it(fractional):
    p = params(top_n=2, rebalance="every_n", rebalance_every_n=2, invest_fraction=1.0, commission_bps=100,
               slippage_bps=100, sell_tax=[{"from": "2000-01-01", "KOSPI": 30.0}], fractional_shares=fractional)
    r = engine.run({"close": COST_CLOSES * 1.3}, p)
    assert r.cash.min() >= 0
    assert r.cash[COST_INDEX[1]] < 0.01 * 1_000_000  # the buys were scaled down, not skipped
    assert len(r.trades[r.trades.date == COST_INDEX[1]]) == 2


# --- delisting, halts ---------------------------------------------------------------------------------------------

Q_INDEX = pd.bdate_range("2024-01-01", "2024-04-05")


def quarter(delist_on: str | None = None) -> pd.DataFrame:
    n = len(Q_INDEX)
    t = np.arange(n)
    k = int((Q_INDEX <= "2024-01-31").sum())
    d = 1000 * 1.01 ** t                      # the best score in January, then falling 1.5% a day
    d[k:] = d[k - 1] * 0.985 ** (t[k:] - k + 1)
    x = 1000 + 0.5 * t                        # steady
    y = 1000 + 0.4 * t
    closes = frame({"D": d, "X": x, "Y": y}, Q_INDEX)
    if delist_on:
        closes.loc[closes.index > delist_on, "D"] = np.nan
    return closes


def test_delisted_holding_is_sold_at_its_last_close_on_the_first_day_it_is_absent():
    closes = quarter(delist_on="2024-02-14")
    r = engine.run({"close": closes}, params(top_n=1, commission_bps=10))
    assert r.trades.iloc[0][["ticker", "side", "reason"]].tolist() == ["D", "BUY", "BUY"]
    sale = r.trades[(r.trades.ticker == "D") & (r.trades.side == "SELL")]
    assert len(sale) == 1
    sale = sale.iloc[0]
    # nothing looks ahead: on its last day D is still held; the next session shows it absent
    assert sale.date == pd.Timestamp("2024-02-15") and sale.reason == "DELISTED"
    assert sale.price == closes.loc["2024-02-14", "D"]
    assert sale.shares == r.trades.iloc[0].shares
    assert r.exposure["2024-02-14"] > 0.9
    assert r.equity.notna().all() and r.cash.min() >= 0
    after = r.equity["2024-02-16":"2024-02-28"]
    assert (after == r.cash["2024-02-15"]).all()  # all cash until the next rebalance
    assert r.exposure["2024-02-16"] == 0.0
    # the same panel cut at D's last day decides exactly the same up to it
    cut = engine.run({"close": closes[:"2024-02-14"]}, params(top_n=1, commission_bps=10))
    pd.testing.assert_series_equal(cut.equity, r.equity[:"2024-02-14"])


def test_halted_holding_cannot_trade_and_is_kept():
    closes = quarter()
    halted = pd.DataFrame(False, index=Q_INDEX, columns=closes.columns)
    halted.loc["2024-02-29", "D"] = True  # D ranks last on Feb 29 and would be replaced
    free = engine.run({"close": closes}, params(top_n=1))
    kept = engine.run({"close": closes, "halted": halted}, params(top_n=1))
    feb = pd.Timestamp("2024-02-29")
    assert set(free.trades[free.trades.date == feb].ticker) == {"D", "X"}
    assert kept.trades[kept.trades.date == feb].empty  # no sale, and no buy: D keeps its slot
    mar = kept.trades[kept.trades.date == pd.Timestamp("2024-03-29")]
    assert mar.set_index("ticker").loc["D", "reason"] == "SELL_REPLACE"
    # a halted candidate is not bought
    halted.loc["2024-01-31", "D"] = True
    first = engine.run({"close": closes, "halted": halted}, params(top_n=1)).trades.iloc[0]
    assert first.ticker != "D"


# --- schedules -------------------------------------------------------------------------------------------------------


def test_rebalance_schedules():
    days = pd.bdate_range("2024-03-25", "2024-04-12").drop(pd.Timestamp("2024-03-29"))  # a Friday holiday

    def names(rule: str, sessions=None, inception=None, n: int = 3) -> list[str]:
        mask = strategy.schedule(days, {"rebalance": rule, "rebalance_every_n": n}, sessions, inception)
        return [str(d.date()) for d in days[mask]]

    assert names("month_end") == ["2024-03-28"]
    assert names("week_end") == ["2024-03-28", "2024-04-05"]  # 04-12: the last row, its next session unknown
    # with the calendar's sessions the last row is judged too
    assert names("week_end", sessions=days.append(pd.DatetimeIndex(["2024-04-15"]))) == [
        "2024-03-28", "2024-04-05", "2024-04-12"]
    # a panel that ends on the month's last session: the calendar knows it is one
    short = days[:4]
    assert not strategy.schedule(short, {"rebalance": "month_end"}).any()
    assert list(short[strategy.schedule(short, {"rebalance": "month_end"}, days)]) == [pd.Timestamp("2024-03-28")]
    assert names("every_n") == ["2024-03-27", "2024-04-02", "2024-04-05", "2024-04-10"]
    # every_n counts from the portfolio's first session, whatever the panel's first row
    assert names("every_n", inception="2024-03-27") == ["2024-04-01", "2024-04-04", "2024-04-09", "2024-04-12"]
    with pytest.raises(ValueError):
        names("daily")


def test_engine_trades_only_on_the_schedule_and_reports_progress():
    closes = quarter()
    for rule, n in (("month_end", 3), ("week_end", 13)):
        calls = []
        r = engine.run({"close": closes}, params(top_n=2, rebalance=rule), progress=functools.partial(calls.append, 1))
        assert len(r.rebalances) == n == len(calls)
        assert set(r.trades.date) <= set(r.rebalances)
        assert (r.equity[: r.rebalances[0]].iloc[:-1] == 1_000_000).all()


# --- sell rules, core holdings, regime -----------------------------------------------------------------------------


def stop_market() -> pd.DataFrame:
    closes = quarter()
    d = closes["D"].to_numpy().copy()
    k = Q_INDEX.get_loc(pd.Timestamp("2024-02-07"))
    d[k:] = d[k - 1] * 0.8  # -20% on Feb 7, flat after
    closes["D"] = d
    return closes


STOP = {"sell_rules": {"enabled": True, "stop_loss_pct": 10.0, "rsi_overbought": 100.0, "trend_sma_days": 500},
        "top_n": 1}


def test_stop_loss_on_rebalance_days_by_default():
    r = engine.run({"close": stop_market()}, params(**STOP))
    cut = r.trades[r.trades.reason == "CUT_STOPLOSS"]
    assert list(cut.date) == [pd.Timestamp("2024-02-29")] and list(cut.ticker) == ["D"]


def test_stop_loss_daily_when_configured():
    p = params(**{**STOP, "sell_rules": {**STOP["sell_rules"], "daily": True}})
    r = engine.run({"close": stop_market()}, p)
    cut = r.trades[r.trades.reason == "CUT_STOPLOSS"]
    assert list(cut.date) == [pd.Timestamp("2024-02-07")]
    assert cut.iloc[0].price == stop_market().loc["2024-02-07", "D"]
    # halted on the day it fires: sold on the next day it can trade
    halted = pd.DataFrame(False, index=Q_INDEX, columns=["D", "X", "Y"])
    halted.loc["2024-02-07":"2024-02-08", "D"] = True
    r = engine.run({"close": stop_market(), "halted": halted}, p)
    assert list(r.trades[r.trades.reason == "CUT_STOPLOSS"].date) == [pd.Timestamp("2024-02-09")]


def test_core_holding_held_throughout_at_its_weight_and_never_sold_by_a_rule():
    closes = stop_market()
    closes["C"] = closes["D"]  # the same crash, but a core holding
    p = params(**{**STOP, "sell_rules": {**STOP["sell_rules"], "daily": True}},
               core_holdings=[{"ticker": "C", "weight": 0.3}])
    r = engine.run({"close": closes}, p)
    c = r.trades[r.trades.ticker == "C"]
    assert set(c.reason) <= {"BUY", "HOLD_CORE"} and c.iloc[0].reason == "BUY"
    assert "C" in set(r.positions.ticker)
    for day in r.rebalances:
        shares = c[c.date <= day].apply(lambda x: x.shares if x.side == "BUY" else -x.shares, axis=1).sum()
        assert shares * closes.loc[day, "C"] / r.equity[day] == pytest.approx(0.3, rel=1e-9)
    assert "CUT_STOPLOSS" in set(r.trades.reason)  # D, the same prices, was cut


def test_regime_off_means_no_buys():
    closes = quarter()
    closes["069500"] = np.linspace(2000, 1000, len(Q_INDEX))
    p = params(top_n=2, regime={"enabled": True, "ticker": "069500", "sma_days": 5})
    r = engine.run({"close": closes}, p)
    assert r.trades.empty and (r.equity == 1_000_000).all()
    closes["069500"] = np.linspace(1000, 2000, len(Q_INDEX))
    assert not engine.run({"close": closes}, p).trades.empty


def test_full_default_strategy_runs_on_the_sample_market_shape():
    """Defaults (multi-lookback score, filters with value, regime, sell rules, tax, whole shares) end to end."""
    rng = np.random.default_rng(5)
    index = pd.bdate_range("2020-01-01", periods=400)
    n = 40
    close = np.round(1000 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, (400, n)), axis=0)))
    close[:150, 5] = np.nan
    close[300:, 6] = np.nan
    cols = [f"{k:06d}" for k in range(1, n)] + ["069500"]
    closes = pd.DataFrame(close, index=index, columns=cols)
    value = pd.DataFrame(2e9, index=index, columns=cols)
    opens = closes.shift(1).fillna(closes) * 1.001
    r = engine.run({"close": closes, "open": opens, "value": value},
                   {"core_holdings": [{"ticker": "069500", "weight": 0.2}]},
                   markets=pd.Series({"069500": "ETF"}))
    assert r.params["lookbacks"] == [21, 63, 126] and r.params["fractional_shares"] is False
    assert r.cash.min() >= 0 and r.equity.notna().all()
    assert (r.trades.shares == np.floor(r.trades.shares)).all()
    assert (r.trades[r.trades.ticker == "069500"].tax == 0).all()
    assert len(r.positions) <= 6
    assert set(r.positions.columns) >= {"ticker", "shares", "entry_date", "entry_price"}


def test_rows_before_start_only_warm_up():
    # with a start, the first rebalance days only feed the indicators: the book stays in cash until then
    full = engine.run({"close": COST_CLOSES}, COSTS, markets=MARKETS)
    late = engine.run({"close": COST_CLOSES}, COSTS, markets=MARKETS, start=COST_INDEX[2])
    assert list(full.rebalances) == [COST_INDEX[1], COST_INDEX[3], COST_INDEX[5]]
    assert list(late.rebalances) == [COST_INDEX[3], COST_INDEX[5]]  # every_n counts from the book's first day
    assert (late.equity[:COST_INDEX[3]].iloc[:-1] == 1_000_000).all()
    first = late.trades[late.trades["date"] == late.trades["date"].min()]
    assert first["date"].iloc[0] == COST_INDEX[3] and (first["side"] == "BUY").all()


# --- no silent wrong numbers, fills at the next open ---------------------------------------------------------------


def test_a_zero_close_is_no_price_valued_at_the_last_good_close_and_noted():
    closes = quarter()
    closes.loc["2024-02-20", "D"] = 0.0  # D is held from Jan 31: a broken print, not a price of 0
    r = engine.run({"close": closes}, params(top_n=1))
    assert np.isfinite(r.trades["shares"]).all() and r.equity.notna().all() and np.isfinite(r.equity).all()
    held = r.trades.iloc[0].shares
    assert r.equity["2024-02-20"] == pytest.approx(r.cash["2024-02-20"] + held * closes.loc["2024-02-19", "D"])
    assert not (r.trades.date == pd.Timestamp("2024-02-20")).any()
    assert any("without a price" in n and ": D;" in n for n in r.notes)


def test_equity_that_is_not_finite_fails_naming_the_day_and_the_ticker():
    closes = quarter()
    closes.loc["2024-02-20", "D"] = 1e308  # garbage that passes as a price: D's value overflows
    with pytest.raises(engine.EngineError, match=r"2024-02-20: D \("):
        engine.run({"close": closes}, params(top_n=1))


def test_next_open_decides_at_the_close_and_fills_at_the_next_open():
    closes = quarter()
    opens = closes * 0.99
    opens.loc["2024-02-01", "D"] = np.nan  # no open that day for D: its order lapses
    r = engine.run({"close": closes, "open": opens}, params(top_n=2, execution="next_open", slippage_bps=10,
                                                                 fractional_shares=False))
    first = r.trades[r.trades.date == r.trades.date.min()]
    assert first.date.iloc[0] == pd.Timestamp("2024-02-01")  # decided on Jan 31, filled the next session
    assert list(first.ticker) == ["X"] and first.price.iloc[0] == opens.loc["2024-02-01", "X"]
    # sized at the decision's close: 0.99 x equity / 2 / close of Jan 31, whole shares
    assert first.shares.iloc[0] == np.floor(0.99 * 1_000_000 / 2 / closes.loc["2024-01-31", "X"])
    assert first.slippage.iloc[0] == pytest.approx(first.value.iloc[0] * 0.001)
    assert r.equity["2024-01-31"] == 1_000_000  # nothing traded at the decision's close


# --- corporate actions ---------------------------------------------------------------------------------------------


def split_market() -> dict[str, pd.DataFrame]:
    """D (held from Jan 31) splits 5:1 on Feb 15; R, cheap and falling, has a 1:10 reverse split on Mar 15.
    base is KRX's base price: the previous close, or the previous close / factor on an action day."""
    closes = quarter()
    closes["R"] = 200 * 0.995 ** np.arange(len(Q_INDEX))
    base = closes.shift(1)
    k, r = Q_INDEX.get_loc(pd.Timestamp("2024-02-15")), Q_INDEX.get_loc(pd.Timestamp("2024-03-15"))
    raw = closes.copy()
    raw.iloc[k:, raw.columns.get_loc("D")] /= 5
    raw.iloc[r:, raw.columns.get_loc("R")] *= 10
    base = raw.shift(1)
    base.iloc[k, base.columns.get_loc("D")] = raw["D"].iloc[k - 1] / 5
    base.iloc[r, base.columns.get_loc("R")] = raw["R"].iloc[r - 1] * 10
    return {"close": raw.round(), "base": base.round(), "adjusted": closes}


def test_a_split_changes_the_shares_not_the_value_and_a_reverse_split_does_not_rank_first():
    m = split_market()
    r = engine.run({"close": m["close"], "base": m["base"]}, params(top_n=1, fractional_shares=False))
    bought = r.trades.iloc[0]
    assert bought.ticker == "D" and bought.date == pd.Timestamp("2024-01-31")
    day = pd.Timestamp("2024-02-15")
    before, after = r.equity[day - pd.offsets.BDay(1)], r.equity[day]
    # no jump: the day's move is D's own (adjusted) move, not -80%
    d_move = m["adjusted"].loc[day, "D"] / m["adjusted"].loc[day - pd.offsets.BDay(1), "D"] - 1
    invested = r.exposure[day - pd.offsets.BDay(1)]
    assert after / before - 1 == pytest.approx(invested * d_move, abs=2e-3)
    assert not (r.trades.date == day).any()  # nothing sold: no stop-loss, no abnormal print
    assert any("corporate action 2024-02-15 D: factor 5" in n for n in r.notes)
    sold = r.trades[(r.trades.ticker == "D") & (r.trades.side == "SELL")].iloc[0]
    assert sold.date > day and sold.shares == bought.shares * 5  # the held shares were multiplied by 5
    # ranking on adjusted prices: R's tenfold print is not a +900% return
    ctx = strategy.Indicators.build({"close": m["close"], "base": m["base"]}, params(top_n=1))
    i = ctx.row(pd.Timestamp("2024-03-15"))
    d = strategy.decide(ctx, i, {})
    assert d.rank[ctx.col("R")] != 1
    raw_only = strategy.Indicators.build({"close": m["close"]}, params(top_n=1))
    assert strategy.decide(raw_only, i, {}).rank[raw_only.col("R")] == 1  # what raw prices would have done

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from common import config, corporate_actions
from common.calendar import TradingCalendar
from common.home import Home
from common.rules import momentum_score
from common.store import validate_day
from nas.sources.sample import ETF_TICKER, SPLITS, SampleSource

START, END = dt.date(2019, 1, 2), dt.date(2020, 12, 30)
REPO = Path(__file__).resolve().parent.parent


def _panel(src: SampleSource, cal: TradingCalendar) -> pd.DataFrame:
    frames = src.fetch_days(cal.sessions(START, END))
    return pd.concat(frames.values(), ignore_index=True)


def test_a_day_never_depends_on_the_range_asked(cal: TradingCalendar) -> None:
    day = dt.date(2020, 6, 15)
    whole = SampleSource(cal, tickers=120).fetch_days(cal.sessions(START, END))[day]
    alone = SampleSource(cal, tickers=120).fetch_day(day)
    pd.testing.assert_frame_equal(whole, alone)
    # ticker k is the same whatever the market's size
    bigger = SampleSource(cal, tickers=240).fetch_day(day)
    small_set = set(whole["ticker"])
    assert small_set <= set(bigger["ticker"])
    merged = whole.merge(bigger, on="ticker", suffixes=("", "_big"))
    assert (merged["close"] == merged["close_big"]).all()


def test_krx_like_shape(cal: TradingCalendar) -> None:
    src = SampleSource(cal, tickers=300)
    rows = _panel(src, cal)
    assert set(rows["market"]) == {"KOSPI", "KOSDAQ", "ETF"}
    assert rows["ticker"].str.len().eq(6).all()
    assert rows["ticker"].str.contains("[A-Z]").any()  # a few letter tickers, like 00104K
    for col in ["open", "high", "low", "close", "volume", "value", "market_cap"]:
        assert rows[col].dtype == np.int64
    assert set(pd.to_datetime(rows["date"]).dt.date) <= set(cal.sessions(START, END))  # trading days only
    etf = rows[rows["ticker"] == ETF_TICKER]
    assert len(etf) == len(cal.sessions(START, END)) and (etf["market"] == "ETF").all()


def test_halts_listings_delistings_and_limits(cal: TradingCalendar) -> None:
    src = SampleSource(cal, tickers=300)
    rows = _panel(src, cal)
    halted = rows[rows["halted"]]
    assert len(halted) > 0
    assert (halted[["open", "high", "low", "volume"]] == 0).all().all() and (halted["close"] > 0).all()
    close = rows.pivot(index="date", columns="ticker", values="close")
    counts = close.notna().sum()
    first_row, last_row = close.iloc[0].notna(), close.iloc[-1].notna()
    assert (~first_row & last_row).any(), "some tickers list inside the window"
    assert (first_row & ~last_row).any(), "some tickers delist inside the window"
    # beyond KRX's daily limit only on the planned splits' days; adjusted for them, no move is
    base = rows.pivot(index="date", columns="ticker", values="base").reindex_like(close)
    raw = close.pct_change(fill_method=None).abs()
    big = {(d, t) for (d, t), v in raw.stack().items() if v >= 0.30}
    assert big == {(s.day, s.ticker) for s in src.splits if START <= s.day <= END} != set()
    adjusted = corporate_actions.adjust(close.to_numpy(float), corporate_actions.factors(close.to_numpy(float),
                                                                                         base.to_numpy(float)))
    assert np.nanmax(np.abs(adjusted[1:] / adjusted[:-1] - 1)) < 0.30
    assert counts.min() > 0
    for day, frame in src.fetch_days(cal.sessions(START, dt.date(2019, 2, 28))).items():
        validate_day(frame, day, "sample")


def test_etf_tracks_the_market(cal: TradingCalendar) -> None:
    rows = _panel(SampleSource(cal, tickers=300), cal)
    close = rows.pivot(index="date", columns="ticker", values="close")
    rets = close.pct_change(fill_method=None)
    market = rets.drop(columns=ETF_TICKER).mean(axis=1)
    assert rets[ETF_TICKER].corr(market) > 0.8


def test_splits_show_as_krx_shows_them(cal: TradingCalendar) -> None:
    src = SampleSource(cal, tickers=20)
    assert src.splits == list(SPLITS)  # the split tickers are among the first 20 of every market
    assert {s.factor for s in SPLITS} >= {2.0, 5.0, 50.0, 0.1}
    for split in SPLITS:
        assert cal.is_trading_day(split.day)
        days = cal.sessions(split.day - dt.timedelta(days=45), split.day + dt.timedelta(days=45))
        rows = pd.concat(src.fetch_days(days).values()).set_index(["date", "ticker"]).xs(split.ticker, level=1)
        i = days.index(split.day)
        prev, day = rows.loc[days[i - 1]], rows.loc[split.day]
        assert day["base"] == round(prev["close"] / split.factor)  # KRX's adjusted base price
        assert day["change_pct"] == round((day["close"] / day["base"] - 1) * 100, 2)
        for col in ("open", "high", "low", "close"):  # the raw prices jump by 1 / factor, the day's move aside
            assert 0.85 < day[col] * split.factor / prev[col] < 1.15, col
        assert 0.85 < day["market_cap"] / prev["market_cap"] < 1.15  # the company is worth the same
        # shares traded scale with the share count (a day's volume is noisy: compare 20-day means)
        after, before = rows["volume"].iloc[i:i + 20].mean(), rows["volume"].iloc[i - 20:i].mean()
        assert 0.5 < after / before / split.factor < 2
        ordinary = (rows.index != split.day) & rows["close"].shift().notna()
        assert (rows["base"] == rows["close"].shift())[ordinary].all()  # every other day: the previous close


def test_a_split_day_never_depends_on_the_range_asked(cal: TradingCalendar) -> None:
    ranges = SampleSource(cal, tickers=20).fetch_days(
        sorted({d for s in SPLITS for d in cal.sessions(s.day - dt.timedelta(days=30), s.day)}))
    alone = SampleSource(cal, tickers=20)
    for split in SPLITS:  # each day asked on its own
        pd.testing.assert_frame_equal(ranges[split.day], alone.fetch_day(split.day))


def test_base_is_the_previous_close_without_an_action(cal: TradingCalendar) -> None:
    rows = _panel(SampleSource(cal, tickers=300), cal)
    close = rows.pivot(index="date", columns="ticker", values="close")
    base = rows.pivot(index="date", columns="ticker", values="base")
    prev = close.ffill().shift()  # halts keep their row; a ticker's first row has no previous close
    split_cells = {(s.day, s.ticker) for s in SPLITS}
    differ = {(d, t) for (d, t), v in (base != prev).where(base.notna() & prev.notna(), False).stack().items() if v}
    assert differ == {c for c in split_cells if START <= c[0] <= END}
    first = base.notna() & prev.isna()
    assert (base[first] == close[first]).sum().sum() == first.sum().sum()  # listing day: base = its own close


def test_split_tickers_the_strategy_can_hold(cal: TradingCalendar) -> None:
    """A forward split of a high-priced stock and a reverse split of a cheap one, both liquid, listed from the
    first day and alive through 2022-12..2024-06 (the window the engine's split tests run over)."""
    days = cal.sessions(dt.date(2022, 12, 1), dt.date(2024, 6, 28))
    rows = pd.concat(SampleSource(cal, tickers=20).fetch_days(days).values())
    value = rows.pivot(index="date", columns="ticker", values="value")
    close = rows.pivot(index="date", columns="ticker", values="close")
    in_window = [s for s in SPLITS if days[0] <= s.day <= days[-1]]
    forward = [s for s in in_window if s.factor > 1 and close.loc[days[0], s.ticker] > 1_000_000]
    reverse = [s for s in in_window if s.factor < 1 and close.loc[days[0], s.ticker] < 5_000]
    assert forward and reverse
    for s in forward + reverse:
        assert close[s.ticker].notna().all()
        assert value[s.ticker].rolling(20).mean().dropna().min() > 1e9  # above the strategy's value floor


def test_split_tickers_rank_among_the_picks_before_their_split(cal: TradingCalendar) -> None:
    """The run-up before a split puts the stock in the default TopN by the strategy's score (on adjusted prices,
    above the value floor) at the month-end before the split, with the regime on, so a backtest buys it there
    and holds it through the split."""
    params = config.load("strategies", Home(REPO))["strategies"]["momentum_topN_v1"]
    src = SampleSource(cal, tickers=300)
    for ticker in ("091990", "093370", "097770"):
        split = next(s for s in SPLITS if s.ticker == ticker)
        days = cal.sessions(split.day - dt.timedelta(days=400), split.day)
        month_end = max(d for d in days if d.month != split.day.month or d.year != split.day.year)
        rows = pd.concat(src.fetch_days([d for d in days if d <= month_end]).values())
        close, base, value = (rows.pivot(index="date", columns="ticker", values=v) for v in ("close", "base", "value"))
        adjusted = corporate_actions.adjust(close.to_numpy(), corporate_actions.factors(close.to_numpy(),
                                                                                        base.to_numpy()))
        score = pd.Series(momentum_score(adjusted, params["lookbacks"], params["weights"], rows=[len(close) - 1])[0],
                          index=close.columns)
        liquid = value.iloc[-params["filters"]["value_window"]:].mean() >= params["filters"]["min_avg_value"]
        rank = score[liquid].drop(ETF_TICKER).rank(ascending=False)
        assert rank[ticker] <= params["top_n"], (ticker, month_end)
        etf = close[ETF_TICKER]
        assert etf.iloc[-1] > etf.iloc[-params["regime"]["sma_days"]:].mean()  # regime on: new buys allowed

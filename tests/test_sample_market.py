from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from common.calendar import TradingCalendar
from common.store import validate_day
from nas.sources.sample import ETF_TICKER, SampleSource

START, END = dt.date(2019, 1, 2), dt.date(2020, 12, 30)


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
    moves = close.pct_change(fill_method=None).abs()
    assert np.nanmax(moves.to_numpy()) < 0.30
    assert counts.min() > 0
    for day, frame in src.fetch_days(cal.sessions(START, dt.date(2019, 2, 28))).items():
        validate_day(frame, day, "sample")


def test_etf_tracks_the_market(cal: TradingCalendar) -> None:
    rows = _panel(SampleSource(cal, tickers=300), cal)
    close = rows.pivot(index="date", columns="ticker", values="close")
    rets = close.pct_change(fill_method=None)
    market = rets.drop(columns=ETF_TICKER).mean(axis=1)
    assert rets[ETF_TICKER].corr(market) > 0.8

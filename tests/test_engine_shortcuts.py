"""The engine's shortcuts give the plain definitions' answers: the TopN cut on a sample, the scores prepared in
one pass, RSI computed part of the way and only where it decides, the panel scan, the opens checked per row."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common import rules
from common import strategy as st

SELL = {"filters": {"enabled": False}, "regime": {"enabled": False}, "core_holdings": [],
        "sell_rules": {"enabled": True, "stop_loss_pct": 8.0, "trend_sma_days": 20, "rsi_days": 14,
                       "rsi_overbought": 60.0}}


def closes(rows: int = 400, tickers: int = 30, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    c = np.round(1000 * np.exp(np.cumsum(rng.normal(0, 0.03, (rows, tickers)), axis=0)))
    c[np.arange(rows)[:, None] < rng.integers(0, 200, tickers)] = np.nan  # not every ticker from the first row
    c[rng.random((rows, tickers)) < 0.02] = np.nan                   # gaps
    return pd.DataFrame(c, index=pd.bdate_range("2020-01-01", periods=rows),
                        columns=[f"{k:06d}" for k in range(tickers)])


def test_best_on_a_large_universe_is_the_head_of_the_full_ranking():
    # more than 32 x k candidates: `best` first cuts on every 8th score before its partition
    rng = np.random.default_rng(11)
    for _ in range(40):
        n, k = int(rng.integers(700, 3000)), int(rng.integers(1, 21))
        score = np.round(rng.normal(size=n), 1)  # many ties at the cut
        cand = rng.random(n) < 0.9
        rank = rules.ranking(score, cand)
        want = np.argsort(np.where(rank > 0, rank, n + 1), kind="stable")[:k]
        assert rules.best(score, cand, k).tolist() == want.tolist()


def test_prepared_scores_are_the_scores_of_their_rows():
    ctx = st.Indicators.build({"close": closes()}, {**SELL, "lookbacks": [5, 60], "weights": [0.5, 0.5]})
    rows = np.arange(0, 400, 7)
    ctx.prepare(rows)
    for i in (0, 7, 63, 399 - 399 % 7):
        np.testing.assert_array_equal(ctx.score_at(i), rules.momentum_score(ctx.close, [5, 60], [0.5, 0.5])[i])


def test_rsi_computed_part_of_the_way_agrees_with_the_whole_panel():
    ctx = st.Indicators.build({"close": closes()}, SELL)
    full = rules.rsi(ctx.close, 14)
    cols = np.array([2, 9, 17])
    for a in (30, 100, 101, 250, 399):  # later rows than the first computation reached: computed again, further
        np.testing.assert_array_equal(ctx.rsi(a, a + 1, cols), full[a:a + 1, cols])
    np.testing.assert_array_equal(ctx.rsi(150, 400, cols), full[150:400, cols])


def test_sell_codes_check_rsi_only_where_it_decides_and_give_the_rule_s_codes():
    ctx = st.Indicators.build({"close": closes()}, SELL)
    cols = np.arange(30)
    entry = np.nanmax(ctx.price[:200], axis=0)  # high entries: some stop-losses fire
    trend = rules.sma(ctx.close, 20)
    want = rules.sell_codes(ctx.close[200:300], entry, trend[200:300], rules.rsi(ctx.close, 14)[200:300], ctx.params,
                            ctx.price[200:300])
    got = ctx.sell_codes(200, 300, cols, entry)
    assert {rules.CUT_STOPLOSS, rules.SELL_TREND, rules.SELL_RSI} <= set(np.unique(got).tolist())
    np.testing.assert_array_equal(got, want)


def test_build_finds_first_rows_bad_closes_and_opens_like_the_whole_panel():
    c = closes()
    c.iloc[250, 3] = 0.0        # a close of 0 is no price
    c.iloc[260, 4] = np.inf
    opens = c.shift(1) * 1.01
    opens.iloc[300, 5] = -1.0   # an open of 0 or below is none
    ctx = st.Indicators.build({"close": c, "open": opens}, SELL)
    present = c.notna().to_numpy()
    first = np.where(present.any(axis=0), present.argmax(axis=0), len(c))
    np.testing.assert_array_equal(ctx.first_row, first)
    np.testing.assert_array_equal(ctx.present, present)
    assert np.isnan(ctx.price[250, 3]) and np.isnan(ctx.price[260, 4]) and ctx.present[250, 3]
    np.testing.assert_array_equal(ctx.open_at(300), np.where(opens.iloc[300] > 0, opens.iloc[300], np.nan))

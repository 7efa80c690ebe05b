"""momentum_topN_v1: each rule alone, then the decision (HOLD_CORE, SELL_REPLACE, stop-loss, regime)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common import rules
from common import strategy as st
from common.config import ConfigError
from nas import reasons

ROWS = 260
INDEX = pd.bdate_range("2023-01-02", periods=ROWS)


def path(growth: float, start: float = 10_000.0, fall_last: int = 0, fall: float = 0.0) -> np.ndarray:
    """A close path growing `growth` a day with a 7-day wiggle (7 divides every lookback, so the wiggle cancels
    out of the score and ranks follow growth), optionally falling `fall` a day over the last `fall_last` rows."""
    t = np.arange(ROWS)
    log = growth * t + 0.02 * np.sin(2 * np.pi * t / 7)
    if fall_last:
        log[-fall_last:] -= fall * np.arange(1, fall_last + 1)
    return start * np.exp(log)


def panels(closes: dict[str, np.ndarray], low_value: tuple[str, ...] = (), halted: tuple[str, ...] = ()) -> dict:
    close = pd.DataFrame(closes, index=INDEX)
    value = pd.DataFrame(5e9, index=INDEX, columns=close.columns)
    value[list(low_value)] = 1e8
    halt = pd.DataFrame(False, index=INDEX, columns=close.columns)
    halt.loc[INDEX[-1], list(halted)] = True
    return {"close": close, "value": value, "halted": halt}


def market(n: int = 12, **extra: np.ndarray) -> dict[str, np.ndarray]:
    """069500 rising (regime ON) and n stocks S01.. whose growth falls with their number (S01 ranks first)."""
    out = {"069500": path(0.001)}
    out.update({f"S{k:02d}": path(0.004 - 0.00025 * k) for k in range(1, n + 1)})
    out.update(extra)
    return out


def build(closes: dict, params: dict | None = None, **kw) -> st.Indicators:
    return st.Indicators.build(panels(closes, **kw), params or {})


def states(decision: st.Decision) -> dict[str, str]:
    return reasons.states(decision)["state"].to_dict()


CORE3 = [{"ticker": "069500", "weight": 0.1}, {"ticker": "C1", "weight": 0.1}, {"ticker": "C2", "weight": 0.1}]


# --- rules alone ---------------------------------------------------------------------------------------------


def test_momentum_score_weights_trailing_returns_and_is_undefined_on_gaps():
    close = pd.DataFrame({"A": [100.0, 110, 121, 133.1, 146.41], "B": [100.0, np.nan, 100, 150, 200]},
                         index=INDEX[:5])
    score = rules.momentum_score(close, [1, 2], [0.5, 0.5])
    assert isinstance(score, pd.DataFrame) and score.index.equals(close.index)
    assert score["A"].iloc[2] == pytest.approx(0.5 * 0.1 + 0.5 * 0.21)
    assert score["A"].iloc[:2].isna().all()
    assert score["B"].iloc[1:4].isna().all()  # the gap on row 1 is inside every lookback of rows 1..3
    assert score["B"].iloc[4] == pytest.approx(0.5 * (200 / 150 - 1) + 0.5 * (200 / 100 - 1))
    rows = rules.momentum_score(close.to_numpy(), [1, 2], [0.5, 0.5], rows=[2, 3])
    np.testing.assert_allclose(rows, score.to_numpy()[2:4], equal_nan=True)


def test_sma_needs_a_full_window_without_gaps():
    x = pd.DataFrame({"A": [1.0, 2, 3, 4, 5], "B": [1.0, np.nan, 3, 4, 5]})
    out = rules.sma(x, 3)
    assert out["A"].tolist()[2:] == [2.0, 3.0, 4.0] and out["A"].iloc[:2].isna().all()
    assert out["B"].iloc[:4].isna().all() and out["B"].iloc[4] == 4.0


def test_rsi_is_wilders_and_bounded():
    rng = np.random.default_rng(1)
    c = 1000 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    got = rules.rsi(c.reshape(-1, 1), 14)[:, 0]
    # Wilder's recursion written out, seeded with the first move like an exponential average
    d = np.diff(c)
    gain, loss = np.maximum(d, 0), np.maximum(-d, 0)
    g, lo = gain[0], loss[0]
    want = [np.nan] * 14
    for k in range(1, len(d)):
        g, lo = g + (gain[k] - g) / 14, lo + (loss[k] - lo) / 14
        if k >= 13:
            want.append(100 - 100 / (1 + g / lo))
    np.testing.assert_allclose(got[14:], want[14:], rtol=1e-12)
    assert np.isnan(got[:14]).all()
    rising = rules.rsi(np.arange(1.0, 40).reshape(-1, 1), 14)[:, 0]
    assert rising[-1] == 100.0
    flat = rules.rsi(np.full((40, 1), 5.0), 14)[:, 0]
    assert flat[-1] == 50.0


def test_regime_on_only_above_a_defined_sma():
    up = np.linspace(100, 200, 50)
    on = rules.regime_on(up, 20)
    assert not on[:19].any() and on[19:].all()  # undefined SMA means OFF
    assert not rules.regime_on(np.linspace(200, 100, 50), 20).any()


def test_mean_value_and_abnormal():
    value = pd.DataFrame({"A": [1.0, 2, 3, np.nan], "B": [np.nan] * 4})
    mv = rules.mean_value(value, 2, rows=[1, 3])
    assert mv["A"].tolist() == [1.5, 3.0] and mv["B"].isna().all()
    close = pd.DataFrame({"A": [100.0, 131, 100, 0], "B": [100.0, 129, np.nan, 129]})
    ab = rules.abnormal(close, 30.0)
    assert ab["A"].tolist() == [False, True, False, True]  # +31%; -23.7% is fine; a zero close is not
    assert not ab["B"].any()


def test_sell_codes_priority_and_switch():
    p = st.resolve_params({})
    close = np.array([[90.0, 120.0, 120.0, 120.0]])
    entry = np.array([100.0, 100.0, 100.0, 100.0])
    trend = np.array([[95.0, 130.0, 100.0, 100.0]])
    rsi = np.array([[85.0, 85.0, 85.0, 50.0]])
    codes = rules.sell_codes(close, entry, trend, rsi, p)[0]
    assert [rules.STATES[c] for c in codes] == ["CUT_STOPLOSS", "SELL_TREND", "SELL_RSI", ""]
    off = st.resolve_params({"sell_rules": {"enabled": False}})
    assert not rules.sell_codes(close, entry, trend, rsi, off).any()


def test_select_replaces_only_for_a_better_candidate():
    score = np.array([0.9, 0.8, 0.7, 0.1, np.nan])
    cand = np.array([True, True, True, True, False])
    held = np.array([True, True, False, False, True])  # the last one is no candidate any more
    sel = rules.select(score, cand, held, 0, 3, True)
    assert sel["buy"].tolist() == [False, False, True, False, False]
    assert sel["replace"].tolist() == [False, False, False, False, True] and sel["replaced_by"][4] == 2
    # a free slot absorbs the buy: nobody is replaced
    sel = rules.select(score, cand, held, 0, 5, True)
    assert not sel["replace"].any() and sel["hold_out"][4] and sel["buy"][2] and sel["buy"][3]
    # no buys allowed (regime OFF): no replacement either
    sel = rules.select(score, cand, held, 0, 3, False)
    assert not sel["buy"].any() and not sel["replace"].any() and sel["hold_out"][4]
    assert rules.ranking(score, cand).tolist() == [1, 2, 3, 4, 0] and sel["top"].tolist() == [0, 1, 2]


def test_resolve_params_fills_config_defaults_and_validates():
    p = st.resolve_params({"lookbacks": [60], "weights": [1.0], "filters": {"enabled": False}})
    assert p["lookbacks"] == [60] and p["filters"]["enabled"] is False
    assert p["filters"]["value_window"] == 20 and p["benchmark"] == "069500" and p["rebalance_every_n"] == 21
    with pytest.raises(ConfigError):
        st.resolve_params({"top_n": -1})
    with pytest.raises(ConfigError):
        st.resolve_params({"lookbacks": [21, 63]})  # weights no longer one per lookback


# --- filters -------------------------------------------------------------------------------------------------------


def test_filters_give_each_left_out_ticker_its_reason():
    closes = market(6)
    closes["NEW"] = np.r_[np.full(ROWS - 50, np.nan), path(0.01)[-50:]]  # listed 50 rows ago
    closes["GONE"] = np.r_[path(0.003)[:-3], np.full(3, np.nan)]
    closes["JUMP"] = path(0.003)
    closes["JUMP"][-1] = closes["JUMP"][-2] * 1.45  # beyond the 30% daily limit
    closes["LATER"] = np.full(ROWS, np.nan)
    ctx = build(closes, low_value=("S06",), halted=("S05",))
    d = st.decide(ctx, ROWS - 1, {})
    codes = reasons.excluded(d)["code"].to_dict()
    assert codes == {"NEW": "short_history", "GONE": "delisted", "JUMP": "abnormal", "S05": "halted",
                     "S06": "low_value"}
    assert "LATER" not in codes  # not listed yet: not part of the universe
    assert reasons.excluded(d).loc["S06", "reason"].startswith("20-day mean traded value under")
    assert d.after_filters == 5  # 069500 and S01..S04
    assert d.universe_size == 9  # tickers with a close today: not GONE, not LATER
    # with filters disabled only the base conditions remain (a price, not halted, a score)
    d = st.decide(build(closes, {"filters": {"enabled": False}}, low_value=("S06",), halted=("S05",)),
                  ROWS - 1, {})
    assert set(reasons.excluded(d)["code"]) == {"delisted", "halted", "no_score"}  # NEW has no 126-day return


def test_value_floor_is_skipped_without_a_value_panel():
    closes = market(6)
    ctx = st.Indicators.build({"close": pd.DataFrame(closes, index=INDEX)}, {})
    assert any("value" in note for note in ctx.notes)
    assert st.decide(ctx, ROWS - 1, {}).after_filters == 7


def test_regime_ticker_missing_is_a_clear_error():
    closes = market(3)
    del closes["069500"]
    with pytest.raises(ValueError, match="069500"):
        build(closes)


# --- the decision --------------------------------------------------------------------------------------------------


def test_fresh_portfolio_buys_the_top_n_ranked_by_score():
    d = st.decide(build(market(12)), ROWS - 1, {})
    s = reasons.states(d)
    assert list(s.index) == ["S01", "S02", "S03", "S04", "S05"]
    assert (s["state"] == "BUY").all() and s["rank"].tolist() == [1, 2, 3, 4, 5]
    assert s["weight"].tolist() == pytest.approx([0.99 / 5] * 5)
    assert s.loc["S01", "reason"] == "new entry: rank 1 of the top 5"
    assert d.regime == "ON"


def test_top5_plus_3_core_make_8_positions():
    closes = market(12, C1=path(0.0), C2=path(-0.001))
    ctx = build(closes, {"core_holdings": CORE3})
    d = st.decide(ctx, ROWS - 1, {})
    assert len(d.targets) == 8
    assert states(d) == {**{f"S0{k}": "BUY" for k in range(1, 6)}, "069500": "BUY", "C1": "BUY", "C2": "BUY"}
    assert reasons.states(d).loc["C2", "reason"] == "core holding, not held"
    w = d.targets
    assert w["C1"] == 0.1 and w["S01"] == pytest.approx((0.99 - 0.3) / 5)
    # once held: 5 HOLD + 3 HOLD_CORE, still 8, nothing sold
    held = {t: ctx.close[-1, ctx.col(t)] for t in w}
    d2 = st.decide(ctx, ROWS - 1, held)
    assert sorted(states(d2).values()) == ["HOLD"] * 5 + ["HOLD_CORE"] * 3
    assert len(d2.targets) == 8


def test_core_holding_under_its_200_day_sma_stays_hold_core():
    falling = path(0.001, fall_last=30, fall=0.01)
    closes = market(6, C1=falling, T1=falling)  # T1: the same prices, not a core holding
    ctx = build(closes, {"core_holdings": [{"ticker": "C1", "weight": 0.2}]})
    i = ROWS - 1
    assert ctx.close[i, ctx.col("C1")] < ctx.trend_sma(i, i + 1, np.array([ctx.col("C1")]))[0, 0]
    d = st.decide(ctx, i, {"C1": 9000.0, "T1": 9000.0})
    assert states(d)["C1"] == "HOLD_CORE" and d.targets["C1"] == 0.2
    assert states(d)["T1"] == "SELL_TREND"
    assert "200-day SMA" in reasons.states(d).loc["T1", "reason"]


def test_core_holding_not_held_gets_buy_even_when_out_of_ranking():
    closes = market(6, C1=path(-0.002))
    d = st.decide(build(closes, {"core_holdings": [{"ticker": "C1", "weight": 0.25}]}), ROWS - 1, {})
    assert states(d)["C1"] == "BUY" and d.targets["C1"] == 0.25
    assert d.rank[d.ctx.col("C1")] == 0  # core holdings never take a TopN slot


def test_stop_loss_cuts_a_non_core_holding_but_not_a_core_one():
    closes = market(8, C1=path(0.003))
    ctx = build(closes, {"core_holdings": [{"ticker": "C1", "weight": 0.2}]})
    last = ctx.close[-1]
    entry = {"S01": last[ctx.col("S01")] / 0.85, "C1": last[ctx.col("C1")] / 0.5}  # down 15% and 50%
    d = st.decide(ctx, ROWS - 1, entry)
    assert states(d)["S01"] == "CUT_STOPLOSS" and d.targets.get("S01") is None
    assert "15.0% below entry" in reasons.states(d).loc["S01", "reason"]
    assert states(d)["C1"] == "HOLD_CORE"
    # a cut ticker is not bought back the same day although it ranks first
    assert d.rank[ctx.col("S01")] == 0 and states(d)["S06"] == "BUY"


def test_sell_replace_only_when_a_better_candidate_takes_the_slot():
    ctx = build(market(12))
    held = {t: 1.0 for t in ("S01", "S02", "S03", "S04", "S09")}
    d = st.decide(ctx, ROWS - 1, held)
    assert states(d) == {"S01": "HOLD", "S02": "HOLD", "S03": "HOLD", "S04": "HOLD", "S09": "SELL_REPLACE",
                         "S05": "BUY"}
    assert reasons.states(d).loc["S09", "reason"] == "rank 9, outside the top 5: slot taken by S05 (rank 5)"
    # with at least top_n candidates the book is always the TopN: a held ticker outside it always has a
    # better candidate. With fewer candidates, a free slot takes the new entry and S09 keeps its place
    illiquid = ("069500", "S05", "S06", "S07", "S08", "S09", "S10", "S11", "S12")
    d = st.decide(build(market(12), low_value=illiquid), ROWS - 1, {t: 1.0 for t in ("S01", "S02", "S03", "S09")})
    assert states(d) == {"S01": "HOLD", "S02": "HOLD", "S03": "HOLD", "S04": "BUY", "S09": "HOLD"}
    assert np.isnan(d.targets["S09"])  # kept as it is, not topped up
    # no better candidate at all: the rest of the market fails the value floor
    ctx = build(market(12), {"top_n": 3}, low_value=tuple(f"S{k:02d}" for k in range(3, 13)) + ("069500",))
    d = st.decide(ctx, ROWS - 1, {"S01": 1.0, "S02": 1.0, "S09": 1.0})
    assert states(d) == {"S01": "HOLD", "S02": "HOLD", "S09": "HOLD"}
    assert "no better candidate" in reasons.states(d).loc["S09", "reason"]


def test_regime_off_blocks_new_buys_but_keeps_holdings_and_core():
    closes = market(8, C1=path(0.001))
    closes["069500"] = path(0.002, fall_last=25, fall=0.01)
    ctx = build(closes, {"core_holdings": [{"ticker": "C1", "weight": 0.1}]})
    d = st.decide(ctx, ROWS - 1, {"S03": 1.0, "S08": 1.0})
    assert d.regime == "OFF"
    assert [t for t, s in states(d).items() if s == "BUY"] == ["C1"]  # core holdings are held throughout
    assert states(d)["S03"] == "HOLD" and states(d)["S08"] == "HOLD"  # no replacement without a buy
    assert np.isnan(d.weight[ctx.col("S03")])
    assert list(ctx.tickers[d.blocked]) == ["S01", "S02", "S04", "S05"]
    ctx_on = build(closes, {"core_holdings": [{"ticker": "C1", "weight": 0.1}], "regime": {"enabled": False}})
    d_on = st.decide(ctx_on, ROWS - 1, {"S03": 1.0, "S08": 1.0})
    assert d_on.regime == "DISABLED" and states(d_on)["S01"] == "BUY" and states(d_on)["S08"] == "SELL_REPLACE"


def test_rsi_over_the_line_sells_a_holding():
    closes = market(6, HOT=np.r_[path(0.001)[:-20], path(0.001)[-21] * 1.03 ** np.arange(1, 21)])
    ctx = build(closes, {"filters": {"enabled": False}})
    d = st.decide(ctx, ROWS - 1, {"HOT": 1.0})
    assert states(d)["HOT"] == "SELL_RSI"
    reason = reasons.states(d).loc["HOT", "reason"]
    assert reason.startswith("RSI14 ") and reason.endswith(" over 80") and float(reason.split()[1]) > 80


def test_halted_holding_is_kept_and_unknown_holdings_are_reported():
    ctx = build(market(8), halted=("S08",))
    d = st.decide(ctx, ROWS - 1, {"S08": 1e9, "XXXXXX": 1.0})  # S08 would hit the stop-loss
    assert states(d)["S08"] == "HOLD" and np.isnan(d.targets["S08"])
    assert reasons.states(d).loc["S08", "reason"].startswith("halted")
    assert d.unknown_holdings == ["XXXXXX"]
    assert sum(s == "BUY" for s in states(d).values()) == 4  # the halted holding keeps its slot


def test_same_decision_on_a_shorter_history():
    """The scanner loads about a year; the engine the whole store: the decision on the same day is the same."""
    closes = market(10, C1=path(0.0005))
    params = {"core_holdings": [{"ticker": "C1", "weight": 0.2}]}
    full = build(closes, params)
    short = st.Indicators.build({k: v.iloc[-230:] for k, v in panels(closes).items()}, params)
    held = {"S02": 9000.0, "S07": 1.0, "C1": 1.0}
    a, b = st.decide(full, ROWS - 1, held), st.decide(short, 229, held)
    pd.testing.assert_frame_equal(reasons.states(a), reasons.states(b))


def test_best_is_the_head_of_the_full_ranking_ties_included():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        score = rng.integers(0, 6, n).astype(float)  # many ties
        cand = rng.random(n) < 0.7
        rank = rules.ranking(score, cand)
        for k in (0, 1, 3, 10, 80):
            want = np.argsort(np.where(rank > 0, rank, n + 1), kind="stable")[: min(k, int(cand.sum()))]
            assert rules.best(score, cand, k).tolist() == want.tolist()

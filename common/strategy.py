"""The strategy `momentum_topN_v1`, defined once: its parameters, its schedule, and its decision.

What the user is alerted on is exactly what was backtested: the engine (common.engine) calls `decide` on its
event days for the backtest and for the model portfolio alike, with `Indicators` built from the same panels.

- `schedule`: the rebalance days, judged with the KRX calendar (month_end: the next session is in another month).
- `Indicators`: everything a decision reads, built once per panel: split-adjusted closes for every rule
  (corporate-action factors from KRX's base price, common.corporate_actions), raw prices for trading and the
  stop-loss, the candidate filters (listed long enough, 20-day mean traded value above the floor, not halted,
  no abnormal print; without a `value` panel the value floor is skipped, noted), the regime, RSI per column.
- `decide`: on a rebalance day the rules of common.rules stacked: sell rules, then the TopN slots, then the
  weights; any other day only the daily sells (when `sell_rules.daily` is on) and every holding kept.
- HOLD_CORE: core holdings ignore every sell rule and the regime, are bought if not held (BUY), never count
  against `top_n`, are never replaced, and are held at their configured weight (fraction of equity).

Weights: each core holding its configured weight; each TopN pick (invest_fraction - sum of core weights) / top_n
of equity. `Decision.weight` per ticker: a target fraction of equity, 0 (not held / sell), or NaN (keep the
current shares: halted, no price today, regime OFF, outside the TopN with no better candidate, or not a
rebalance day). The scanner's explanations of each state live in nas/reasons.py.

Where each part lives: the parameters and the schedule in common/params.py, `Indicators` in common/indicators.py,
the rules on whole panels in common/rules.py; this module stacks them into the decision and re-exports their
names. Load at least `warmup_rows(params)` rows before the first decision.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from common.indicators import Indicators
from common.params import (
    NAME,
    default_params,
    min_history,
    next_rebalance,
    pick_weight,
    resolve_params,
    schedule,
    warmup_rows,
)
from common.rules import BUY, HOLD, HOLD_CORE, NONE, OK, SELL_REPLACE, ranking, slots

# the strategy's public names, wherever they are defined
__all__ = ["NAME", "Decision", "Indicators", "decide", "decide_cols", "default_params", "min_history", "next_rebalance",
           "pick_weight", "resolve_params", "schedule", "warmup_rows"]


# --- the decision --------------------------------------------------------------------------------------------------


@dataclass
class Decision:
    """The strategy's decision on one row. Arrays are over `ctx.tickers`."""

    ctx: Indicators
    row: int
    state: np.ndarray        # int8 state codes (STATES)
    exclusion: np.ndarray    # int8 exclusion codes (EXCLUSIONS), OK for candidates
    score: np.ndarray
    candidate: np.ndarray    # bool: who could be bought today (ranked by score)
    weight: np.ndarray       # target fraction of equity; 0 = none / sell; NaN = keep the current shares
    regime: str              # ON, OFF, DISABLED
    entry: np.ndarray        # entry price of holdings (NaN elsewhere)
    held: np.ndarray         # bool: held before the decision
    replaced_by: np.ndarray  # column of the buy taking a SELL_REPLACE slot, -1 elsewhere
    blocked: np.ndarray      # columns that would have been bought but the regime is OFF
    unknown_holdings: list[str] = field(default_factory=list)
    rebalance: bool = True   # a rebalance day of the schedule (else only daily sells can happen)
    tradable: np.ndarray | None = None  # bool: a price at the close and not halted (who can trade today)

    @functools.cached_property
    def rank(self) -> np.ndarray:
        """1 = best candidate, 0 = unranked (computed when a reader asks: the engine never does)."""
        return ranking(self.score, self.candidate)

    @property
    def date(self) -> pd.Timestamp:
        return self.ctx.index[self.row]

    @property
    def universe_size(self) -> int:
        """Tickers with a price on the row."""
        return int(np.isfinite(self.ctx.close[self.row]).sum())

    @property
    def after_filters(self) -> int:
        """Tickers passing every filter with a score (the candidates, core holdings included)."""
        return int((self.exclusion == OK).sum())

    @property
    def targets(self) -> dict[str, float]:
        """Tickers to hold after the decision -> target fraction of equity (NaN: keep the current shares)."""
        keep = (self.weight > 0) | np.isnan(self.weight) & (self.held | (self.state != NONE))
        cols = np.flatnonzero(keep)
        return {str(self.ctx.tickers[j]): float(self.weight[j]) for j in cols}


def decide(ctx: Indicators, i: int, holdings: Mapping[str, float], rebalance: bool = True) -> Decision:
    """The strategy's decision at the close of row `i` for the portfolio `holdings` ({ticker: entry price in
    the raw closes' share basis; NaN or None when unknown: no stop-loss}). The engine calls it on its event
    days, the scanner on the scan day. On a rebalance day (`schedule`) it gives entries, exits and replacements;
    on any other day only the daily sell rules (when `sell_rules.daily` is on), every other holding HOLD or
    HOLD_CORE with its shares kept."""
    found: dict[int, float] = {}
    unknown = []
    for ticker, price in holdings.items():  # the portfolio's few holdings, not the universe
        j = ctx.col(ticker)
        if j is None:
            unknown.append(str(ticker))
            continue
        found[j] = np.nan if price is None else float(price)
    cols = sorted(found)
    return decide_cols(ctx, i, np.array(cols, dtype=np.int64), np.array([found[j] for j in cols], dtype=float),
                       rebalance=rebalance, unknown=unknown)


def decide_cols(ctx: Indicators, i: int, cols: np.ndarray, entries: np.ndarray, *, rebalance: bool = True,
                unknown: list[str] | None = None) -> Decision:
    """`decide` for holdings given as ascending distinct columns of `ctx` and their entry prices (the engine's
    book holds them so)."""
    p = ctx.params
    n_tickers = len(ctx.tickers)
    if not -len(ctx.index) <= i < len(ctx.index):
        raise IndexError(f"row {i} is outside the panel ({len(ctx.index)} rows)")
    i = i % len(ctx.index)
    held = np.zeros(n_tickers, dtype=bool)
    held[cols] = True
    entry = np.full(n_tickers, np.nan)
    entry[cols] = entries
    unknown = [] if unknown is None else unknown

    score = ctx.score_at(i)
    code = ctx.filter_codes(i, score)
    tradable = ctx.tradable(i, i + 1)[0]
    core, is_core = ctx.core, ctx.is_core
    state = np.zeros(n_tickers, dtype=np.int8)
    if not rebalance:
        state[core[held[core]]] = HOLD_CORE
        return _between_rebalances(ctx, i, held, entry, is_core, state, score, code, tradable, unknown)
    weight = np.zeros(n_tickers)
    partial = ctx.partial is not None and bool(ctx.partial[i])  # only a few tickers have data: no new buys
    mine = cols
    if len(core):  # HOLD_CORE: never sold by a rule, bought if not held, held at the configured weight
        core_held = held[core]
        state[core[core_held]] = HOLD_CORE
        core_buy = tradable[core] & (not partial)
        state[core[core_buy & ~core_held]] = BUY
        weight[core[core_buy]] = ctx.core_weight[core_buy]
        weight[core[core_held & ~core_buy]] = np.nan
        mine = cols[~is_core[cols]]

    # sell rules on the non-core holdings that can trade today
    can = tradable[mine]
    sellable, locked = mine[can], mine[~can]  # locked: halted or no price today: keep their slot and shares
    codes = ctx.sell_codes(i, i + 1, sellable, entry[sellable])[0] if len(sellable) else np.zeros(0, np.int8)
    fired = codes != NONE
    sold = sellable[fired]
    state[sold] = codes[fired]
    weight[locked] = np.nan
    state[locked] = HOLD

    candidate = code == OK
    candidate[core] = False
    candidate[sold] = False
    buys_allowed = (ctx.regime is None or bool(ctx.regime[i])) and not partial
    sel = slots(score, candidate, sellable[~fired], len(locked), p["top_n"], buys_allowed)
    pw = pick_weight(p)
    state[sel.hold_in] = HOLD
    state[sel.hold_out] = HOLD
    state[sel.buy] = BUY
    state[sel.replace] = SELL_REPLACE
    weight[sel.hold_in] = pw if buys_allowed else np.nan
    weight[sel.hold_out] = np.nan
    weight[sel.buy] = pw
    replaced_by = np.full(n_tickers, -1, dtype=np.int64)
    replaced_by[sel.replace] = sel.replaced_by
    blocked = np.array([], dtype=np.int64)
    if not buys_allowed and not partial:  # what the regime blocked; a partial day ranks only its few tickers
        blocked = sel.top[~held[sel.top]]
    return Decision(ctx=ctx, row=i, state=state, exclusion=code, score=score, candidate=candidate, weight=weight,
                    regime=ctx.regime_state(i), entry=entry, held=held, replaced_by=replaced_by,
                    blocked=blocked, unknown_holdings=unknown, tradable=tradable)


def _between_rebalances(ctx: Indicators, i: int, held: np.ndarray, entry: np.ndarray, is_core: np.ndarray,
                        state: np.ndarray, score: np.ndarray, code: np.ndarray, tradable: np.ndarray,
                        unknown: list[str]) -> Decision:
    """A day that is not a rebalance day: every holding keeps its shares, but for the daily sell rules."""
    n_tickers = len(ctx.tickers)
    weight = np.where(held, np.nan, 0.0)
    state[held & ~is_core] = HOLD
    cols = np.flatnonzero(held & ~is_core)
    codes = ctx.daily_sells(i, i + 1, cols, entry[cols])[0]
    sold = cols[codes != NONE]
    state[sold] = codes[codes != NONE]
    weight[sold] = 0.0
    candidate = (code == OK) & ~is_core
    return Decision(ctx=ctx, row=i, state=state, exclusion=code, score=score, candidate=candidate, weight=weight,
                    regime=ctx.regime_state(i), entry=entry, held=held, replaced_by=np.full(n_tickers, -1),
                    blocked=np.array([], dtype=np.int64), unknown_holdings=unknown, rebalance=False,
                    tradable=tradable)

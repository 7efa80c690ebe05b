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

Indicators are computed once per panel and lazily: cross-sectional ones (score, filters) for the rows asked
(the engine asks ~12 rows a year, the scanner one), per-holding ones (trend SMA, RSI) for the columns asked.
Load at least `warmup_rows(params)` rows before the first decision.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common import config, corporate_actions
from common.home import Home
from common.rules import (
    ABNORMAL,
    BUY,
    DELISTED,
    HALTED,
    HOLD,
    HOLD_CORE,
    LOW_VALUE,
    NO_SCORE,
    NONE,
    NOT_LISTED,
    OK,
    SELL_REPLACE,
    SHORT_HISTORY,
    abnormal,
    mean_value,
    momentum_score,
    ranking,
    regime_on,
    rsi,
    select,
    sell_codes,
    sma,
)

NAME = "momentum_topN_v1"

# --- parameters ------------------------------------------------------------------------------------------------


def default_params(home: Home | None = None) -> dict:
    """The strategy's parameters from the home's configs/strategies.yaml (the shipped file when it has none)."""
    return config.load("strategies", home)["strategies"][NAME]


def resolve_params(params: Mapping | None = None, base: Mapping | None = None, *, home: Home | None = None,
                   source: str = "<params>") -> dict:
    """Overrides merged into the config's parameters and validated (config.ConfigError names a bad key).

    Keys the overrides omit (benchmark, daily_limit_pct, rebalance_every_n, ...) come from the config file,
    so a partial dict such as the parity parameters is a complete run."""
    return config.check_strategy_params(dict(params or {}), base if base is not None else default_params(home),
                                        source)


def min_history(params: Mapping) -> int:
    """Trading days a ticker must have been listed (rows since its first close): default the longest lookback."""
    return int(params["filters"]["min_history_days"] or max(params["lookbacks"]))


def warmup_rows(params: Mapping, margin: int = 5) -> int:
    """Rows of history the strategy needs before its first full decision: the longest lookback, filter window
    or moving average in use (RSI's included: Wilder's needs about ten periods to settle), plus a margin."""
    need = [max(params["lookbacks"])]
    filters, regime, sell = params["filters"], params["regime"], params["sell_rules"]
    if filters["enabled"]:
        need += [filters["value_window"], min_history(params)]
    if regime["enabled"]:
        need.append(regime["sma_days"])
    if sell["enabled"]:
        need += [sell["trend_sma_days"], sell["rsi_days"] * 10]
    return int(max(need)) + margin


def schedule(days: pd.DatetimeIndex, params: Mapping, sessions: pd.DatetimeIndex | None = None,
             inception: Any = None) -> np.ndarray:
    """True on the rebalance days among `days`, judged with `sessions` (the KRX calendar's trading days; default
    `days` themselves, whose last day then never rebalances since its next session is unknown).

    month_end / week_end: the next session is in another calendar month / Monday-to-Sunday week. every_n: every
    n-th session counted from `inception` (the portfolio's first session; default the first of `days`)."""
    sessions = days if sessions is None else pd.DatetimeIndex(sessions)
    days = pd.DatetimeIndex(days)
    out = np.zeros(len(days), dtype=bool)
    if not len(days) or not len(sessions):
        return out
    rule = params["rebalance"]
    pos = sessions.searchsorted(days, side="right")  # the position of each day's next session
    has_next = pos < len(sessions)
    nxt = sessions[np.minimum(pos, len(sessions) - 1)]
    if rule == "month_end":
        out = has_next & ((nxt.year * 12 + nxt.month).to_numpy() != (days.year * 12 + days.month).to_numpy())
    elif rule == "week_end":
        def week(ix: pd.DatetimeIndex) -> np.ndarray:  # 1970-01-01 was a Thursday: +3 starts weeks on Mondays
            return (ix.values.astype("datetime64[D]").astype(np.int64) + 3) // 7

        out = has_next & (week(nxt) != week(days))
    elif rule == "every_n":
        n = int(params["rebalance_every_n"])
        start = sessions.searchsorted(pd.Timestamp(inception if inception is not None else days[0]))
        count = sessions.searchsorted(days) - start + 1  # the day's number among the sessions since inception
        out = (count >= 1) & (count % n == 0)
    else:
        raise ValueError(f"rebalance: expected month_end, week_end or every_n, got {rule!r}")
    return out


def next_rebalance(after: Any, params: Mapping, sessions: pd.DatetimeIndex, inception: Any = None) -> Any:
    """The first rebalance day after `after` among `sessions` (None when the calendar ends first)."""
    sessions = pd.DatetimeIndex(sessions)
    ahead = sessions[sessions.searchsorted(pd.Timestamp(after), side="right"):][:400]
    hit = np.flatnonzero(schedule(ahead, params, sessions, inception))
    return ahead[hit[0]].date() if len(hit) else None


def pick_weight(params: Mapping) -> float:
    """The target fraction of equity of each TopN pick."""
    core = sum(h["weight"] for h in params["core_holdings"])
    return max(params["invest_fraction"] - core, 0.0) / params["top_n"] if params["top_n"] else 0.0


def _aligned(frame: pd.DataFrame, like: pd.DataFrame, fill: Any) -> pd.DataFrame:
    if frame.index.equals(like.index) and frame.columns.equals(like.columns):
        return frame
    return frame.reindex(index=like.index, columns=like.columns, fill_value=fill)


@dataclass
class Indicators:
    """Everything the decision reads, built once per panel. Build with `Indicators.build(panels, params)`."""

    params: dict
    index: pd.DatetimeIndex
    tickers: pd.Index
    close: np.ndarray                 # split-adjusted closes (rows x tickers), NaN where no price: what rules read
    price: np.ndarray                 # raw closes, NaN where no row or no price (<= 0): what trades and values use
    open: np.ndarray | None           # raw opens (NaN where none), or None when the panel has no open field
    present: np.ndarray               # bool: the ticker has a row that day (absent = not listed or delisted)
    actions: dict[int, tuple[np.ndarray, np.ndarray]]  # column -> (rows, factors) of its corporate actions
    halted: np.ndarray | None         # bool, or None when the panel has no halted field
    value: np.ndarray | None          # traded value, or None (then the value floor is skipped)
    first_row: np.ndarray             # first row with a close (len(index) when none)
    core: np.ndarray                  # columns of the core holdings present in the panel
    core_weight: np.ndarray           # their weights
    regime: np.ndarray | None         # regime ON per row, None when the regime filter is disabled
    notes: list[str] = field(default_factory=list)
    partial: np.ndarray | None = None  # bool per row: a partial day (a fallback source, a few tickers): no new buys
    _col: dict[str, int] = field(default_factory=dict, repr=False)
    _rsi: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, panels: Mapping[str, pd.DataFrame], params: Mapping | None = None, *,
              base_params: Mapping | None = None, partial: pd.Series | None = None) -> Indicators:
        """panels: "close" (required, raw KRX closes), optionally "open", "base" (KRX's base price: corporate
        actions), "halted" and "value" (aligned to close). params: overrides merged into `base_params` (default:
        the config's strategy) and validated. Raises ValueError when the regime is enabled and its ticker is not
        in the panel. partial: bool per date, the partial days (common.store.EodStore.partial_flags)."""
        p = resolve_params(params, base_params)
        close_df = panels["close"]
        if not isinstance(close_df.index, pd.DatetimeIndex):
            raise ValueError("close panel: expected a DatetimeIndex of dates")
        raw = close_df.to_numpy(dtype=np.float64)
        present = ~np.isnan(raw)
        price = raw
        # a close of 0 or below (or infinite) is no price, never a price of 0; two quick reductions check for one
        if raw.size and not (np.fmin.reduce(raw, axis=None) > 0 and np.fmax.reduce(raw, axis=None) < np.inf):
            with np.errstate(invalid="ignore"):
                price = np.where(present & ~((raw > 0) & (raw < np.inf)), np.nan, raw)
        halted = value = open_ = None
        if panels.get("halted") is not None:
            halted = _aligned(panels["halted"], close_df, False).to_numpy(dtype=bool)
        if panels.get("value") is not None:
            value = _aligned(panels["value"], close_df, np.nan).to_numpy(dtype=np.float64)
        if panels.get("open") is not None:
            open_ = _aligned(panels["open"], close_df, np.nan).to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore"):
                open_ = np.where(open_ > 0, open_, np.nan)
        close, actions = price, {}
        if panels.get("base") is not None:
            factor = corporate_actions.factors(price, _aligned(panels["base"], close_df, np.nan)
                                               .to_numpy(dtype=np.float64))
            hit = np.flatnonzero((factor != 1.0).any(axis=0))
            if len(hit):  # only the tickers with an action get an adjusted copy
                close = price.copy()
                close[:, hit] = corporate_actions.adjust(price[:, hit], factor[:, hit])
                actions = {int(j): (np.flatnonzero(factor[:, j] != 1.0), factor[factor[:, j] != 1.0, j]) for j in hit}
        first = np.zeros(len(close_df.columns), dtype=np.int64)
        if len(close):  # most tickers have a close on the first row: search only the others
            late = np.flatnonzero(~present[0])
            block = present[:, late]
            first[late] = np.where(block.any(axis=0), block.argmax(axis=0), len(close))
        col = {str(k): j for j, k in enumerate(close_df.columns)}
        notes = []
        core = [(col[h["ticker"]], float(h["weight"])) for h in p["core_holdings"] if h["ticker"] in col]
        missing = [h["ticker"] for h in p["core_holdings"] if h["ticker"] not in col]
        if missing:
            notes.append(f"core holdings not in the panel: {', '.join(missing)}")
        if p["filters"]["enabled"] and value is None and p["filters"]["min_avg_value"] > 0:
            notes.append("no value panel: the 20-day mean traded value floor is not applied")
        regime = None
        if p["regime"]["enabled"]:
            ticker = p["regime"]["ticker"]
            if ticker not in col:
                raise ValueError(f"regime.ticker {ticker} is not in the panel (disable the regime or load it)")
            regime = regime_on(close[:, col[ticker]], p["regime"]["sma_days"])
        return cls(params=p, index=close_df.index, tickers=close_df.columns, close=close, price=price,
                   open=open_, present=present, actions=actions, halted=halted,
                   value=value, first_row=first,
                   core=np.array([c for c, _ in core], dtype=np.int64),
                   core_weight=np.array([w for _, w in core], dtype=float), regime=regime, notes=notes, _col=col,
                   partial=None if partial is None else partial.reindex(close_df.index, fill_value=False)
                   .to_numpy(dtype=bool))

    # --- lookups

    def col(self, ticker: str) -> int | None:
        return self._col.get(str(ticker))

    def row(self, date: Any) -> int:
        """Row position of a date in the panel (KeyError when it is not a row)."""
        return int(self.index.get_loc(pd.Timestamp(date)))

    def regime_state(self, i: int) -> str:
        if self.regime is None:
            return "DISABLED"
        return "ON" if self.regime[i] else "OFF"

    # --- cross-sectional, one row

    def score_at(self, i: int) -> np.ndarray:
        return momentum_score(self.close, self.params["lookbacks"], self.params["weights"], rows=[i])[0]

    def filter_codes(self, i: int, score: np.ndarray | None = None) -> np.ndarray:
        """Why each ticker is not a candidate on row i (int8 exclusion codes; OK = candidate). The base
        conditions (a price today, not halted, a score) always apply; the rest when filters are enabled."""
        p = self.params
        f = p["filters"]
        c = self.close[i]
        score = self.score_at(i) if score is None else score
        code = np.zeros(len(c), dtype=np.int8)
        # applied lowest priority first, so the most basic reason wins
        code[~np.isfinite(score)] = NO_SCORE
        if f["enabled"]:
            if self.value is not None and f["min_avg_value"] > 0:
                mv = mean_value(self.value, f["value_window"], rows=[i])[0]
                with np.errstate(invalid="ignore"):
                    code[~(mv >= f["min_avg_value"])] = LOW_VALUE
            code[i - self.first_row < min_history(p)] = SHORT_HISTORY
            code[abnormal(self.close[max(i - 1, 0): i + 1], p["daily_limit_pct"])[-1]] = ABNORMAL
        if self.halted is not None:
            code[self.halted[i]] = HALTED
        code[~np.isfinite(c)] = DELISTED
        code[self.first_row > i] = NOT_LISTED
        return code

    # --- per holding, blocks of rows

    def trend_sma(self, a: int, b: int, cols: np.ndarray) -> np.ndarray:
        """The trend SMA on rows a..b-1 for the given columns."""
        n = self.params["sell_rules"]["trend_sma_days"]
        lo = max(0, a - n + 1)
        return sma(self.close[lo:b, cols], n)[a - lo:]

    def rsi(self, a: int, b: int, cols: np.ndarray) -> np.ndarray:
        """Wilder's RSI on rows a..b-1 for the given columns (each column computed once over the whole panel)."""
        todo = [int(j) for j in cols if int(j) not in self._rsi]  # the held columns, never all tickers
        if todo:
            full = rsi(self.close[:, todo], self.params["sell_rules"]["rsi_days"])
            for k, j in enumerate(todo):
                self._rsi[j] = full[:, k]
        if len(cols) == 0:
            return np.empty((b - a, 0))
        return np.column_stack([self._rsi[int(j)][a:b] for j in cols])

    def sell_codes(self, a: int, b: int, cols: np.ndarray, entry: np.ndarray) -> np.ndarray:
        """Sell-rule codes on rows a..b-1 for held columns `cols` with entry prices `entry` (the same rule
        `decide` applies on one row; the engine uses it for daily sell checks)."""
        cols = np.asarray(cols, dtype=np.int64)
        rules = self.params["sell_rules"]
        if not rules["enabled"] or len(cols) == 0:
            return np.zeros((b - a, len(cols)), dtype=np.int8)
        return sell_codes(self.close[a:b, cols], entry, self.trend_sma(a, b, cols), self.rsi(a, b, cols),
                          self.params, self.price[a:b, cols])

    def factors(self, i: int) -> np.ndarray | None:
        """The corporate-action factor of each ticker on row i (1.0 where none); None when no action that day."""
        out = None
        for j, (rows, f) in self.actions.items():
            k = np.searchsorted(rows, i)
            if k < len(rows) and rows[k] == i:
                out = np.ones(len(self.tickers)) if out is None else out
                out[j] = f[k]
        return out

    def next_action(self, after: int, cols: np.ndarray) -> int:
        """The first row after `after` with a corporate action of one of `cols` (the panel's length when none)."""
        best = len(self.index)
        for j in cols:
            if int(j) in self.actions:
                rows = self.actions[int(j)][0]
                k = np.searchsorted(rows, after, side="right")
                if k < len(rows):
                    best = min(best, int(rows[k]))
        return best

    def tradable(self, a: int, b: int) -> np.ndarray:
        """Rows a..b-1: a price at the close and not halted."""
        ok = np.isfinite(self.price[a:b])
        if self.halted is not None:
            ok &= ~self.halted[a:b]
        return ok

    def daily_sells(self, a: int, b: int, cols: np.ndarray, entry: np.ndarray) -> np.ndarray:
        """The sells of days between rebalances (rows a..b-1, held columns): the sell rules when
        `sell_rules.daily` is on, never for a core holding, nor on a day the ticker cannot trade."""
        cols = np.asarray(cols, dtype=np.int64)
        if not self.params["sell_rules"]["daily"] or not len(cols):
            return np.zeros((b - a, len(cols)), dtype=np.int8)
        codes = self.sell_codes(a, b, cols, entry)
        codes[:, np.isin(cols, self.core)] = NONE
        codes[~self.tradable(a, b)[:, cols]] = NONE
        return codes


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
    p = ctx.params
    n_tickers = len(ctx.tickers)
    if not -len(ctx.index) <= i < len(ctx.index):
        raise IndexError(f"row {i} is outside the panel ({len(ctx.index)} rows)")
    i = i % len(ctx.index)
    held = np.zeros(n_tickers, dtype=bool)
    entry = np.full(n_tickers, np.nan)
    unknown = []
    for ticker, price in holdings.items():  # the portfolio's few holdings, not the universe
        j = ctx.col(ticker)
        if j is None:
            unknown.append(str(ticker))
            continue
        held[j] = True
        entry[j] = np.nan if price is None else float(price)

    score = ctx.score_at(i)
    code = ctx.filter_codes(i, score)
    tradable = ctx.tradable(i, i + 1)[0]
    is_core = np.zeros(n_tickers, dtype=bool)
    is_core[ctx.core] = True
    state = np.zeros(n_tickers, dtype=np.int8)
    state[is_core & held] = HOLD_CORE
    if not rebalance:
        return _between_rebalances(ctx, i, held, entry, is_core, state, score, code, unknown)
    weight = np.zeros(n_tickers)

    # HOLD_CORE: never sold by a rule, bought if not held, held at the configured weight
    core_w = np.zeros(n_tickers)
    core_w[ctx.core] = ctx.core_weight
    partial = ctx.partial is not None and bool(ctx.partial[i])  # only a few tickers have data: no new buys
    core_buy = is_core & tradable & (not partial)
    state[core_buy & ~held] = BUY
    weight[core_buy] = core_w[core_buy]
    weight[is_core & held & ~core_buy] = np.nan

    # sell rules on the non-core holdings that can trade today
    sellable = np.flatnonzero(held & ~is_core & tradable)
    codes = ctx.sell_codes(i, i + 1, sellable, entry[sellable])[0] if len(sellable) else np.zeros(0, np.int8)
    sold = sellable[codes != NONE]
    state[sold] = codes[codes != NONE]
    locked = held & ~is_core & ~tradable  # halted or no price today: they keep their slot and their shares
    weight[locked] = np.nan
    state[locked] = HOLD

    held_free = held & ~is_core & tradable
    held_free[sold] = False
    candidate = (code == OK) & ~is_core
    candidate[sold] = False
    buys_allowed = (ctx.regime is None or bool(ctx.regime[i])) and not partial
    sel = select(score, candidate, held_free, int(locked.sum()), p["top_n"], buys_allowed)
    pw = pick_weight(p)
    state[sel["hold_in"] | sel["hold_out"]] = HOLD
    state[sel["buy"]] = BUY
    state[sel["replace"]] = SELL_REPLACE
    weight[sel["hold_in"]] = pw if buys_allowed else np.nan
    weight[sel["hold_out"]] = np.nan
    weight[sel["buy"]] = pw
    blocked = np.array([], dtype=np.int64)
    if not buys_allowed and not partial:  # what the regime blocked; a partial day ranks only its few tickers
        blocked = sel["top"][~held[sel["top"]]]
    return Decision(ctx=ctx, row=i, state=state, exclusion=code, score=score, candidate=candidate, weight=weight,
                    regime=ctx.regime_state(i), entry=entry, held=held, replaced_by=sel["replaced_by"],
                    blocked=blocked, unknown_holdings=unknown)


def _between_rebalances(ctx: Indicators, i: int, held: np.ndarray, entry: np.ndarray, is_core: np.ndarray,
                        state: np.ndarray, score: np.ndarray, code: np.ndarray, unknown: list[str]) -> Decision:
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
                    blocked=np.array([], dtype=np.int64), unknown_holdings=unknown, rebalance=False)

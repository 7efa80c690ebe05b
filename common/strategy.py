"""The strategy `momentum_topN_v1`, defined once: the scanner (nas) and the backtest engine (pc) both call `decide`.

What the user is alerted on is exactly what was backtested: the engine calls `decide(ctx, i, holdings)` on each
rebalance day and the scanner calls it on the scan day, with the same `Indicators` built from the same panels.

The rules, each a function that works alone on whole panels (ndarray or DataFrame, dates x tickers, no loop over
tickers):
- `momentum_score`: sum of weight x trailing return over the lookbacks; undefined when any close is missing.
- `filter_codes`: why a ticker is not a candidate (listed long enough, 20-day mean traded value above the floor,
  not halted, no abnormal print); 0 when it is one. Without a `value` panel the value floor is skipped (noted).
- `regime_on`: the regime ticker (069500) above its N-day SMA; an SMA not yet defined means OFF (no new buys).
- `sma`, `rsi` (Wilder) and `sell_codes`: CUT_STOPLOSS (close at or below entry x (1 - stop_loss_pct)), then
  SELL_TREND (close under its trend SMA), then SELL_RSI (RSI over the overbought line), in that priority.
- `select`: the TopN slots. Held tickers still in the TopN are HOLD; new TopN entries are BUY while the regime
  is ON; a held ticker outside the TopN is SELL_REPLACE only when a better candidate takes its slot, else HOLD.
- HOLD_CORE: core holdings ignore every sell rule and the regime, are bought if not held (BUY), never count
  against `top_n`, are never replaced, and are held at their configured weight (fraction of equity).

Weights: each core holding its configured weight; each TopN pick (invest_fraction - sum of core weights) / top_n
of equity. `Decision.weight` per ticker: a target fraction of equity, 0 (not held / sell), or NaN (keep the
current shares: halted, no price today, regime OFF, or outside the TopN with no better candidate).

Indicators are computed once per panel and lazily: cross-sectional ones (score, filters) for the rows asked
(the engine asks ~12 rows a year, the scanner one), per-holding ones (trend SMA, RSI) for the columns asked,
RSI cached per column, the regime for its one ticker over the whole index.

RSI is Wilder's (exponential, alpha 1/n) from each ticker's first close in the panel: a scan on a shorter
history differs from the backtest's value by about (1 - 1/n)^(rows - n), under 1e-7 after a year of rows.
Load at least max(lookbacks, min_history_days, SMA days) + 1 rows for the scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common import config, corporate_actions
from common.home import Home

NAME = "momentum_topN_v1"

# States of a ticker in a decision (index = code; 0 = no state: not held and not bought)
STATES = ("", "BUY", "HOLD", "HOLD_CORE", "SELL_TREND", "SELL_RSI", "SELL_REPLACE", "CUT_STOPLOSS")
NONE, BUY, HOLD, HOLD_CORE, SELL_TREND, SELL_RSI, SELL_REPLACE, CUT_STOPLOSS = range(len(STATES))
SELL_STATES = (SELL_TREND, SELL_RSI, SELL_REPLACE, CUT_STOPLOSS)
# the order a reader acts on them
STATE_ORDER = (BUY, CUT_STOPLOSS, SELL_TREND, SELL_RSI, SELL_REPLACE, HOLD_CORE, HOLD)

# Why a ticker is not a candidate today (index = code; 0 = it is one). Keys are stable, for machines.
EXCLUSIONS = ("", "not_listed", "delisted", "halted", "abnormal", "short_history", "low_value", "no_score")
OK, NOT_LISTED, DELISTED, HALTED, ABNORMAL, SHORT_HISTORY, LOW_VALUE, NO_SCORE = range(len(EXCLUSIONS))


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


# --- rules on whole panels ---------------------------------------------------------------------------------------


def _values(x: pd.DataFrame | np.ndarray) -> np.ndarray:
    return x.to_numpy(dtype=float) if isinstance(x, pd.DataFrame) else np.asarray(x, dtype=float)


def _like(out: np.ndarray, x: Any, rows: Any = None) -> Any:
    """`out` as a DataFrame shaped like `x` when `x` is one (rows: the positions kept), else as it is."""
    if not isinstance(x, pd.DataFrame):
        return out
    index = x.index if rows is None else x.index[np.atleast_1d(rows)]
    return pd.DataFrame(out, index=index, columns=x.columns)


def momentum_score(close: pd.DataFrame | np.ndarray, lookbacks: Sequence[int], weights: Sequence[float],
                   rows: Sequence[int] | int | None = None) -> pd.DataFrame | np.ndarray:
    """sum_k weights[k] x (close[t] / close[t - lookbacks[k] rows] - 1); NaN where any close is missing
    (or not positive). `rows`: only these row positions (all rows when None)."""
    c = _values(close)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rows is None:
            out = np.zeros(c.shape)
            for lb, w in zip(lookbacks, weights, strict=True):
                ret = np.full(c.shape, np.nan)
                ret[lb:] = c[lb:] / c[:-lb] - 1 if lb < len(c) else np.nan
                out += w * ret
        else:
            r = np.atleast_1d(np.asarray(rows, dtype=np.int64))
            now = c[r]
            out = np.zeros(now.shape)
            for lb, w in zip(lookbacks, weights, strict=True):
                past = np.full(now.shape, np.nan)
                ok = r >= lb
                past[ok] = c[r[ok] - lb]
                out += w * (now / past - 1)
    out[~np.isfinite(out)] = np.nan
    return _like(out, close, rows)


def sma(x: pd.DataFrame | np.ndarray, days: int) -> pd.DataFrame | np.ndarray:
    """Simple moving average over `days` rows; NaN until `days` rows and wherever the window misses a value.
    Closes are whole won, so the window sums are exact whatever the panel's start: scan and backtest agree."""
    a = _values(x)
    out = np.full(a.shape, np.nan)
    if len(a) >= days:
        out[days - 1:] = np.lib.stride_tricks.sliding_window_view(a, days, axis=0).mean(axis=-1)
    return _like(out, x)


def rsi(close: pd.DataFrame | np.ndarray, days: int) -> pd.DataFrame | np.ndarray:
    """Wilder's RSI (exponential averages of gains and losses, alpha 1/days), NaN for each ticker's first
    `days` closes; 100 when there were only gains, 50 when the price never moved."""
    c = _values(close)
    diff = np.full(c.shape, np.nan)
    diff[1:] = c[1:] - c[:-1]
    with np.errstate(invalid="ignore"):
        moves = np.hstack([np.where(diff > 0, diff, np.where(np.isnan(diff), np.nan, 0.0)),
                           np.where(diff < 0, -diff, np.where(np.isnan(diff), np.nan, 0.0))])
    # one ewm call for gains and losses side by side
    avg = pd.DataFrame(moves).ewm(alpha=1.0 / days, adjust=False, min_periods=days).mean().to_numpy()
    gain, loss = avg[:, : c.shape[1]], avg[:, c.shape[1]:]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 - 100.0 / (1.0 + gain / loss)
    out = np.where((loss == 0) & (gain == 0), 50.0, out)
    out = np.where((loss == 0) & (gain > 0), 100.0, out)
    return _like(out, close)


def regime_on(benchmark_close: pd.Series | np.ndarray, sma_days: int) -> np.ndarray:
    """True on rows where the regime ticker closes above its `sma_days` SMA (False while the SMA is undefined)."""
    c = np.asarray(benchmark_close, dtype=float).reshape(-1, 1)
    with np.errstate(invalid="ignore"):
        return (c > sma(c, sma_days))[:, 0]


def mean_value(value: pd.DataFrame | np.ndarray, window: int, rows: Sequence[int] | int | None = None):
    """Mean traded value over the last `window` rows (the rows that exist; NaN when none)."""
    v = _values(value)
    r = np.arange(len(v)) if rows is None else np.atleast_1d(np.asarray(rows, dtype=np.int64))
    out = np.empty((len(r), v.shape[1]))
    for k, i in enumerate(r):  # a loop over the rows asked (one per rebalance), never over tickers
        block = v[max(0, i - window + 1): i + 1]
        n = np.isfinite(block).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(n > 0, np.nansum(block, axis=0) / n, np.nan)
    return _like(out, value, None if rows is None else r)


def abnormal(close: pd.DataFrame | np.ndarray, daily_limit_pct: float) -> pd.DataFrame | np.ndarray:
    """Abnormal data: a close that is zero or negative, or a close-to-close move beyond the daily limit."""
    c = _values(close)
    prev = np.full(c.shape, np.nan)
    prev[1:] = c[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        move = np.abs(c / prev - 1)
        out = (c <= 0) | ((prev > 0) & (move > daily_limit_pct / 100 + 1e-9))
    return _like(out, close)


def sell_codes(close: np.ndarray, entry: np.ndarray, trend: np.ndarray | None, rsi_: np.ndarray | None,
               params: Mapping, price: np.ndarray | None = None) -> np.ndarray:
    """Sell-rule state codes (rows x held tickers) for non-core holdings; NONE where no rule fires.
    Priority: CUT_STOPLOSS, SELL_TREND, SELL_RSI. `entry`: entry price per column (NaN: no stop-loss), compared
    with `price` (the raw closes, in the entry's share basis; default `close`); `trend`/`rsi_`: the matching
    blocks of the trend SMA and RSI of `close` (None: that rule is not checked)."""
    rules = params["sell_rules"]
    out = np.zeros(close.shape, dtype=np.int8)
    if not rules["enabled"]:
        return out
    with np.errstate(invalid="ignore"):
        if rsi_ is not None:
            out[rsi_ > rules["rsi_overbought"]] = SELL_RSI
        if trend is not None:
            out[close < trend] = SELL_TREND
        stop = np.asarray(entry, dtype=float) * (1 - rules["stop_loss_pct"] / 100)
        out[(close if price is None else price) <= stop] = CUT_STOPLOSS
    return out


def select(score: np.ndarray, candidate: np.ndarray, held: np.ndarray, locked: int, top_n: int,
           buys_allowed: bool) -> dict[str, np.ndarray]:
    """The TopN slots for one day (all arrays over tickers).

    score/candidate: today's scores and who may be bought; held: non-core holdings still tradable and not sold by
    a rule today; locked: non-core holdings that cannot be traded today (they keep their slot).
    Returns rank (1 = best candidate, 0 = unranked), and masks hold_in (held, in the TopN), buy (new entries),
    replace (held, outside the TopN, and a better candidate takes the slot), hold_out (held, outside, kept), plus
    `replaced_by` (column of the buy that takes each replaced slot, -1 elsewhere)."""
    n = len(score)
    cand = np.flatnonzero(candidate)
    order = cand[np.argsort(-score[cand], kind="stable")]
    rank = np.zeros(n, dtype=np.int32)
    rank[order] = np.arange(1, len(order) + 1)
    in_top = np.zeros(n, dtype=bool)
    in_top[order[:top_n]] = True
    hold_in = held & in_top
    hold_out = held & ~in_top
    wanted = order[:top_n][~held[order[:top_n]]]
    free = top_n - int(hold_in.sum()) - locked
    n_buy = max(0, min(len(wanted), free)) if buys_allowed else 0
    buys = wanted[:n_buy]
    out_idx = np.flatnonzero(hold_out)
    n_replace = min(len(out_idx), n_buy, max(0, len(out_idx) + n_buy - free))
    # worst first: unranked (not a candidate any more), then the lowest ranked
    worst = out_idx[np.lexsort((-rank[out_idx], rank[out_idx] > 0))][:n_replace]
    buy = np.zeros(n, dtype=bool)
    buy[buys] = True
    replace = np.zeros(n, dtype=bool)
    replace[worst] = True
    replaced_by = np.full(n, -1, dtype=np.int64)
    replaced_by[worst] = buys[:n_replace]
    return {"rank": rank, "hold_in": hold_in, "buy": buy, "replace": replace, "hold_out": hold_out & ~replace,
            "replaced_by": replaced_by}


# --- indicators over one panel -------------------------------------------------------------------------------------


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
    factor: np.ndarray                # corporate-action factor effective on each row (1.0 where none)
    halted: np.ndarray | None         # bool, or None when the panel has no halted field
    value: np.ndarray | None          # traded value, or None (then the value floor is skipped)
    first_row: np.ndarray             # first row with a close (len(index) when none)
    last_row: np.ndarray              # last row with a close (-1 when none)
    core: np.ndarray                  # columns of the core holdings present in the panel
    core_weight: np.ndarray           # their weights
    regime: np.ndarray | None         # regime ON per row, None when the regime filter is disabled
    notes: list[str] = field(default_factory=list)
    _col: dict[str, int] = field(default_factory=dict, repr=False)
    _rsi: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, panels: Mapping[str, pd.DataFrame], params: Mapping | None = None, *,
              base_params: Mapping | None = None) -> Indicators:
        """panels: "close" (required, raw KRX closes), optionally "open", "base" (KRX's base price: corporate
        actions), "halted" and "value" (aligned to close). params: overrides merged into `base_params` (default:
        the config's strategy) and validated. Raises ValueError when the regime is enabled and its ticker is not
        in the panel."""
        p = resolve_params(params, base_params)
        close_df = panels["close"]
        if not isinstance(close_df.index, pd.DatetimeIndex):
            raise ValueError("close panel: expected a DatetimeIndex of dates")
        raw = close_df.to_numpy(dtype=np.float64)
        present = ~np.isnan(raw)
        with np.errstate(invalid="ignore"):
            # a close of 0 or below (or not a number) is no price, never a price of 0
            price = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)
        halted = value = open_ = None
        if panels.get("halted") is not None:
            halted = _aligned(panels["halted"], close_df, False).to_numpy(dtype=bool)
        if panels.get("value") is not None:
            value = _aligned(panels["value"], close_df, np.nan).to_numpy(dtype=np.float64)
        if panels.get("open") is not None:
            open_ = _aligned(panels["open"], close_df, np.nan).to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore"):
                open_ = np.where(open_ > 0, open_, np.nan)
        factor = np.ones(raw.shape)
        if panels.get("base") is not None:
            factor = corporate_actions.factors(price, _aligned(panels["base"], close_df, np.nan)
                                               .to_numpy(dtype=np.float64))
        close = corporate_actions.adjust(price, factor)
        t = len(close)
        valid = present
        has = valid.any(axis=0)
        first = np.where(has, valid.argmax(axis=0), t)
        last = np.where(has, t - 1 - valid[::-1].argmax(axis=0), -1)
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
                   open=open_, present=present, factor=factor, halted=halted,
                   value=value, first_row=first, last_row=last,
                   core=np.array([c for c, _ in core], dtype=np.int64),
                   core_weight=np.array([w for _, w in core], dtype=float), regime=regime, notes=notes, _col=col)

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
    rank: np.ndarray         # 1 = best candidate, 0 = unranked
    weight: np.ndarray       # target fraction of equity; 0 = none / sell; NaN = keep the current shares
    regime: str              # ON, OFF, DISABLED
    entry: np.ndarray        # entry price of holdings (NaN elsewhere)
    held: np.ndarray         # bool: held before the decision
    replaced_by: np.ndarray  # column of the buy taking a SELL_REPLACE slot, -1 elsewhere
    blocked: np.ndarray      # columns that would have been bought but the regime is OFF
    unknown_holdings: list[str] = field(default_factory=list)
    rebalance: bool = True   # a rebalance day of the schedule (else only daily sells can happen)

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

    @property
    def states(self) -> pd.DataFrame:
        """One row per ticker with a state: index ticker; columns state, score, rank (None when unranked),
        reason, close, weight; in the order a reader acts on them (BUY, sells, HOLD_CORE, HOLD), then rank."""
        cols = np.flatnonzero(self.state != NONE)
        order = {s: k for k, s in enumerate(STATE_ORDER)}
        cols = sorted(cols, key=lambda j: (order[int(self.state[j])], self.rank[j] == 0, self.rank[j],
                                           str(self.ctx.tickers[j])))
        recs = [{
            "ticker": str(self.ctx.tickers[j]),
            "state": STATES[self.state[j]],
            "score": None if np.isnan(self.score[j]) else float(self.score[j]),
            "rank": int(self.rank[j]) or None,
            "reason": self._reason(j),
            "close": None if np.isnan(self.ctx.price[self.row, j]) else float(self.ctx.price[self.row, j]),
            "weight": float(self.weight[j]),
        } for j in cols]
        frame = pd.DataFrame(recs, columns=["ticker", "state", "score", "rank", "reason", "close", "weight"])
        return frame.set_index("ticker")

    @property
    def excluded(self) -> pd.DataFrame:
        """Tickers of the universe left out (listed by the row, not a candidate, no state): index ticker;
        columns code (EXCLUSIONS key) and reason (text). Not-yet-listed tickers are not part of it."""
        mask = (self.exclusion != OK) & (self.exclusion != NOT_LISTED) & (self.state == NONE)
        cols = np.flatnonzero(mask)
        codes = self.exclusion[cols]
        texts = np.array(_exclusion_texts(self.ctx.params), dtype=object)
        return pd.DataFrame({"code": np.array(EXCLUSIONS, dtype=object)[codes], "reason": texts[codes]},
                            index=pd.Index(self.ctx.tickers[cols].astype(str), name="ticker"))

    def _reason(self, j: int) -> str:
        p, ctx, i = self.ctx.params, self.ctx, self.row
        s, r, n = int(self.state[j]), int(self.rank[j]), p["top_n"]
        close = ctx.price[i, j]
        halted = ctx.halted is not None and ctx.halted[i, j]
        is_core = j in set(ctx.core.tolist())
        if s == HOLD_CORE:
            return "core holding (halted today: kept)" if halted else "core holding: sell rules do not apply"
        if s == BUY:
            return "core holding, not held" if is_core else f"new entry: rank {r} of the top {n}"
        if s == CUT_STOPLOSS:
            drop = (1 - close / self.entry[j]) * 100
            return f"close {close:,.0f} is {drop:.1f}% below entry {self.entry[j]:,.0f} " \
                   f"(stop {p['sell_rules']['stop_loss_pct']:g}%)"
        if s == SELL_TREND:
            days = p["sell_rules"]["trend_sma_days"]
            return f"close {close:,.0f} under its {days}-day SMA {ctx.trend_sma(i, i + 1, np.array([j]))[0, 0]:,.0f}"
        if s == SELL_RSI:
            days = p["sell_rules"]["rsi_days"]
            return f"RSI{days} {ctx.rsi(i, i + 1, np.array([j]))[0, 0]:.1f} over {p['sell_rules']['rsi_overbought']:g}"
        if s == SELL_REPLACE:
            by = int(self.replaced_by[j])
            where = f"rank {r}" if r else _exclusion_texts(p)[self.exclusion[j]]
            return f"{where}, outside the top {n}: slot taken by {ctx.tickers[by]} (rank {self.rank[by]})"
        if s == HOLD:
            if halted:
                return "halted today: cannot trade, kept"
            if np.isnan(close):
                return "no price today: cannot trade, kept at its last close"
            if not self.rebalance:
                return "held until the next rebalance" + (f" (rank {r} today)" if r else "")
            if r and r <= n:
                off = " (regime OFF: not resized)" if self.regime == "OFF" else ""
                return f"rank {r}, still in the top {n}{off}"
            where = f"rank {r}" if r else _exclusion_texts(p)[self.exclusion[j]]
            return f"{where}, outside the top {n}: kept, no better candidate"
        return ""


def _exclusion_texts(p: Mapping) -> list[str]:
    f = p["filters"]
    return ["", "not listed yet", "no price today (delisted or no row)", "halted",
            f"abnormal data (close <= 0 or a move beyond {p['daily_limit_pct']:g}%)",
            f"too little history (listed < {min_history(p)} trading days)",
            f"{f['value_window']}-day mean traded value under {f['min_avg_value']:,.0f} KRW",
            "score undefined (a close in the lookback is missing)"]


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
    state[is_core & ~held & tradable] = BUY
    weight[is_core & tradable] = core_w[is_core & tradable]
    weight[is_core & held & ~tradable] = np.nan

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
    buys_allowed = ctx.regime is None or bool(ctx.regime[i])
    sel = select(score, candidate, held_free, int(locked.sum()), p["top_n"], buys_allowed)
    pw = pick_weight(p)
    state[sel["hold_in"] | sel["hold_out"]] = HOLD
    state[sel["buy"]] = BUY
    state[sel["replace"]] = SELL_REPLACE
    weight[sel["hold_in"]] = pw if buys_allowed else np.nan
    weight[sel["hold_out"]] = np.nan
    weight[sel["buy"]] = pw
    blocked = np.array([], dtype=np.int64)
    if not buys_allowed:
        top = np.flatnonzero((sel["rank"] > 0) & (sel["rank"] <= p["top_n"]) & ~held)
        blocked = top[np.argsort(sel["rank"][top])]
    return Decision(ctx=ctx, row=i, state=state, exclusion=code, score=score, rank=sel["rank"], weight=weight,
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
    cand = np.flatnonzero((code == OK) & ~is_core)
    rank = np.zeros(n_tickers, dtype=np.int32)
    rank[cand[np.argsort(-score[cand], kind="stable")]] = np.arange(1, len(cand) + 1)
    return Decision(ctx=ctx, row=i, state=state, exclusion=code, score=score, rank=rank, weight=weight,
                    regime=ctx.regime_state(i), entry=entry, held=held, replaced_by=np.full(n_tickers, -1),
                    blocked=np.array([], dtype=np.int64), unknown_holdings=unknown, rebalance=False)

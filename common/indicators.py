"""Everything a decision reads, built once per panel (common.strategy re-exports `Indicators`): split-adjusted
closes for every rule, raw prices for trading and the stop-loss, the candidate filters, the regime, RSI per column.

Indicators are computed once per panel and lazily: cross-sectional ones (score, filters) for the rows asked (the
engine asks ~12 rows a year and scores them in one pass with `prepare`, the scanner one), per-holding ones (trend
SMA, RSI) for the columns asked. Nothing whole-panel is built that a run does not read: the build makes one pass
over the closes (first rows, bad prices), `present` and the checked opens are made when asked."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common import corporate_actions
from common.params import min_history, resolve_params
from common.rules import (
    ABNORMAL,
    DELISTED,
    HALTED,
    LOW_VALUE,
    NO_SCORE,
    NONE,
    NOT_LISTED,
    SHORT_HISTORY,
    abnormal,
    mean_value,
    momentum_score,
    regime_on,
    rsi,
    sell_codes,
    sma,
)

RSI_AHEAD = 126  # rows of RSI computed past the row asked: about half a year of a holding's checks


def _scan(raw: np.ndarray, rows: int = 64) -> tuple[np.ndarray, float, float]:
    """(each column's first row with a close, the smallest close, the largest close) in one pass over blocks of
    rows small enough to stay in the CPU cache (a pass per question over the whole panel costs half as much again)."""
    n = len(raw)
    first = np.zeros(raw.shape[1], dtype=np.int64)
    todo = np.isnan(raw[0]).nonzero()[0] if n else np.zeros(0, dtype=np.int64)  # most have a close on row 0
    first[todo] = n
    lo, hi = np.inf, -np.inf
    for a in range(0, n, rows):
        block = raw[a:a + rows]
        lo = min(lo, float(np.fmin.reduce(block, axis=None)))  # NaN (a block without a close) never wins
        hi = max(hi, float(np.fmax.reduce(block, axis=None)))
        if len(todo):
            late = block[:, todo]
            seen = late == late  # NaN is the only value unequal to itself
            hit = seen.any(axis=0)
            if hit.any():
                first[todo[hit]] = a + seen[:, hit].argmax(axis=0)
                todo = todo[~hit]
    return first, lo, hi


def _columns(tickers: pd.Index) -> dict[str, int]:
    return {str(k): j for j, k in enumerate(tickers)}


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
    open: np.ndarray | None           # raw opens as loaded (read them with `open_at`), or None when no open field
    raw: np.ndarray                   # the closes as loaded: NaN where the ticker has no row that day
    actions: dict[int, tuple[np.ndarray, np.ndarray]]  # column -> (rows, factors) of its corporate actions
    halted: np.ndarray | None         # bool, or None when the panel has no halted field
    value: np.ndarray | None          # traded value, or None (then the value floor is skipped)
    first_row: np.ndarray             # first row with a close (len(index) when none)
    core: np.ndarray                  # columns of the core holdings present in the panel
    core_weight: np.ndarray           # their weights
    regime: np.ndarray | None         # regime ON per row, None when the regime filter is disabled
    notes: list[str] = field(default_factory=list)
    partial: np.ndarray | None = None  # bool per row: a partial day (a fallback source, a few tickers): no new buys
    _rsi: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _scores: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # row -> scores, from `prepare`

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
        first, lo, hi = _scan(raw)
        price = raw
        # a close of 0 or below (or infinite) is no price, never a price of 0
        if raw.size and not (lo > 0 and hi < np.inf):
            with np.errstate(invalid="ignore"):
                price = np.where(~np.isnan(raw) & ~((raw > 0) & (raw < np.inf)), np.nan, raw)
        halted = value = open_ = None
        if panels.get("halted") is not None:
            halted = _aligned(panels["halted"], close_df, False).to_numpy(dtype=bool)
        if panels.get("value") is not None:
            value = _aligned(panels["value"], close_df, np.nan).to_numpy(dtype=np.float64)
        if panels.get("open") is not None:
            open_ = _aligned(panels["open"], close_df, np.nan).to_numpy(dtype=np.float64)
        close, actions = price, {}
        if panels.get("base") is not None:
            factor = corporate_actions.factors(price, _aligned(panels["base"], close_df, np.nan)
                                               .to_numpy(dtype=np.float64))
            hit = np.flatnonzero((factor != 1.0).any(axis=0))
            if len(hit):  # only the tickers with an action get an adjusted copy
                close = price.copy()
                close[:, hit] = corporate_actions.adjust(price[:, hit], factor[:, hit])
                actions = {int(j): (np.flatnonzero(factor[:, j] != 1.0), factor[factor[:, j] != 1.0, j]) for j in hit}
        # ticker -> column, built only when a rule names tickers (a scan's lookups build it on their first)
        col = _columns(close_df.columns) if p["core_holdings"] or p["regime"]["enabled"] else {}
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
        ctx = cls(params=p, index=close_df.index, tickers=close_df.columns, close=close, price=price,
                  open=open_, raw=raw, actions=actions, halted=halted,
                  value=value, first_row=first,
                  core=np.array([c for c, _ in core], dtype=np.int64),
                  core_weight=np.array([w for _, w in core], dtype=float), regime=regime, notes=notes,
                  partial=None if partial is None else partial.reindex(close_df.index, fill_value=False)
                  .to_numpy(dtype=bool))
        if col:
            ctx._col = col  # the map built above, so `col` does not build it again
        return ctx

    # --- lookups

    def col(self, ticker: str) -> int | None:
        return self._col.get(str(ticker))

    @functools.cached_property
    def _col(self) -> dict[str, int]:
        return _columns(self.tickers)

    def row(self, date: Any) -> int:
        """Row position of a date in the panel (KeyError when it is not a row)."""
        return int(self.index.get_loc(pd.Timestamp(date)))

    @functools.cached_property
    def present(self) -> np.ndarray:
        """bool (rows x tickers): the ticker has a row that day (absent = not listed or delisted)."""
        return ~np.isnan(self.raw)

    def absent(self, a: int, b: int, cols: np.ndarray | slice) -> np.ndarray:
        """bool (rows a..b-1 x `cols`): no row that day; for the engine's few holdings, `present` never built."""
        return np.isnan(self.raw[a:b, cols])

    @functools.cached_property
    def is_core(self) -> np.ndarray:
        """bool per ticker: a core holding."""
        out = np.zeros(len(self.tickers), dtype=bool)
        out[self.core] = True
        return out

    def open_at(self, i: int) -> np.ndarray:
        """Row i's opens, NaN where none (an open of 0 or below is none): checked per row, only on fill days."""
        row = self.open[i]
        with np.errstate(invalid="ignore"):
            return np.where(row > 0, row, np.nan)

    def regime_state(self, i: int) -> str:
        if self.regime is None:
            return "DISABLED"
        return "ON" if self.regime[i] else "OFF"

    # --- cross-sectional, one row

    def prepare(self, rows: np.ndarray) -> None:
        """Score the rows a run will decide on (the engine's rebalance days) in one pass; `score_at` reads them."""
        rows = np.asarray(rows, dtype=np.int64)
        for a in range(0, len(rows), 32):  # blocks of rows that stay in the CPU cache
            block = momentum_score(self.close, self.params["lookbacks"], self.params["weights"], rows=rows[a:a + 32])
            block.flags.writeable = False
            self._scores.update(zip(rows[a:a + 32].tolist(), block, strict=True))

    def score_at(self, i: int) -> np.ndarray:
        got = self._scores.get(i)
        if got is not None:
            return got
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
        """Wilder's RSI on rows a..b-1 for the given columns. A column is computed from the panel's first row up to
        RSI_AHEAD rows past b (a holding's next checks), and again further when a later row is asked: a row's value
        never depends on the rows after it, so every computation agrees on the rows they share."""
        todo = [int(j) for j in cols if len(self._rsi.get(int(j), ())) < b]  # the held columns, never all tickers
        if todo:
            end = min(len(self.index), b + RSI_AHEAD)
            full = rsi(self.close[:end, todo], self.params["sell_rules"]["rsi_days"])
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
        close, price, trend = self.close[a:b, cols], self.price[a:b, cols], self.trend_sma(a, b, cols)
        entry = np.asarray(entry, dtype=float)
        codes = sell_codes(close, entry, trend, None, self.params, price)
        # RSI has the lowest priority: only the columns the stop-loss and the trend left without a sell need it
        open_ = (codes == NONE).any(axis=0)
        if open_.any():
            codes[:, open_] = sell_codes(close[:, open_], entry[open_], trend[:, open_], self.rsi(a, b, cols[open_]),
                                         self.params, price[:, open_])
        return codes

    def factors(self, i: int) -> np.ndarray | None:
        """The corporate-action factor of each ticker on row i (1.0 where none); None when no action that day."""
        hit = self._actions_by_row.get(i)
        if hit is None:
            return None
        out = np.ones(len(self.tickers))
        out[hit[0]] = hit[1]
        return out

    @functools.cached_property
    def _actions_by_row(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """row -> (columns, factors) of the corporate actions on that row."""
        by_row: dict[int, tuple[list[int], list[float]]] = {}
        for j, (rows, f) in self.actions.items():
            for r, x in zip(rows.tolist(), f.tolist(), strict=True):
                cols, fs = by_row.setdefault(r, ([], []))
                cols.append(j)
                fs.append(x)
        return {r: (np.array(c, dtype=np.int64), np.array(x)) for r, (c, x) in by_row.items()}

    def next_action(self, after: int, cols: np.ndarray) -> int:
        """The first row after `after` with a corporate action of one of `cols` (the panel's length when none)."""
        best = len(self.index)
        if not self.actions:
            return best
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

    @property
    def sells_between_rebalances(self) -> bool:
        """Whether the strategy can sell between rebalance days (`daily_sells`): its sell rules, checked daily."""
        return bool(self.params["sell_rules"]["enabled"] and self.params["sell_rules"]["daily"])

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

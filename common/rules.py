"""The strategy's rules, each a function that works alone on whole panels (ndarray or DataFrame, dates x tickers,
no loop over tickers), and the codes of the states and exclusions they give. `common.strategy` stacks them into
the decision.

- `momentum_score`: sum of weight x trailing return over the lookbacks; undefined when any close is missing.
- `regime_on`: the regime ticker (069500) above its N-day SMA; an SMA not yet defined means OFF (no new buys).
- `mean_value`, `abnormal`: the inputs of the candidate filters (traded value floor, abnormal prints).
- `sma`, `rsi` (Wilder) and `sell_codes`: CUT_STOPLOSS (close at or below entry x (1 - stop_loss_pct)), then
  SELL_TREND (close under its trend SMA), then SELL_RSI (RSI over the overbought line), in that priority.
- `select` (`slots`: the same as columns): the TopN slots. Held tickers still in the TopN are HOLD; new TopN
  entries are BUY while the regime is ON; a held ticker outside the TopN is SELL_REPLACE only when a better
  candidate takes its slot, else HOLD.

RSI is Wilder's (exponential, alpha 1/n) from each ticker's first close in the panel: a scan on a shorter
history differs from the backtest's value by about (1 - 1/n)^(rows - n), under 1e-7 after a year of rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

# States of a ticker in a decision (index = code; 0 = no state: not held and not bought)
STATES = ("", "BUY", "HOLD", "HOLD_CORE", "SELL_TREND", "SELL_RSI", "SELL_REPLACE", "CUT_STOPLOSS")
NONE, BUY, HOLD, HOLD_CORE, SELL_TREND, SELL_RSI, SELL_REPLACE, CUT_STOPLOSS = range(len(STATES))
SELL_STATES = (SELL_TREND, SELL_RSI, SELL_REPLACE, CUT_STOPLOSS)
# the order a reader acts on them
STATE_ORDER = (BUY, CUT_STOPLOSS, SELL_TREND, SELL_RSI, SELL_REPLACE, HOLD_CORE, HOLD)

# Why a ticker is not a candidate today (index = code; 0 = it is one). Keys are stable, for machines.
EXCLUSIONS = ("", "not_listed", "delisted", "halted", "abnormal", "short_history", "low_value", "no_score")
OK, NOT_LISTED, DELISTED, HALTED, ABNORMAL, SHORT_HISTORY, LOW_VALUE, NO_SCORE = range(len(EXCLUSIONS))


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
    k = c.shape[1]
    moves = np.empty((len(c), 2 * k))  # gains and losses side by side, for one ewm call; NaN stays NaN
    np.maximum(diff, 0.0, out=moves[:, :k])
    np.subtract(moves[:, :k], diff, out=moves[:, k:])  # gain - move: the loss, exactly (0.0 when it rose)
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
        total = np.where(np.isnan(block), 0.0, block).sum(axis=0)  # np.nansum's sum, without its copies
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(n > 0, total / n, np.nan)
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


def ranking(score: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Rank of every candidate (1 = best score; ties by column), 0 for the others."""
    cand = np.flatnonzero(candidate)
    rank = np.zeros(len(score), dtype=np.int32)
    rank[cand[np.argsort(-score[cand], kind="stable")]] = np.arange(1, len(cand) + 1)
    return rank


def best(score: np.ndarray, candidate: np.ndarray, k: int) -> np.ndarray:
    """The columns of the k best candidates, best first: the first k of `ranking`, found without sorting all."""
    cand = candidate.nonzero()[0]
    if k <= 0 or not len(cand):
        return cand[:0]
    s = score[cand]
    if len(s) > 32 * k and not np.isnan(s).any():
        # the k-th best of every 8th score is at most the k-th best of all: a cheap first cut keeps every score
        # at or above the k-th best, so the partition below finds the same k-th best in a tenth of the scores
        sample = s[::8]
        keep = s >= np.partition(sample, len(sample) - k)[len(sample) - k]
        cand, s = cand[keep], s[keep]
    if len(s) > k:
        kth = np.partition(s, len(s) - k)[len(s) - k]  # the k-th best score: ties at it are all kept, then cut
        cand = cand[s >= kth]
    return cand[np.lexsort((cand, -score[cand]))][:k]


class Slots(NamedTuple):
    """The TopN slots of one day, as columns: `replace[k]` is taken by the buy `replaced_by[k]`."""

    top: np.ndarray          # the TopN columns, best first
    hold_in: np.ndarray      # held, in the TopN
    buy: np.ndarray          # new entries, best first
    replace: np.ndarray      # held, outside the TopN, and a better candidate takes the slot (worst first)
    replaced_by: np.ndarray  # the buy taking each replaced slot
    hold_out: np.ndarray     # held, outside the TopN, kept


def slots(score: np.ndarray, candidate: np.ndarray, held: np.ndarray, locked: int, top_n: int,
          buys_allowed: bool) -> Slots:
    """The TopN slots for one day, `select`'s rule on columns: `held` are the columns of its held mask, ascending.
    Past the ranking it handles the few columns involved (a few dozen) as lists, never the universe."""
    top = best(score, candidate, top_n)
    top_l, held_l = top.tolist(), held.tolist()
    held_set, top_set = set(held_l), set(top_l)
    hold_in = [j for j in top_l if j in held_set]
    wanted = [j for j in top_l if j not in held_set]
    out = [j for j in held_l if j not in top_set]
    free = top_n - len(hold_in) - locked
    n_buy = max(0, min(len(wanted), free)) if buys_allowed else 0
    buys = wanted[:n_buy]
    n_replace = min(len(out), n_buy, max(0, len(out) + n_buy - free))
    worst: list[int] = []
    if n_replace:  # worst first: unranked (no candidate any more), then the lowest ranked (lowest score, later column)
        o = np.array(out, dtype=np.int64)
        c = candidate[o]
        worst = o[np.lexsort((-o, np.where(c, score[o], -np.inf), c))][:n_replace].tolist()
        gone = set(worst)
        out = [j for j in out if j not in gone]

    def cols(x: list[int]) -> np.ndarray:
        return np.array(x, dtype=np.int64)

    return Slots(top, cols(hold_in), cols(buys), cols(worst), cols(buys[:n_replace]), cols(out))


def select(score: np.ndarray, candidate: np.ndarray, held: np.ndarray, locked: int, top_n: int,
           buys_allowed: bool) -> dict[str, np.ndarray]:
    """The TopN slots for one day (all arrays over tickers).

    score/candidate: today's scores and who may be bought; held: non-core holdings still tradable and not sold by
    a rule today; locked: non-core holdings that cannot be traded today (they keep their slot).
    Returns `top` (the TopN columns, best first), and masks hold_in (held, in the TopN), buy (new entries),
    replace (held, outside the TopN, and a better candidate takes the slot), hold_out (held, outside, kept), plus
    `replaced_by` (column of the buy that takes each replaced slot, -1 elsewhere)."""
    n = len(score)
    sel = slots(score, candidate, np.flatnonzero(held), locked, top_n, buys_allowed)

    def mask(cols: np.ndarray) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[cols] = True
        return out

    replaced_by = np.full(n, -1, dtype=np.int64)
    replaced_by[sel.replace] = sel.replaced_by
    return {"top": sel.top, "hold_in": mask(sel.hold_in), "buy": mask(sel.buy), "replace": mask(sel.replace),
            "hold_out": mask(sel.hold_out), "replaced_by": replaced_by}

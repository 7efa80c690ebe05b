"""Corporate actions (splits, reverse splits, bonus and rights issues) from KRX's base price: the one place that
knows them.

KRX computes each row's change (CMPPREVDD_PRC, FLUC_RT) against a base price: the previous close on an ordinary
day, the previous close adjusted by the action's ratio on an action day (005930's 50:1 split on 2018-05-04: close
51,900, change -1,100, so base 53,000 = 2,650,000 / 50). The store keeps that base (common.store, column `base`),
so an action shows as a base that differs from the previous close, and its factor is previous close / base.

A factor is the number of new shares per old share: 50 for a split of 1 share into 50, 0.1 for 10 shares merged
into 1. Holdings are multiplied by it on its day; prices before it are divided by it (`adjust`).

Dividends are not corporate actions here: KRX does not move the base price for a cash dividend.
"""

from __future__ import annotations

import numpy as np

# |previous close - base| above this (won) is an action. On an ordinary day KRX's base is the previous close to the
# won; on an action day it is the previous close / ratio rounded to the won, hence the tolerance of 1.
TOLERANCE_WON = 1.0
MAX_TERM = 50  # ratios n/m with n, m <= MAX_TERM count as simple (2, 5, 50, 0.1, 1.5, ...)


def _simple_ratios(limit: int) -> np.ndarray:
    """Every distinct n/m with 1 <= n, m <= limit, ascending (equal fractions divide to the same float)."""
    terms = np.arange(1, limit + 1, dtype=float)
    return np.unique(terms[:, None] / terms[None, :])


_RATIOS = _simple_ratios(MAX_TERM)


def previous_close(close: np.ndarray) -> np.ndarray:
    """For each row, the close of the ticker's previous row with a close (NaN for its first one)."""
    close = np.asarray(close, dtype=float)
    rows = np.arange(close.shape[0])[:, None]
    last = np.where(np.isnan(close), -1, rows)
    last = np.maximum.accumulate(last, axis=0)  # the latest row up to t that has a close
    prev_row = np.vstack([np.full((1, close.shape[1]), -1), last[:-1]])[: len(close)]
    prev = np.take_along_axis(close, np.maximum(prev_row, 0), axis=0)
    return np.where(prev_row >= 0, prev, np.nan)


def factors(close: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per-row adjustment factors (rows x tickers): close of the previous row with a close / base of the row, snapped
    to a simple ratio n/m (n, m <= 50) when that ratio reproduces the base to the won, else the raw ratio (a rights
    issue's theoretical ex-rights price is no simple ratio). 1.0 where there is no action (base within a won of the
    previous close), no previous close, or no base or close (NaN: an old store row, no row, a listing)."""
    close = np.asarray(close, dtype=float)
    base = np.asarray(base, dtype=float)
    if close.shape != base.shape:
        raise ValueError(f"close and base panels differ in shape: {close.shape} vs {base.shape}")
    out = np.ones(close.shape)
    prev = previous_close(close)
    with np.errstate(invalid="ignore"):
        action = (np.abs(prev - base) > TOLERANCE_WON) & ~np.isnan(close) & (base > 0) & (prev > 0)
    if not action.any():
        return out
    out[action] = _snap(prev[action], base[action])
    return out


def _snap(prev: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The factor of each action cell: the simple ratio r whose round(prev / r) is within a won of the base (the
    one closest to it unrounded when several are), else the raw ratio prev / base."""
    out = prev / base
    best = np.full(len(prev), np.inf)
    # only ratios between prev / (base + 1.5) and prev / (base - 1.5) can fit: a handful at any price above a few
    # won, so this costs a few passes over the action cells, not one per simple ratio
    margin = TOLERANCE_WON + 0.5 + 1e-6
    lo = np.searchsorted(_RATIOS, prev / (base + margin))
    hi = np.full(len(prev), len(_RATIOS))
    above = base > margin
    hi[above] = np.searchsorted(_RATIOS, prev[above] / (base[above] - margin), side="right")
    for k in range(int((hi - lo).max(initial=0))):
        cells = np.flatnonzero(lo + k < hi)
        ratio = _RATIOS[lo[cells] + k]
        quotient = prev[cells] / ratio
        fits = np.abs(np.round(quotient) - base[cells]) <= TOLERANCE_WON
        err = np.where(fits, np.abs(quotient - base[cells]), np.inf)
        better = err < best[cells]
        best[cells[better]] = err[better]
        out[cells[better]] = ratio[better]
    return out


def adjust(prices: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Backward-adjusted prices: each row divided by the product of the factors of every later row of its ticker,
    so the last row is the raw price and an action day shows no jump. Any float panel (closes, opens); NaN stays."""
    prices = np.asarray(prices, dtype=float)
    factors = np.asarray(factors, dtype=float)
    if prices.shape != factors.shape:
        raise ValueError(f"price and factor panels differ in shape: {prices.shape} vs {factors.shape}")
    out = prices.copy()
    cols = np.flatnonzero((factors[1:] != 1).any(axis=0))  # a first row's factor moves nothing before it
    if len(cols):
        later = np.ones((len(factors), len(cols)))
        later[:-1] = np.cumprod(factors[:0:-1, cols], axis=0)[::-1]
        out[:, cols] /= later
    return out
